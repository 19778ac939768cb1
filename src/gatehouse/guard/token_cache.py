"""A bounded cache of checked tokens: each entry lasts until its own deadline, and at most
``size`` entries are kept, least recently used first out (RFC 7662 section 4: cache no longer
than the token is valid)."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def token_key(token: str) -> bytes:
    """The key a token is cached under: a 256-bit BLAKE2b digest (RFC 7693), so the cache never
    holds a token.

    CPython's own BLAKE2b rather than OpenSSL's SHA-256: equally collision-resistant, and beside
    the MCP server's much longer call its short code path costs about 6 us less a request, where
    OpenSSL's digest machinery falls out of the CPU's caches between calls (bench/guard_cost.py).
    """
    return hashlib.blake2b(token.encode(), digest_size=32).digest()


class TokenCache(Generic[K, V]):
    """Values by key (:func:`token_key`, never the token), each usable until its deadline on ``clock``."""

    def __init__(self, size: int, clock: Callable[[], float] = time.time):
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, still_valid: Callable[[V], bool] | None = None) -> V | None:
        """The value stored for ``key`` while its deadline lies ahead (and ``still_valid(value)``
        holds, when given); an entry that fails either is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, value = entry
        if until > self.clock() and (still_valid is None or still_valid(value)):
            self._entries.move_to_end(key)
            return value
        del self._entries[key]
        return None

    def put(self, key: K, value: V, until: float) -> None:
        """Keep ``value`` until ``until`` on ``clock``; the least recently used entry leaves when full."""
        self._entries[key] = (until, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
