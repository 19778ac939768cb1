"""UP-3: no upstream token (access, refresh or ID token) appears in a log line, an audit event or
any answer to the MCP client or the browser, through sign-in, refresh and revocation."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select, text

from gatehouse import timeutil
from gatehouse.store.models import User
from tests.upstream_login.flow import Person, answer, at_upstream, consent_before_upstream, form_index, new_request, redirect_params


def test_UP_3_upstream_tokens_never_leave_the_vault(federated, google, gatehouse, caplog):
    caplog.set_level(logging.DEBUG)
    provider = federated.ctx.upstream.get("google")
    seen: list[dict] = []
    identify = provider.identify

    async def spy(token, leg):  # records what the provider sent, then does the real work
        seen.append(dict(token))
        return await identify(token, leg)

    provider.identify = spy
    answers: list[str] = []
    person = Person(federated.base_url)
    try:
        request = new_request(federated.register()["client_id"])
        consent = consent_before_upstream(person, request)
        upstream = answer(person, consent)
        callback = person.gatehouse.get(at_upstream(person, upstream.headers["location"], google.account("alice"), gatehouse.callback("google")))
        code = redirect_params(callback)["code"]
        token = federated.post_token({"grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri,
                                      "client_id": request.client_id, "code_verifier": request.verifier})
        refreshed = federated.post_token({"grant_type": "refresh_token", "refresh_token": token.json()["refresh_token"],
                                          "client_id": request.client_id})
        with federated.ctx.sessions() as db:
            user_id = db.scalar(select(User.id).where(User.username == "google:alice@example.com"))
        timeutil.travel(timedelta(hours=2))
        upstream_refreshed = asyncio.run(federated.ctx.upstream_vault.fresh_access_token(user_id, "google"))
        apps = person.gatehouse.get("/apps")
        unlinked = person.gatehouse.submit(apps, form_index=form_index(apps, "/apps/upstream/unlink"))
        for response in (consent, upstream, callback, token, refreshed, apps, unlinked, person.gatehouse.get("/apps")):
            answers.append(f"{response.status_code} {dict(response.headers)} {response.text}")
    finally:
        person.close()

    secrets = [seen[0]["access_token"], seen[0]["refresh_token"], seen[0]["id_token"], upstream_refreshed.access_token]
    assert all(len(s) > 20 for s in secrets), "the provider sent all three kinds of token"
    with federated.ctx.engine.connect() as connection:
        audit = repr(connection.execute(text("SELECT * FROM audit_events")).all())
    assert "login.upstream_succeeded" in audit and "upstream.token_refreshed" in audit and "upstream.tokens_revoked" in audit
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "login.upstream_succeeded" in logs, "the audit log lines were captured"
    for secret in secrets:
        for where, haystack in (("logs", logs), ("audit events", audit), ("answers", "\n".join(answers))):
            assert secret not in haystack, f"an upstream token appears in the {where}"
            assert secret[:16] not in haystack, f"part of an upstream token appears in the {where}"
