"""Rate-limit counters in the store, shared by every instance on one database.

Admitting an event is one statement,

    INSERT INTO rate_limit_counters ... SELECT ... WHERE <fits, as a new row>
    ON CONFLICT (key, window_start) DO UPDATE SET count = count + 1 WHERE <fits>
    RETURNING count

where "fits" is the sliding-window condition with the previous window's count read by a
subquery. It is atomic on PostgreSQL (the conflicting row is locked and the condition checked
on its newest version) and on SQLite 3.35+ (one writer at a time), so instances never admit
more than the limit together. On PostgreSQL each call is one round trip in autocommit: a short
transaction of its own, apart from the request it guards. Windows past their ``expires_at`` are
deleted now and then by the writes themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import BigInteger, Connection, Engine, Float, Integer, String, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from gatehouse.authserver.ratelimit import CounterUnavailable, Counts, Window
from gatehouse.store.db import READ_ONLY, writer_lock
from gatehouse.store.models import RateLimitCounter

PURGE_EVERY = 500
_COUNTERS = RateLimitCounter.__table__
_EPSILON = 1e-9


class StoreCounters:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._insert = sqlite_insert if self._sqlite else postgresql_insert
        self._readers = engine.execution_options(**{READ_ONLY: True} if self._sqlite else {"isolation_level": "AUTOCOMMIT"})
        self._writers = engine if self._sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writes = itertools.count(1)

    @contextmanager
    def _writing(self, window: Window, doing: str) -> Iterator[Connection]:
        try:
            with writer_lock(self.engine), self._writers.begin() as connection:
                yield connection
                if next(self._writes) % PURGE_EVERY == 0:
                    connection.execute(delete(_COUNTERS).where(_COUNTERS.c.expires_at < window.start))
        except SQLAlchemyError as exc:
            raise CounterUnavailable(f"the rate-limit counters in the database cannot be {doing}: {exc}") from exc

    def _counts(self, connection: Connection, key: str, window: Window) -> Counts:
        rows = dict(connection.execute(
            select(_COUNTERS.c.window_start, _COUNTERS.c.count).where(
                _COUNTERS.c.key == key, _COUNTERS.c.window_start.in_([window.start - window.length, window.start])
            )
        ).all())
        return Counts(rows.get(window.start - window.length, 0), rows.get(window.start, 0))

    def admit(self, key: str, window: Window, limit: int) -> tuple[bool, Counts]:
        previous = select(_COUNTERS.c.count).where(
            _COUNTERS.c.key == key, _COUNTERS.c.window_start == window.start - window.length
        ).correlate(None).scalar_subquery()  # its own read of the table, never the row being upserted
        room = literal(limit + _EPSILON, Float) - func.coalesce(previous, 0) * literal(window.weight, Float)
        new_row = select(
            literal(key, String), literal(window.start, BigInteger), literal(1, Integer), literal(window.expires_at, BigInteger)
        ).where(room >= 1)
        statement = self._insert(_COUNTERS).from_select(["key", "window_start", "count", "expires_at"], new_row)
        statement = statement.on_conflict_do_update(
            index_elements=[_COUNTERS.c.key, _COUNTERS.c.window_start],
            set_={"count": _COUNTERS.c.count + 1},
            where=_COUNTERS.c.count + 1 <= room,
        ).returning(_COUNTERS.c.count)
        with self._writing(window, "written") as connection:
            counted = connection.execute(statement).scalar()
            if counted is None:
                return False, self._counts(connection, key, window)
        return True, Counts(0, counted)  # admitted: only the refusal needs the counts

    def read(self, key: str, window: Window) -> Counts:
        try:
            with self._readers.connect() as connection:
                return self._counts(connection, key, window)
        except SQLAlchemyError as exc:
            raise CounterUnavailable(f"the rate-limit counters in the database cannot be read: {exc}") from exc

    def add(self, key: str, window: Window, amount: int) -> None:
        with self._writing(window, "written") as connection:
            if amount < 0:
                connection.execute(
                    update(_COUNTERS)
                    .where(_COUNTERS.c.key == key, _COUNTERS.c.window_start == window.start, _COUNTERS.c.count >= -amount)
                    .values(count=_COUNTERS.c.count + amount)
                )
                return
            statement = self._insert(_COUNTERS).values(key=key, window_start=window.start, count=amount, expires_at=window.expires_at)
            connection.execute(statement.on_conflict_do_update(
                index_elements=[_COUNTERS.c.key, _COUNTERS.c.window_start],
                set_={"count": _COUNTERS.c.count + amount},
            ))
