"""Rate-limit counters in Redis (``GATEHOUSE_REDIS_URL``), shared by every instance using it.

A key's window is one Redis string, ``<prefix>:rl:{<sha256 of key>}:<window start>``, counted
with ``INCR`` and given a TTL of two windows when created (it weighs on the next window only).
Admitting is one Lua script (read both windows, check, ``INCR``, ``EXPIRE``), which Redis runs
atomically; the hash tag ``{...}`` keeps a key's windows in one Redis Cluster slot. Timeouts
are short: an unreachable Redis makes the limiter fail open (see :mod:`.ratelimit`), not wait.
"""

from __future__ import annotations

import hashlib

import redis

from gatehouse.authserver.ratelimit import CounterUnavailable, Counts, Window

_ADMIT = """
local previous = tonumber(redis.call('GET', KEYS[1]) or '0')
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * tonumber(ARGV[2]) + current + 1 > tonumber(ARGV[1]) + 1e-9 then
  return {0, previous, current}
end
current = redis.call('INCR', KEYS[2])
if current == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return {1, previous, current}
"""

_ADD = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if current + amount < 0 then return current end
current = redis.call('INCRBY', KEYS[1], amount)
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return current
"""


class RedisCounters:
    def __init__(self, url: str, prefix: str = "gatehouse", timeout: float = 0.5):
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._admit = self.client.register_script(_ADMIT)
        self._add = self.client.register_script(_ADD)

    def _name(self, key: str, window_start: int) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.prefix}:rl:{{{digest}}}:{window_start}"

    def _both(self, key: str, window: Window) -> list[str]:
        return [self._name(key, window.start - window.length), self._name(key, window.start)]

    def admit(self, key: str, window: Window, limit: int) -> tuple[bool, Counts]:
        try:
            admitted, previous, current = self._admit(
                keys=self._both(key, window), args=[limit, repr(window.weight), 2 * window.length + 1]
            )
        except redis.RedisError as exc:
            raise CounterUnavailable(f"Redis cannot be used for rate limits: {exc}") from exc
        return bool(admitted), Counts(int(previous), int(current))

    def read(self, key: str, window: Window) -> Counts:
        try:
            previous, current = self.client.mget(self._both(key, window))
        except redis.RedisError as exc:
            raise CounterUnavailable(f"Redis cannot be used for rate limits: {exc}") from exc
        return Counts(int(previous or 0), int(current or 0))

    def add(self, key: str, window: Window, amount: int) -> None:
        try:
            self._add(keys=[self._name(key, window.start)], args=[amount, 2 * window.length + 1])
        except redis.RedisError as exc:
            raise CounterUnavailable(f"Redis cannot be used for rate limits: {exc}") from exc
