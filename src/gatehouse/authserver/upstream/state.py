"""The upstream leg's own ``state``, PKCE verifier and ``nonce`` (UP-1; RFC 6749 section 10.12,
RFC 7636, OIDC Core section 3.1.2.1), kept in the store so that any instance can finish a sign-in
another one started.

The store keeps a hash of ``state`` and of the browser id; a state is good for one callback, from
the browser that started it, within :data:`STATE_TTL` (S-U2). Consuming it blanks the verifier,
so nothing replayable is left behind.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from gatehouse.instance_secrets import hashes_match, new_token, token_hash
from gatehouse.store.models import UpstreamLoginState
from gatehouse.timeutil import utcnow

STATE_TTL = timedelta(minutes=10)
#: expired states are kept this long after expiry, so a late callback is told "expired", not "unknown"
KEEP_EXPIRED = timedelta(days=1)


class StateRejected(Exception):
    """The callback's ``state`` cannot finish a sign-in; ``reason`` is one of missing, unknown,
    mismatched, other_browser, reused, expired."""

    MESSAGES = {
        "missing": "The answer from the sign-in provider carries no state, so it cannot be matched to a sign-in you started.",
        "unknown": "The answer from the sign-in provider does not match any sign-in started here.",
        "mismatched": "The answer came back for a different sign-in provider than the one you chose.",
        "other_browser": "This sign-in was started in another browser; it can only be finished there.",
        "reused": "This sign-in was already finished; its link cannot be used twice.",
        "expired": "This sign-in took longer than 10 minutes and has expired.",
    }

    def __init__(self, reason: str):
        super().__init__(self.MESSAGES[reason])
        self.reason = reason


@dataclass(frozen=True)
class UpstreamLeg:
    """What a callback needs to finish the sign-in it belongs to."""

    state: str
    provider: str
    code_verifier: str
    nonce: str
    next_url: str
    client_id: str | None
    consented: bool


def new_leg(provider: str, next_url: str, client_id: str | None, consented: bool) -> UpstreamLeg:
    """Fresh random values: 256-bit ``state``, a 64-character PKCE verifier (RFC 7636 section 4.1), a nonce."""
    return UpstreamLeg(
        state=new_token(), provider=provider, code_verifier=secrets.token_urlsafe(48), nonce=new_token(),
        next_url=next_url, client_id=client_id, consented=consented,
    )


def save_leg(db: Session, leg: UpstreamLeg, browser_id: str) -> None:
    now = utcnow()
    db.execute(delete(UpstreamLoginState).where(UpstreamLoginState.expires_at < now - KEEP_EXPIRED))
    db.add(
        UpstreamLoginState(
            state_hash=token_hash(leg.state), provider=leg.provider, browser_hash=token_hash(browser_id),
            code_verifier=leg.code_verifier, nonce=leg.nonce, next_url=leg.next_url, client_id=leg.client_id,
            consented=leg.consented, created_at=now, expires_at=now + STATE_TTL, used_at=None,
        )
    )


def consume_leg(db: Session, *, state: str | None, provider: str, browser_id: str | None) -> UpstreamLeg:
    """The sign-in ``state`` belongs to, marked used; :class:`StateRejected` if it cannot be used.

    A state shown by another browser is refused without being spent, so the browser that started
    the sign-in can still finish it."""
    if not state:
        raise StateRejected("missing")
    row = db.get(UpstreamLoginState, token_hash(state)) if len(state) <= 256 else None
    if row is None:
        raise StateRejected("unknown")
    if row.provider != provider:
        raise StateRejected("mismatched")
    if not browser_id or not hashes_match(browser_id, row.browser_hash):
        raise StateRejected("other_browser")
    if row.used_at is not None:
        raise StateRejected("reused")
    now = utcnow()
    if row.expires_at <= now:
        raise StateRejected("expired")
    claimed = db.execute(
        update(UpstreamLoginState)
        .where(UpstreamLoginState.state_hash == row.state_hash, UpstreamLoginState.used_at.is_(None))
        .values(used_at=now, code_verifier="")
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        raise StateRejected("reused")
    return UpstreamLeg(
        state=state, provider=row.provider, code_verifier=row.code_verifier, nonce=row.nonce,
        next_url=row.next_url, client_id=row.client_id, consented=row.consented,
    )
