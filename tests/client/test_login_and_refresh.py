"""Against `gatehouse serve`'s app: login through a browser, stored tokens, refresh, single flight, failures.

The browser is the ``BROWSER`` program of tests/client/user_agent.py, started by ``webbrowser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import re
import time
from pathlib import Path

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed, ClientError, StorageError
from gatehouse.client.options import ClientOptions
from gatehouse.client.storage import CredentialStore
from tests.client.conftest import (
    call_tool,
    failure_of,
    fetch,
    files_under,
    refreshes_at,
    registrations_at,
)
from tests.client.user_agent import sign_in


def stored_entry(tmp_path: Path, resource: str):
    [entry] = CredentialStore(tmp_path / "credentials").find(resource)
    return entry


def expire_stored_token(tmp_path: Path, resource: str) -> None:
    """What a client restarted after the access token expired finds in its store."""
    path = stored_entry(tmp_path, resource).path
    document = json.loads(path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(document))


async def wait_until_expired(tmp_path: Path, resource: str) -> None:
    expires_at = stored_entry(tmp_path, resource).tokens.expires_at
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)


# --- logging in once, then never again -----------------------------------------------------

async def test_login_then_a_restarted_client_needs_no_login(live_as, user_agent, options):
    lines: list[str] = []
    result = await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")
    assert not result.is_error and len(user_agent.opened()) == 1
    assert user_agent.pages() == ["200 Signed in"]
    assert "Opening the browser…" in lines
    assert any(re.fullmatch(r"Waiting for the login \(0:[0-9]{2} left\)…", line) for line in lines)

    restarted = create_auth(live_as.resource, options())
    added = await call_tool(live_as.resource, restarted, "add_note", {"title": "Plan", "body": "again"})
    assert not added.is_error
    assert len(user_agent.opened()) == 1 and registrations_at(live_as) == 1 and refreshes_at(live_as) == 0


@pytest.mark.parametrize("as_overrides", [{"access_token_ttl": 2}])
async def test_an_expired_token_is_refreshed_silently_after_a_restart(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    first = stored_entry(tmp_path, live_as.resource).tokens
    await wait_until_expired(tmp_path, live_as.resource)

    lines: list[str] = []
    result = await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")
    assert not result.is_error
    assert refreshes_at(live_as) == 1 and len(user_agent.opened()) == 1
    assert "Refreshing the access token…" in lines
    second = stored_entry(tmp_path, live_as.resource).tokens
    assert second.access_token != first.access_token and second.refresh_token != first.refresh_token


@pytest.mark.parametrize("as_overrides", [{"access_token_ttl": 5}])
async def test_twenty_concurrent_calls_at_expiry_share_one_refresh(live_as, user_agent, options, tmp_path):
    auth = create_auth(live_as.resource, options())
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(live_as.resource, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("add_note", {"title": "t", "body": "b"})
        await wait_until_expired(tmp_path, live_as.resource)
        results = await asyncio.gather(*(session.call_tool("list_notes", {}) for _ in range(20)))
    assert not any(r.is_error for r in results)
    assert refreshes_at(live_as) == 1
    assert len(user_agent.opened()) == 1


async def test_several_providers_in_one_process_share_one_refresh(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    expire_stored_token(tmp_path, live_as.resource)

    async def four_calls_in_a_session():
        auth = create_auth(live_as.resource, options())
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            streamable_http_client(live_as.resource, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await asyncio.gather(*(session.call_tool("list_notes", {}) for _ in range(4)))

    batches = await asyncio.gather(*(four_calls_in_a_session() for _ in range(5)))
    assert not any(r.is_error for batch in batches for r in batch)
    assert refreshes_at(live_as) == 1 and len(user_agent.opened()) == 1


class SlowTokenEndpoint(httpx2.AsyncHTTPTransport):
    """Holds every token request for a moment, so that the processes' refreshes would overlap."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/token":
            await asyncio.sleep(0.5)
        return await super().handle_async_request(request)


def _call_in_another_process(resource: str, storage_dir: str, start, results) -> None:
    async def call():
        auth = create_auth(resource, ClientOptions(storage_dir=Path(storage_dir), open_browser=False, login_timeout=5))
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30, transport=SlowTokenEndpoint()) as http,
            streamable_http_client(resource, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session.call_tool("list_notes", {})

    start.wait(30)
    try:
        results.put(not asyncio.run(call()).is_error)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


async def test_several_processes_share_one_refresh(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    expire_stored_token(tmp_path, live_as.resource)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_call_in_another_process, args=(live_as.resource, str(tmp_path / "credentials"), start, results))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    await asyncio.sleep(2.0)
    start.set()
    outcomes = [await asyncio.to_thread(results.get, True, 60) for _ in workers]
    for worker in workers:
        await asyncio.to_thread(worker.join, 30)
    assert outcomes == [True, True, True]
    assert refreshes_at(live_as) == 1 and len(user_agent.opened()) == 1


async def test_a_refused_refresh_ends_in_a_new_login_not_an_error(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    path = stored_entry(tmp_path, live_as.resource).path
    document = json.loads(path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    document["tokens"]["refresh_token"] = "not-a-refresh-token"
    path.write_text(json.dumps(document))
    lines: list[str] = []
    result = await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")
    assert not result.is_error and len(user_agent.opened()) == 2
    assert "The stored login can no longer be refreshed; signing in again…" in lines
    assert stored_entry(tmp_path, live_as.resource).tokens.refresh_token != "not-a-refresh-token"


# --- the ways a login ends without a token --------------------------------------------------

async def test_user_denies_consent(live_as, user_agent, options, tmp_path):
    user_agent.answer("deny")
    failure = await failure_of(call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes"),
                               AuthorizationFailed)
    assert str(failure).startswith(f"sign-in was declined at {live_as.base_url} (access_denied")
    assert "\n" not in str(failure)
    assert user_agent.pages() == ["400 Sign-in did not complete"]
    assert stored_entry(tmp_path, live_as.resource).tokens is None


async def test_a_closed_browser_times_out(live_as, user_agent, options):
    user_agent.answer("ignore")
    started = time.monotonic()
    failure = await failure_of(
        call_tool(live_as.resource, create_auth(live_as.resource, options(login_timeout=1.5)), "list_notes"),
        AuthorizationFailed,
    )
    assert str(failure).startswith("no answer from the browser within 1.5 s")
    assert time.monotonic() - started < 10
    assert len(user_agent.opened()) == 1


@pytest.mark.parametrize("as_overrides", [{"registration_rate_per_minute": 0}])
async def test_an_authorization_server_refusing_registration(live_as, user_agent, options):
    failure = await failure_of(call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes"),
                               AuthorizationFailed)
    assert str(failure).startswith(f"{live_as.base_url} refused to register this client (")
    assert "\n" not in str(failure) and user_agent.opened() == []


async def test_registration_refusal_says_why(standin, options):
    standin.registration_error = {"error": "invalid_client_metadata", "error_description": "registration is closed"}
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))), AuthorizationFailed)
    assert str(failure) == f"{standin.issuer('as1')} refused to register this client (invalid_client_metadata: registration is closed)"


async def test_without_a_browser_the_url_is_printed_and_the_client_waits(live_as, user_agent, options, capsys):
    username, password = "bob", "another horse battery"
    live_as.add_user(username, password)
    call = asyncio.create_task(call_tool(live_as.resource, create_auth(live_as.resource, options(open_browser=False)), "list_notes"))
    printed = ""
    for _ in range(200):
        printed += capsys.readouterr().err
        if "/authorize?" in printed:
            break
        await asyncio.sleep(0.05)
    url = re.search(r"^  (http://\S+/authorize\?\S+)$", printed, re.MULTILINE).group(1)
    assert "Open this URL in a browser to sign in:" in printed
    await asyncio.to_thread(sign_in, url, "approve", username, password)
    assert not (await call).is_error
    assert user_agent.opened() == []


async def test_headless_mode_signs_in_where_the_server_approves_by_itself(standin, options, browser_log):
    response = await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))
    assert response.status_code == 200 and not browser_log.exists()


async def test_headless_mode_says_when_a_person_is_needed(live_as, options):
    failure = await failure_of(fetch(live_as.resource, create_auth(live_as.resource, options(headless=True))), AuthorizationFailed)
    assert "needs a person" in str(failure)


async def test_the_browser_is_opened_without_blocking_the_event_loop(live_as, user_agent, options):
    """``webbrowser`` waits for the ``BROWSER`` program; the loop keeps ticking meanwhile."""
    ticks = 0
    stop = asyncio.Event()

    async def tick():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    stop.set()
    await ticker
    assert ticks > 20


# --- what is stored ------------------------------------------------------------------------

async def test_a_corrupt_token_file_is_reported_and_kept(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    path = stored_entry(tmp_path, live_as.resource).path
    path.write_text('{"format": 1, "tokens": {"access_token": 4')
    before = files_under(tmp_path / "credentials")

    failure = await failure_of(call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes"), StorageError)
    assert str(path) in str(failure) and "gatehouse logout" in str(failure) and "\n" not in str(failure)
    assert isinstance(failure, ClientError) and failure.exit_code == 1
    assert files_under(tmp_path / "credentials") == before

    result = await call_tool(live_as.resource, create_auth(live_as.resource, options(fresh_login=True)), "list_notes")
    assert not result.is_error and len(user_agent.opened()) == 2
    assert path.with_name(path.name + ".corrupt").read_text() == '{"format": 1, "tokens": {"access_token": 4'
    assert stored_entry(tmp_path, live_as.resource).tokens is not None


async def test_tokens_are_stored_under_the_issuer_and_resource(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    entry = stored_entry(tmp_path, live_as.resource)
    assert (entry.issuer, entry.resource) == (live_as.base_url, live_as.resource)
    assert entry.client.client_id == entry.tokens.client_id and entry.client.issuer == live_as.base_url
    assert entry.authorization_server["issuer"] == live_as.base_url
    assert entry.protected_resource["resource"] == live_as.resource


# --- a server that needs no auth ------------------------------------------------------------

def open_server_app() -> Starlette:
    server = MCPServer("open")

    @server.tool()
    def echo(text: str) -> str:
        return text

    sdk = server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with server.session_manager.run():
            yield

    return Starlette(routes=[Route("/mcp", sdk)], lifespan=lifespan)


async def test_a_server_that_needs_no_auth_just_works(loopback_server, options, browser_log, tmp_path):
    with loopback_server(open_server_app()) as base_url:
        result = await call_tool(f"{base_url}/mcp", create_auth(f"{base_url}/mcp", options()), "echo", {"text": "hi"})
    assert result.structured_content == {"result": "hi"}
    assert not browser_log.exists() and not (tmp_path / "credentials").exists()


def test_bad_arguments_are_one_line_client_errors(options):
    cases = [
        ("ftp://example.com/mcp", options()),
        ("https://example.com/mcp", options(client_credentials=True)),
        ("https://example.com/mcp", options(client_credentials=True, client_id="c")),
        ("https://example.com/mcp", options(client_secret="s")),
        ("https://example.com/mcp", options(client_metadata_url="http://example.com/client.json")),
        ("https://example.com/mcp", options(client_metadata_url="https://example.com/")),
    ]
    for url, given in cases:
        with pytest.raises(ClientError) as caught:
            create_auth(url, given)
        assert "\n" not in str(caught.value)

