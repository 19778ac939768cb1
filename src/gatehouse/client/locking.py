"""An exclusive lock between processes (and between tasks of one process) on a lock file.

``fcntl.flock`` belongs to an open file description, so two opens of the same file conflict
even inside one process: every holder opens its own descriptor. Waiting polls with a
non-blocking attempt, so an asyncio task waiting for the lock never blocks its event loop and
can be cancelled. The lock file is never deleted: deleting it while another process waits on
it would split the lock in two.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio

from gatehouse.client.errors import StorageError

FIRST_PAUSE = 0.005
LONGEST_PAUSE = 0.05


def _open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _timed_out(path: Path, timeout: float) -> StorageError:
    return StorageError(
        f"{path} stayed locked for {timeout:.0f} s by another gatehouse process; let it finish or stop it, then retry"
    )


@contextlib.contextmanager
def hold(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the lock on ``path`` for a short read-modify-write; never hold it across an ``await``."""
    fd = _open_lock_file(path)
    try:
        deadline, pause = time.monotonic() + timeout, FIRST_PAUSE
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise _timed_out(path, timeout)
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def hold_async(path: Path, timeout: float = 120.0) -> AsyncIterator[None]:
    """Hold the lock on ``path`` across awaits (a token refresh), waiting without blocking the loop."""
    fd = _open_lock_file(path)
    try:
        deadline, pause = time.monotonic() + timeout, FIRST_PAUSE
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise _timed_out(path, timeout)
            await anyio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        yield
    finally:
        os.close(fd)
