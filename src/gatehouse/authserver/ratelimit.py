"""Fixed-window rate limits for abuse-prone endpoints (S-T7, S-C2).

Counts are kept per process; sharing them across instances belongs to the production issue.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, limit: int, window_seconds: float = 60.0, max_keys: int = 100_000):
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _window_start(self, now: float) -> float:
        return now - (now % self.window)

    def hit(self, key: str) -> None:
        """Count one event for ``key``; raise :class:`RateLimited` once the window's limit is passed."""
        now = time.time()
        start = self._window_start(now)
        with self._lock:
            if len(self._counts) >= self.max_keys:
                self._counts = {k: v for k, v in self._counts.items() if v[0] == start}
            window, count = self._counts.get(key, (start, 0))
            if window != start:
                window, count = start, 0
            count += 1
            self._counts[key] = (window, count)
        if count > self.limit:
            raise RateLimited(max(1, math.ceil(start + self.window - now)))

    def check(self, key: str) -> None:
        """Raise :class:`RateLimited` if ``key`` is already over its limit, without counting."""
        now = time.time()
        start = self._window_start(now)
        with self._lock:
            window, count = self._counts.get(key, (start, 0))
        if window == start and count >= self.limit:
            raise RateLimited(max(1, math.ceil(start + self.window - now)))
