"""The loopback listener and the interactive step on their own (CL-9, CL-16): pages, single use, ports."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlencode

import httpx2
import pytest
from mcp.shared.auth import OAuthMetadata

from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.login import BrowserLogin, time_left
from gatehouse.client.options import ClientOptions

ISSUER = "https://auth.example.com"
METADATA = OAuthMetadata(issuer=ISSUER, authorization_endpoint=f"{ISSUER}/authorize", token_endpoint=f"{ISSUER}/token",
                         authorization_response_iss_parameter_supported=True)


async def started_login(state: str = "the-state", **options) -> tuple[BrowserLogin, str, list[str]]:
    lines: list[str] = []
    login = BrowserLogin(ClientOptions(open_browser=False, **options), lines.append, lambda: METADATA)
    redirect_uri = login.prepare()
    await login.redirect_handler(f"{ISSUER}/authorize?{urlencode({'state': state, 'redirect_uri': redirect_uri})}")
    return login, redirect_uri, lines


async def answer(redirect_uri: str, **params) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.get(f"{redirect_uri}?{urlencode(params)}")


async def test_the_listener_is_on_loopback_with_an_ephemeral_port(capsys):
    login, redirect_uri, _ = await started_login()
    try:
        assert redirect_uri.startswith("http://127.0.0.1:") and redirect_uri.endswith("/callback")
        port = int(redirect_uri.split(":")[2].split("/")[0])
        with pytest.raises(OSError):
            socket.create_server(("127.0.0.1", port))
    finally:
        await login.close()
    assert "Open this URL in a browser to sign in:" in capsys.readouterr().err


async def test_the_answer_is_single_use_and_the_pages_say_what_happened():
    login, redirect_uri, lines = await started_login()
    try:
        waiting = asyncio.create_task(login.callback_handler())
        page = await answer(redirect_uri, code="c-1", state="the-state", iss=ISSUER)
        assert page.status_code == 200 and "You can close this tab." in page.text
        assert page.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        result = await waiting
        assert (result.code, result.state, result.iss) == ("c-1", "the-state", ISSUER)
        replay = await answer(redirect_uri, code="c-1", state="the-state", iss=ISSUER)
        assert replay.status_code == 400 and "already finished" in replay.text
        assert any(line.startswith("Waiting for the login (") for line in lines)
    finally:
        await login.close()


async def test_a_refusal_is_shown_in_the_browser_and_raised():
    login, redirect_uri, _ = await started_login()
    try:
        waiting = asyncio.create_task(login.callback_handler())
        page = await answer(redirect_uri, error="access_denied", error_description="no <b>thanks</b>", state="the-state", iss=ISSUER)
        assert page.status_code == 400 and "You can close this tab." in page.text and "<b>" not in page.text
        with pytest.raises(AuthorizationFailed, match=r"^sign-in was declined at https://auth.example.com \(access_denied: no <b>thanks</b>\)$"):
            await waiting
    finally:
        await login.close()


async def test_other_paths_and_methods_are_not_the_callback():
    login, redirect_uri, _ = await started_login()
    try:
        async with httpx2.AsyncClient() as http:
            assert (await http.get(redirect_uri.replace("/callback", "/favicon.ico"))).status_code == 404
            assert (await http.post(redirect_uri, data={"code": "x", "state": "the-state"})).status_code == 405
    finally:
        await login.close()


async def test_duplicate_state_parameters_are_discarded():
    login, redirect_uri, _ = await started_login()
    try:
        async with httpx2.AsyncClient() as http:
            page = await http.get(f"{redirect_uri}?code=x&state=the-state&state=other&iss={ISSUER}")
        assert page.status_code == 400 and "ignored" in page.text
    finally:
        await login.close()


async def test_the_timeout_is_reported_in_seconds():
    login, _, lines = await started_login(login_timeout=0.3)
    try:
        with pytest.raises(AuthorizationFailed, match=r"^no answer from the browser within 0.3 s"):
            await login.callback_handler()
    finally:
        await login.close()


async def test_a_free_preferred_port_is_reused_and_a_taken_one_is_not():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    login = BrowserLogin(ClientOptions(), lambda line: None, lambda: METADATA)
    try:
        assert login.prepare(port) != f"http://127.0.0.1:{port}/callback"
    finally:
        await login.close()
    probe.close()
    login = BrowserLogin(ClientOptions(), lambda line: None, lambda: METADATA)
    try:
        assert login.prepare(port) == f"http://127.0.0.1:{port}/callback"
    finally:
        await login.close()


def test_time_left_is_minutes_and_seconds():
    assert [time_left(s) for s in (299.2, 60, 5.01, 0, -1)] == ["5:00", "1:00", "0:06", "0:00", "0:00"]
