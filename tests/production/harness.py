"""Real ``gatehouse serve`` processes and ``gatehouse`` commands for the production tests.

``start_gatehouse(database_url, data_dir, secret_key, ...)`` starts one instance on an ephemeral
loopback port and waits until it answers ``/healthz``; the :class:`RunningInstance` it returns
stops it (SIGTERM) or kills it (SIGKILL), by its pid. Its stdout and stderr go to files in the
data dir's parent (a pipe nobody reads would block a chatty server): :meth:`RunningInstance.stderr`
holds the log lines, :meth:`RunningInstance.stdout` what the command prints for people.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

GATEHOUSE = [sys.executable, "-m", "gatehouse.cli"]
START_TIMEOUT = 60.0  # the machine is shared and loaded


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gatehouse_env(database_url: str | None, secret_key: str | None, env: dict | None = None) -> dict[str, str]:
    """The environment of a gatehouse process: this one's, minus any GATEHOUSE_* of the developer's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_") or k in ("GATEHOUSE_NODE", "GATEHOUSE_CREDENTIALS_BACKEND")}
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base["COLUMNS"] = "250"  # rich wraps what the commands print at the terminal's width
    if database_url:
        base["GATEHOUSE_DATABASE_URL"] = database_url
    if secret_key:
        base["GATEHOUSE_SECRET_KEY"] = secret_key
    base.update(env or {})
    return base


def high_rate_limits_env(limit: int = 10_000_000) -> dict[str, str]:
    """Every rate limit raised to ``limit``: for tests that measure something else; the limiters still run."""
    from gatehouse.config import raised_rate_limits_env

    return raised_rate_limits_env(limit)


def run_gatehouse(args: list[str], *, database_url: str | None = None, secret_key: str | None = None, env: dict | None = None,
                  input: str | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one ``gatehouse`` command to its end."""
    return subprocess.run([*GATEHOUSE, *args], env=gatehouse_env(database_url, secret_key, env), input=input, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class RunningInstance:
    url: str
    port: int
    process: subprocess.Popen
    data_dir: Path
    log_path: Path
    stdout_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        """The log lines written so far."""
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def logs(self) -> str:
        """Everything written so far: stdout, then stderr."""
        return self.stdout() + self.stderr()

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (a graceful shutdown), then SIGKILL if it does not end within ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        return self.process.returncode


def _wait_until_up(instance: RunningInstance, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise RuntimeError(f"gatehouse serve exited with {instance.process.returncode}:\n{instance.logs()}")
        try:
            if httpx2.get(f"{instance.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    instance.kill()
    raise RuntimeError(f"gatehouse serve did not answer /healthz within {timeout:g} s:\n{instance.logs()}")


def start_gatehouse(
    database_url: str | None,
    data_dir: Path,
    secret_key: str | None,
    issuer: str | None = None,
    extra_args: list[str] = (),
    env: dict | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> RunningInstance:
    """Start ``gatehouse serve`` on 127.0.0.1 (on ``port``, else an ephemeral one) and wait until it is up.

    ``database_url`` None: the SQLite file in ``data_dir``; ``secret_key`` None: ``data_dir/secret.key``.
    ``issuer`` defaults to the instance's own URL; give the same one to instances of one deployment."""
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        url = f"http://127.0.0.1:{chosen}"
        name = f"gatehouse-{chosen}-{int(time.time() * 1000)}"
        log_path, stdout_path = data_dir.parent / f"{name}.log", data_dir.parent / f"{name}.out"
        args = ["serve", "--host", "127.0.0.1", "--port", str(chosen), "--data-dir", str(data_dir), "--issuer", issuer or url,
                *extra_args]
        with log_path.open("w") as log_file, stdout_path.open("w") as stdout_file:
            process = subprocess.Popen([*GATEHOUSE, *args], env=gatehouse_env(database_url, secret_key, env), stdout=stdout_file,
                                       stderr=log_file, cwd=data_dir.parent, text=True)
        instance = RunningInstance(url=url, port=chosen, process=process, data_dir=data_dir, log_path=log_path, stdout_path=stdout_path)
        try:
            _wait_until_up(instance, timeout)
            return instance
        except RuntimeError:
            # another process may have taken the port between free_port() and the bind
            if attempt + 1 < attempts and "cannot listen" in instance.logs():
                continue
            raise
    raise AssertionError("unreachable")
