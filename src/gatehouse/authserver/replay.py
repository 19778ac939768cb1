"""``jti`` replay detection in the store, shared by every AS instance on one database.

RFC 7523 section 3 item 7 (assertions) and RFC 9449 section 11.1 (DPoP proofs): a value is
refused while it is remembered, and remembered until the JWT carrying it would be refused for its
age anyway. Expired rows are deleted now and then by the writes themselves.
"""

from __future__ import annotations

import itertools
from datetime import datetime

from sqlalchemy import Table, delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gatehouse.timeutil import utcnow

PURGE_EVERY = 500
_writes = itertools.count(1)


def first_use(session: Session, table: Table, expires_at: datetime, **key: str) -> bool:
    """Remember ``key`` in ``table`` until ``expires_at``, in the session's transaction; False if
    it is already there (a replay). One statement, no exception, on SQLite and PostgreSQL."""
    connection = session.connection()
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values(expires_at=expires_at, **key).on_conflict_do_nothing().returning(table.c.expires_at)
    if next(_writes) % PURGE_EVERY == 0:
        connection.execute(delete(table).where(table.c.expires_at < utcnow()))
    return connection.execute(statement).first() is not None
