"""Retention (issue 7, item 4): expired rows are purged in batches, live ones and what refresh-token
reuse detection still needs (AS-13, RFC 9700 section 4.14.2) are kept; purges running at once on
several instances do not get in each other's way."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import httpx2
from sqlalchemy import func, select

from gatehouse.config import Settings
from gatehouse.instance_secrets import new_token, token_hash
from gatehouse.ops.retention import Purger
from gatehouse.store import db as store_db
from gatehouse.store.models import (
    AccessToken,
    AuthorizationCode,
    Base,
    ClientAssertionUse,
    DPoPProofUse,
    Grant,
    RefreshToken,
    Revocation,
    User,
)
from gatehouse.timeutil import epoch, utcnow
from tests.production.flows import refresh, register_public_client, store_url as instance_store_url
from tests.production.harness import run_gatehouse

GRACE = timedelta(seconds=3600)


@dataclass
class Seeded:
    """What :func:`seed` put in the store: rows that must go, and rows that must stay."""

    expired: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    rotated_refresh_token: str = ""
    live_refresh_token: str = ""
    live_grant: str = ""


def seed(url: str, client_id: str, n_expired: int = 7) -> Seeded:
    """Rows with past expiries (beyond the grace period), rows within it, and live rows, for ``client_id``."""
    engine = store_db.create_store_engine(url)
    sessions = store_db.session_factory(engine)
    now = utcnow()
    long_ago, recently, later = now - GRACE - timedelta(days=1), now - timedelta(seconds=30), now + timedelta(minutes=10)
    result = Seeded()
    with store_db.transaction(sessions) as session:
        user = User(username=f"retention-{uuid.uuid4().hex[:6]}", password_hash=None, created_at=long_ago)
        session.add(user)
        session.flush()

        def grant(created_at) -> str:
            row = Grant(id=str(uuid.uuid4()), user_id=user.id, client_id=client_id, grant_type="authorization_code", scope="",
                        resource="http://127.0.0.1/mcp", created_at=created_at)
            session.add(row)
            session.flush()
            return row.id

        def code(expires_at):
            session.add(AuthorizationCode(code_hash=token_hash(new_token()), client_id=client_id, user_id=user.id, redirect_uri="x",
                                          redirect_uri_sent=True, scope="", resource="x", code_challenge="c", code_challenge_method="S256",
                                          auth_time=long_ago, created_at=long_ago, expires_at=expires_at))

        def refresh_token(grant_id, expires_at, rotated=False) -> str:
            value = new_token()
            session.add(RefreshToken(token_hash=token_hash(value), grant_id=grant_id, client_id=client_id, scope="",
                                     created_at=long_ago, expires_at=expires_at, rotated_at=long_ago if rotated else None))
            return value

        for _ in range(n_expired):
            code(long_ago)
        code(recently)  # expired, but within the grace period
        code(later)
        result.expired["authorization_codes"], result.kept["authorization_codes"] = n_expired, 2

        # a dead family: every refresh token expired long ago -> its tokens and the grant go
        dead = grant(long_ago)
        refresh_token(dead, long_ago, rotated=True)
        refresh_token(dead, long_ago)
        # a live family: its rotated token expired long ago, but reuse detection still needs it
        live = grant(long_ago)
        result.rotated_refresh_token = refresh_token(live, long_ago, rotated=True)
        result.live_refresh_token = refresh_token(live, later)
        result.live_grant = live
        result.expired["refresh_tokens"], result.kept["refresh_tokens"] = 2, 2

        # client-credentials style: only access-token records, all expired -> they and the grant go
        machine = grant(long_ago)
        for _ in range(n_expired):
            session.add(AccessToken(jti=new_token(16), grant_id=machine, client_id=client_id, expires_at=long_ago))
        session.add(AccessToken(jti=new_token(16), grant_id=live, client_id=client_id, expires_at=later))
        result.expired["access_tokens"], result.kept["access_tokens"] = n_expired, 1
        grant(now)  # new, nothing issued yet: kept
        result.expired["grants"] = 2  # dead and machine

        for _ in range(n_expired):
            session.add(Revocation(jti=new_token(16), expires_at=long_ago, revoked_at=long_ago, reason="test"))
            session.add(ClientAssertionUse(client_id=client_id, jti=new_token(16), expires_at=long_ago))
            session.add(DPoPProofUse(jkt="k" * 43, jti=new_token(16), expires_at=long_ago))
        session.add(Revocation(jti=new_token(16), expires_at=later, revoked_at=now, reason="test"))
        session.add(ClientAssertionUse(client_id=client_id, jti=new_token(16), expires_at=later))
        session.add(DPoPProofUse(jkt="k" * 43, jti=new_token(16), expires_at=later))
        for name in ("revocations", "client_assertion_jtis", "dpop_proof_jtis"):
            result.expired[name], result.kept[name] = n_expired, 1

        tables = Base.metadata.tables
        if "upstream_login_states" in tables:  # issue 6's pending upstream sign-ins
            for expires_at in [long_ago] * n_expired + [later]:
                session.execute(tables["upstream_login_states"].insert().values(
                    state_hash=token_hash(new_token()), provider="google", browser_hash="b" * 64, code_verifier="v", nonce="n",
                    next_url="/", client_id=client_id, consented=False, created_at=long_ago, expires_at=expires_at, used_at=None,
                ))
            result.expired["upstream_login_states"], result.kept["upstream_login_states"] = n_expired, 1
        if "rate_limit_counters" in tables:  # shared rate-limit windows, expiring in epoch seconds
            for n, expires_at in enumerate([long_ago] * n_expired + [later]):
                session.execute(tables["rate_limit_counters"].insert().values(
                    key=f"test:{client_id}:{n}", window_start=n, count=1, expires_at=epoch(expires_at),
                ))
            result.expired["rate_limit_counters"], result.kept["rate_limit_counters"] = n_expired, 1
    engine.dispose()
    return result


def row_counts(url: str) -> dict[str, int]:
    engine = store_db.create_store_engine(url)
    try:
        with engine.connect() as connection:
            return {name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                    for name, table in Base.metadata.tables.items()}
    finally:
        engine.dispose()


def migrated(url: str) -> str:
    engine = store_db.create_store_engine(url)
    store_db.upgrade(engine)
    engine.dispose()
    return url


def test_purge_deletes_expired_rows_in_batches_and_keeps_live_ones(store_url):
    url = migrated(store_url)
    seeded = seed(url, "client-retention")
    before = row_counts(url)
    engine = store_db.create_store_engine(url)
    pauses = []
    report = Purger(engine, Settings(database_url=url, retention_grace=int(GRACE.total_seconds()))).run_pass(
        batch_size=3, pause=0.01, sleep=pauses.append
    )
    engine.dispose()

    for table, count in seeded.expired.items():
        assert report.deleted[table] == count, (table, report.deleted)
    after = row_counts(url)
    for table, count in seeded.expired.items():
        assert before[table] - after[table] == count, table
    assert after["grants"] == 2  # the live family's and the new one
    # 7 rows of each simply expiring table: 3 batches each (3, 3, 1); 2 refresh tokens and 2 grants: 1 batch each
    simple = len(seeded.expired) - 2
    assert report.batches == 3 * simple + 1 + 1 == len(pauses)
    assert set(pauses) == {0.01}

    again = Purger(store_db.create_store_engine(url), Settings(database_url=url)).run_pass(batch_size=3, pause=0)
    assert again.total == 0 and again.batches == 0


def test_purges_running_at_once_delete_each_row_once(postgres_url):
    url = migrated(postgres_url)
    seeded = seed(url, "client-concurrent", n_expired=60)
    settings = Settings(database_url=url)
    reports, errors = [], []

    def purge():
        engine = store_db.create_store_engine(url)
        try:
            reports.append(Purger(engine, settings).run_pass(batch_size=5, pause=0))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            engine.dispose()

    workers = [threading.Thread(target=purge) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors
    for table, count in seeded.expired.items():
        assert sum(r.deleted[table] for r in reports) == count, table


def test_db_purge_keeps_what_reuse_detection_needs(tmp_path, store_url, secret_key, start_gatehouse):
    """After `gatehouse db purge`, an old rotated refresh token presented again still revokes its
    grant (S-R2), and the grant's live refresh token stops working with it."""
    instance = start_gatehouse(store_url, tmp_path / "data", secret_key)
    client_id = register_public_client(instance.url)
    seeded = seed(instance_store_url(store_url, tmp_path / "data"), client_id)

    purged = run_gatehouse(["db", "purge", "--data-dir", str(tmp_path / "data"), "--batch-size", "4"],
                           database_url=store_url, secret_key=secret_key)
    assert purged.returncode == 0, purged.stderr
    assert "authorization_codes=7" in purged.stdout and "refresh_tokens=2" in purged.stdout, purged.stdout

    reuse = refresh(instance.url, client_id, seeded.rotated_refresh_token)
    assert reuse.status_code == 400 and "reuse detection" in reuse.json()["error_description"]
    revoked = refresh(instance.url, client_id, seeded.live_refresh_token)
    assert revoked.status_code == 400 and "revoked" in revoked.json()["error_description"]


def test_the_background_task_purges_and_logs_one_line_per_run(tmp_path, secret_key, start_gatehouse):
    instance = start_gatehouse(None, tmp_path / "data", secret_key, extra_args=["--log-format", "json"],
                               env={"GATEHOUSE_RETENTION_INTERVAL": "2", "GATEHOUSE_RETENTION_BATCH_SIZE": "2"})
    client_id = register_public_client(instance.url)
    url = instance_store_url(None, tmp_path / "data")
    seeded = seed(url, client_id)

    deadline = time.monotonic() + 60
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = [json.loads(line) for line in instance.stderr().splitlines() if '"gatehouse.retention"' in line]
        if any(run.get("purged", {}).get("authorization_codes") for run in runs):
            break
        time.sleep(0.2)
    purging = [run for run in runs if run.get("purged", {}).get("authorization_codes")]
    assert purging, f"no purge logged: {runs}"
    assert purging[0]["purged"]["authorization_codes"] == seeded.expired["authorization_codes"]
    assert purging[0]["batches"] >= 4 and purging[0]["message"].startswith("retention: purged ")
    assert row_counts(url)["authorization_codes"] == seeded.kept["authorization_codes"]
    assert httpx2.get(f"{instance.url}/readyz").status_code == 200


def test_db_purge_on_a_missing_or_outdated_store_says_what_to_do(tmp_path):
    missing = run_gatehouse(["db", "purge", "--data-dir", str(tmp_path / "nothing")])
    assert missing.returncode == 1 and "there is no database" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "nothing").exists()  # nothing was created

    url = migrated(f"sqlite:///{tmp_path / 'data' / 'gatehouse.db'}")
    engine = store_db.create_store_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0004'")
    engine.dispose()
    outdated = run_gatehouse(["db", "purge", "--data-dir", str(tmp_path / "data")])
    assert outdated.returncode == 1 and "gatehouse db upgrade" in outdated.stderr
