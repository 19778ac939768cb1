"""``gatehouse db backup PATH``: a consistent copy of the store, safe to take while serving.

SQLite: SQLite's online backup API (``sqlite3.Connection.backup``) copies the database as of one
moment, pages read under a shared lock while writers keep going (WAL). PostgreSQL: ``pg_dump
--format=custom`` (one snapshot, restored with ``pg_restore``). Either way the copy is written
next to ``PATH`` and renamed into place, so ``PATH`` is never a half-written file.

The signing keys in a copy are encrypted with the instance secret (``GATEHOUSE_SECRET_KEY`` or
``<data-dir>/secret.key``), which is not in the copy: keep it too, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    """The backup could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class Backup:
    path: Path
    kind: str
    size: int
    restore_hint: str


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def backup_sqlite(database: Path, target: Path) -> None:
    if not database.is_file():
        raise BackupError(f"there is no SQLite database at {database}; check --data-dir / GATEHOUSE_DATABASE_URL")
    partial = _partial(target)
    partial.unlink(missing_ok=True)
    try:
        source = sqlite3.connect(database, timeout=30)
        try:
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot copy {database}: {exc}") from exc
    os.replace(partial, target)


def backup_postgresql(url: str, target: Path) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError(
            "pg_dump was not found on PATH: install the PostgreSQL client tools "
            "(Debian/Ubuntu: apt install postgresql-client; macOS: brew install libpq), the same major version as the server or newer"
        )
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password  # never on the command line, where `ps` shows it
    conninfo = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    partial = _partial(target)
    partial.unlink(missing_ok=True)
    result = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", "--file", str(partial), "--dbname", conninfo],
        env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {result.stderr.strip() or f'exit status {result.returncode}'}")
    os.replace(partial, target)


def backup(database_url: str, target: Path) -> Backup:
    """Copy the store at ``database_url`` to ``target`` (which must not exist yet)."""
    if target.exists():
        raise BackupError(f"{target} already exists; give a new path (a backup never overwrites a file)")
    if not target.parent.is_dir():
        raise BackupError(f"the directory {target.parent} does not exist; create it first")
    parsed = make_url(database_url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise BackupError("an in-memory SQLite database cannot be backed up")
        backup_sqlite(Path(parsed.database), target)
        hint = "stop Gatehouse, copy the file over <data-dir>/gatehouse.db (removing gatehouse.db-wal and -shm), start it"
    elif backend == "postgresql":
        backup_postgresql(database_url, target)
        hint = f"pg_restore --clean --if-exists --no-owner --dbname <database URL> {target}"
    else:
        raise BackupError(f"cannot back up a {backend} database; Gatehouse stores data in SQLite or PostgreSQL")
    return Backup(path=target, kind=backend, size=target.stat().st_size, restore_hint=hint)
