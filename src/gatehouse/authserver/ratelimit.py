"""Rate limits shared by every instance of one deployment (S-T7, S-C2, issue 7).

Algorithm: the *sliding window counter* (two fixed-window buckets, as in Cloudflare's and
Kong's "sliding" limiters). Events are counted per key in fixed windows of ``window``
seconds; a new event is admitted while

    previous * (1 - elapsed / window) + current + 1 <= limit

where ``previous`` is the last window's count and ``elapsed`` the time into the current one.
The previous window's weight fades linearly, so a burst just before a window boundary still
counts just after it: a plain fixed window would let ``2 * limit`` events through around each
boundary. Refused events are not counted, so a client that waits the ``Retry-After`` it was
given gets in, and a refused attacker cannot push a lockout further out by hammering.

Where the counts live is a :class:`CounterBackend`: the store (:mod:`gatehouse.store.rate_counters`,
one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per admitted event, on SQLite and
PostgreSQL) or Redis when ``GATEHOUSE_REDIS_URL`` is set (:mod:`gatehouse.authserver.redis_counters`,
one Lua script). Either way every instance sees the same counts.

Failure mode: **fail open**. When the counters cannot be reached, events are admitted and a
warning is logged (at most every 30 s), as Envoy's global rate limit filter does by default
(``failure_mode_deny: false``) and Kong's rate-limiting plugin with ``fault_tolerant: true``
(its default): a broken limiter must not stop people signing in. The limits protect against abuse; an outage of
their store is not abuse.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

from authlib.oauth2.rfc6749.errors import OAuth2Error

log = logging.getLogger("gatehouse.ratelimit")

MAX_KEY_LENGTH = 200
WARN_EVERY = 30.0
_EPSILON = 1e-9


class RateLimited(Exception):
    """Too many events for a key; ``retry_after`` is the whole number of seconds until one more fits."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after


class TooManyRequests(OAuth2Error):
    """A limit, as an OAuth error: 429 ``temporarily_unavailable`` (RFC 6749 section 4.1.2.1, the
    code for a server that cannot take the request now) with ``Retry-After`` (RFC 9110 section 10.2.3)."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, retry_after: int, what: str, **kwargs):
        super().__init__(description=f"too many {what}; retry after {retry_after} seconds", **kwargs)
        self.retry_after = retry_after

    def get_headers(self):
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


class CounterUnavailable(Exception):
    """The counters' store or Redis could not be reached."""


@dataclass(frozen=True)
class Counts:
    """A key's counts in the window before this one and in this one."""

    previous: int
    current: int


@dataclass(frozen=True)
class Window:
    """Where ``now`` falls among fixed windows of ``length`` seconds."""

    length: int
    start: int
    elapsed: float

    @classmethod
    def at(cls, now: float, length: int) -> Window:
        start = int(now // length) * length
        return cls(length, start, now - start)

    @property
    def weight(self) -> float:
        """How much of the previous window's count still counts."""
        return 1.0 - self.elapsed / self.length

    @property
    def expires_at(self) -> int:
        """When this window's count stops mattering (it weighs on the next window only)."""
        return self.start + 2 * self.length


class CounterBackend(Protocol):
    """Counts per key and window, shared by every instance."""

    def admit(self, key: str, window: Window, limit: int) -> tuple[bool, Counts]:
        """Atomically: count one event if :func:`fits`; say whether it did and, if not, the counts that refused it."""

    def read(self, key: str, window: Window) -> Counts: ...

    def add(self, key: str, window: Window, amount: int) -> None:
        """Add ``amount`` (``+1`` records an event, ``-1`` takes an admitted one back; never below 0)."""


def fits(counts: Counts, window: Window, limit: int) -> bool:
    """Whether one more event is within ``limit`` (the sliding-window estimate, module docstring)."""
    return counts.previous * window.weight + counts.current + 1 <= limit + _EPSILON


def seconds_until_allowed(counts: Counts, window: Window, limit: int) -> int:
    """The smallest whole number of seconds after which one more event fits (``Retry-After``)."""
    if limit <= 0:
        return window.length
    length, elapsed = window.length, window.elapsed
    if counts.current + 1 <= limit and counts.previous > 0:
        # later in this window, the previous window's share has faded enough
        wait = length * (1 - (limit - counts.current - 1) / counts.previous) - elapsed
        if wait <= length - elapsed:
            return max(1, math.ceil(max(wait, 0.0) - _EPSILON))
    # in the next window, this window's count is the fading one
    wait = length - elapsed
    if counts.current > 0:
        wait += max(0.0, length * (1 - (limit - 1) / counts.current))
    return max(1, math.ceil(wait - _EPSILON))


@dataclass(frozen=True)
class Ticket:
    """An admitted event, which :meth:`Limiter.refund` can take back."""

    key: str
    window: Window


class Limiter:
    """At most ``limit`` events per ``window`` seconds per subject (an address, a client id, ...).

    ``hit`` admits and counts (or raises :class:`RateLimited`); ``check`` asks without counting
    and ``record`` counts without asking, for limits on outcomes known only afterwards (failed
    authentications); ``refund`` takes back an event ``hit`` counted that turned out not to count.
    """

    def __init__(self, name: str, limit: int, window: int, backend: CounterBackend):
        self.name = name
        self.limit = limit
        self.window = window
        self.backend = backend

    def key(self, subject: str) -> str:
        key = f"{self.name}:{subject}"
        if len(key) <= MAX_KEY_LENGTH:
            return key
        return f"{self.name}:#{hashlib.sha256(subject.encode()).hexdigest()}"

    def _window(self) -> Window:
        return Window.at(time.time(), self.window)

    def hit(self, subject: str) -> Ticket | None:
        """Count one event for ``subject``, or raise :class:`RateLimited` if it does not fit."""
        key, window = self.key(subject), self._window()
        try:
            admitted, counts = self.backend.admit(key, window, self.limit)
        except CounterUnavailable as exc:
            fail_open(exc)
            return None
        if not admitted:
            raise RateLimited(seconds_until_allowed(counts, window, self.limit))
        return Ticket(key, window)

    def check(self, subject: str) -> None:
        """Raise :class:`RateLimited` if one more event for ``subject`` would not fit; count nothing."""
        window = self._window()
        try:
            counts = self.backend.read(self.key(subject), window)
        except CounterUnavailable as exc:
            fail_open(exc)
            return
        if not fits(counts, window, self.limit):
            raise RateLimited(seconds_until_allowed(counts, window, self.limit))

    def record(self, subject: str) -> None:
        """Count one event that has happened (whether or not it fits)."""
        try:
            self.backend.add(self.key(subject), self._window(), 1)
        except CounterUnavailable as exc:
            fail_open(exc)

    def refund(self, ticket: Ticket | None) -> None:
        """Take back an event :meth:`hit` admitted."""
        if ticket is None:
            return
        try:
            self.backend.add(ticket.key, ticket.window, -1)
        except CounterUnavailable as exc:
            fail_open(exc)


class Unlimited:
    """The backend when rate limits are off (``GATEHOUSE_RATE_LIMITS=false``): everything fits."""

    def admit(self, key: str, window: Window, limit: int) -> tuple[bool, Counts]:
        return True, Counts(0, 0)

    def read(self, key: str, window: Window) -> Counts:
        return Counts(0, 0)

    def add(self, key: str, window: Window, amount: int) -> None:
        pass


_last_warning = float("-inf")
_warning_lock = threading.Lock()


def fail_open(exc: Exception) -> None:
    """Admit the event; say so in the log, at most every ``WARN_EVERY`` seconds."""
    global _last_warning
    with _warning_lock:
        now = monotonic()
        if now - _last_warning < WARN_EVERY:
            return
        _last_warning = now
    log.warning("rate limits are not enforced for now (failing open): %s", exc)


def wait_phrase(seconds: int) -> str:
    """``45 seconds``, ``1 minute``, ``4 minutes``: how long to wait, for people."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
