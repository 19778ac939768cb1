"""Refresh-token answers that never reached their client (issue 7, crash safety).

A rotation (AS-13) commits the new refresh token before its answer is written. When the process
dies or the connection breaks in between, the client still holds the old token and retries with
it. Plain reuse detection (S-R1, RFC 9700 section 4.14.2) would revoke the grant of a client that
did nothing wrong.

So the answer's delivery is recorded: ``delivered_at`` is set once the answer carrying a refresh
token has been handed to the connection (:class:`DeliveryLedger`). A rotated-out token presented
again is judged by its successor, the newest token issued by rotating it (``replaces_id``):

- the successor was used, or its answer delivered: reuse. ``invalid_grant`` and the grant is
  revoked (S-R1); of two concurrent uses exactly one succeeds (S-R4);
- neither, and it is younger than ``refresh_delivery_timeout``: its answer may still be on its
  way. The request waits outside any transaction for the answer's record, then is judged again;
- neither, and older: its answer was lost. The successor is voided (marked rotated, so that if it
  did reach anyone, its use is reuse and revokes the grant) and the old token rotates again.

Unlike a reuse grace period (Ory Hydra, Okta, Auth0), a token whose rotation was answered is
never honoured twice. The limit: an answer handed to the connection but lost on the network
still counts as delivered, so the client's retry revokes the grant, as without this module.
A timeout of 0 turns redelivery off.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from gatehouse.instance_secrets import token_hash
from gatehouse.store import db as store_db
from gatehouse.store.models import RefreshToken
from gatehouse.timeutil import utcnow

log = logging.getLogger(__name__)

#: Runs of one token request before an unsettled rotation counts as reuse.
MAX_ATTEMPTS = 5
POLL_INTERVAL = 0.02

_tokens = RefreshToken.__table__
_SELECT_SUCCESSOR = (
    select(_tokens.c.id, _tokens.c.created_at, _tokens.c.delivered_at, _tokens.c.rotated_at)
    .where(_tokens.c.replaces_id == bindparam("token_id"))
    .order_by(_tokens.c.id.desc())
    .limit(1)
)
_SELECT_STATE = select(_tokens.c.delivered_at, _tokens.c.rotated_at).where(_tokens.c.id == bindparam("token_id"))
_VOID_LOST_SUCCESSOR = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("token_id"), _tokens.c.rotated_at.is_(None), _tokens.c.delivered_at.is_(None))
    .values(rotated_at=bindparam("now"))
)
_MARK_DELIVERED = (
    update(_tokens)
    .where(_tokens.c.token_hash.in_(bindparam("hashes", expanding=True)), _tokens.c.delivered_at.is_(None))
    .values(delivered_at=bindparam("now"))
)


class Verdict(Enum):
    REUSE = "reuse"
    PENDING = "pending"
    LOST = "lost"


class RotationInFlight(Exception):
    """Raised inside a token request's transaction: another rotation of the presented token is
    not settled yet. Roll back, :func:`wait_for_delivery`, and run the request again."""

    def __init__(self, successor_id: int | None = None, deadline: datetime | None = None):
        super().__init__("a rotation of this refresh token is in flight")
        self.successor_id = successor_id
        self.deadline = deadline


@dataclass(frozen=True)
class Successor:
    id: int
    created_at: datetime
    delivered_at: datetime | None
    rotated_at: datetime | None

    def deadline(self, timeout: float) -> datetime:
        return self.created_at + timedelta(seconds=timeout)


def successor_of(connection: Connection, token_id: int) -> Successor | None:
    row = connection.execute(_SELECT_SUCCESSOR, {"token_id": token_id}).first()
    return Successor(*row) if row is not None else None


def judge(successor: Successor | None, timeout: float, *, now: datetime | None = None) -> Verdict:
    """What a rotated-out refresh token presented again is: reuse, a retry to hold, or a lost answer."""
    if timeout <= 0 or successor is None or successor.delivered_at is not None or successor.rotated_at is not None:
        return Verdict.REUSE
    return Verdict.PENDING if (now or utcnow()) < successor.deadline(timeout) else Verdict.LOST


def void_lost_successor(session: Session, successor_id: int) -> bool:
    """Retire a successor whose answer was lost, atomically: False when it was used or delivered meanwhile."""
    result = session.connection().execute(_VOID_LOST_SUCCESSOR, {"token_id": successor_id, "now": utcnow()})
    return result.rowcount == 1


def wait_for_delivery(read_sessions: sessionmaker[Session], pending: RotationInFlight) -> None:
    """Poll the successor outside any transaction until its answer is recorded, it is used, or
    its deadline passes (a blocking call: Starlette's thread pool runs it)."""
    if pending.successor_id is None or pending.deadline is None:
        return
    while utcnow() < pending.deadline:
        with read_sessions() as session:
            state = session.connection().execute(_SELECT_STATE, {"token_id": pending.successor_id}).first()
        if state is None or state.delivered_at is not None or state.rotated_at is not None:
            return
        time.sleep(min(POLL_INTERVAL, max(0.0, (pending.deadline - utcnow()).total_seconds())))


class DeliveryLedger:
    """Records, after each answer that carried a refresh token was sent, that it was delivered.

    Answers sent while a write is running are recorded together in the next one, so a busy
    token endpoint pays about one ``UPDATE`` per batch rather than per refresh."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions
        self._pending: list[str] = []
        self._writing = False

    async def delivered(self, refresh_token: str) -> None:
        self._pending.append(token_hash(refresh_token))
        if self._writing:
            return
        self._writing = True
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await run_in_threadpool(self._record, batch)
        finally:
            self._writing = False

    def _record(self, hashes: list[str]) -> None:
        try:
            with store_db.transaction(self.sessions) as session:
                session.connection().execute(_MARK_DELIVERED, {"hashes": hashes, "now": utcnow()})
        except Exception:  # noqa: BLE001 - the answer is already sent; a later retry is judged without it
            log.warning("could not record the delivery of %d refresh-token answers", len(hashes), exc_info=True)
