"""How long ``gatehouse doctor URL`` (without ``--login``) takes against a local ``gatehouse serve``.

    .venv/bin/python bench/doctor.py [--runs 20]

Starts ``gatehouse serve`` on a free loopback port with a temporary data dir, then measures:

- ``in-process``: ``gatehouse.doctor.diagnose(url)``: the probes alone (every request of a run,
  over one ``httpx2.AsyncClient``);
- ``command``: the whole command in a fresh interpreter (``gatehouse doctor URL --json``, or the
  doctor's Typer command mounted by hand while cli.py does not mount it), as a user sees it.

The target (issue 8) is under 2 s for a full run. The server is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

GATEHOUSE = Path(sys.executable).with_name("gatehouse")
MOUNTED_BY_HAND = ("import sys, typer; from gatehouse.doctor.command import doctor; "
                   "app = typer.Typer(); app.command('doctor')(doctor); app.command('noop')(lambda: None); app()")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([str(GATEHOUSE), "serve", "--port", str(port), "--data-dir", data_dir, "--log-level", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx2.HTTPError:
            time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    raise SystemExit("gatehouse serve did not start within 30 s")


def command_argv(url: str) -> list[str]:
    from gatehouse.cli import app

    if "doctor" in {command.name for command in app.registered_commands}:
        return [str(GATEHOUSE), "doctor", url, "--json"]
    return [sys.executable, "-c", MOUNTED_BY_HAND, "doctor", url, "--json"]


def measure_in_process(url: str, runs: int) -> list[float]:
    from gatehouse.doctor import diagnose

    async def all_runs() -> list[float]:
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            report = await diagnose(url)
            timings.append(time.perf_counter() - started)
            assert not report.failed, [c.id for c in report.checks if c.status.value == "fail"]
        return timings

    return asyncio.run(all_runs())


def measure_command(url: str, runs: int) -> list[float]:
    argv, timings = command_argv(url), []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"the doctor exited {done.returncode}: {done.stderr.strip()[:300]}")
    return timings


def line(name: str, timings: list[float]) -> str:
    return (f"{name:<11} runs {len(timings):>3}  median {statistics.median(timings) * 1000:7.1f} ms  "
            f"min {min(timings) * 1000:7.1f} ms  max {max(timings) * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-doctor-") as data_dir:
        process, base = start_server(data_dir)
        try:
            url = f"{base}/mcp"
            print(f"gatehouse doctor {url} (no --login), Python {sys.version.split()[0]}, {os.cpu_count()} cores")
            measure_in_process(url, 2)  # warm-up: imports, the server's first requests
            print(line("in-process", measure_in_process(url, args.runs)))
            print(line("command", measure_command(url, max(3, args.runs // 4))))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)


if __name__ == "__main__":
    main()
