"""S-U3: an upstream ID token with a wrong ``iss``, ``aud`` or ``nonce``, an expired ``exp``, a bad
signature or no signature is rejected (UP-1), against tests/upstream's misbehaving provider."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from gatehouse.store.models import UpstreamIdentity, UpstreamToken, User
from tests.upstream.tampering_op import DEFECTS
from tests.upstream_login.flow import Person, at_upstream, new_request, redirect_params, to_upstream


@pytest.fixture
def live(gatehouse, tampering_op):
    return gatehouse.start([{
        "name": "tamper", "kind": "oidc", "display_name": "Tamper", "issuer": tampering_op.issuer,
        "client_id": tampering_op.client_id, "client_secret": tampering_op.client_secret,
    }])


def signs_in(live, gatehouse, tampering_op, client_id: str):
    """The callback's answer for one sign-in, and the pending MCP request."""
    person = Person(live.base_url)
    try:
        request = new_request(client_id)
        url = to_upstream(person, request, "tamper")
        callback = at_upstream(person, url, tampering_op.account, gatehouse.callback("tamper"))
        return person.gatehouse.get(callback), request
    finally:
        person.close()


def count(live, model) -> int:
    with live.ctx.sessions() as db:
        return db.scalar(select(func.count()).select_from(model))


def test_S_U3_each_id_token_defect_is_rejected(live, gatehouse, tampering_op):
    client_id = live.register()["client_id"]
    for defect in DEFECTS:
        tampering_op.defect = defect
        page, request = signs_in(live, gatehouse, tampering_op, client_id)
        assert page.status_code == 502, f"{defect}: {page.status_code} {page.text[:300]}"
        assert "set-cookie" not in page.headers and "location" not in page.headers, defect
        assert "<code>invalid_id_token</code>" in page.text and "could not be verified" in page.text, defect
        link = html.unescape(re.search(r'<a class="button secondary" href="([^"]*)"', page.text).group(1))
        back = parse_qs(urlsplit(link).query)
        assert (back["error"], back["state"], back["iss"]) == (["server_error"], [request.state], [live.base_url]), defect
        assert "code" not in back
    assert len(tampering_op.issued_id_tokens) == len(DEFECTS), "every defect reached the ID token check"
    assert (count(live, User), count(live, UpstreamIdentity), count(live, UpstreamToken)) == (0, 0, 0)

    tampering_op.defect = None  # the control: a correct ID token signs in
    answered, request = signs_in(live, gatehouse, tampering_op, client_id)
    assert redirect_params(answered)["state"] == request.state
    assert count(live, UpstreamIdentity) == 1


def test_S_U3_the_reason_is_named_on_the_page(live, gatehouse, tampering_op):
    client_id = live.register()["client_id"]
    expected = {"expired": "it has expired", "bad_signature": "signature does not verify", "wrong_aud": "'aud' claim is wrong",
                "wrong_nonce": "'nonce' claim is wrong", "missing_nonce": "'nonce' claim is missing"}
    for defect, phrase in expected.items():
        tampering_op.defect = defect
        page, _ = signs_in(live, gatehouse, tampering_op, client_id)
        assert phrase in html.unescape(page.text), f"{defect}: {page.text[:1500]}"
