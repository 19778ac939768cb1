"""Authorization-server benchmark: throughput and latency with 16 concurrent clients.

Usage (from the project root)::

    .venv/bin/python bench/authserver.py               # every suite, 10 s per scenario
    .venv/bin/python bench/authserver.py --quick       # smoke run, 2 s per scenario
    .venv/bin/python bench/authserver.py --only starlette,sdk --duration 5

Each server is its own subprocess (uvicorn, one worker, 127.0.0.1, ephemeral port) pinned to
the server core (default 0); this process, the load generator, pins itself to the client core
(default 1). PostgreSQL backends serving the benchmark's database are pinned to the server core
too. Suites (``--only``):

* ``starlette``            A: bare Starlette POST endpoint, the HTTP stack's ceiling
* ``sdk``                  B: MCP SDK auth routes with an in-memory provider, refresh grant
* ``gatehouse-sqlite``     C: ``gatehouse serve`` on SQLite (refresh, client credentials,
* ``gatehouse-postgresql``    auth-code flow with and without a kept session, JWKS)

Results are printed as a table and written as JSON to ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flow import FlowError
from loadgen import LoadResult, run_load
from servers import ServerError, run_to_completion
from suites import (
    BENCH_DIR,
    RunConfig,
    Scenario,
    SetupError,
    Skip,
    Suite,
    Target,
    all_suites,
    default_gatehouse_cli,
)

GENERATOR_SATURATED = 0.90
FOREIGN_LOAD = 0.10  # share of a pinned core used by processes outside the benchmark
RESULTS_DIR = BENCH_DIR / "results"


@dataclass
class Row:
    """One line of the report: a scenario's result, or why it has none."""

    suite: Suite
    scenario: Scenario
    result: LoadResult | None = None
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    server_log: str = ""  # the end of the server's log, kept when something failed

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "suite": self.suite.key,
            "scenario": self.scenario.key,
            "title": self.scenario.title,
            "store": self.suite.store,
            "unit": self.scenario.unit,
            "status": self.status,
            "note": self.note,
            "server_log": self.server_log,
        }
        r = self.result
        if r is not None:
            data.update(
                duration_s=round(r.duration, 3),
                ops=r.ops,
                requests=r.requests,
                ops_per_s=round(r.ops_per_s, 1),
                requests_per_s=round(r.requests_per_s, 1),
                p50_ms=_round(r.percentile_ms(50)),
                p99_ms=_round(r.percentile_ms(99)),
                errors=r.errors,
                warmup_errors=r.warmup_errors,
                error_kinds=dict(r.error_kinds.most_common(5)),
                warmup_error_kinds=dict(r.warmup_error_kinds.most_common(5)),
                generator_cpu=round(r.generator_cpu, 3),
                server_cpu=_round(r.server_cpu),
                database_cpu=_round(r.database_cpu),
                ops_per_server_cpu_second=_round(r.ops_per_server_cpu_second, 1),
                core_busy={str(k): round(v, 3) for k, v in r.core_busy.items()},
            )
        return data


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    suites = [s.key for s in all_suites()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per scenario (2; 0.5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per scenario")
    parser.add_argument("--concurrency", "-c", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--only", default="", help=f"comma-separated suites: {', '.join(suites)}")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario keys (e.g. refresh,jwks)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds before an op counts as failed (15)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the servers (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="core for the load generator (1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything to cores")
    parser.add_argument("--gatehouse", type=Path, default=None, help="the gatehouse CLI (default: beside python)")
    parser.add_argument(
        "--server-log-level",
        default="warning",
        help="gatehouse serve --log-level (warning: no access log, like A and B; '' for its default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write results here (default: bench/results/)")
    parser.add_argument("--no-json", action="store_true", help="do not write a JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    unknown = set(_split(args.only)) - set(suites)
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(suites)}")
    return args


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def pin_cores(args: argparse.Namespace) -> tuple[int | None, str | None]:
    """Pin this process (the load generator) to the client core; return the server core."""
    if args.no_pin:
        return None, "cores not pinned (--no-pin)"
    available = os.sched_getaffinity(0)
    if args.server_cpu == args.client_cpu or not {args.server_cpu, args.client_cpu} <= available:
        return None, f"cores {args.server_cpu}/{args.client_cpu} not both available ({sorted(available)}); not pinned"
    os.sched_setaffinity(0, {args.client_cpu})
    return args.server_cpu, None


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


async def run_scenario(target: Target, suite: Suite, scenario: Scenario, args: argparse.Namespace) -> Row:
    """Build the scenario's workers against ``target`` and measure them."""
    try:
        workers = await scenario.make_workers(target, args.concurrency)
    except (SetupError, FlowError, OSError, TimeoutError, KeyError, ValueError) as exc:
        return Row(suite, scenario, status="failed", note=f"setup: {exc}", server_log=target.server.log_tail(12))
    tracker = target.tracker()
    try:
        result = await run_load(workers, args.duration, args.warmup, tracker, args.timeout)
    finally:
        tracker.close()
    notes = tracker.warnings + cpu_warnings(result, target.server_cpu, args.client_cpu)
    log = target.server.log_tail(12) if result.errors or result.warmup_errors else ""
    return Row(suite, scenario, result, note="; ".join(notes), server_log=log)


def cpu_warnings(result: LoadResult, server_cpu: int | None, client_cpu: int, server_on_client_core: float = 0.0) -> list[str]:
    """Say when the generator was the bottleneck or other processes shared the pinned cores.
    ``server_on_client_core``: the part of the server's CPU that ran on the generator's core
    (a proxy placed there), so that it counts as neither core's foreign load."""
    warnings = []
    if result.ops == 0:
        warnings.append("no operation completed in the measured window")
    if result.generator_cpu > GENERATOR_SATURATED:
        warnings.append(f"load generator saturated ({result.generator_cpu:.0%} of a core)")
    if server_cpu is None:
        return warnings
    foreign_server = result.core_busy.get(server_cpu, 0.0) - ((result.server_cpu or 0.0) - server_on_client_core)
    foreign_client = result.core_busy.get(client_cpu, 0.0) - result.generator_cpu - server_on_client_core
    if foreign_server > FOREIGN_LOAD:
        warnings.append(f"other processes used {foreign_server:.0%} of server core {server_cpu}")
    if foreign_client > FOREIGN_LOAD:
        warnings.append(f"other processes used {foreign_client:.0%} of generator core {client_cpu}")
    return warnings


async def run_suite(
    suite: Suite, scenarios: list[Scenario], config: RunConfig, args: argparse.Namespace, rows: list[Row]
) -> None:
    """Run each scenario against a freshly started server (and, for PostgreSQL, a fresh
    database), so that one scenario's leftovers, or a wedged server, cannot skew the next.
    Rows are appended as scenarios finish, so an interrupted run still reports them."""
    for index, scenario in enumerate(scenarios):
        try:
            async with suite.launch(config) as target:
                _log(
                    f"{suite.label} [{suite.store}] {scenario.title}: server pid {target.server.pid} "
                    f"on cpus {sorted(target.server.affinity() or [])}, {target.server.base_url}"
                )
                row = await run_scenario(target, suite, scenario, args)
        except Skip as exc:
            _log(f"{suite.label} [{suite.store}] skipped: {exc}")
            rows += [Row(suite, s, status="skipped", note=str(exc)) for s in scenarios[index:]]
            return
        except (ServerError, SetupError, FlowError, OSError, TimeoutError) as exc:
            row = Row(suite, scenario, status="failed", note=str(exc))
        rows.append(row)
        _log("  " + _progress_line(row))


async def run_all(args: argparse.Namespace, server_cpu: int | None, rows: list[Row]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (`cmd &`)
        loop.add_signal_handler(signum, task.cancel)
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as work:
        gatehouse = args.gatehouse or default_gatehouse_cli()
        config = RunConfig(server_cpu, Path(work), gatehouse, args.server_log_level or None)
        only, wanted = set(_split(args.only)), set(_split(args.scenarios))
        for suite in all_suites():
            if only and suite.key not in only:
                continue
            scenarios = [s for s in suite.scenarios if not wanted or s.key in wanted]
            if scenarios:
                await run_suite(suite, scenarios, config, args, rows)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

COLUMNS = (
    "suite",
    "scenario",
    "store",
    "ops/s",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "srv cpu",
    "ops/cpu-s",
    "gen cpu",
)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(row: Row) -> list[str]:
    r = row.result
    head = [row.suite.label, row.scenario.title, row.suite.store]
    if r is None:
        return head + [row.status] + [""] * (len(COLUMNS) - 4)
    return head + [
        _fmt(r.ops_per_s, ",.0f"),
        _fmt(r.requests_per_s, ",.0f"),
        _fmt(r.percentile_ms(50), ".2f"),
        _fmt(r.percentile_ms(99), ".2f"),
        str(r.errors),
        _share(r.server_cpu),
        _fmt(r.ops_per_server_cpu_second, ",.0f"),
        f"{r.generator_cpu:.0%}",
    ]


def _progress_line(row: Row) -> str:
    r = row.result
    if r is None:
        return f"{row.status}: {row.note.splitlines()[0] if row.note else ''}"
    return (
        f"{r.ops_per_s:,.0f} {row.scenario.unit}/s, {r.requests_per_s:,.0f} req/s, "
        f"p50 {_fmt(r.percentile_ms(50), '.2f')} ms, p99 {_fmt(r.percentile_ms(99), '.2f')} ms, "
        f"{r.errors} errors, server {_share(r.server_cpu)} of core{_database_share(r)}, "
        f"generator {r.generator_cpu:.0%} of core"
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _database_share(result: LoadResult) -> str:
    return f" (database {result.database_cpu:.0%})" if result.database_cpu else ""


def render_table(rows: list[Row]) -> str:
    """The result table, then the notes (errors, skips, warnings) below it."""
    table = [list(COLUMNS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    numeric = set(range(3, len(COLUMNS)))

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(table[0]), "  ".join("-" * w for w in widths)] + [line(cells) for cells in table[1:]]
    out += _notes(rows)
    return "\n".join(out)


def _notes(rows: list[Row]) -> list[str]:
    notes = []
    for row in rows:
        name = f"{row.suite.label} / {row.scenario.title} [{row.suite.store}]"
        if row.note:
            notes.append(f"  {name}: {row.note}")
        if row.result is not None:
            for kind, count in row.result.error_kinds.most_common(3):
                notes.append(f"  {name}: {count} x {kind}")
            for kind, count in row.result.warmup_error_kinds.most_common(3):
                notes.append(f"  {name}: during warm-up {count} x {kind}")
        if row.server_log:
            notes.append(f"  {name}: server log ends with:\n{row.server_log}")
    if notes:
        notes.insert(0, "\nnotes:")
    return notes


def environment(args: argparse.Namespace, server_cpu: int | None) -> dict[str, Any]:
    """What the numbers depend on, recorded with them."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "server_cpu": server_cpu,
        "client_cpu": args.client_cpu if server_cpu is not None else None,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "httptools": importlib.util.find_spec("httptools") is not None,
    }


def write_json(path: Path, env: dict[str, Any], rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "results": [row.as_json() for row in rows]}, indent=2) + "\n")


_T0 = time.monotonic()


def _log(message: str) -> None:
    """Progress to stderr, stamped with the seconds since start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_cpu, pin_warning = pin_cores(args)
    env = environment(args, server_cpu)
    if pin_warning:
        _log(f"warning: {pin_warning}")
    _log(
        f"{args.concurrency} clients, {args.duration:g} s measured after {args.warmup:g} s warm-up per scenario; "
        f"server core {server_cpu}, generator core {env['client_cpu']}; "
        f"uvicorn loop/http: {'uvloop' if env['uvloop'] else 'asyncio'}/{'httptools' if env['httptools'] else 'h11'}"
    )
    rows: list[Row] = []
    started = time.monotonic()
    interrupted = run_to_completion(run_all(args, server_cpu, rows))
    if not rows:
        print("no scenario completed")
        return 130 if interrupted else 1
    print()
    print(render_table(rows))
    print(
        "\nop = one grant, request, fetch or complete flow; latency is per op. srv cpu = the server's processes"
        "\n(with its PostgreSQL backends) as a share of one core; ops/cpu-s = ops per second of server CPU,"
        "\nrobust when other processes share the core; gen cpu = the load generator's share of its core."
        f"\nTotal {time.monotonic() - started:.0f} s."
    )
    if not args.no_json:
        path = args.json or RESULTS_DIR / f"authserver-{time.strftime('%Y%m%d-%H%M%S')}.json"
        write_json(path, env, rows)
        print(f"results written to {path}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
