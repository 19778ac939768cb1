"""Resource-server benchmark: what guarding an MCP server costs, ``tools/call`` with 16 clients.

Usage (from the project root)::

    .venv/bin/python bench/guard.py                 # every server, 10 s each
    .venv/bin/python bench/guard.py --quick         # smoke run, 2 s each
    .venv/bin/python bench/guard.py --only sdk,gatehouse --rounds 3
    .venv/bin/python bench/guard.py --interleave 0  # one server after the other

Servers are subprocesses (uvicorn, one worker) pinned to the server core (default 0); this
process, the load generator, pins itself to the client core (default 1), as in ``authserver.py``.
The unguarded SDK server, the same server behind ``gatehouse.guard``, and the upstream of every
proxy are one process and one server instance, answering bare on one port and guarded on another
(``serve_ports.py``, ``apps.guard_sdk:by_port``), so that the guard's row differs from its
baseline by the guard alone; every other server is a process of its own. All servers are started
together and take turns of ``--interleave`` seconds (0.5; each after 0.125 s of unmeasured load)
until each has had ``--duration``: the speed of a shared cloud machine drifts by tens of percent
within minutes, and taking turns spreads the drift over every server instead of charging it to
whichever ran at the time. Each row is then compared window by window with its baseline at the
same moment (:func:`ratio_estimate`), with a 95% interval: one window strays by about 12%,
whether it lasts 0.5 s or 2 s, so short turns give four times the windows, and half the
interval, for the same time.

Each client sends the same stateless JSON-RPC ``tools/call`` of the tool ``echo`` over a
keep-alive connection, with the same bearer token every time (a long-lived session: verifier
caches work as in real life), except ``gatehouse-fresh``, which presents a different token on
every request (the cost of a cache miss). Servers (``--only``):

* ``sdk``              the official SDK's ``MCPServer``, no auth: the baseline
* ``sdk-token``        the same bare server, sent the same Authorization header anyway:
                       what parsing the token's ~600 header bytes costs before any check
* ``gatehouse``        the same server behind ``gatehouse.guard``
* ``gatehouse-fresh``  the same, a fresh token per request (a process of its own)
* ``sdk-auth``         the same server behind the SDK's bearer middleware, ES256 via joserfc
* ``fastmcp``          FastMCP, no auth: FastMCP's baseline
* ``fastmcp-jwt``      FastMCP with its ``JWTVerifier`` on the JWKS
* ``gateway``          the unguarded SDK server (``sdk``'s port) as the upstream,
                       behind ``gatehouse gateway`` (a second process, the CLI as shipped): both
                       processes share the server core and both count as server CPU
* ``gateway-preempting`` the same, with ``--no-batch-scheduling``: the gateway under the
                       default scheduling policy, whose wakeups preempt the upstream on their
                       shared core (gatehouse.guard.scheduling says why the gateway avoids that)
* ``nginx``            the same upstream behind nginx as a plain reverse proxy (no token check,
                       ``Authorization`` stripped, kept-alive upstream connections, one process,
                       ``SCHED_BATCH`` as the gateway),
                       placed like the gateway: what any proxy process in C costs on that core,
                       the floor for the gateway's row (skipped when ``nginx`` is not installed)
* ``gateway-own``      the gateway again, but on the load generator's core, away from its
                       upstream, as near as two cores come to a gateway host or container of its
                       own, and the upstream alone on the server core: the latency the hop adds,
                       not the CPU it takes from the MCP server. The generator's core is shared,
                       and on some hosts of this machine type more of it is stolen than of the server's
* ``nginx-own``        nginx placed the same way

Tokens are ES256 JWTs (``typ: at+jwt``, ``iss``, ``aud`` = the server's ``/mcp`` URL, ``scope``
``notes:read``, an hour to live, ``kid``) signed by a key this process makes; the public key is
served by a small JWKS app (a subprocess on the client core). Results are printed as a table,
written as JSON and drawn as a bar chart beside it in ``bench/results/`` (``guard-<time>.json``,
``guard-<time>.png``); a full run also replaces the committed chart ``bench/results/guard.png``,
which ``bench/README.md`` shows. Every guarded row also reports the p50 latency it adds to its
unguarded baseline (``+p50 ms``); for the gateway the target is at most ``GATEWAY_P50_TARGET_MS``.
With 16 closed-loop clients on one server core, p50 is mostly queueing (about clients / throughput),
so ``--concurrency 1 --only sdk,gateway`` shows the per-request cost on an idle server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from authserver import _log, cpu_warnings, environment, pin_cores
from httpclient import HttpConnection, Response, build_request
from loadgen import LoadResult, OpError, StaticWorker, Worker, combined, run_load
from servers import (
    ServerError,
    ServerProcess,
    ServerTracker,
    free_port,
    process_cpu_seconds,
    run_to_completion,
)
from guard_cost import guard_cost
from suites import BENCH_DIR

RESULTS_DIR = BENCH_DIR / "results"
CHART = RESULTS_DIR / "guard.png"  # the committed chart, linked from bench/README.md; only a full run replaces it
ISSUER = "https://auth.bench.example"
SCOPE = "notes:read"
TOKEN_TTL = 3600
ECHO_TEXT = "gatehouse-bench"
CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": ECHO_TEXT}},
    }
).encode()
EXPECT = ECHO_TEXT.encode()
TARGET = 0.95  # gatehouse.guard should keep this share of the unguarded throughput
Z95 = statistics.NormalDist().inv_cdf(0.975)
T95_UP_TO_30 = (  # Student's t, 0.975 quantile, for 1 to 30 degrees of freedom (see t95)
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
GATEWAY_P50_TARGET_MS = 1.0  # the gateway should add at most this to the unguarded p50
POOL_HINT = 4000.0  # requests/s to mint fresh tokens for when no run has shown the rate yet
SLICE_WARMUP = 0.25  # seconds of load before each measured slice of --interleave
GATEWAY_POLICY = f'[tools]\necho = ["{SCOPE}"]\n'
SHARED_SDK = "apps.guard_sdk:by_port"  # one process: the bare SDK server, and each guard on a port of its own
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")  # sbin: not on every user's PATH
NO_NGINX = "nginx is not installed (Debian: apt-get install nginx-light)"
CHRT = shutil.which("chrt")  # util-linux


@dataclass
class Server:
    key: str
    label: str
    app: str | None  # uvicorn factory "module:function"; None = skipped
    baseline: str  # the key of the unguarded server this one is compared with
    authenticated: bool = True
    fresh_tokens: bool = False
    sends_token: bool = (
        False  # send the bearer token although the server does not check it
    )
    skip_note: str = ""
    proxy: str | None = None  # "gateway" or "nginx": ``app`` runs as the upstream of that process
    proxy_own_core: bool = False  # the proxy on the generator's core, not beside its upstream
    proxy_options: tuple[str, ...] = ()  # more command-line options for the gateway
    port_name: str = "sdk"  # with ``app`` = SHARED_SDK: which of that process's ports serves (or is the upstream)


SERVERS = [
    Server("sdk", "SDK, unguarded", SHARED_SDK, "sdk", authenticated=False),
    Server("sdk-token", "SDK, unguarded, token sent anyway", SHARED_SDK, "sdk", authenticated=False, sends_token=True),
    Server("gatehouse", "SDK + gatehouse.guard", SHARED_SDK, "sdk", port_name="gatehouse"),
    Server("gatehouse-fresh", "SDK + gatehouse.guard, new token each call", "apps.guard_sdk:gatehouse", "sdk",
           fresh_tokens=True),  # a process of its own: its tokens fill a cache and the heap
    Server("sdk-auth", "SDK + its bearer auth (joserfc ES256)", "apps.guard_sdk:sdk_auth", "sdk"),
    Server("fastmcp", "FastMCP, unguarded", "apps.guard_fastmcp:plain", "fastmcp", authenticated=False),
    Server("fastmcp-jwt", "FastMCP + JWTVerifier", "apps.guard_fastmcp:jwt", "fastmcp"),
    Server("gateway", "SDK behind the gatehouse gateway", SHARED_SDK, "sdk", proxy="gateway"),
    Server("gateway-preempting", "SDK behind the gatehouse gateway, default scheduling", SHARED_SDK, "sdk",
           proxy="gateway", proxy_options=("--no-batch-scheduling",)),
    Server("nginx", "SDK behind nginx, no auth (a proxy's floor)", SHARED_SDK if NGINX else None,
           "sdk", authenticated=False, sends_token=True, proxy="nginx", skip_note=NO_NGINX),
    Server("gateway-own", "SDK behind the gatehouse gateway, on the generator's core", SHARED_SDK, "sdk",
           proxy="gateway", proxy_own_core=True),
    Server("nginx-own", "SDK behind nginx, on the generator's core", SHARED_SDK if NGINX else None,
           "sdk", authenticated=False, sends_token=True, proxy="nginx", proxy_own_core=True, skip_note=NO_NGINX),
]  # fmt: skip


@dataclass(frozen=True)
class Turn:
    """One measured window: its round, the monotonic time of its middle, and what it measured."""

    round_no: int
    middle: float
    result: LoadResult


@dataclass
class Row:
    server: Server
    result: LoadResult | None = None
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    round_results: list[LoadResult | None] = field(default_factory=list)  # every round's, in order
    turns: list[Turn] = field(default_factory=list)  # every measured window of every round
    cpu_split: dict[str, float] = field(default_factory=dict)  # share of the core per process

    @property
    def rounds(self) -> list[float]:
        """Requests/s of every round that was measured."""
        return [r.requests_per_s for r in self.round_results if r is not None]

    @property
    def round_p50s(self) -> list[float]:
        """p50 latency (ms) of every round that was measured."""
        return [p50 for r in self.round_results if r is not None and (p50 := r.percentile_ms(50)) is not None]

    def as_json(self, rows: dict[str, Row]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "server": self.server.key,
            "label": self.server.label,
            "baseline": self.server.baseline,
            "status": self.status,
            "note": self.note,
        }
        r = self.result
        if r is not None:
            data.update(
                duration_s=round(r.duration, 3),
                requests=r.requests,
                requests_per_s=round(r.requests_per_s, 1),
                rounds_requests_per_s=[round(x, 1) for x in self.rounds],
                rounds_p50_ms=[round(x, 3) for x in self.round_p50s],
                rounds_p50_added_ms=[round(x, 3) for x in added_p50_per_round_ms(self, rows)],
                windows_ratio=[round(x, 4) for x in _per_turn(self, rows, _requests_per_s, _quotient)],
                windows_ratio_per_cpu=[round(x, 4) for x in _per_turn(self, rows, _requests_per_cpu_s, _quotient)],
                windows_p50_added_ms=[round(x, 3) for x in _per_turn(self, rows, _p50_ms, _difference)],
                ratio=_round(ratio(self, rows)),
                ratio_per_cpu=_round(ratio(self, rows, per_cpu=True)),
                p50_ms=_round(r.percentile_ms(50)),
                p99_ms=_round(r.percentile_ms(99)),
                p50_added_ms=_round(added_p50_ms(self, rows)),
                ratio_interval_95=_interval_json(ratio_estimate(self, rows)),
                p50_added_interval_95_ms=_interval_json(added_p50_estimate(self, rows)),
                errors=r.errors,
                warmup_errors=r.warmup_errors,
                error_kinds=dict(r.error_kinds.most_common(5)),
                server_cpu=_round(r.server_cpu),
                requests_per_server_cpu_second=_round(r.ops_per_server_cpu_second, 1),
                generator_cpu=round(r.generator_cpu, 3),
                core_busy={str(k): round(v, 3) for k, v in r.core_busy.items()},
            )
            if self.cpu_split:
                data["server_cpu_by_process"] = {k: round(v, 3) for k, v in self.cpu_split.items()}
            if self.server.proxy == "gateway":
                data["p50_added_target_ms"] = GATEWAY_P50_TARGET_MS
        return data


def _interval_json(estimate: Estimate | None) -> list[float] | None:
    if estimate is None or math.isnan(estimate.low):
        return None
    return [round(estimate.low, 4), round(estimate.high, 4)]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


Metric = Callable[[LoadResult], "float | None"]


def _baseline_at(turns: list[Turn], round_no: int, middle: float, metric: Metric) -> float | None:
    """The baseline's ``metric`` at time ``middle`` of round ``round_no``: interpolated linearly
    between its windows just before and just after, so a steady drift of the machine's speed
    between them cancels out; the nearest window alone at either end of the round."""
    points = [(t.middle, value) for t in turns if t.round_no == round_no and (value := metric(t.result)) is not None]
    before = [point for point in points if point[0] <= middle]
    after = [point for point in points if point[0] >= middle]
    if not before or not after:
        return (before or after)[-1 if before else 0][1] if points else None
    (t0, v0), (t1, v1) = before[-1], after[0]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (middle - t0) / (t1 - t0)


def _pairs(row: Row, rows: dict[str, Row], metric: Metric) -> list[tuple[float, float]]:
    """(row's metric, its baseline's metric at the same moment) for each of the row's measured
    windows (turns of ``--interleave``, every round)."""
    base = rows.get(row.server.baseline)
    if base is None:
        return []
    pairs = []
    for turn in row.turns:
        mine = metric(turn.result)
        theirs = _baseline_at(base.turns, turn.round_no, turn.middle, metric)
        if mine is not None and theirs is not None:
            pairs.append((mine, theirs))
    return pairs


def _per_turn(row: Row, rows: dict[str, Row], metric: Metric, combine: Callable[[float, float], float]) -> list[float]:
    """``combine(mine, theirs)`` for each of :func:`_pairs`: every window's own figure."""
    return [combine(mine, theirs) for mine, theirs in _pairs(row, rows, metric)]


def t95(degrees_of_freedom: int) -> float:
    """Half-width of a two-sided 95% interval in standard errors, from Student's t: with a
    deviation estimated from a few windows the normal 1.96 would claim far too much (4 windows
    need 3.18). Tabulated up to 30 degrees of freedom, then the Cornish-Fisher expansion
    (Abramowitz and Stegun 26.7.5), within 0.001 of the table from 30 on."""
    if degrees_of_freedom <= len(T95_UP_TO_30):
        return T95_UP_TO_30[degrees_of_freedom - 1]
    z, v = Z95, degrees_of_freedom
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


@dataclass(frozen=True)
class Estimate:
    """A figure over many windows, with its 95% interval (Student's t on the windows' spread)."""

    value: float
    low: float
    high: float
    windows: int
    deviation: float  # how far one window's own figure strays, as a standard deviation

    @classmethod
    def _with_error(cls, value: float, deviation: float, windows: int) -> Estimate:
        if windows < 2:
            return cls(value, math.nan, math.nan, windows, math.nan)
        half = t95(windows - 1) * deviation / math.sqrt(windows)
        return cls(value, value - half, value + half, windows, deviation)

    @classmethod
    def of_differences(cls, pairs: list[tuple[float, float]]) -> Estimate | None:
        """The mean of ``mine - theirs``."""
        if not pairs:
            return None
        values = [mine - theirs for mine, theirs in pairs]
        deviation = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls._with_error(statistics.fmean(values), deviation, len(values))

    @classmethod
    def of_ratio(cls, pairs: list[tuple[float, float]]) -> Estimate | None:
        """``sum(mine) / sum(theirs)``, the ratio estimator, and its standard error from the
        residuals ``mine - ratio * theirs``. The mean of per-window quotients would be biased
        upwards by about the square of a window's relative spread (1.4% at 12%), since 1/x is convex."""
        theirs_total = sum(theirs for _, theirs in pairs)
        if not pairs or not theirs_total:
            return None
        value = sum(mine for mine, _ in pairs) / theirs_total
        if len(pairs) < 2:
            return cls._with_error(value, 0.0, 1)
        residual_sd = math.sqrt(sum((mine - value * theirs) ** 2 for mine, theirs in pairs) / (len(pairs) - 1))
        return cls._with_error(value, residual_sd / (theirs_total / len(pairs)), len(pairs))

    def interval(self, spec: str, unit: str = "") -> str:
        if math.isnan(self.low):
            return f"{self.windows} window, no interval"
        return (
            f"95% interval {self.low:{spec}}{unit} to {self.high:{spec}}{unit} over {self.windows} windows"
            f" (one window strays by {self.deviation:{spec.lstrip('+')}}{unit})"
        )


def _quotient(mine: float, theirs: float) -> float:
    return mine / theirs if theirs else math.nan


def _difference(mine: float, theirs: float) -> float:
    return mine - theirs


def _requests_per_s(result: LoadResult) -> float | None:
    return result.requests_per_s or None


def _requests_per_cpu_s(result: LoadResult) -> float | None:
    return result.ops_per_server_cpu_second


def _p50_ms(result: LoadResult) -> float | None:
    return result.percentile_ms(50)


def ratio_estimate(row: Row, rows: dict[str, Row], per_cpu: bool = False) -> Estimate | None:
    """Throughput relative to the row's unguarded baseline in the same run: the row's requests
    over the baseline's at the same moments (:func:`_baseline_at`), so each window is compared
    with the machine as fast as it was then. One window strays by about 12% on this machine
    (2026-11-28): the interval says whether a target was shown."""
    return Estimate.of_ratio(_pairs(row, rows, _requests_per_cpu_s if per_cpu else _requests_per_s))


def ratio(row: Row, rows: dict[str, Row], per_cpu: bool = False) -> float | None:
    estimate = ratio_estimate(row, rows, per_cpu)
    return None if estimate is None else estimate.value


def added_p50_estimate(row: Row, rows: dict[str, Row]) -> Estimate | None:
    """The row's p50 minus its unguarded baseline's p50 at the same moment, in ms, window by window."""
    if rows.get(row.server.baseline) is row:
        return None
    return Estimate.of_differences(_pairs(row, rows, _p50_ms))


def added_p50_ms(row: Row, rows: dict[str, Row]) -> float | None:
    estimate = added_p50_estimate(row, rows)
    return None if estimate is None else estimate.value


def _per_round(row: Row, rows: dict[str, Row], metric: Metric, combine: Callable[[float, float], float]) -> list[float]:
    """``combine(row's metric, its baseline's)``, whole round against whole round, for each round
    both were measured in."""
    base = rows.get(row.server.baseline)
    if base is None or len(row.round_results) != len(base.round_results):
        return []
    values = []
    for mine, theirs in zip(row.round_results, base.round_results):
        a = metric(mine) if mine is not None else None
        b = metric(theirs) if theirs is not None else None
        if a is not None and b is not None:
            values.append(combine(a, b))
    return values


def added_p50_per_round_ms(row: Row, rows: dict[str, Row]) -> list[float]:
    """Each round's own +p50, whole round against whole round (the notes show them beside the per-window figures)."""
    return [] if rows.get(row.server.baseline) is row else _per_round(row, rows, _p50_ms, _difference)


# --------------------------------------------------------------------------------------------
# Tokens and the JWKS
# --------------------------------------------------------------------------------------------


class TokenMint:
    """An ES256 signing key and RFC 9068 access tokens for a given resource."""

    def __init__(self) -> None:
        from joserfc.jwk import ECKey

        self.kid = uuid.uuid4().hex[:16]
        self.key = ECKey.generate_key(
            "P-256",
            parameters={"kid": self.kid, "alg": "ES256", "use": "sig"},
            private=True,
        )

    def jwks(self) -> str:
        return json.dumps({"keys": [self.key.as_dict(private=False)]})

    def token(self, resource: str) -> str:
        from joserfc import jwt

        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "bench-user",
            "aud": resource,
            "client_id": "bench",
            "scope": SCOPE,
            "iat": now,
            "exp": now + TOKEN_TTL,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}, claims, self.key
        )


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def call_request(host: str, token: str | None) -> bytes:
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return build_request("POST", "/mcp", host, headers, CALL)


class FreshTokenWorker:
    """Sends the ``tools/call`` with the next token of a pre-minted pool on each request."""

    def __init__(self, conn: HttpConnection, requests: Iterator[bytes]):
        self.conn = conn
        self.requests = requests

    async def op(self) -> int:
        response = await self.conn.send(next(self.requests))
        _check(response)
        return 1

    async def recover(self, exc: Exception) -> None:
        return None

    def close(self) -> None:
        self.conn.close()


def _check(response: Response) -> None:
    if response.status != 200 or EXPECT not in response.body:
        raise OpError(
            f"HTTP {response.status}: {response.body[:160].decode('utf-8', 'replace')}"
        )


class _Pool:
    """Pre-built requests, one per token; wraps around (then counts cache hits) if exhausted."""

    def __init__(self, requests: list[bytes]):
        self.requests = requests
        self.index = 0
        self.wrapped = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.index >= len(self.requests):
            self.index = 0
            self.wrapped += 1
        raw = self.requests[self.index]
        self.index += 1
        return raw


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _uvicorn(app: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--factory",
        "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def running(
    server: ServerProcess, ready_path: str
) -> AsyncIterator[ServerProcess]:
    try:
        server.start()
        await server.wait_ready(ready_path, 60.0)
        yield server
    finally:
        server.stop()


@dataclass
class Launched:
    """The server under test as the clients see it: ``processes[0]`` listens on ``port``."""

    port: int
    resource: str
    processes: list[ServerProcess]

    def log_tail(self, lines: int) -> str:
        if len(self.processes) == 1:
            return self.processes[0].log_tail(lines)
        return "\n".join(f"  {p.name}:\n{p.log_tail(lines)}" for p in self.processes)


def _gateway_argv(upstream: str, resource: str, port: int, jwks_uri: str, policy: Path) -> list[str]:
    """``gatehouse gateway`` as shipped: the venv's console script (or the CLI module's ``main``)."""
    script = Path(sys.executable).with_name("gatehouse")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from gatehouse.cli import main; main()"]
    return [
        *command, "gateway",
        "--upstream", upstream, "--issuer", ISSUER, "--jwks-uri", jwks_uri,
        "--host", "127.0.0.1", "--port", str(port), "--path", "/mcp",
        "--resource", resource, "--policy", str(policy),
    ]  # fmt: skip


def _nginx_argv(upstream_port: int, port: int, work: Path) -> list[str]:
    """nginx in one process (no master), proxying to the upstream over kept-alive HTTP/1.1
    connections, unbuffered, with the client's ``Authorization`` stripped and under the
    ``SCHED_BATCH`` policy, as the gateway does."""
    assert NGINX is not None
    prefix = work / f"nginx-{port}"
    prefix.mkdir(exist_ok=True)
    temp_paths = [f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]
    config = prefix / "nginx.conf"
    config.write_text(
        "\n".join([
            "daemon off;", "master_process off;", "worker_processes 1;",
            f"pid {prefix / 'nginx.pid'};", "error_log stderr warn;",
            "events { worker_connections 1024; }",
            "http {", "access_log off;", *temp_paths,
            f"upstream mcp {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}",
            f"server {{ listen 127.0.0.1:{port}; location / {{",
            "  proxy_pass http://mcp; proxy_http_version 1.1; proxy_buffering off;",
            '  proxy_set_header Connection ""; proxy_set_header Authorization "";',
            "} }", "}", "",
        ])
    )  # fmt: skip
    as_batch_task = [CHRT, "--batch", "0"] if CHRT else []  # as the gateway runs (gatehouse.guard.scheduling)
    return [*as_batch_task, NGINX, "-p", str(prefix), "-e", "stderr", "-c", str(config)]


def _bench_env(ctx: dict[str, Any], resource: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_RESOURCE": resource,
        "BENCH_ISSUER": ISSUER,
        "BENCH_JWKS_URI": ctx["jwks_uri"],
        "FASTMCP_LOG_LEVEL": "WARNING",
        "FASTMCP_SHOW_SERVER_BANNER": "false",
        **extra,
    }


@dataclass
class SharedServer:
    """The process every SHARED_SDK row talks to: one SDK server instance, a port per guise."""

    process: ServerProcess
    ports: dict[str, int]  # "sdk" (bare), "gatehouse"


@contextlib.asynccontextmanager
async def shared_sdk_server(
    specs: list[Server], ctx: dict[str, Any], server_cpu: int | None, label: str
) -> AsyncIterator[SharedServer | None]:
    """Start the SHARED_SDK process (``serve_ports.py``) on the server core with a port for each
    ``port_name`` the rows use; None when no row uses it. Its bare and guarded rows then differ
    in the guard alone: same process, same server instance, same memory layout and hash seed."""
    names = {"sdk"} | {s.port_name for s in specs if s.app == SHARED_SDK}
    if not any(s.app == SHARED_SDK for s in specs):
        yield None
        return
    ports: dict[str, int] = {}
    for name in sorted(names):
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    argv = [sys.executable, str(BENCH_DIR / "serve_ports.py"), SHARED_SDK, *map(str, ports.values())]
    env = _bench_env(ctx, f"http://127.0.0.1:{ports['sdk']}/mcp", BENCH_PORTS=json.dumps(ports))
    process = ServerProcess(
        "upstream", argv, ports["sdk"], Path(ctx["work"]) / f"sdk-shared-{label}.log", env=env, cpu=server_cpu
    )
    async with running(process, "/mcp"):
        cpus = sorted(process.affinity() or [])
        _log(f"SDK server, shared by {len(ports)} ports {ports}: pid {process.pid} on cpus {cpus}")
        yield SharedServer(process, ports)


@contextlib.asynccontextmanager
async def launch(
    spec: Server, ctx: dict[str, Any], server_cpu: int | None, proxy_cpu: int | None = None
) -> AsyncIterator[Launched]:
    """The server under test, started (its own process, or behind a proxy: the upstream, then
    the proxy in front) and pinned to the server core, the proxy to ``proxy_cpu`` when given; or,
    for SHARED_SDK rows, the port of ``ctx["shared"]`` (already running). Stops what it started."""
    assert spec.app is not None
    work = Path(ctx["work"])
    async with contextlib.AsyncExitStack() as stack:
        if spec.app == SHARED_SDK:
            shared: SharedServer = ctx["shared"]
            upstream, upstream_port = shared.process, shared.ports[spec.port_name]
        else:
            upstream_port = free_port()
            upstream = ServerProcess(
                spec.label if spec.proxy is None else "upstream", _uvicorn(spec.app, upstream_port), upstream_port,
                work / f"{spec.key}-{upstream_port}.log", env=_bench_env(ctx, f"http://127.0.0.1:{upstream_port}/mcp"),
                cpu=server_cpu,
            )  # fmt: skip
            await stack.enter_async_context(running(upstream, "/mcp"))
        if spec.proxy is None:
            yield Launched(upstream_port, f"http://127.0.0.1:{upstream_port}/mcp", [upstream])
            return
        port = free_port()  # the upstream listens already, so the kernel cannot hand out its port
        resource = f"http://127.0.0.1:{port}/mcp"
        if spec.proxy == "nginx":
            argv = _nginx_argv(upstream_port, port, work)
        else:
            policy = work / "gateway-policy.toml"
            policy.write_text(GATEWAY_POLICY)
            argv = [*_gateway_argv(f"http://127.0.0.1:{upstream_port}/mcp", resource, port, ctx["jwks_uri"], policy),
                    *spec.proxy_options]
        proxy = ServerProcess(
            spec.proxy, argv, port, work / f"{spec.key}-{port}.log", env=_bench_env(ctx, resource),
            cpu=server_cpu if proxy_cpu is None else proxy_cpu,
        )  # fmt: skip
        await stack.enter_async_context(running(proxy, "/mcp"))  # the gateway answers 401 when up
        yield Launched(port, resource, [proxy, upstream])


class ProcessesTracker(ServerTracker):
    """The server's CPU summed over several processes: a proxy and its upstream."""

    def __init__(self, pids: list[int], cpu: int | None) -> None:
        super().__init__(pids[0], cpu)
        self.others = pids[1:]

    def _backend_pids(self) -> list[int]:
        return list(self.others)

    def database_cpu_seconds(self) -> float:
        return 0.0


def _cpu_snapshot(processes: list[ServerProcess]) -> dict[str, float]:
    return {p.name: process_cpu_seconds(p.pid) or 0.0 for p in processes}


@dataclass
class Prepared:
    """A started server with its clients connected, ready for measured windows."""

    spec: Server
    server: Launched
    workers: list[Worker]
    tracker: ProcessesTracker
    pool: _Pool | None
    round_no: int
    results: list[LoadResult] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    cpu_used: dict[str, float] = field(default_factory=dict)  # seconds per process, all windows

    async def measure(self, duration: float, warmup: float, timeout: float) -> None:
        """One window: ``warmup`` seconds of load, then ``duration`` seconds measured."""
        before = _cpu_snapshot(self.server.processes)
        result = await run_load(self.workers, duration, warmup, self.tracker, timeout, close_workers=False)
        after = _cpu_snapshot(self.server.processes)
        self.results.append(result)
        self.turns.append(Turn(self.round_no, time.monotonic() - result.duration / 2, result))
        for name in after:
            self.cpu_used[name] = self.cpu_used.get(name, 0.0) + after[name] - before[name]

    def forget_warmup(self) -> None:
        self.results.clear()
        self.turns.clear()
        self.cpu_used.clear()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def row(self, server_cpu: int | None, client_cpu: int) -> Row:
        result = combined(self.results)
        split: dict[str, float] = {}
        total = sum(self.cpu_used.values())
        if len(self.server.processes) > 1 and result.server_cpu and total > 0:
            split = {name: result.server_cpu * seconds / total for name, seconds in self.cpu_used.items()}
        on_client_core = split.get(self.spec.proxy or "", 0.0) if self.spec.proxy_own_core else 0.0
        notes = cpu_warnings(result, server_cpu, client_cpu, on_client_core)
        if split:
            notes.append("server cpu = " + " + ".join(f"{name} {share:.0%}" for name, share in split.items()))
            if result.requests:  # over the measured windows only, like ``server_cpu`` (cpu_used has the warm-ups too)
                per_call = {name: share * result.duration / result.requests * 1e6 for name, share in split.items()}
                notes.append("cpu per call = " + " + ".join(f"{name} {us:.0f} us" for name, us in per_call.items()))
        if self.pool is not None and self.pool.wrapped:
            notes.append(f"token pool reused {self.pool.wrapped} time(s): some calls were cache hits")
        if result.errors or result.warmup_errors:
            notes.append("server log ends with:\n" + self.server.log_tail(8))
        return Row(self.spec, result, note="; ".join(notes), cpu_split=split, turns=list(self.turns))


async def prepare(
    spec: Server,
    args: argparse.Namespace,
    ctx: dict[str, Any],
    server_cpu: int | None,
    loaded_seconds: float,
    pool_hint: float,
    stack: contextlib.AsyncExitStack,
) -> Prepared | Row:
    """Start the server (stopped when ``stack`` closes), check that it answers as it should,
    and connect the clients; a :class:`Row` that says why if it does not. ``loaded_seconds``
    and ``pool_hint`` (requests/s) size the pool of fresh tokens."""
    mint: TokenMint = ctx["mint"]
    proxy_cpu = args.client_cpu if spec.proxy_own_core and server_cpu is not None else None
    server = await stack.enter_async_context(launch(spec, ctx, server_cpu, proxy_cpu))
    for index, process in enumerate(server.processes):  # the first listens on server.port (a shared process on several)
        url = f"http://127.0.0.1:{server.port}" if index == 0 else process.base_url
        _log(
            f"{spec.label}: {process.name + ' ' if len(server.processes) > 1 else ''}pid {process.pid} "
            f"on cpus {sorted(process.affinity() or [])}, {url}"
        )
    port, resource = server.port, server.resource
    host = f"127.0.0.1:{port}"
    token = mint.token(resource) if spec.authenticated or spec.sends_token else None
    probe = HttpConnection("127.0.0.1", port)
    try:
        if spec.authenticated:  # the guard must refuse a call without a token
            refused = await probe.send(call_request(host, None))
            if refused.status != 401:
                return Row(spec, status="failed", note=f"no token: HTTP {refused.status}, expected 401")
        first = await probe.send(call_request(host, token))
    finally:
        probe.close()
    if first.status != 200 or EXPECT not in first.body:
        body = first.body[:300].decode("utf-8", "replace")
        return Row(spec, status="failed", note=f"first call: HTTP {first.status}: {body}\n{server.log_tail(12)}")
    pool = None
    if spec.fresh_tokens:
        count = int(pool_hint * loaded_seconds * 1.3) + 2000
        started = time.perf_counter()
        pool = _Pool([call_request(host, mint.token(resource)) for _ in range(count)])
        _log(f"  minted {count:,} tokens in {time.perf_counter() - started:.1f} s")
        workers: list[Worker] = [
            FreshTokenWorker(HttpConnection("127.0.0.1", port), pool) for _ in range(args.concurrency)
        ]
    else:
        raw = call_request(host, token)
        workers = [StaticWorker(HttpConnection("127.0.0.1", port), raw, 200, EXPECT) for _ in range(args.concurrency)]
    tracker = ProcessesTracker([p.pid for p in server.processes], server_cpu)
    prepared = Prepared(spec, server, workers, tracker, pool, ctx.get("round_no", 0))
    stack.callback(prepared.close)
    return prepared


async def run_server(
    spec: Server, args: argparse.Namespace, ctx: dict[str, Any], server_cpu: int | None, pool_hint: float
) -> Row:
    """Start one server, measure it in one window, stop it."""
    async with contextlib.AsyncExitStack() as stack:
        prepared = await prepare(spec, args, ctx, server_cpu, args.warmup + args.duration, pool_hint, stack)
        if isinstance(prepared, Row):
            return prepared
        await prepared.measure(args.duration, args.warmup, args.timeout)
        return prepared.row(server_cpu, args.client_cpu)


async def run_interleaved(
    specs: list[Server], args: argparse.Namespace, ctx: dict[str, Any], server_cpu: int | None, pool_hint: float
) -> list[Row]:
    """Start every server at once, then measure them in turns of ``args.interleave`` seconds
    until each has had ``args.duration``: a change in the machine's speed during the run (other
    tenants of the host) then reaches every server alike, not whichever ran at the time."""
    slices = max(1, math.ceil(args.duration / args.interleave))
    slice_seconds = args.duration / slices
    slice_warmup = min(SLICE_WARMUP, slice_seconds / 4)
    loaded_seconds = args.warmup + args.duration + slices * slice_warmup
    rows: dict[str, Row] = {}
    async with contextlib.AsyncExitStack() as stack:
        ready: list[Prepared] = []
        for spec in specs:
            try:
                prepared = await prepare(spec, args, ctx, server_cpu, loaded_seconds, pool_hint, stack)
            except (ServerError, OSError, TimeoutError) as exc:
                prepared = Row(spec, status="failed", note=str(exc))
            if isinstance(prepared, Row):
                rows[spec.key] = prepared
                continue
            await prepared.measure(0.0, args.warmup, args.timeout)
            prepared.forget_warmup()
            ready.append(prepared)
        _log(f"{len(ready)} servers up: {slices} turns of {slice_seconds:g} s each, each after {slice_warmup:g} s of load")
        for turn in range(slices):
            shift = turn % len(ready) if ready else 0
            for prepared in ready[shift:] + ready[:shift]:
                await prepared.measure(slice_seconds, slice_warmup, args.timeout)
        for prepared in ready:
            rows[prepared.spec.key] = prepared.row(server_cpu, args.client_cpu)
            _log(f"  {prepared.spec.label}: " + _progress(rows[prepared.spec.key]))
    return [rows[spec.key] for spec in specs]


async def run_all(
    args: argparse.Namespace, server_cpu: int | None, rows: dict[str, Row]
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    only = set(_split(args.only))
    specs = [s for s in SERVERS if not only or s.key in only]
    mint = TokenMint()
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-guard-") as work:
        jwks_port = free_port()
        jwks = ServerProcess(
            "jwks",
            [sys.executable, "-m", "uvicorn", "apps.guard_jwks:app", "--app-dir", str(BENCH_DIR),
             "--host", "127.0.0.1", "--port", str(jwks_port), "--no-access-log", "--log-level", "warning"],
            jwks_port,
            Path(work) / "jwks.log",
            env={**os.environ, "BENCH_JWKS": mint.jwks()},
            cpu=args.client_cpu if server_cpu is not None else None,
        )  # fmt: skip
        async with running(jwks, "/health"):
            ctx = {"mint": mint, "jwks_uri": f"{jwks.base_url}/jwks", "work": work}
            results: dict[str, list[Row]] = {}
            for (
                spec
            ) in specs:  # the table keeps this order whatever order the servers run in
                rows[spec.key] = Row(
                    spec,
                    status="skipped" if spec.app is None else "not run",
                    note=spec.skip_note,
                )
            measured = [spec for spec in specs if spec.app is not None]
            for round_no in range(args.rounds):
                if args.rounds > 1:
                    _log(f"round {round_no + 1} of {args.rounds}")
                async with shared_sdk_server(measured, ctx, server_cpu, f"round{round_no + 1}") as shared:
                    ctx["shared"], ctx["round_no"] = shared, round_no
                    await run_round(round_no, measured, args, ctx, server_cpu, rows, results)


async def run_round(
    round_no: int,
    measured: list[Server],
    args: argparse.Namespace,
    ctx: dict[str, Any],
    server_cpu: int | None,
    rows: dict[str, Row],
    results: dict[str, list[Row]],
) -> None:
    """One round: every server measured once, interleaved or one after the other."""
    if args.interleave:
        for row in await run_interleaved(measured, args, ctx, server_cpu, _pool_hint(results)):
            results.setdefault(row.server.key, []).append(row)
            rows[row.server.key] = _median(results[row.server.key])
        return
    # Each round starts one server later, so no server always runs first or last.
    shift = round_no % len(measured) if measured else 0
    for spec in measured[shift:] + measured[:shift]:
        hint = _pool_hint(results)
        try:
            row = await run_server(spec, args, ctx, server_cpu, hint)
        except (ServerError, OSError, TimeoutError) as exc:
            row = Row(spec, status="failed", note=str(exc))
        results.setdefault(spec.key, []).append(row)
        rows[spec.key] = _median(results[spec.key])
        _log("  " + _progress(row))


def _pool_hint(results: dict[str, list[Row]]) -> float:
    """Requests/s to size the fresh-token pool for: the cached guard's best so far, else POOL_HINT."""
    rates = [
        r.result.requests_per_s
        for r in results.get("gatehouse", [])
        if r.result is not None
    ]
    return max(rates) if rates else POOL_HINT


def _median(rows: list[Row]) -> Row:
    """Of several rounds, the one with the median throughput (its latencies and CPU with it)."""
    done = [r for r in rows if r.result is not None]
    if not done:
        return rows[-1]
    done.sort(key=lambda r: r.result.requests_per_s)
    chosen = done[(len(done) - 1) // 2]
    chosen.round_results = [r.result for r in rows]
    # chosen's own turns may hold earlier rounds' already: one entry per window
    every_turn = {(turn.round_no, turn.middle): turn for r in rows for turn in r.turns}
    chosen.turns = sorted(every_turn.values(), key=lambda turn: (turn.round_no, turn.middle))
    return chosen


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

COLUMNS = (
    "server",
    "req/s",
    "ratio",
    "p50 ms",
    "p99 ms",
    "+p50 ms",
    "errors",
    "srv cpu",
    "req/cpu-s",
    "ratio/cpu",
    "gen cpu",
)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(row: Row, rows: dict[str, Row]) -> list[str]:
    r = row.result
    if r is None:
        return [row.server.label, row.status] + [""] * (len(COLUMNS) - 2)
    return [
        row.server.label,
        _fmt(r.requests_per_s, ",.0f"),
        _fmt(ratio(row, rows), ".2f"),
        _fmt(r.percentile_ms(50), ".2f"),
        _fmt(r.percentile_ms(99), ".2f"),
        _fmt(added_p50_ms(row, rows), "+.2f"),
        str(r.errors),
        _fmt(r.server_cpu, ".0%"),
        _fmt(r.ops_per_server_cpu_second, ",.0f"),
        _fmt(ratio(row, rows, per_cpu=True), ".2f"),
        f"{r.generator_cpu:.0%}",
    ]


def _progress(row: Row) -> str:
    r = row.result
    if r is None:
        return f"{row.status}: {row.note.splitlines()[0] if row.note else ''}"
    return (
        f"{r.requests_per_s:,.0f} req/s, p50 {_fmt(r.percentile_ms(50), '.2f')} ms, "
        f"p99 {_fmt(r.percentile_ms(99), '.2f')} ms, {r.errors} errors, server {_fmt(r.server_cpu, '.0%')} "
        f"of core, generator {r.generator_cpu:.0%}"
        + (f" [{row.note.splitlines()[0]}]" if row.note else "")
    )


def render_table(rows: dict[str, Row]) -> str:
    table = [list(COLUMNS)] + [_cells(row, rows) for row in rows.values()]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [line(table[0]), "  ".join("-" * w for w in widths)] + [
        line(cells) for cells in table[1:]
    ]
    notes = []
    for row in rows.values():
        if row.note:
            notes.append(f"  {row.server.label}: {row.note}")
        if len(row.rounds) > 1:
            added = added_p50_per_round_ms(row, rows)
            notes.append(
                f"  {row.server.label}: rounds "
                + ", ".join(f"{x:,.0f}" for x in row.rounds)
                + " req/s, p50 "
                + ", ".join(f"{x:.2f}" for x in row.round_p50s)
                + " ms"
                + ("; +p50 " + ", ".join(f"{x:+.2f}" for x in added) + " ms" if added else "")
            )
        throughput, latency = ratio_estimate(row, rows), added_p50_estimate(row, rows)
        if throughput is not None and latency is not None:
            notes.append(
                f"  {row.server.label}: ratio {throughput.value:.3f}, {throughput.interval('.3f')};"
                f" +p50 {latency.value:+.2f} ms, {latency.interval('+.2f', ' ms')}"
            )
        if row.result is not None:
            for kind, count in row.result.error_kinds.most_common(3):
                notes.append(f"  {row.server.label}: {count} x {kind}")
    if notes:
        out += ["", "notes:", *notes]
    verdicts = [line for line in (guard_verdict(rows), gateway_verdict(rows)) if line]
    if verdicts:
        out += ["", *verdicts]
    return "\n".join(out)


def against_target(estimate: Estimate, target: float, at_most: bool, spec: str, unit: str = "") -> str:
    """``estimate`` against ``target`` (an upper bound when ``at_most``): met or MISSED by the
    mean, and whether the 95% interval lies wholly on that side, so noise cannot explain it."""
    met = estimate.value <= target if at_most else estimate.value >= target
    near, far = (estimate.high, estimate.low) if at_most else (estimate.low, estimate.high)
    if math.isnan(near):
        shown = "one window: no interval"
    elif (near <= target) if at_most else (near >= target):
        shown = f"the whole 95% interval is within it ({estimate.low:{spec}} to {estimate.high:{spec}}{unit})"
    elif (far > target) if at_most else (far < target):
        shown = f"the whole 95% interval is past it ({estimate.low:{spec}} to {estimate.high:{spec}}{unit})"
    else:
        shown = f"not beyond the noise: the 95% interval is {estimate.low:{spec}} to {estimate.high:{spec}}{unit}"
    bound = "<=" if at_most else ">="
    return f"target {bound} {target:g}{unit}: {'met' if met else 'MISSED'}; {shown}"


def guard_verdict(rows: dict[str, Row]) -> str:
    """A line on gatehouse.guard's throughput against TARGET ("" when it was not measured)."""
    row = rows.get("gatehouse")
    estimate = ratio_estimate(row, rows) if row is not None and row.result is not None else None
    if estimate is None:
        return ""
    return (
        f"gatehouse.guard keeps {estimate.value:.3f} of the unguarded SDK server's throughput over"
        f" {estimate.windows} window{'' if estimate.windows == 1 else 's'}"
        f" ({against_target(estimate, TARGET, at_most=False, spec='.3f')})"
    )


def gateway_verdict(rows: dict[str, Row]) -> str:
    """A line on the gateway against its p50 target for each placement measured ("" if none):
    beside its upstream on the server's core, and on the generator's core, away from its upstream."""
    lines = []
    for key, nginx_key, placement in (
        ("gateway", "nginx", "on the server's core"),
        ("gateway-own", "nginx-own", "on the generator's core"),
    ):
        row = rows.get(key)
        if row is None or row.result is None:
            continue
        added = added_p50_estimate(row, rows)
        if added is None:
            lines.append(f"gateway {placement}: no unguarded SDK row in this run to compare its p50 with")
            continue
        r = row.result
        lines.append(
            f"gateway {placement}: {r.requests_per_s:,.0f} req/s ({_fmt(ratio(row, rows), '.2f')}x unguarded SDK), "
            f"p50 {_fmt(r.percentile_ms(50), '.2f')} ms, p99 {_fmt(r.percentile_ms(99), '.2f')} ms; "
            f"adds {added.value:+.2f} ms at p50 ({against_target(added, GATEWAY_P50_TARGET_MS, True, '+.2f', ' ms')})"
            + _proxy_floor(rows.get(nginx_key), rows)
        )
    return "\n".join(lines)


def guard_in_process(rows: dict[str, Row]) -> dict[str, Any] | None:
    """What the guard adds per call, measured in this process (guard_cost.py): no HTTP, no
    process-to-process noise; None when the guard was not among the servers."""
    if "gatehouse" not in rows:
        return None
    figures: dict[str, Any] = {k: round(v, 3) for k, v in guard_cost(TokenMint(), ISSUER, SCOPE, CALL).items()}
    figures["line"] = (
        f"guard in-process: its own work {figures['guard_own_us']:.1f} us per tools/call; around the SDK server"
        f" ({figures['sdk_us']:.0f} us a call bare) it adds {figures['added_to_sdk_us']:.1f} us: a ratio of"
        f" {figures['ratio']:.3f} (target >= {TARGET:g}); {figures['added_reading_the_body_us']:.1f} us and"
        f" {figures['ratio_reading_the_body']:.3f} where it must read the body; a do-nothing layer adds"
        f" {figures['control_added_us']:+.1f} us"
    )
    return figures


def _proxy_floor(nginx: Row | None, rows: dict[str, Row]) -> str:
    """What nginx, a proxy doing no auth, added in the same place in the same run: the floor for any proxy process."""
    added = added_p50_ms(nginx, rows) if nginx is not None and nginx.result is not None else None
    return "" if added is None else f"; nginx in its place adds {added:+.2f} ms"


def draw_chart(rows: dict[str, Row], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(rows.values())
    labels = [textwrap.fill(row.server.label, 16) for row in shown]
    values = [row.result.requests_per_s if row.result else 0.0 for row in shown]
    colors = []
    for row in shown:
        if row.result is None:
            colors.append("#cccccc")
        elif not row.server.authenticated:
            colors.append("#9e9e9e")
        elif row.server.key.startswith("gatehouse"):
            colors.append("#2e7d32")
        elif row.server.proxy == "gateway":
            colors.append("#66bb6a")
        else:
            colors.append("#1565c0")
    fig, ax = plt.subplots(figsize=(13, 5.4), dpi=120)
    bars = ax.bar(range(len(shown)), values, color=colors)
    top = max(values) if any(values) else 1.0
    for bar, row in zip(bars, shown):
        x = bar.get_x() + bar.get_width() / 2
        if row.result is None:
            note = textwrap.fill(f"{row.status}: {row.note}", 20)
            ax.text(
                x,
                top * 0.03,
                note,
                ha="center",
                va="bottom",
                fontsize=7,
                color="#555555",
            )
            continue
        r = ratio(row, rows)
        text = f"{row.result.requests_per_s:,.0f}/s"
        compared = rows.get(row.server.baseline) is not row
        if r is not None and compared:
            base = rows[row.server.baseline].server.label.split(",")[0]
            text += f"\n{r:.2f}× {base}"
        added = added_p50_ms(row, rows)
        if added is not None and compared:
            text += f"\np50 {added:+.2f} ms"
            if row.server.proxy == "gateway":
                text += f"\n(target ≤ {GATEWAY_P50_TARGET_MS:g} ms)"
        ax.text(
            x, bar.get_height() + top * 0.01, text, ha="center", va="bottom", fontsize=8
        )
    base = rows.get("sdk")
    if base is not None and base.result is not None:
        target = TARGET * base.result.requests_per_s
        ax.axhline(target, color="#2e7d32", linestyle="--", linewidth=0.8)
        ax.text(
            -0.5,
            target,
            f"target for gatehouse.guard: {TARGET:.2f}× SDK",
            ha="left",
            va="bottom",
            fontsize=7,
            color="#2e7d32",
        )
    ax.set_xticks(range(len(shown)), labels, fontsize=7.5)
    ax.set_ylabel("tools/call requests/s (16 clients, 1 server core)")
    ax.set_ylim(0, top * 1.3)
    ax.set_title(
        "Guarding an MCP server: throughput, ratio to and p50 added over the unguarded server\n"
        + subtitle,
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    keys = [s.key for s in SERVERS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per server (10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="warm-up seconds per server (2; 0.5 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s per server"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server N times, each round in a rotated order; report the median (1)",
    )
    parser.add_argument(
        "--interleave",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="start every server at once and measure them in turns of SECONDS until each has had "
        "--duration (0.5); 0 measures one server after the other",
    )
    parser.add_argument(
        "--concurrency", "-c", type=int, default=16, help="concurrent clients (16)"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated servers: {', '.join(keys)}"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds before a call counts as failed (15)",
    )
    parser.add_argument(
        "--server-cpu", type=int, default=0, help="core for the servers (0)"
    )
    parser.add_argument(
        "--client-cpu", type=int, default=1, help="core for the load generator (1)"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin anything to cores"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write results here (default: bench/results/)",
    )
    parser.add_argument(
        "--no-json", action="store_true", help="do not write a JSON file"
    )
    parser.add_argument(
        "--no-chart", action="store_true", help="do not draw the chart (bench/results/guard-<time>.png)"
    )
    parser.add_argument(
        "--no-copy",
        action="store_true",
        help="do not replace the committed chart bench/results/guard.png, even after a full run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    unknown = set(_split(args.only)) - set(keys)
    if unknown:
        parser.error(
            f"unknown server(s) {', '.join(sorted(unknown))}; choose from {', '.join(keys)}"
        )
    if not args.no_chart and importlib.util.find_spec("matplotlib") is None:
        parser.error(
            "matplotlib, which draws the chart, is not installed: run `make bench` (or "
            "`pip install -e '.[bench]'`), or pass --no-chart"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_cpu, pin_warning = pin_cores(args)
    env = environment(args, server_cpu)
    env["rounds"] = args.rounds
    env["interleave_seconds"] = args.interleave
    env["loadavg_before"] = os.getloadavg()
    if pin_warning:
        _log(f"warning: {pin_warning}")
    _log(
        f"{args.concurrency} clients, {args.duration:g} s measured after {args.warmup:g} s warm-up per server; "
        f"server core {server_cpu}, generator core {env['client_cpu']}; load average {env['loadavg_before'][0]:.2f}"
    )
    rows: dict[str, Row] = {}
    started = time.monotonic()
    interrupted = run_to_completion(run_all(args, server_cpu, rows))
    if not rows:
        print("no server measured")
        return 130 if interrupted else 1
    print()
    print(render_table(rows))
    in_process = guard_in_process(rows) if not interrupted else None
    if in_process:
        print(in_process["line"])
    print(
        "\nratio = requests/s over the unguarded server of the same framework (SDK or FastMCP), same run;"
        "\n+p50 ms = p50 latency minus that unguarded server's p50 (gateway target: at most"
        f" {GATEWAY_P50_TARGET_MS:g} ms);"
        "\nboth over every measured window (turn) of every round, each window against the unguarded"
        "\nserver at the same moment, interpolated between its windows just before and after: ratio"
        "\nis requests over its requests, +p50 the mean difference (the notes give 95% intervals);"
        "\nreq/s, p50 and p99 are those of the round with the median req/s;"
        "\nsrv cpu = the server's share of its core (for the gateway: gateway and upstream processes"
        "\ntogether); req/cpu-s = requests per second of server CPU, and ratio/cpu the same ratio on it"
        "\n(robust when other processes share the core); gen cpu = the load generator's share of its"
        f"\ncore. Total {time.monotonic() - started:.0f} s."
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not args.no_json:
        path = args.json or RESULTS_DIR / f"guard-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "environment": env,
            "results": [row.as_json(rows) for row in rows.values()],
        }
        if in_process:
            data["guard_in_process"] = {k: v for k, v in in_process.items() if k != "line"}
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"results written to {path}")
    if not args.no_chart:
        chart = RESULTS_DIR / f"guard-{stamp}.png"
        subtitle = (
            f"{env['cpu_model'] or 'CPU'}, Python {env['python']}, {args.duration:g} s per server, "
            f"{time.strftime('%Y-%m-%d')}"
        )
        draw_chart(rows, chart, subtitle)
        print(f"chart written to {chart}")
        complete = not args.quick and not args.only and not interrupted and len(rows) == len(SERVERS)
        if not args.no_copy and complete:
            shutil.copyfile(chart, CHART)
            print(f"chart copied to {CHART}")
        elif not args.no_copy:
            print(f"the committed chart {CHART} is left as it is: only a full run replaces it")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
