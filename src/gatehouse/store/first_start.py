"""One process at a time through start-up: migrations, the instance secret, the first signing key.

``gatehouse serve --workers N``, or several instances started together, would otherwise race:
two alembic upgrades creating one table, two processes writing ``secret.key`` (the second
fails) or creating a first signing key each. Whoever comes first does the work; the others
wait, then find it done. Processes sharing a SQLite file (or a data dir holding the secret)
meet at a lock file beside it (:func:`gatehouse.client.locking.hold`, ``flock``); processes
sharing a PostgreSQL database at a session-level advisory lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from gatehouse.client.locking import hold

LOCK_FILE_NAME = ".gatehouse-start.lock"
ADVISORY_LOCK_ID = 0x6761746568  # "gateh": one number every Gatehouse instance agrees on
WAIT_SECONDS = 300.0


def _lock_file(engine: Engine, data_dir: Path, secret_in_data_dir: bool) -> Path | None:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if database and database != ":memory:":
        return Path(database).resolve().parent / LOCK_FILE_NAME
    if secret_in_data_dir:
        data_dir.mkdir(parents=True, exist_ok=True)
        return data_dir / LOCK_FILE_NAME
    return None


@contextmanager
def first_start_lock(engine: Engine, data_dir: Path, *, secret_in_data_dir: bool) -> Iterator[None]:
    """Hold the start-up lock of this store (and data dir) for the duration of the block."""
    with ExitStack() as stack:
        lock_file = _lock_file(engine, data_dir, secret_in_data_dir)
        if lock_file is not None:
            stack.enter_context(hold(lock_file, timeout=WAIT_SECONDS))
        if engine.dialect.name == "postgresql":
            connection = stack.enter_context(engine.connect())
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": ADVISORY_LOCK_ID})
            connection.commit()
            stack.callback(_unlock, connection)
        yield


def _unlock(connection) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": ADVISORY_LOCK_ID})
        connection.commit()
    except Exception:
        connection.invalidate()  # closing the session releases the lock; never pool a connection holding it
        raise
