"""Crash safety (issue 7 acceptance): ``kill -9`` under a steady load of refreshes, then restart.

Eight public clients each hold a grant (a real authorization-code flow with PKCE, login and
consent over HTTP) and refresh in a loop, always with the newest refresh token they received
in a 200 answer (AS-13 rotation). Mid-load one instance gets SIGKILL, and is restarted on the
same port and the same store: on SQLite the only instance (so clients wait for the restart), on
PostgreSQL one of two instances (clients fail over to the other at once, as behind a load
balancer). Afterwards:

- no refresh token and no access token (``jti``) was issued twice;
- every token a client received in a 200 answer is in the store: no success lost its effect;
- every client's newest refresh token works (one more refresh succeeds) and its grant is live.

A request in flight at the kill gets no answer, and the client retries with the same token. If
the killed process had not committed the rotation, the retry succeeds as a first use. If it had
committed it and died before answering, the new token's answer was never recorded as delivered:
the retry waits out ``refresh_delivery_timeout`` and rotates the token again
(gatehouse.authserver.refresh_delivery), where reuse detection (S-R1) would have revoked the
grant. Either way every client keeps its grant; any refused retry fails the test.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import create_engine, func, select

from gatehouse.instance_secrets import token_hash
from gatehouse.store.models import AccessToken, AuditEvent, Grant, RefreshToken
from tests.production.conftest import create_postgres_database, drop_postgres_database
from tests.production.flows import add_user, register_public_client, user_tokens
from tests.production.harness import RunningInstance, high_rate_limits_env, start_gatehouse

USER = ("crash", "a long crash-test password")
CLIENTS = 8
LOAD_SECONDS = 2.0  # before the kill, and again after the restart


def _jti(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


@dataclass
class RefreshingClient:
    """A public client refreshing in a loop against ``urls`` (moving on to the next when one
    does not answer), keeping the newest refresh token it received."""

    client_id: str
    urls: list[str]
    token: str
    initial: str = ""  # the refresh token of the code exchange: names the grant in the store
    received: list[str] = field(default_factory=list)  # refresh tokens from 200 answers, in order
    jtis: list[str] = field(default_factory=list)
    unanswered: str | None = None  # the token of a request that got no answer, until a retry settles it
    retried_unanswered: int = 0  # retries of an unanswered request that then succeeded
    unexpected: list[str] = field(default_factory=list)
    refreshes: int = 0

    def refresh(self, http: httpx2.Client) -> httpx2.Response:
        return http.post(f"{self.urls[0]}/token", data={"grant_type": "refresh_token", "refresh_token": self.token,
                                                        "client_id": self.client_id})

    def run(self, stop: threading.Event) -> None:
        with httpx2.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    response = self.refresh(http)
                except httpx2.TransportError:
                    self.unanswered = self.token
                    self.urls.append(self.urls.pop(0))
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.accept(response.json())
                else:
                    self.unexpected.append(f"HTTP {response.status_code}: {response.text[:300]}")
                    return

    def accept(self, tokens: dict) -> None:
        if self.unanswered:
            self.retried_unanswered += 1
        self.unanswered = None
        self.token = tokens["refresh_token"]
        self.received.append(self.token)
        self.jtis.append(_jti(tokens["access_token"]))
        self.refreshes += 1


@dataclass
class Deployment:
    database_url: str
    data_dir: Path
    secret_key: str | None
    instances: list[RunningInstance]

    def start(self, port: int | None = None) -> RunningInstance:
        issuer = self.instances[0].url if self.instances else None
        return start_gatehouse(self.database_url, self.data_dir, self.secret_key, issuer, ["--log-level", "warning"],
                               high_rate_limits_env(), port=port)


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request, tmp_path, secret_key):
    """SQLite: one instance on a data dir. PostgreSQL: two instances on one database, one secret, one issuer."""
    if request.param == "sqlite":
        database_url, count = f"sqlite:///{tmp_path / 'data' / 'gatehouse.db'}", 1
    else:
        database_url, count = create_postgres_database(), 2
    deployment = Deployment(database_url, tmp_path / "data", secret_key if count > 1 else None, [])
    try:
        for _ in range(count):
            deployment.instances.append(deployment.start())
        add_user(database_url, deployment.data_dir, *USER)
        yield deployment
    finally:
        for instance in deployment.instances:
            instance.stop()
        if request.param == "postgresql":
            drop_postgres_database(database_url.rsplit("/", 1)[1])


def _store_rows(database_url: str):
    """What the store holds: refresh-token rows by hash, access-token jtis, grants by id, and
    how many retries found their answer lost."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            refresh = {row.token_hash: row for row in db.execute(select(RefreshToken.__table__))}
            jtis = set(db.scalars(select(AccessToken.jti)))
            grants = {row.id: row for row in db.execute(select(Grant.__table__))}
            lost_answers = db.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.event == "token.refresh_answer_lost")
            )
    finally:
        engine.dispose()
    return refresh, jtis, grants, lost_answers


def test_kill_9_under_refresh_load_loses_no_answered_refresh(deployment):
    """S-R1, S-R4, AS-13 under a crash: see the module docstring for what is checked."""
    instances = deployment.instances
    clients = []
    for index in range(CLIENTS):
        client_id = register_public_client(instances[0].url)
        token = user_tokens(instances[0].url, client_id, *USER)[0]["refresh_token"]
        urls = [i.url for i in instances]
        clients.append(RefreshingClient(client_id, urls[index % len(urls):] + urls[: index % len(urls)], token, token))

    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    before_kill = sum(c.refreshes for c in clients)
    victim = instances[0]
    victim.kill()  # SIGKILL, mid-load
    instances[0] = deployment.start(port=victim.port)  # same port, same store
    restarted_at = sum(c.refreshes for c in clients)
    time.sleep(LOAD_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(60)

    assert not any(thread.is_alive() for thread in threads)
    assert before_kill > 0 and sum(c.refreshes for c in clients) > restarted_at, "the load did not run on both sides of the kill"
    # no request was refused, not even a retry whose answer the kill swallowed after its commit
    assert not [c.unexpected for c in clients if c.unexpected]

    # no refresh token and no access token was issued twice
    issued = [token for c in clients for token in c.received]
    assert len(issued) == len(set(issued))
    jtis = [jti for c in clients for jti in c.jtis]
    assert len(jtis) == len(set(jtis))

    # every answered refresh is in the store: its refresh token and its access-token record
    refresh_rows, stored_jtis, grants, lost_answers = _store_rows(deployment.database_url)
    assert not [t for t in issued if token_hash(t) not in refresh_rows], "a refresh token answered with 200 is not in the store"
    assert not set(jtis) - stored_jtis, "an access token answered with 200 has no record in the store"

    # every client's newest refresh token works, and its grant is live
    with httpx2.Client(timeout=30) as http:
        for client in clients:
            response = client.refresh(http)
            assert response.status_code == 200, f"{client.client_id}: the newest refresh token failed: {response.text}"
            client.accept(response.json())
            grant = grants[refresh_rows[token_hash(client.initial)].grant_id]
            assert grant.revoked_at is None, grant.revoked_reason
    assert lost_answers <= sum(c.retried_unanswered for c in clients)
    print(f"refreshes: {len(issued)} ({before_kill} before the kill); retries that succeeded after the kill: "
          f"{sum(c.retried_unanswered for c in clients)}, of which rotated again after a lost answer: {lost_answers}")
