"""Acceptance of issue 6 in headless Chromium: an MCP client connects to the calendar example, the
person allows it at Gatehouse, signs in at the upstream "Google" (oidc-provider's real login form),
and the client's tool call lists their events, fetched with the Google token from the vault (UP-3).

The MCP client is Gatehouse's own client library (``create_auth``) under the official SDK's
client, in a thread of its own (Playwright's sync API owns this thread's event loop); the only
stand-in is the launcher of the person's browser, which hands the URL to Chromium instead.

Every log record (all loggers, DEBUG), every HTTP response the MCP client received (status,
headers, bodies, including the token endpoint's), every Gatehouse page Chromium received, the
audit log and the client's credential store are then searched for Google's access, refresh and
ID tokens: none may hold any of them.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gatehouse.client import login as client_login
from gatehouse.client.auth import create_auth
from gatehouse.client.options import ClientOptions
from gatehouse.client.storage import CredentialStore
from tests.browser.conftest import SCREENSHOTS, chromium, new_context  # noqa: F401 - fixtures

try:
    from playwright.sync_api import expect
except ImportError:  # the ``chromium`` fixture reports the missing component
    expect = None

pytestmark = pytest.mark.browser

FLOW_TIMEOUT = 120


class _Tee(httpx2.AsyncByteStream):
    def __init__(self, stream, sink: bytearray):
        self._stream = stream
        self._sink = sink

    async def __aiter__(self):
        async for chunk in self._stream:
            self._sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class RecordingTransport(httpx2.AsyncHTTPTransport):
    """Everything the MCP client receives over HTTP: status line, headers and body of each response."""

    def __init__(self):
        super().__init__()
        self.received = bytearray()
        self.urls: list[str] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        self.urls.append(f"{request.method} {request.url}")
        self.received.extend(f"\n{response.status_code} {request.method} {request.url}\n".encode())
        for name, value in response.headers.multi_items():
            self.received.extend(f"{name}: {value}\n".encode())
        response.stream = _Tee(response.stream, self.received)
        return response


async def connect_and_call(resource: str, storage: Path, transport: RecordingTransport):
    """What an MCP client does: connect (the login starts on the first 401), list tools, call one."""
    auth = create_auth(resource, ClientOptions(storage_dir=storage, credentials_backend="file", login_timeout=FLOW_TIMEOUT))
    async with (
        httpx2.AsyncClient(auth=auth, transport=transport, timeout=60) as http,
        streamable_http_client(resource, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool("upcoming_events", {"max_results": 3})
    return [tool.name for tool in tools.tools], result


@contextmanager
def every_logger_at_debug(caplog):
    """caplog at DEBUG for every logger there is: those with a level of their own too, and those
    that do not propagate to the root logger (uvicorn's) get caplog's handler themselves."""
    caplog.set_level(logging.DEBUG)
    isolated = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            isolated.append(logger)
    try:
        yield
    finally:
        for logger in isolated:
            logger.removeHandler(caplog.handler)


def wait_for_url(urls: queue.Queue, client) -> str:
    deadline = time.monotonic() + FLOW_TIMEOUT
    while time.monotonic() < deadline:
        if client.done():
            client.result()  # raises what went wrong before the browser was needed
            raise AssertionError("the MCP client finished without asking for a login")
        try:
            return urls.get(timeout=0.2)
        except queue.Empty:
            continue
    raise AssertionError(f"the MCP client opened no browser within {FLOW_TIMEOUT} s")


def test_UP3_mcp_client_consent_google_login_and_the_tool_through_the_vault(
    federation, calendar_stack, new_context, monkeypatch, caplog, tmp_path  # noqa: F811
):
    urls: queue.Queue[str] = queue.Queue()

    def hand_to_chromium(url, finished):
        urls.put(url)
        finished(True)

    monkeypatch.setattr(client_login, "open_in_browser", hand_to_chromium)
    monkeypatch.setattr(client_login, "browser_can_open", lambda: True)
    transport = RecordingTransport()
    storage = tmp_path / "client-credentials"
    op, alice = federation.op, federation.op.account("alice")

    with every_logger_at_debug(caplog), ThreadPoolExecutor(1) as pool:
        client = pool.submit(asyncio.run, connect_and_call(calendar_stack.resource, storage, transport))
        authorization_url = wait_for_url(urls, client)
        assert authorization_url.startswith(f"{federation.base_url}/authorize?")

        page = new_context(viewport={"width": 1024, "height": 768}).new_page()
        gatehouse_pages = []
        page.on("response", lambda r: gatehouse_pages.append(r) if r.url.startswith(federation.base_url) else None)
        page.goto(authorization_url)
        # Gatehouse's consent comes first, before anything goes to Google (UP-2)
        expect(page.get_by_role("heading", level=1)).to_have_text("Allow Gatehouse CLI to use your account?")
        expect(page.get_by_role("status")).to_have_text("If you allow it, you will sign in with Google next.")
        page.screenshot(path=str(_screenshot("calendar-consent")), full_page=True)
        consent_body = page.content()
        page.get_by_role("button", name="Allow", exact=True).click()

        page.wait_for_url(f"{op.issuer}/**")
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
        page.get_by_label("Email or username").fill(alice.username)
        page.get_by_label("Password").fill(alice.password)
        page.screenshot(path=str(_screenshot("calendar-upstream-login")), full_page=True)
        page.get_by_role("button", name="Sign in").click()

        page.wait_for_url(lambda url: url.startswith("http://127.0.0.1:") and "/callback?" in url and op.issuer not in url
                          and not url.startswith(federation.base_url))
        expect(page.get_by_role("heading", level=1)).to_have_text("Signed in")
        tools, result = client.result(timeout=FLOW_TIMEOUT)

    # the tool got alice's events from the calendar API, with the Google token from the vault
    assert tools == ["upcoming_events"]
    assert not result.is_error, result.content
    assert [e["summary"] for e in result.structured_content["result"]] == ["Alice's standup", "Lunch with Alice",
                                                                          "Alice: quarterly review"]
    [google] = federation.upstream_token_responses
    assert federation.vault_tokens("alice")["access_token"] == google["access_token"]
    assert calendar_stack.api.received_tokens == [google["access_token"]]
    [entry] = CredentialStore(storage).find(calendar_stack.resource)
    mcp_token = entry.tokens.access_token
    assert mcp_token not in calendar_stack.api.received_tokens  # S-U4: Gatehouse's token never goes upstream

    # the scan below looks where the tokens would be: it does see the flow's own traffic
    received = bytes(transport.received).decode("utf-8", "replace")
    assert mcp_token in received and "Alice's standup" in received
    assert any(u.startswith(f"POST {federation.base_url}/token") for u in transport.urls)
    logs = caplog.text + "\n".join(repr(record.args) for record in caplog.records)
    assert "token.exchanged" in logs and "login.upstream_succeeded" in logs
    pages = consent_body + "\n".join(_response_text(r) for r in gatehouse_pages)
    audit = federation.audit_text()
    stored = "\n".join(p.read_text(errors="replace") for p in storage.rglob("*") if p.is_file())
    assert stored and "Allow" in pages

    for name in ("access_token", "refresh_token", "id_token"):
        secret = google[name]
        assert secret and len(secret) >= 20, name
        assert secret not in logs, f"the upstream {name} is in the logs"
        assert secret not in received, f"the upstream {name} reached the MCP client"
        assert secret not in pages, f"the upstream {name} is in a Gatehouse page"
        assert secret not in audit, f"the upstream {name} is in the audit log"
        assert secret not in stored, f"the upstream {name} is in the MCP client's credential store"


def _response_text(response) -> str:
    """Headers and, where the browser kept it, the body of one of Gatehouse's responses."""
    text = f"{response.status} {response.url}\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    if 300 <= response.status < 400:
        return text
    try:
        return text + "\n" + response.body().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body of a page navigated away from may be gone; headers still count
        return text


def _screenshot(name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
