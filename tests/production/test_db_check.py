"""``gatehouse db check`` (issue 7, Operations): a healthy store passes; a damaged, foreign,
outdated or unreadable one fails with what is wrong and what to do, never a stack trace."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from gatehouse.authserver.context import build_context
from gatehouse.config import Settings
from tests.production.harness import run_gatehouse


def made_store(data_dir: Path, database_url: str | None = None, secret_key: str | None = None) -> Path:
    """A store as `gatehouse serve` leaves it (schema, secret, first signing key); its SQLite file."""
    ctx = build_context(Settings(data_dir=data_dir, database_url=database_url, secret_key=secret_key))
    ctx.engine.dispose()
    return data_dir / "gatehouse.db"


def check(data_dir: Path, **kwargs):
    result = run_gatehouse(["db", "check", "--data-dir", str(data_dir)], **kwargs)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def single_file_copy(source: Path, target: Path) -> Path:
    """The database in one file (no -wal beside it), as `gatehouse db backup` writes it."""
    made = run_gatehouse(["db", "backup", str(target), "--data-dir", str(source.parent)])
    assert made.returncode == 0, made.stderr
    return target


def test_a_healthy_store_passes(tmp_path, store_url, secret_key):
    made_store(tmp_path / "data", store_url, secret_key)
    result = check(tmp_path / "data", database_url=store_url, secret_key=secret_key)
    assert result.returncode == 0, result.stdout + result.stderr
    for check_name in ("database", "schema", "signing keys", "references"):
        assert f"ok   {check_name}: " in result.stdout
    assert "The database is ready to serve." in result.stdout


def test_damaged_pages_fail_the_integrity_check(tmp_path):
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    damaged = single_file_copy(made_store(tmp_path / "data"), damaged_dir / "gatehouse.db")
    (damaged_dir / "secret.key").write_bytes((tmp_path / "data" / "secret.key").read_bytes())
    page_size = 4096
    with damaged.open("r+b") as handle:  # keep page 1 (the header and schema), overwrite the rest
        size = handle.seek(0, 2)
        handle.seek(page_size)
        handle.write(secrets.token_bytes(size - page_size))

    result = check(damaged_dir)
    assert result.returncode == 1
    assert "FAIL integrity" in result.stdout and "restore the database from a backup" in result.stdout
    assert "failed 1 check: integrity" in result.stderr


def test_a_file_that_is_not_sqlite_fails(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gatehouse.db").write_bytes(secrets.token_bytes(8192))
    result = check(tmp_path / "data")
    assert result.returncode == 1 and "is not an SQLite database" in result.stdout


def test_a_foreign_database_fails(tmp_path):
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "gatehouse.db") as foreign:
        foreign.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    result = check(tmp_path / "data")
    assert result.returncode == 1
    assert "this is not a Gatehouse database" in result.stdout and "invoices" in result.stdout


def test_an_empty_postgresql_database_fails(tmp_path, postgres_url):
    result = check(tmp_path / "data", database_url=postgres_url, secret_key=secrets.token_hex(32))
    assert result.returncode == 1
    assert "not a Gatehouse database" in result.stdout and "it is empty" in result.stdout
    assert "gatehouse db upgrade" in result.stdout


def test_an_unreachable_database_fails(tmp_path):
    result = check(tmp_path / "data", database_url="postgresql+psycopg://postgres@127.0.0.1:1/gatehouse")
    assert result.returncode == 1
    assert "FAIL database: cannot open the database" in result.stdout and "database server is running" in result.stdout


def test_the_wrong_secret_fails_the_signing_keys(tmp_path, store_url):
    made_store(tmp_path / "data", store_url, secrets.token_hex(32))
    result = check(tmp_path / "data", database_url=store_url, secret_key=secrets.token_hex(32))
    assert result.returncode == 1
    assert "FAIL signing keys" in result.stdout and "cannot be decrypted" in result.stdout


def test_a_missing_secret_fails_the_signing_keys(tmp_path):
    made_store(tmp_path / "data")
    (tmp_path / "data" / "secret.key").unlink()
    result = check(tmp_path / "data")
    assert result.returncode == 1 and "no instance secret" in result.stdout


def test_an_older_schema_says_to_upgrade(tmp_path):
    database = made_store(tmp_path / "data")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0004'")
    result = check(tmp_path / "data")
    assert result.returncode == 1
    assert "the schema is at revision 0004" in result.stdout and "gatehouse db upgrade" in result.stdout


def test_a_newer_schema_says_so(tmp_path):
    database = made_store(tmp_path / "data")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    result = check(tmp_path / "data")
    assert result.returncode == 1 and "made by a newer Gatehouse" in result.stdout


@pytest.mark.parametrize("orphan", ["refresh token", "access-token record"])
def test_rows_pointing_at_missing_grants_are_reported(tmp_path, orphan):
    database = made_store(tmp_path / "data")
    with sqlite3.connect(database) as connection:  # foreign keys are off on a bare connection
        if orphan == "refresh token":
            connection.execute("INSERT INTO refresh_tokens (token_hash, grant_id, client_id, scope, created_at, expires_at) "
                               "VALUES ('h', 'no-such-grant', 'c', '', '2026-01-01', '2026-02-01')")
        else:
            connection.execute("INSERT INTO access_tokens (jti, grant_id, client_id, expires_at) VALUES ('j', 'no-such-grant', 'c', '2026-01-01')")
    result = check(tmp_path / "data")
    assert result.returncode == 1
    assert "FAIL foreign keys" in result.stdout
    assert f"FAIL references: 1 {orphan}s whose grant is gone" in result.stdout
