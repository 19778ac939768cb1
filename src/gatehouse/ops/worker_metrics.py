"""Metrics shared by worker processes: ``prometheus_client``'s multiprocess mode.

``prometheus_client`` picks where a process keeps its values when it is first imported: in
memory, or in files under ``PROMETHEUS_MULTIPROC_DIR`` that any process can sum. So
:func:`prepare` runs in ``gatehouse serve`` before anything imports it, and before the workers
start (they inherit the variable). This module must not import ``prometheus_client`` itself.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(workers: int) -> Path | None:
    """With more than one worker, give them a metrics directory (an empty private one, removed at
    exit); with one, nothing. A directory named by ``PROMETHEUS_MULTIPROC_DIR`` is used whatever
    the number of workers, emptied first: its files are the counts of an earlier run."""
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            if not stale.stem.endswith(f"_{os.getpid()}"):  # this process's own files, if it counted already, stay
                stale.unlink()
        return path
    if workers <= 1:
        return None
    path = Path(tempfile.mkdtemp(prefix="gatehouse-metrics-"))
    os.environ[ENV] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
