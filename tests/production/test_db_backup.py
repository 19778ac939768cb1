"""``gatehouse db backup`` of a live instance, checked by ``gatehouse db check`` and restored
(issue 7, Operations): the restored instance keeps its clients, grants and keys."""

from __future__ import annotations

import shutil
import subprocess
import threading

import httpx2

from tests.conftest import POSTGRES_ADMIN_URL
from tests.production.conftest import create_postgres_database, drop_postgres_database
from tests.production.flows import (
    add_user,
    client_credentials_token,
    refresh,
    register_machine_client,
    register_public_client,
    user_tokens,
)
from tests.production.harness import run_gatehouse

PASSWORD = "a long enough password"


class TokenTraffic:
    """Client-credentials token requests in a loop, until stopped: a server that is busy writing."""

    def __init__(self, base_url: str, client: tuple[str, str]):
        self.base_url, self.client = base_url, client
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.statuses.append(client_credentials_token(self.base_url, self.client).status_code)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def test_backup_of_a_live_sqlite_instance_checks_and_restores(tmp_path, start_gatehouse):
    data = tmp_path / "data"
    instance = start_gatehouse(None, data, None)  # the secret in data/secret.key, as out of the box
    add_user(None, data, "dana", PASSWORD)
    machine = register_machine_client(instance.url)
    public = register_public_client(instance.url)
    tokens, _ = user_tokens(instance.url, public, "dana", PASSWORD)
    jwks = httpx2.get(f"{instance.url}/jwks").json()

    backup = tmp_path / "backups" / "gatehouse.db"
    backup.parent.mkdir()
    with TokenTraffic(instance.url, machine) as traffic:
        made = run_gatehouse(["db", "backup", str(backup), "--data-dir", str(data)])
    assert made.returncode == 0, made.stderr
    assert f"Wrote a sqlite backup to {backup}" in made.stdout and "keep the secret too" in made.stdout
    assert traffic.statuses and set(traffic.statuses) == {200}, "the instance kept serving during the backup"
    assert not list(backup.parent.glob(".*partial")) and not (backup.parent / "gatehouse.db-wal").exists()

    again = run_gatehouse(["db", "backup", str(backup), "--data-dir", str(data)])
    assert again.returncode == 1 and "already exists" in again.stderr

    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(backup, restored / "gatehouse.db")
    shutil.copy(data / "secret.key", restored / "secret.key")
    checked = run_gatehouse(["db", "check", "--data-dir", str(restored)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "The database is ready to serve." in checked.stdout

    instance.stop()
    copy = start_gatehouse(None, restored, None, issuer=instance.url, port=instance.port)
    assert httpx2.get(f"{copy.url}/jwks").json() == jwks
    assert client_credentials_token(copy.url, machine).status_code == 200
    assert refresh(copy.url, public, tokens["refresh_token"]).status_code == 200


def test_backup_of_postgresql_restores_with_pg_restore(tmp_path, postgres_url, secret_key, start_gatehouse):
    instance = start_gatehouse(postgres_url, tmp_path / "data", secret_key)
    machine = register_machine_client(instance.url)
    dump = tmp_path / "gatehouse.dump"
    made = run_gatehouse(["db", "backup", str(dump)], database_url=postgres_url, secret_key=secret_key)
    assert made.returncode == 0, made.stderr
    assert "Wrote a postgresql backup" in made.stdout and "pg_restore" in made.stdout

    target = create_postgres_database()
    try:
        libpq_url = target.replace("postgresql+psycopg://", "postgresql://")
        restore = subprocess.run(["pg_restore", "--no-owner", "--dbname", libpq_url, str(dump)], capture_output=True, text=True)
        assert restore.returncode == 0, restore.stderr
        checked = run_gatehouse(["db", "check"], database_url=target, secret_key=secret_key)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        instance.stop()
        copy = start_gatehouse(target, tmp_path / "restored", secret_key, issuer=instance.url)
        assert client_credentials_token(copy.url, machine).status_code == 200
        copy.stop()
    finally:
        drop_postgres_database(target.rsplit("/", 1)[1])


def test_backup_without_pg_dump_says_to_install_the_client(tmp_path):
    url = POSTGRES_ADMIN_URL  # never reached: pg_dump is looked for first
    result = run_gatehouse(["db", "backup", str(tmp_path / "x.dump")], database_url=url, env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "pg_dump was not found" in result.stderr and "install the PostgreSQL client" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.dump").exists()
