"""Load: many simulated clients through complete flows and refreshes, against two instances.

Usage (from the project root)::

    .venv/bin/python bench/load.py                     # 200 clients, 60 s, 2 instances on PostgreSQL
    .venv/bin/python bench/load.py --quick             # 20 clients, 5 s (a smoke run)
    .venv/bin/python bench/load.py --store sqlite      # one instance on SQLite

Two ``gatehouse serve`` processes share one fresh PostgreSQL database, one instance secret and
one issuer, as instances of one deployment do (``--store sqlite``: one process, its data dir).
Each simulated client registers (RFC 7591), runs a complete authorization-code flow with PKCE
(authorize, login form, consent form, token), then refreshes again and again, with a new flow
(the browser session kept, so no login) every ``--refreshes-per-flow`` refreshes. Every request
goes to the next instance in turn, so each flow and each grant is continued by both instances.

Reported per kind of operation: ops/s, p50/p99 latency, failures; then the counts that must be
zero: 5xx answers, lost grants (a refresh with the newest refresh token that did not succeed),
other failed operations; and 429s. The exit status is 1 when any of those is not zero.

Harness from ``authserver.py``: the minimal HTTP client, server CPU accounted (each instance and
the PostgreSQL backends of the database), warnings when the generator saturates or, pinned,
when other processes share a core. Unlike there, nothing is pinned by default: two instances
and PostgreSQL need both cores, and the generator uses a few percent of one (``--pin`` puts
the servers and PostgreSQL on ``--server-cpu`` and the generator on ``--client-cpu``). Rate
limits stay on, raised out of the way (``--rate-limits``), so the run measures the flows and
refreshes, with the limiters' own cost. Results are printed and written to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from authserver import RESULTS_DIR, cpu_warnings, environment, pin_cores  # noqa: E402
from flow import AuthCodeFlow, CookieJar, FlowError, discover, register_client  # noqa: E402
from httpclient import HttpConnection, Response  # noqa: E402
from loadgen import LoadResult  # noqa: E402
from servers import (  # noqa: E402
    ServerError,
    ServerProcess,
    ServerTracker,
    core_times,
    free_port,
    fresh_postgres_database,
    run_to_completion,
)
from suites import REDIRECT_URI, SCOPE, SetupError, Skip, _add_user, check_gatehouse_cli, default_gatehouse_cli  # noqa: E402

KINDS = ("register", "flow with login", "flow, session kept", "refresh")
METADATA_PATH = "/.well-known/oauth-authorization-server"


# --------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------


def rate_limit_env(mode: str) -> dict[str, str]:
    """``high``: every ``*_rate_*``/``*_per_*`` limit raised to 10 million (the limiters still run);
    ``off``: ``GATEHOUSE_RATE_LIMITS=false``; ``default``: the shipped limits."""
    if mode == "off":
        return {"GATEHOUSE_RATE_LIMITS": "false"}
    if mode == "default":
        return {}
    from gatehouse.config import raised_rate_limits_env

    return raised_rate_limits_env()


@dataclass
class Deployment:
    servers: list[ServerProcess]
    trackers: list[ServerTracker]
    issuer: str
    username_passwords: list[tuple[str, str]]


@contextlib.asynccontextmanager
async def deployment(args: argparse.Namespace, work: Path, server_cpu: int | None):
    """Start the instances (and for PostgreSQL a fresh database), add the users; stop it all afterwards."""
    gatehouse = args.gatehouse or default_gatehouse_cli()
    help_text = check_gatehouse_cli(gatehouse)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(rate_limit_env(args.rate_limits))
    with contextlib.ExitStack() as stack:
        database = None
        if args.store == "postgresql":
            try:
                database = stack.enter_context(fresh_postgres_database())
            except Exception as exc:  # noqa: BLE001 - any connection failure means "not here"
                raise Skip(f"PostgreSQL on 127.0.0.1:5432 unavailable: {exc}") from exc
            env["GATEHOUSE_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
            env["GATEHOUSE_SECRET_KEY"] = secrets.token_hex(32)
        ports = [free_port() for _ in range(args.instances)]
        issuer = f"http://127.0.0.1:{ports[0]}"
        servers = []
        for index, port in enumerate(ports):
            data_dir = work / f"instance-{index}"
            argv = [str(gatehouse), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
                    "--issuer", issuer]
            if "--log-level" in help_text:
                argv += ["--log-level", "warning"]
            servers.append(ServerProcess(f"gatehouse-{index}", argv, port, work / f"gatehouse-{index}.log", env=env, cpu=server_cpu))
        try:
            users = [(f"load{i}", secrets.token_urlsafe(18)) for i in range(args.users)]
            for username, password in users:  # before any server: the first one creates the schema
                _add_user(gatehouse, work / "instance-0", env, username, password)
            for server in servers:
                server.start()
            for server in servers:
                await server.wait_ready(METADATA_PATH)
            trackers = [ServerTracker(s.pid, server_cpu, database if i == 0 else None) for i, s in enumerate(servers)]
            yield Deployment(servers, trackers, issuer, users)
        finally:
            for server in servers:
                server.stop()


# --------------------------------------------------------------------------------------------
# Simulated clients
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Everything the run counts."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    failures: Counter[str] = field(default_factory=Counter)  # per kind
    failure_kinds: Counter[str] = field(default_factory=Counter)  # per description
    statuses: Counter[int] = field(default_factory=Counter)
    lost_grants: int = 0
    requests: int = 0


class RoundRobin:
    """The transport of one simulated client: one keep-alive connection per instance, each
    request on the next one, so every step of a flow may land on another instance."""

    def __init__(self, servers: list[ServerProcess], tally: Tally):
        self.connections = [HttpConnection(s.host, s.port) for s in servers]
        self.tally = tally
        self.turn = random.randrange(len(self.connections))

    async def request(self, method: str, url: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
        self.turn = (self.turn + 1) % len(self.connections)
        response = await self.connections[self.turn].request(method, url, headers, body)
        self.tally.requests += 1
        self.tally.statuses[response.status] += 1
        return response

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


class SimulatedClient:
    """Registers, runs a flow with a login, then refreshes; a new flow every ``refreshes_per_flow``."""

    def __init__(self, deployment: Deployment, endpoints, index: int, args: argparse.Namespace, tally: Tally):
        self.transport = RoundRobin(deployment.servers, tally)
        self.endpoints = endpoints
        self.user = deployment.username_passwords[index % len(deployment.username_passwords)]
        self.args = args
        self.tally = tally
        self.jar = CookieJar()
        self.flow: AuthCodeFlow | None = None
        self.refresh_token: str | None = None

    async def timed(self, kind: str, operation, deadline: float):
        """Run one operation; its latency counts when it ends before ``deadline``."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.args.timeout):
                result = await operation
        except TimeoutError:
            self.fail(kind, f"{kind}: no answer within {self.args.timeout:g} s")
            raise
        except (FlowError, OSError, ValueError, KeyError) as exc:
            self.fail(kind, f"{kind}: {str(exc)[:160] or type(exc).__name__}")
            raise
        if time.monotonic() <= deadline:
            self.tally.latencies[kind].append(time.perf_counter() - start)
        return result

    def fail(self, kind: str, description: str) -> None:
        self.tally.failures[kind] += 1
        self.tally.failure_kinds[description] += 1

    async def new_grant(self, kind: str, deadline: float) -> None:
        async def flow() -> str:
            result = await self.flow.authorize(self.transport, self.jar)
            tokens = await self.flow.exchange_code(self.transport, result)
            return str(tokens["refresh_token"])

        self.refresh_token = await self.timed(kind, flow(), deadline)

    async def refresh(self, deadline: float) -> None:
        try:
            tokens = await self.timed("refresh", self.flow.refresh(self.transport, self.refresh_token), deadline)
        except (FlowError, ValueError, KeyError):
            self.tally.lost_grants += 1  # the newest refresh token of a live grant did not work
            self.refresh_token = None
            raise
        except (TimeoutError, OSError):
            self.refresh_token = None  # no answer: whether it rotated is unknown, so start a new grant
            raise
        self.refresh_token = str(tokens["refresh_token"])

    async def run(self, start_at: float, deadline: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        try:
            while time.monotonic() < deadline:
                try:
                    await self.step(deadline)
                except (FlowError, OSError, ValueError, KeyError, TimeoutError):
                    for connection in self.transport.connections:
                        connection.close()  # an answer may be half read; start afresh
                    await asyncio.sleep(0.1)
        finally:
            self.transport.close()

    async def step(self, deadline: float) -> None:
        if self.flow is None:
            metadata = {"client_name": "gatehouse load", "redirect_uris": [REDIRECT_URI],
                        "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none"}
            info = await self.timed("register", register_client(self.transport, self.endpoints.registration, metadata), deadline)
            self.flow = AuthCodeFlow(self.endpoints, info["client_id"], REDIRECT_URI, self.user[0], self.user[1], SCOPE,
                                     self.endpoints.default_resource)
        if self.refresh_token is None:
            logged_in = "__Host-gatehouse-session" in self.jar.cookies
            await self.new_grant("flow, session kept" if logged_in else "flow with login", deadline)
        for _ in range(self.args.refreshes_per_flow):
            if time.monotonic() >= deadline:
                return
            await self.refresh(deadline)
        self.refresh_token = None  # the next step starts a new grant with the kept session


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    duration: float
    results: dict[str, LoadResult]
    tally: Tally
    total: LoadResult  # all kinds together, with the CPU figures
    warnings: list[str]

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.tally.statuses.items() if status >= 500)

    @property
    def failed_ops(self) -> int:
        return sum(self.tally.failures.values())

    @property
    def ok(self) -> bool:
        return self.server_errors == 0 and self.tally.lost_grants == 0 and self.failed_ops == 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def follow(trackers: list[ServerTracker], stop: asyncio.Event) -> None:
    """Pin and sample the servers' processes (new PostgreSQL backends appear under load)."""
    while not stop.is_set():
        for tracker in trackers:
            tracker.refresh()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_load(deployment: Deployment, args: argparse.Namespace, client_cpu: int) -> Report:
    tally = Tally()
    probe = HttpConnection(deployment.servers[0].host, deployment.servers[0].port)
    try:
        endpoints = await discover(probe, deployment.issuer)
    finally:
        probe.close()
    for tracker in deployment.trackers:
        tracker.refresh()
    server_start = sum(t.cpu_seconds() for t in deployment.trackers)
    cores_start, generator_start, wall_start = core_times(), _cpu_seconds(), time.monotonic()
    deadline = wall_start + args.duration
    clients = [SimulatedClient(deployment, endpoints, i, args, tally) for i in range(args.clients)]
    stop = asyncio.Event()
    follower = asyncio.create_task(follow(deployment.trackers, stop))
    tasks = [asyncio.create_task(c.run(wall_start + args.ramp * i / args.clients, deadline)) for i, c in enumerate(clients)]
    await asyncio.wait(tasks, timeout=args.duration + args.timeout + 5)
    stop.set()
    await follower
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.monotonic() - wall_start
    server_cpu = (sum(t.cpu_seconds() for t in deployment.trackers) - server_start) / wall
    database_cpu = sum(t.database_cpu_seconds() for t in deployment.trackers)
    for tracker in deployment.trackers:
        tracker.close()
    cores_end = core_times()
    core_busy = {core: (busy - cores_start[core][0]) / max(total - cores_start[core][1], 1e-9)
                 for core, (busy, total) in cores_end.items() if core in cores_start}
    results = {kind: LoadResult(args.duration, len(lat), len(lat), tally.failures[kind], lat) for kind, lat in tally.latencies.items()}
    all_latencies = [x for lat in tally.latencies.values() for x in lat]
    total = LoadResult(args.duration, len(all_latencies), tally.requests, sum(tally.failures.values()), all_latencies,
                       generator_cpu=(_cpu_seconds() - generator_start) / wall, server_cpu=server_cpu,
                       database_cpu=database_cpu / wall if database_cpu else None, core_busy=core_busy)
    notes = cpu_warnings(total, args.server_cpu if args.pinned else None, client_cpu)
    return Report(wall, results, tally, total, notes)


def render(report: Report, args: argparse.Namespace) -> str:
    rows = [("operation", "ops", "ops/s", "p50 ms", "p99 ms", "failed")]
    for kind in KINDS:
        r = report.results[kind]
        p50, p99 = r.percentile_ms(50), r.percentile_ms(99)
        rows.append((kind, f"{r.ops:,}", f"{r.ops_per_s:,.1f}", "-" if p50 is None else f"{p50:,.1f}",
                     "-" if p99 is None else f"{p99:,.1f}", str(r.errors)))
    t = report.total
    rows.append(("all", f"{t.ops:,}", f"{t.ops_per_s:,.1f}", f"{t.percentile_ms(50) or 0:,.1f}", f"{t.percentile_ms(99) or 0:,.1f}",
                 str(report.failed_ops)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    tally = report.tally
    lines += [
        "",
        f"{args.clients} clients, {args.instances} instance(s) on {args.store}, {report.duration:.1f} s, "
        f"{tally.requests:,} requests ({tally.requests / report.duration:,.0f}/s)",
        f"5xx answers: {report.server_errors}   lost grants: {tally.lost_grants}   failed operations: {report.failed_ops}   "
        f"429 answers: {tally.statuses[429]}",
        f"server CPU: {t.server_cpu or 0:.0%} of a core (PostgreSQL backends {t.database_cpu or 0:.0%}); "
        f"generator CPU: {t.generator_cpu:.0%} of a core",
    ]
    for description, count in tally.failure_kinds.most_common(5):
        lines.append(f"  {count} x {description}")
    lines += [f"warning: {w}" for w in report.warnings]
    lines.append("OK" if report.ok else "FAILED: 5xx answers, lost grants and failed operations must all be 0")
    return "\n".join(lines)


def as_json(report: Report, args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    return {
        "environment": {**env, "clients": args.clients, "instances": args.instances, "store": args.store,
                        "refreshes_per_flow": args.refreshes_per_flow, "rate_limits": args.rate_limits},
        "duration_s": round(report.duration, 3),
        "operations": {kind: {"ops": r.ops, "ops_per_s": round(r.ops_per_s, 2), "p50_ms": r.percentile_ms(50),
                              "p99_ms": r.percentile_ms(99), "failed": r.errors} for kind, r in report.results.items()},
        "requests": report.tally.requests,
        "statuses": {str(k): v for k, v in sorted(report.tally.statuses.items())},
        "server_errors": report.server_errors,
        "lost_grants": report.tally.lost_grants,
        "failed_operations": report.failed_ops,
        "too_many_requests": report.tally.statuses[429],
        "failure_kinds": dict(report.tally.failure_kinds.most_common(10)),
        "server_cpu": report.total.server_cpu,
        "generator_cpu": report.total.generator_cpu,
        "warnings": report.warnings,
        "ok": report.ok,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60; 5 with --quick)")
    parser.add_argument("--clients", type=int, default=None, help="simulated clients (200; 20 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 clients for 5 s")
    parser.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--instances", type=int, default=None, help="gatehouse serve processes (2 on PostgreSQL; SQLite: 1)")
    parser.add_argument("--users", type=int, default=4, help="user accounts the clients sign in as (4)")
    parser.add_argument("--refreshes-per-flow", type=int, default=20, help="refreshes before the next flow (20)")
    parser.add_argument("--ramp", type=float, default=None, help="seconds over which the clients start (5; 1 with --quick)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before an operation counts as failed (60)")
    parser.add_argument("--rate-limits", choices=["high", "off", "default"], default="high")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the servers and PostgreSQL (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="core for this load generator (1)")
    parser.add_argument("--pin", action="store_true", help="pin the servers and PostgreSQL to --server-cpu, this generator to --client-cpu")
    parser.add_argument("--gatehouse", type=Path, default=None, help="the gatehouse CLI (default: beside python)")
    parser.add_argument("--json", type=Path, default=None, help="write results here (default: bench/results/)")
    parser.add_argument("--no-json", action="store_true", help="do not write a JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 5.0 if args.duration == 60.0 else args.duration
    args.clients = args.clients or (20 if args.quick else 200)
    args.ramp = args.ramp if args.ramp is not None else (1.0 if args.quick else 5.0)
    if args.store == "sqlite":
        if args.instances not in (None, 1):
            parser.error("SQLite serves one instance: it is a file on one machine (use --store postgresql for more)")
        args.instances = 1
    args.instances = args.instances or 2
    args.concurrency = args.clients  # for environment()
    args.warmup = 0.0
    args.no_pin = not args.pin  # for pin_cores()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_cpu, pin_warning = pin_cores(args)
    args.pinned = server_cpu is not None
    if pin_warning and args.pin:
        print(f"warning: {pin_warning}", file=sys.stderr)
    env = environment(args, server_cpu)
    reports: list[Report] = []

    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="gatehouse-load-") as work:
            async with deployment(args, Path(work), server_cpu) as deployed:
                print(f"{args.clients} clients, {args.instances} instance(s) on {args.store}, {args.duration:g} s; "
                      f"servers {[s.base_url for s in deployed.servers]}", file=sys.stderr, flush=True)
                reports.append(await run_load(deployed, args, args.client_cpu))

    try:
        interrupted = run_to_completion(run())
    except (ServerError, SetupError, Skip) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not reports:
        print("no result" + (" (interrupted)" if interrupted else ""), file=sys.stderr)
        return 130 if interrupted else 1
    report = reports[0]
    print(render(report, args))
    if not args.no_json:
        path = args.json or RESULTS_DIR / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(as_json(report, args, env), indent=2) + "\n")
        print(f"results written to {path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
