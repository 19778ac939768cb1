"""A rotation's answer that never reached the client (issue 7 crash safety; S-R1, S-R4, AS-13).

The store is put in the state a crash leaves behind, on a real AS per store backend: the
rotation of the client's token committed, its answer was never sent (``delivered_at`` unset).
The real crash (``kill -9`` under load) is tests/production/test_crash_safety.py.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from gatehouse.instance_secrets import token_hash
from gatehouse.store.models import AuditEvent, RefreshToken
from gatehouse.timeutil import utcnow
from tests.security.test_refresh_tokens import error_of, first_tokens, grant_of, new_client, refresh

TIMEOUT = 1.0


@pytest.fixture
def as_overrides():
    return {"refresh_delivery_timeout": TIMEOUT}


def row_of(live_as, refresh_token: str) -> RefreshToken:
    with live_as.ctx.unit_of_work() as session:
        return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token)))


def wait_until_delivered(live_as, refresh_token: str) -> RefreshToken:
    deadline = time.monotonic() + 5
    while (row := row_of(live_as, refresh_token)).delivered_at is None:
        assert time.monotonic() < deadline, "the answer's delivery was never recorded"
        time.sleep(0.01)
    return row


def lose_the_answer(live_as, refresh_token: str, *, seconds_ago: float) -> None:
    """The state a crash between commit and answer leaves: issued, never delivered."""
    wait_until_delivered(live_as, refresh_token)
    with live_as.ctx.unit_of_work() as session:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash(refresh_token))
            .values(delivered_at=None, created_at=utcnow() - timedelta(seconds=seconds_ago))
        )


def events(live_as, name: str) -> list[AuditEvent]:
    with live_as.ctx.unit_of_work() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event == name)))


def started_family(live_as):
    client = new_client(live_as)
    first = first_tokens(live_as, client, live_as.add_user())
    answer = refresh(live_as, client, first["refresh_token"])
    assert answer.status_code == 200, answer.text
    return client, first, answer.json()


def test_an_answered_rotation_is_recorded_as_delivered(live_as):
    client, first, second = started_family(live_as)
    row = wait_until_delivered(live_as, second["refresh_token"])
    assert row.replaces_id == row_of(live_as, first["refresh_token"]).id
    assert row.delivered_at >= row.created_at


def lost_answers_counted() -> float:
    return REGISTRY.get_sample_value("gatehouse_refresh_answers_lost_total") or 0.0


def test_retry_after_a_lost_answer_rotates_again(live_as):
    client, first, lost = started_family(live_as)
    lose_the_answer(live_as, lost["refresh_token"], seconds_ago=TIMEOUT + 5)
    counted = lost_answers_counted()

    retry = refresh(live_as, client, first["refresh_token"])

    assert retry.status_code == 200, retry.text
    again = retry.json()
    assert again["refresh_token"] not in (first["refresh_token"], lost["refresh_token"])
    assert grant_of(live_as, first).revoked_at is None
    assert [e.grant_id for e in events(live_as, "token.refresh_answer_lost")] == [grant_of(live_as, first).id]
    assert lost_answers_counted() == counted + 1
    assert refresh(live_as, client, again["refresh_token"]).status_code == 200


def test_the_lost_token_turning_up_later_is_reuse_S_R1(live_as):
    """Had the lost answer reached someone after all, its token is rotated out: using it revokes the grant."""
    client, first, lost = started_family(live_as)
    lose_the_answer(live_as, lost["refresh_token"], seconds_ago=TIMEOUT + 5)
    again = refresh(live_as, client, first["refresh_token"]).json()

    late = refresh(live_as, client, lost["refresh_token"])

    assert late.status_code == 400 and error_of(late) == "invalid_grant"
    assert grant_of(live_as, first).revoked_reason == "refresh_token_reuse"
    assert error_of(refresh(live_as, client, again["refresh_token"])) == "invalid_grant"


def test_a_second_retry_after_the_redelivered_answer_is_reuse_S_R1(live_as):
    client, first, lost = started_family(live_as)
    lose_the_answer(live_as, lost["refresh_token"], seconds_ago=TIMEOUT + 5)
    again = refresh(live_as, client, first["refresh_token"])
    assert again.status_code == 200
    wait_until_delivered(live_as, again.json()["refresh_token"])

    replay = refresh(live_as, client, first["refresh_token"])

    assert replay.status_code == 400 and error_of(replay) == "invalid_grant"
    assert grant_of(live_as, first).revoked_reason == "refresh_token_reuse"


def test_retry_waits_for_an_answer_that_may_be_in_flight(live_as):
    client, first, lost = started_family(live_as)
    lose_the_answer(live_as, lost["refresh_token"], seconds_ago=0)

    started = time.monotonic()
    retry = refresh(live_as, client, first["refresh_token"])
    waited = time.monotonic() - started

    assert retry.status_code == 200, retry.text
    assert waited >= TIMEOUT * 0.8, f"answered after {waited:.2f} s, before the answer in flight could be ruled out"


def test_an_answer_recorded_during_the_wait_makes_the_retry_reuse_S_R4(live_as):
    client, first, in_flight = started_family(live_as)
    lose_the_answer(live_as, in_flight["refresh_token"], seconds_ago=0)

    def deliver_soon():
        time.sleep(TIMEOUT / 4)
        with live_as.ctx.unit_of_work() as session:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.token_hash == token_hash(in_flight["refresh_token"]))
                .values(delivered_at=utcnow())
            )

    delivery = threading.Thread(target=deliver_soon)
    delivery.start()
    retry = refresh(live_as, client, first["refresh_token"])
    delivery.join()

    assert retry.status_code == 400 and error_of(retry) == "invalid_grant"
    assert grant_of(live_as, first).revoked_reason == "refresh_token_reuse"
    assert events(live_as, "token.refresh_answer_lost") == []


@pytest.mark.parametrize("as_overrides", [{"refresh_delivery_timeout": 0}])
def test_timeout_zero_makes_every_retry_reuse(live_as):
    client, first, lost = started_family(live_as)
    lose_the_answer(live_as, lost["refresh_token"], seconds_ago=60)

    retry = refresh(live_as, client, first["refresh_token"])

    assert retry.status_code == 400 and error_of(retry) == "invalid_grant"
    assert grant_of(live_as, first).revoked_reason == "refresh_token_reuse"


def test_a_dpop_bound_retry_is_run_again_with_its_own_proof(live_as):
    """The request is run again after the wait: its proof's jti, recorded by the rolled-back
    first run, is not taken for a replay (RFC 9449 section 11.1)."""
    from tests.security.test_dpop import DPoPKey, dpop_tokens, post_token, public_client, token_url

    live_as.add_user()  # alice, who approves test_dpop's authorization requests
    key = DPoPKey()
    client = public_client(live_as)
    first = dpop_tokens(live_as, key, client)
    grant = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    lost = post_token(live_as, client, grant, key.proof("POST", token_url(live_as)))
    assert lost.status_code == 200, lost.text
    lose_the_answer(live_as, lost.json()["refresh_token"], seconds_ago=0)

    retry = post_token(live_as, client, grant, key.proof("POST", token_url(live_as)))

    assert retry.status_code == 200, retry.text
    assert retry.json()["token_type"] == "DPoP"


def test_tokens_rotated_before_the_upgrade_stay_under_plain_reuse_detection(tmp_path):
    """Migration 0007 backfills nothing: a rotation from before it has no ``replaces_id`` link,
    so its old token presented again is reuse (S-R1), never a lost answer."""
    from alembic import command
    from sqlalchemy import text

    from gatehouse.authserver.refresh_delivery import Verdict, judge, successor_of
    from gatehouse.store import db as store_db

    engine = store_db.create_store_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = store_db.alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        connection.execute(text(
            "INSERT INTO grants (id, client_id, grant_type, scope, resource, created_at) "
            "VALUES ('g', 'c', 'authorization_code', 's', 'r', :now)"
        ), {"now": utcnow()})
        for token, rotated in (("old", utcnow()), ("new", None)):
            connection.execute(text(
                "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, scope, created_at, expires_at, rotated_at) "
                "VALUES (:hash, 'g', 'c', 's', :now, :now, :rotated)"
            ), {"hash": token_hash(token), "now": utcnow(), "rotated": rotated})
    store_db.upgrade(engine)
    try:
        with engine.connect() as connection:
            old_id = connection.execute(text("SELECT id FROM refresh_tokens WHERE token_hash = :h"), {"h": token_hash("old")}).scalar()
            assert judge(successor_of(connection, old_id), TIMEOUT) is Verdict.REUSE
    finally:
        engine.dispose()
