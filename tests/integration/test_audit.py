"""The audit log records every security decision, and never a secret (issue 2, item 6)."""

from __future__ import annotations

import json

import httpx2
from sqlalchemy import select

from gatehouse.store.models import AuditEvent
from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"


def events(live_as) -> list[AuditEvent]:
    with live_as.ctx.unit_of_work() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_audit_events_without_secrets(live_as, caplog):
    caplog.set_level("INFO", logger="gatehouse.audit")
    username, password = live_as.add_user()
    client = live_as.register(redirect_uris=[REDIRECT])
    cid = client["client_id"]
    secrets_seen = {password, client["registration_access_token"]}

    browser = Browser(live_as.base_url)
    _, challenge = pkce_pair()
    denied = authorize(browser, client_id=cid, redirect_uri=REDIRECT, challenge=challenge, username=username,
                       password=password, decision="deny")
    assert denied.params["error"] == ["access_denied"]

    verifier, challenge = pkce_pair()
    result = authorize(browser, client_id=cid, redirect_uri=REDIRECT, challenge=challenge)
    secrets_seen.add(result.code)
    tokens = live_as.post_token({"grant_type": "authorization_code", "code": result.code, "client_id": cid,
                                 "redirect_uri": REDIRECT, "code_verifier": verifier}).json()
    secrets_seen |= {tokens["access_token"], tokens["refresh_token"]}
    rotated = live_as.post_token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": cid}).json()
    secrets_seen |= {rotated["access_token"], rotated["refresh_token"]}
    reuse = live_as.post_token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": cid})
    assert reuse.status_code == 400

    confidential = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic", redirect_uris=None)
    wrong = live_as.post_token({"grant_type": "client_credentials"}, auth=(confidential["client_id"], "not-the-secret"))
    assert wrong.status_code == 401
    secrets_seen.add(confidential["client_secret"])
    cc = live_as.post_token({"grant_type": "client_credentials"}, auth=(confidential["client_id"], confidential["client_secret"])).json()
    httpx2.post(f"{live_as.base_url}/revoke", data={"token": cc["access_token"]}, auth=(confidential["client_id"], confidential["client_secret"]))

    recorded = events(live_as)
    kinds = [e.event for e in recorded]
    for expected in ("client.registered", "login.succeeded", "grant.denied", "grant.approved", "token.issued", "token.refreshed",
                     "token.refresh_reuse_detected", "grant.revoked", "client.auth_failed", "token.revoked"):
        assert expected in kinds, f"missing audit event {expected}: {kinds}"
    reuse_event = next(e for e in recorded if e.event == "token.refresh_reuse_detected")
    assert reuse_event.client_id == cid and reuse_event.grant_id

    stored = json.dumps([[e.event, e.client_id, e.grant_id, e.details] for e in recorded])
    logged = caplog.text
    for secret in secrets_seen:
        assert secret not in stored and secret not in logged
