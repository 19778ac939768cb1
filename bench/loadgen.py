"""Closed-loop load generation: N workers, each doing one operation after another.

A *worker* owns one keep-alive connection and implements::

    async def op(self) -> int              # one operation; returns the HTTP requests it made
    async def recover(self, exc) -> None   # after a failed op (e.g. fetch a new refresh token)

:func:`run_load` runs the workers through a warm-up, then a measured window. Only operations
that *complete* inside the window count; their latencies give p50/p99. CPU time is sampled at
the window's edges: the generator's own (``getrusage``), the server's processes (``/proc``) and
each core's busy time, so a run can show that the generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from flow import AuthCodeFlow, CookieJar
from httpclient import HttpConnection, Response, build_request_head, finish_request
from servers import core_times

__all__ = [
    "AuthCodeWorker",
    "LoadResult",
    "OpError",
    "RefreshWorker",
    "ServerProbe",
    "StaticWorker",
    "Worker",
    "combined",
    "run_load",
]

DEFAULT_OP_TIMEOUT = 15.0
SERVER_REFRESH_SECONDS = 0.1


class OpError(Exception):
    """An operation got an answer it did not expect."""


class ServerProbe(Protocol):
    """The server's processes: see :class:`servers.ServerTracker`."""

    def refresh(self) -> None: ...

    def cpu_seconds(self) -> float: ...

    def database_cpu_seconds(self) -> float: ...


class Worker(Protocol):
    async def op(self) -> int: ...

    async def recover(self, exc: Exception) -> None: ...

    def close(self) -> None: ...


def _describe(response: Response) -> str:
    text = response.body[:160].decode("utf-8", "replace").replace("\n", " ")
    return f"HTTP {response.status}: {text}"


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


class StaticWorker:
    """Sends the same pre-built request again and again (bare POST, JWKS, client credentials)."""

    def __init__(self, conn: HttpConnection, raw: bytes, expect: int = 200, must_contain: bytes | None = None):
        self.conn = conn
        self.raw = raw
        self.expect = expect
        self.must_contain = must_contain

    async def op(self) -> int:
        response = await self.conn.send(self.raw)
        if response.status != self.expect or (self.must_contain is not None and self.must_contain not in response.body):
            raise OpError(_describe(response))
        return 1

    async def recover(self, exc: Exception) -> None:
        return None

    def close(self) -> None:
        self.conn.close()


class RefreshWorker:
    """A public client refreshing its token in a loop, always presenting the rotated token.

    ``bootstrap`` obtains a new refresh token (through the authorization-code flow); it is used
    when the chain breaks, e.g. after a failed refresh.
    """

    def __init__(
        self,
        conn: HttpConnection,
        token_path: str,
        client_id: str,
        refresh_token: str,
        bootstrap: Callable[[], Awaitable[str]],
    ) -> None:
        self.conn = conn
        self.head = build_request_head(
            "POST", token_path, conn.host_header, [("Content-Type", "application/x-www-form-urlencoded")]
        )
        self.client_id = quote(client_id, safe="")
        self.refresh_token = refresh_token
        self.bootstrap = bootstrap

    def _request(self) -> bytes:
        token = quote(self.refresh_token, safe="")
        body = f"grant_type=refresh_token&refresh_token={token}&client_id={self.client_id}".encode()
        return finish_request(self.head, body)

    async def op(self) -> int:
        response = await self.conn.send(self._request())
        if response.status != 200:
            raise OpError(_describe(response))
        try:
            self.refresh_token = json.loads(response.body)["refresh_token"]
        except (ValueError, KeyError) as exc:
            raise OpError(f"no refresh_token in answer: {_describe(response)}") from exc
        return 1

    async def recover(self, exc: Exception) -> None:
        self.refresh_token = await self.bootstrap()

    def close(self) -> None:
        self.conn.close()


class AuthCodeWorker:
    """One whole authorization-code flow per operation: authorize, login, consent, token.

    With ``keep_session`` the worker keeps its browser cookies, so only its first flow logs in;
    otherwise every flow starts with an empty cookie jar (a fresh login each time).
    """

    def __init__(self, conn: HttpConnection, flow: AuthCodeFlow, keep_session: bool = False) -> None:
        self.conn = conn
        self.flow = flow
        self.keep_session = keep_session
        self.jar = CookieJar()

    async def op(self) -> int:
        jar = self.jar if self.keep_session else CookieJar()
        result = await self.flow.authorize(self.conn, jar)
        await self.flow.exchange_code(self.conn, result)
        return result.requests + 1

    async def recover(self, exc: Exception) -> None:
        self.jar = CookieJar()

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# The load loop
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one measured window produced."""

    duration: float
    ops: int
    requests: int
    errors: int  # failures in the window, plus ops in flight at its end that then timed out
    latencies: list[float]
    error_kinds: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0
    warmup_error_kinds: Counter[str] = field(default_factory=Counter)
    generator_cpu: float = 0.0  # fraction of one core
    server_cpu: float | None = None  # fraction of one core, server processes together
    database_cpu: float | None = None  # the PostgreSQL backends' part of server_cpu
    core_busy: dict[int, float] = field(default_factory=dict)  # fraction busy, per core

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.duration if self.duration else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    @property
    def ops_per_server_cpu_second(self) -> float | None:
        """Operations per second of server CPU: robust to other processes sharing the core."""
        if not self.server_cpu:
            return None
        return self.ops_per_s / self.server_cpu

    def percentile_ms(self, p: float) -> float | None:
        """Nearest-rank percentile of the operation latencies, in milliseconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
        return ordered[rank - 1] * 1000


@dataclass
class _Window:
    op_timeout: float = DEFAULT_OP_TIMEOUT
    measuring: bool = False
    stopped: bool = False
    ops: int = 0
    requests: int = 0
    errors: int = 0
    warmup_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    warmup_error_kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class _CpuSample:
    wall: float
    generator: float
    server: float | None
    database: float | None
    cores: dict[int, tuple[float, float]]


def _sample_cpu(server: ServerProbe | None) -> _CpuSample:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    server_seconds = database_seconds = None
    if server is not None:
        server.refresh()
        server_seconds = server.cpu_seconds()
        database_seconds = server.database_cpu_seconds()
    generator = usage.ru_utime + usage.ru_stime
    return _CpuSample(time.perf_counter(), generator, server_seconds, database_seconds, core_times())


async def _follow(server: ServerProbe, window: _Window) -> None:
    """Refresh the server probe (new processes get pinned and sampled) until the run stops."""
    while not window.stopped:
        server.refresh()
        await asyncio.sleep(SERVER_REFRESH_SECONDS)


async def _drive(worker: Worker, window: _Window) -> None:
    """Run one worker's closed loop until the window is stopped."""
    perf_counter = time.perf_counter
    latencies = window.latencies
    op_timeout = window.op_timeout
    while not window.stopped:
        start = perf_counter()
        try:
            async with asyncio.timeout(op_timeout):
                requests = await worker.op()
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await _record_failure(worker, window, OpError(f"timeout: no answer within {op_timeout:g} s"), True)
            continue
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
            await _record_failure(worker, window, exc)
            continue
        if window.measuring:
            latencies.append(perf_counter() - start)
            window.ops += 1
            window.requests += requests


async def _record_failure(worker: Worker, window: _Window, exc: Exception, timed_out: bool = False) -> None:
    """Count a failed op, then let the worker recover. An op that was still in flight when the
    window closed and then timed out counts too: a hung server must not pass for "no errors"."""
    kind = (str(exc) or type(exc).__name__)[:200]
    if window.measuring or (window.stopped and timed_out):
        window.errors += 1
        window.error_kinds[kind] += 1
    elif not window.stopped:
        window.warmup_errors += 1
        window.warmup_error_kinds[kind] += 1
    if window.stopped:
        return
    try:
        async with asyncio.timeout(window.op_timeout):
            await worker.recover(exc)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a failed recovery is retried after the next failure
        await asyncio.sleep(0.05)


async def run_load(
    workers: list[Worker],
    duration: float,
    warmup: float,
    server: ServerProbe | None = None,
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    close_workers: bool = True,
) -> LoadResult:
    """Drive ``workers`` for ``warmup`` + ``duration`` seconds; measure the last ``duration``.

    ``server`` is refreshed every 0.1 s during the run (pinning processes the server starts
    under load) and gives the server's CPU time. An operation still unanswered after
    ``op_timeout`` seconds counts as an error and its connection is dropped. With
    ``close_workers=False`` the workers keep their connections for another window.
    """
    window = _Window(op_timeout)
    tasks = [asyncio.create_task(_drive(worker, window)) for worker in workers]
    if server is not None:
        tasks.append(asyncio.create_task(_follow(server, window)))
    try:
        await asyncio.sleep(warmup)
        start = _sample_cpu(server)
        window.measuring = True
        await asyncio.sleep(duration)
        window.measuring = False
        window.stopped = True
        end = _sample_cpu(server)
        await _finish(tasks, op_timeout + 1.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if close_workers:
            for worker in workers:
                worker.close()
    return _result(window, start, end)


def combined(results: list[LoadResult]) -> LoadResult:
    """Several measured windows of the same workload as one: counts and latencies pooled,
    CPU shares weighted by each window's length."""
    wall = sum(r.duration for r in results)

    def weighted(values: list[tuple[float | None, float]]) -> float | None:
        if not values or any(v is None for v, _ in values) or not wall:
            return None
        return sum(v * d for v, d in values) / wall

    cores = {core for r in results for core in r.core_busy}
    return LoadResult(
        duration=wall,
        ops=sum(r.ops for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        latencies=[latency for r in results for latency in r.latencies],
        error_kinds=sum((r.error_kinds for r in results), Counter()),
        warmup_errors=sum(r.warmup_errors for r in results),
        warmup_error_kinds=sum((r.warmup_error_kinds for r in results), Counter()),
        generator_cpu=weighted([(r.generator_cpu, r.duration) for r in results]) or 0.0,
        server_cpu=weighted([(r.server_cpu, r.duration) for r in results]),
        database_cpu=weighted([(r.database_cpu, r.duration) for r in results]),
        core_busy={core: weighted([(r.core_busy.get(core, 0.0), r.duration) for r in results]) or 0.0 for core in cores},
    )


async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Let in-flight operations end (they are not counted); cancel stragglers after ``grace``."""
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*pending, return_exceptions=True)


def _result(window: _Window, start: _CpuSample, end: _CpuSample) -> LoadResult:
    wall = end.wall - start.wall
    server_cpu = database_cpu = None
    if start.server is not None and end.server is not None:
        server_cpu = (end.server - start.server) / wall
    if start.database is not None and end.database is not None:
        database_cpu = (end.database - start.database) / wall
    core_busy = {}
    for core, (busy_end, total_end) in end.cores.items():
        busy_start, total_start = start.cores.get(core, (busy_end, total_end))
        if total_end > total_start:
            core_busy[core] = (busy_end - busy_start) / (total_end - total_start)
    return LoadResult(
        duration=wall,
        ops=window.ops,
        requests=window.requests,
        errors=window.errors,
        latencies=window.latencies,
        error_kinds=window.error_kinds,
        warmup_errors=window.warmup_errors,
        warmup_error_kinds=window.warmup_error_kinds,
        generator_cpu=(end.generator - start.generator) / wall,
        server_cpu=server_cpu,
        database_cpu=database_cpu,
        core_busy=core_busy,
    )
