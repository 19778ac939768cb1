"""Throttling password sign-in: slows guessing down, and cannot lock an account's owner out for good.

Keycloak's brute-force detection locks an *account* after some failures, with a wait that
grows per failure up to a "max wait" (15 minutes by default). Keyed on the account alone, that
lets anyone who knows a username keep its owner out. Gatehouse keys the lockout on
(account, source address) instead, and adds two wider limits:

- **account and address**: backoff in steps. ``failed_login_per_minute`` (n) failures per
  minute, 2n per 5 minutes, 4n per 15 minutes (windows capped by ``login_max_lockout``): the
  longer one address keeps guessing, the longer it waits, up to ``login_max_lockout`` after its
  last counted failure. Other addresses, the owner's included, are not affected.
- **address**: ``failed_login_per_address`` failures per ``login_max_lockout``, over every
  account (password spraying).
- **account**: ``failed_login_per_account`` failures per ``login_max_lockout`` from all
  addresses together (a distributed attack on one account). A browser that has signed in to
  the account before carries a signed device cookie (OWASP's "device cookies" against online
  guessing) and is exempt, so even this lock does not keep the owner out.

Only failures count. An attempt the throttle refuses is not checked and so not counted:
hammering a locked account does not extend the lockout, which ends at most
``login_max_lockout`` after the last counted failure. (A sliding window of ``w`` seconds at its
limit ``n`` clears within ``w * (1 + 1/n)``, so each window is shortened to fit that bound.) Each attempt reserves its places before
the password is checked (concurrent guesses cannot overshoot a limit) and gives them back if
the password was right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.authserver.ratelimit import CounterBackend, Limiter, RateLimited, Ticket
from gatehouse.authserver.sessions import set_host_cookie
from gatehouse.config import Settings
from gatehouse.instance_secrets import derive_key

DEVICE_COOKIE = "__Host-gatehouse-device"
DEVICE_COOKIE_MAX_AGE = 180 * 24 * 3600
BACKOFF_STEPS = ((1, 60), (2, 300), (4, 900))  # (multiple of failed_login_per_minute, window in seconds)


def lockout_window(nominal: int, limit: int, max_lockout: int) -> int:
    """The longest window, up to ``nominal``, whose lockout at ``limit`` ends within ``max_lockout``."""
    if limit <= 0:
        return min(nominal, max_lockout)
    return max(1, min(nominal, max_lockout * limit // (limit + 1)))


def _limiter(name: str, limit: int, nominal: int, settings: Settings, backend: CounterBackend) -> Limiter:
    window = lockout_window(nominal, limit, settings.login_max_lockout)
    return Limiter(f"{name}-{window}s", limit, window, backend)


def backoff_limiters(settings: Settings, backend: CounterBackend) -> list[Limiter]:
    """The (account, address) steps: 1, 5 and 15 minutes, none outlasting ``login_max_lockout``."""
    cap = settings.login_max_lockout
    nominal = [window for _, window in BACKOFF_STEPS[:-1] if window < cap] + [cap]
    return [
        _limiter("login-fail", settings.failed_login_per_minute * factor, window, settings, backend)
        for (factor, _), window in zip(BACKOFF_STEPS, nominal)
    ]


@dataclass
class Attempt:
    """The places one sign-in attempt holds; a success gives them back."""

    account: str
    tickets: list[tuple[Limiter, Ticket | None]] = field(default_factory=list)


class LoginThrottle:
    def __init__(self, settings: Settings, backend: CounterBackend, secret: bytes):
        self.per_account_address = backoff_limiters(settings, backend)
        cap = settings.login_max_lockout
        self.per_address = _limiter("login-fail-address", settings.failed_login_per_address, cap, settings, backend)
        self.per_account = _limiter("login-fail-account", settings.failed_login_per_account, cap, settings, backend)
        self._devices = URLSafeTimedSerializer(derive_key(secret, "gatehouse device cookie v1"), salt="device")

    def begin(self, request: Request, username: str, address: str) -> Attempt:
        """Reserve this attempt's places, or raise :class:`RateLimited` with the longest wait."""
        account = username.strip().lower()
        attempt = Attempt(account)
        waits = []
        if not self._known_device(request, account):
            try:
                self.per_account.check(account)
            except RateLimited as exc:
                waits.append(exc.retry_after)
        if not waits:
            for limiter, subject in [*((lim, f"{account}|{address}") for lim in self.per_account_address), (self.per_address, address)]:
                try:
                    attempt.tickets.append((limiter, limiter.hit(subject)))
                except RateLimited as exc:
                    waits.append(exc.retry_after)
        if waits:
            self.succeeded(attempt)
            raise RateLimited(max(waits))
        return attempt

    def failed(self, attempt: Attempt) -> None:
        """The password was wrong: the reserved places stay taken; the account's own count grows."""
        self.per_account.record(attempt.account)

    def succeeded(self, attempt: Attempt) -> None:
        for limiter, ticket in attempt.tickets:
            limiter.refund(ticket)
        attempt.tickets.clear()

    def remember_device(self, response: Response, username: str) -> None:
        """After a successful sign-in: this browser may sign in to ``username`` despite the account-wide limit."""
        set_host_cookie(response, DEVICE_COOKIE, self._devices.dumps(username.strip().lower()), max_age=DEVICE_COOKIE_MAX_AGE)

    def _known_device(self, request: Request, account: str) -> bool:
        raw = request.cookies.get(DEVICE_COOKIE)
        if not raw:
            return False
        try:
            return self._devices.loads(raw, max_age=DEVICE_COOKIE_MAX_AGE) == account
        except BadSignature:
            return False
