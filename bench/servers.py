"""Server subprocesses for the benchmark: start pinned to a core, wait until ready, stop by PID.

Every started server is remembered in a module-level registry; :func:`stop_all` (also run at
interpreter exit) stops whatever is still running, so an interrupted run leaves nothing behind.
On Linux each child also gets ``PR_SET_PDEATHSIG`` so it dies with the benchmark even if the
benchmark itself is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from httpclient import HttpConnection

__all__ = [
    "ServerError",
    "ServerProcess",
    "ServerTracker",
    "core_times",
    "free_port",
    "fresh_postgres_database",
    "process_cpu_seconds",
    "stop_all",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_RUNNING: set[ServerProcess] = set()


class ServerError(RuntimeError):
    """A server did not start (or died); the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port that is free right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """``preexec_fn``: ask the kernel to SIGTERM the child when the benchmark dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One server subprocess (e.g. uvicorn with a single worker) bound to ``host:port``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log_path: Path,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        cpu: int | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.host = host
        self.port = port
        self.log_path = log_path
        self.env = env
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Spawn the server (``taskset -c CPU`` when a core is given), output to the log file."""
        argv = list(self.argv)
        taskset = shutil.which("taskset")
        if self.cpu is not None and taskset:
            argv = [taskset, "-c", str(self.cpu), *argv]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops us by PID
                # Safe here: the benchmark starts servers from its only thread.
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        _RUNNING.add(self)
        if self.cpu is not None and not taskset:
            os.sched_setaffinity(self.proc.pid, {self.cpu})

    def affinity(self) -> set[int] | None:
        """The CPUs the server may run on (as the kernel reports it)."""
        try:
            return os.sched_getaffinity(self.pid)
        except OSError:
            return None

    async def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        """Poll ``GET path`` until the server answers with a status below 500."""
        deadline = time.monotonic() + timeout
        conn = HttpConnection(self.host, self.port)
        last_error = "no answer"
        try:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    response = await conn.request("GET", path)
                    if response.status < 500:
                        return
                    last_error = f"HTTP {response.status}"
                except OSError as exc:
                    last_error = str(exc) or type(exc).__name__
                conn.close()
                await asyncio.sleep(0.1)
        finally:
            conn.close()
        raise ServerError(f"{self.name} not ready after {timeout:.0f} s ({last_error})\n{self.log_tail()}")

    def check_alive(self) -> None:
        """Raise :class:`ServerError` (with the log's tail) if the server has exited."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise ServerError(f"{self.name} exited with status {code}\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        """The last lines the server wrote, indented, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "  (no log)"
        return "\n".join("  | " + line for line in text) or "  (empty log)"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server's PID, then SIGKILL if it has not exited within ``timeout``."""
        _RUNNING.discard(self)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)


def stop_all() -> None:
    """Stop every server this process started that is still running."""
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all)


def run_to_completion(main) -> bool:
    """Run the benchmark coroutine ``main``; stop every server on the way out.

    Returns True when the run was interrupted (Ctrl-C), False when it finished.
    """
    try:
        asyncio.run(main)
        return False
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped", file=sys.stderr, flush=True)
        return True
    finally:
        stop_all()


# --------------------------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (all its threads), or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy seconds, total seconds) since boot, from ``/proc/stat``."""
    out: dict[int, tuple[float, float]] = {}
    try:
        with open("/proc/stat") as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        total = sum(ticks)
        out[int(name[3:])] = ((total - idle) / _CLK_TCK, total / _CLK_TCK)
    return out


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

POSTGRES_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


@contextlib.contextmanager
def fresh_postgres_database(admin_dsn: str = POSTGRES_ADMIN_DSN) -> Iterator[str]:
    """Create an empty database for one run, yield its name, and drop it afterwards."""
    import psycopg  # imported here: only the PostgreSQL scenarios need it

    name = f"gatehouse_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServerTracker:
    """The processes that make up the server under test, followed while it is under load.

    Each :meth:`refresh` finds the server's processes (the server's PID, plus the PostgreSQL
    backends connected to its database: a connection pool may open new ones at any time),
    pins newcomers to the server core, and samples every process's CPU time. A process that
    has exited keeps its last sample, so :meth:`cpu_seconds` only grows; a backend that starts
    and exits between two refreshes is missed.
    """

    def __init__(self, pid: int, cpu: int | None, pg_database: str | None = None) -> None:
        self.pid = pid
        self.cpu = cpu
        self.pg_database = pg_database
        self.latest: dict[int, float] = {}
        self.pinned: set[int] = set()
        self.warnings: list[str] = []
        self._pg = None

    def refresh(self) -> None:
        """Find, pin and sample the server's processes."""
        for pid in [self.pid, *self._backend_pids()]:
            if pid not in self.pinned:
                self._pin(pid)
            seconds = process_cpu_seconds(pid)
            if seconds is not None:
                self.latest[pid] = seconds

    def cpu_seconds(self) -> float:
        """CPU time used so far by every server process seen."""
        return sum(self.latest.values())

    def database_cpu_seconds(self) -> float:
        """The part of :meth:`cpu_seconds` used by PostgreSQL backends."""
        return sum(seconds for pid, seconds in self.latest.items() if pid != self.pid)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def _pin(self, pid: int) -> None:
        self.pinned.add(pid)
        if self.cpu is None or pid == self.pid:  # the server itself was started pinned
            return
        try:
            os.sched_setaffinity(pid, {self.cpu})
        except ProcessLookupError:
            pass  # the backend has already gone
        except OSError as exc:
            if len(self.warnings) < 3:
                self.warnings.append(f"could not pin PostgreSQL backend {pid}: {exc.strerror}")

    def _backend_pids(self) -> list[int]:
        if not self.pg_database:
            return []
        import psycopg  # only the PostgreSQL scenarios need it

        if self._pg is None:
            self._pg = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True)
        rows = self._pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.pg_database,)
        ).fetchall()
        return [int(row[0]) for row in rows]
