"""The audit log: a structured event per security decision, in the store and as a log line.

Events never carry secrets, codes or tokens; only identifiers (client, user, grant, jti).
"""

from __future__ import annotations

import json
import logging

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
CODE_REPLAY = "token.code_replay_detected"
TOKEN_REVOKED = "token.revoked"
CLIENT_AUTH_FAILED = "client.auth_failed"
CLIENT_REGISTERED = "client.registered"
CLIENT_UPDATED = "client.updated"
CLIENT_DELETED = "client.deleted"
LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"

CLIENT_ID_COLUMN_LENGTH = AuditEvent.__table__.c.client_id.type.length


_INSERT_EVENT = insert(AuditEvent.__table__)


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
    log.info(
        json.dumps(
            {"event": event, "client_id": client_id, "user_id": user_id, "grant_id": grant_id, "remote_addr": remote_addr, **details},
            default=str,
        )
    )
