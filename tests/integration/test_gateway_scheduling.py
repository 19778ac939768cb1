"""``gatehouse gateway`` as a SCHED_BATCH task (gatehouse.guard.scheduling): the real process's
policy, as the kernel reports it, for an HTTP upstream, with ``--no-batch-scheduling``, and for a
stdio upstream (whose children would inherit the policy, so it is left alone)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys

from gatehouse.guard import scheduling
from tests.conftest import free_socket
from tests.support.gateway_process import GATEHOUSE, wait_until_serving

NOWHERE = "http://127.0.0.1:9"  # nothing listens there: the gateway needs neither to start


@contextlib.contextmanager
def running_gateway(*args: str):
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    argv = [*GATEHOUSE, "gateway", "--issuer", NOWHERE, "--jwks-uri", f"{NOWHERE}/jwks", "--port", str(port), *args]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp")
        yield process
    finally:
        process.terminate()
        process.communicate(timeout=15)


def test_a_gateway_to_an_http_upstream_runs_as_a_batch_task():
    with running_gateway("--upstream", f"{NOWHERE}/mcp") as process:
        assert os.sched_getscheduler(process.pid) == os.SCHED_BATCH


def test_no_batch_scheduling_keeps_the_default_policy():
    with running_gateway("--upstream", f"{NOWHERE}/mcp", "--no-batch-scheduling") as process:
        assert os.sched_getscheduler(process.pid) == os.SCHED_OTHER


def test_a_gateway_to_a_stdio_server_keeps_the_default_policy():
    with running_gateway("--", sys.executable, "-c", "import sys; sys.stdin.read()") as process:
        assert os.sched_getscheduler(process.pid) == os.SCHED_OTHER


def test_a_refused_policy_is_a_warning_and_the_gateway_carries_on(monkeypatch, caplog):
    """A container's seccomp profile may refuse sched_setscheduler(2); the kernel here does not, so the refusal is simulated."""

    def refuse(pid, policy, param):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING, logger="gatehouse.gateway"):
        assert scheduling.run_as_batch_task() is False
    assert "could not switch to the SCHED_BATCH scheduling policy (Operation not permitted)" in caplog.text
