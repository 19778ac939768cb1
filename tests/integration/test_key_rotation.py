"""Key rotation (AS-12): publish at once, sign after the delay, retire after the last token expires."""

from __future__ import annotations

from datetime import timedelta

import httpx2
from joserfc import jws

from gatehouse import timeutil
from gatehouse.authserver import keys


def kid_of(token: str) -> str:
    return jws.extract_compact(token.encode()).headers()["kid"]


def issue(live_as, client) -> str:
    response = live_as.post_token({"grant_type": "client_credentials"}, auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def published(live_as) -> list[str]:
    return [k["kid"] for k in httpx2.get(f"{live_as.base_url}/jwks").json()["keys"]]


def test_rotation_schedule(live_as):
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic", redirect_uris=None)
    old_kid = kid_of(issue(live_as, client))
    with live_as.ctx.unit_of_work() as session:
        new_key = keys.rotate(session, live_as.ctx.secret, timedelta(minutes=10), live_as.ctx.max_token_ttl)
        new_kid = new_key.kid
    live_as.ctx.keyring.reload()

    assert published(live_as) == [old_kid, new_kid], "the new key is published at once"
    assert kid_of(issue(live_as, client)) == old_kid, "the new key does not sign before its activation"

    timeutil.travel(timedelta(minutes=11))
    assert kid_of(issue(live_as, client)) == new_kid
    assert old_kid in published(live_as), "the old key stays while tokens it signed may be alive"

    timeutil.travel(live_as.ctx.max_token_ttl)
    assert published(live_as) == [new_kid], "the old key retires once every token it signed has expired"


def test_keys_survive_with_the_same_secret_only(tmp_path, store_url):
    from gatehouse.authserver.context import build_context
    from gatehouse.authserver.keys import KeyUnwrapError
    from tests.conftest import make_settings

    first = build_context(make_settings(tmp_path, store_url, 1, secret_key="11" * 32))
    kids = [k["kid"] for k in first.keyring.published_keys()]
    first.engine.dispose()
    again = build_context(make_settings(tmp_path, store_url, 1, secret_key="11" * 32))
    assert [k["kid"] for k in again.keyring.published_keys()] == kids
    again.engine.dispose()
    try:
        build_context(make_settings(tmp_path, store_url, 1, secret_key="22" * 32))
    except KeyUnwrapError as exc:
        assert "instance secret" in str(exc)
    else:
        raise AssertionError("a different instance secret must not unwrap the stored keys")
