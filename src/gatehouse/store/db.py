"""Database engine and sessions: SQLite (file, WAL) by default, PostgreSQL for many instances."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Execution option for sessions that only read: on SQLite they take no write lock, so a
#: reader opened while the same thread holds a write transaction cannot deadlock on it.
READ_ONLY = "gatehouse_read_only"
_writer_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class StoreUnavailable(RuntimeError):
    """The database could not be opened or reached."""


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes the write lock when a transaction starts, so two writers
    queue on the busy timeout instead of one failing when it upgrades its read lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=20,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

        return engine
    # as many connections as Starlette's thread pool has threads, so no request waits for one
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_only_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def writer_lock(engine: Engine) -> AbstractContextManager:
    """What a write transaction holds in this process.

    SQLite allows one writer at a time; letting threads queue on SQLite's own busy handler
    makes them sleep in steps of up to 100 ms. A process-wide lock queues them with no such
    delay (bench/authserver.py: refresh grant p99 337 ms before). Other processes still meet
    at SQLite's busy timeout. PostgreSQL needs no lock.
    """
    lock = _writer_locks.get(engine)
    if lock is None:
        lock = _writer_locks.setdefault(engine, threading.RLock() if engine.dialect.name == "sqlite" else nullcontext())
    return lock


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    bind = sessions.kw["bind"]
    with writer_lock(bind), sessions() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (``gatehouse db upgrade``; also on ``serve``)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
