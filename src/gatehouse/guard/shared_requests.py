"""Concurrent requests for one key share one call: the first caller starts it, the others
await the same result (a cache stampede of one token costs one request)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedRequests(Generic[K, V]):
    """Runs at most one ``start()`` per key at a time; every caller for that key gets its outcome."""

    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, start: Callable[[], Awaitable[V]]) -> V:
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(start())
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        # one waiter giving up (a client disconnecting) must not cancel the others' request
        return await asyncio.shield(pending)

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a request nobody waits for any more logs nothing
