"""Rate-limit counters kept in this process's memory: the backend for one SQLite instance.

An embedded SQLite deployment is one process on one machine, so there is nothing to share,
and a write transaction per counted request would queue behind the store's single writer: on
the refresh grant (bench/authserver.py) the store counters cut throughput from 637 to 265
requests/s. PostgreSQL deployments, which may run several instances, keep their counts in the
store (store/rate_counters.py) or Redis. Same algorithm and interface as those backends.
"""

from __future__ import annotations

import threading

from gatehouse.authserver.ratelimit import Counts, Window, fits


class ProcessCounters:
    """Counts per (key, window start), purged of windows that no longer matter."""

    def __init__(self, max_keys: int = 200_000):
        self.max_keys = max_keys
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def _purge(self, window: Window) -> None:
        oldest_needed = window.start - window.length
        self._counts = {k: v for k, v in self._counts.items() if k[1] >= oldest_needed}

    def _read(self, key: str, window: Window) -> Counts:
        return Counts(self._counts.get((key, window.start - window.length), 0), self._counts.get((key, window.start), 0))

    def admit(self, key: str, window: Window, limit: int) -> tuple[bool, Counts]:
        with self._lock:
            counts = self._read(key, window)
            if not fits(counts, window, limit):
                return False, counts
            if len(self._counts) >= self.max_keys:
                self._purge(window)
            self._counts[(key, window.start)] = counts.current + 1
            return True, Counts(counts.previous, counts.current + 1)

    def read(self, key: str, window: Window) -> Counts:
        with self._lock:
            return self._read(key, window)

    def add(self, key: str, window: Window, amount: int) -> None:
        with self._lock:
            current = self._counts.get((key, window.start), 0)
            self._counts[(key, window.start)] = max(0, current + amount)
