"""Running ``gatehouse gateway`` as the real CLI process, for tests that start one."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx2

GATEHOUSE = [sys.executable, "-m", "gatehouse.cli"]


def wait_until_serving(process: subprocess.Popen, url: str) -> None:
    """Poll ``url`` until it answers 200; fail with the gateway's stderr if the process exits first."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited: {process.stderr.read()}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not start")
