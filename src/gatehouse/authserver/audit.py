"""The audit log: a structured event per security decision, in the store and as a log line.

Events never carry secrets, codes or tokens; only identifiers (client, user, grant, jti).
Listeners registered with :func:`on_committed` (the Prometheus counters) hear of an event once
the transaction that recorded it has committed, never of one that was rolled back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import insert
from sqlalchemy.orm import Session

from gatehouse.store.models import AuditEvent
from gatehouse.timeutil import utcnow

log = logging.getLogger("gatehouse.audit")

GRANT_APPROVED = "grant.approved"
GRANT_DENIED = "grant.denied"
GRANT_REVOKED = "grant.revoked"
TOKEN_ISSUED = "token.issued"
TOKEN_REFRESHED = "token.refreshed"
REFRESH_REUSE = "token.refresh_reuse_detected"
REFRESH_ANSWER_LOST = "token.refresh_answer_lost"
CODE_REPLAY = "token.code_replay_detected"
TOKEN_REVOKED = "token.revoked"
CLIENT_AUTH_FAILED = "client.auth_failed"
CLIENT_REGISTERED = "client.registered"
CLIENT_UPDATED = "client.updated"
CLIENT_DELETED = "client.deleted"
LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"
# upstream sign-in and vault (UP-1..UP-3): provider and upstream subject only, never a token
UPSTREAM_LOGIN_SUCCEEDED = "login.upstream_succeeded"
UPSTREAM_LOGIN_FAILED = "login.upstream_failed"
UPSTREAM_UNLINKED = "upstream.unlinked"
UPSTREAM_TOKEN_REFRESHED = "upstream.token_refreshed"
UPSTREAM_TOKENS_REVOKED = "upstream.tokens_revoked"

CLIENT_ID_COLUMN_LENGTH = AuditEvent.__table__.c.client_id.type.length


_INSERT_EVENT = insert(AuditEvent.__table__)
_PENDING = "gatehouse_audit_pending"
_listeners: list[Callable[[str, dict], None]] = []


def on_committed(listener: Callable[[str, dict], None]) -> None:
    """Call ``listener(event, details)`` for every event whose transaction commits."""
    if listener not in _listeners:
        _listeners.append(listener)


@sqlalchemy_event.listens_for(Session, "after_commit")
def _announce_committed(session: Session) -> None:
    for event, details in session.info.pop(_PENDING, ()):
        for listener in _listeners:
            try:
                listener(event, details)
            except Exception:  # noqa: BLE001 - a listener must never fail a committed request
                log.exception("audit listener failed on %s", event)


@sqlalchemy_event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def record(
    session: Session,
    event: str,
    *,
    client_id: str | None = None,
    user_id: int | None = None,
    grant_id: str | None = None,
    remote_addr: str | None = None,
    **details,
) -> None:
    if client_id is not None and len(client_id) > CLIENT_ID_COLUMN_LENGTH:
        # an unknown client_id is whatever the request sent: never let its length fail the answer
        client_id = client_id[: CLIENT_ID_COLUMN_LENGTH - 3] + "..."
    session.connection().execute(
        _INSERT_EVENT,
        {
            "at": utcnow(),
            "event": event,
            "client_id": client_id,
            "user_id": user_id,
            "grant_id": grant_id,
            "remote_addr": remote_addr,
            "details": details,
        },
    )
    if _listeners:
        session.info.setdefault(_PENDING, []).append((event, details))
    log.info(
        json.dumps(
            {"event": event, "client_id": client_id, "user_id": user_id, "grant_id": grant_id, "remote_addr": remote_addr, **details},
            default=str,
        )
    )
