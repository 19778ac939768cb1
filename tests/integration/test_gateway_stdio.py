"""``gatehouse gateway -- <command>``: a stdio MCP server behind the guard, one process per session.

Tests of the guard's part run through the whole gateway with a live AS; tests of the session
lifecycle (idle timeout, limits, a command that cannot start, stderr) serve the bare
``StdioUpstream`` on loopback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gatehouse.config import ResourceConfig
from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy
from gatehouse.guard.gateway import create_gateway_app
from gatehouse.guard.stdio import StdioUpstream
from gatehouse.guard.stdio_events import EventLog, UnknownEvent
from tests.conftest import ThreadedServer
from tests.support.mcp_client import with_session

STDIO_SERVER = Path(__file__).resolve().parents[1] / "support" / "stdio_notes_server.py"
COMMAND = [sys.executable, str(STDIO_SERVER)]
WAIT = 20  # seconds: the upper bound of anything that should happen "soon"
JSON_ONLY = {"accept": "application/json"}
BOTH = {"accept": "application/json, text/event-stream"}
PROTOCOL = {"mcp-protocol-version": "2025-11-25"}  # a client that reads priming events
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "raw", "version": "0"}}}


@pytest.fixture
def as_overrides(extra_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="stdio tools", scopes=["tools:use"])]}


@pytest.fixture
def gateway(live_as, extra_socket, extra_resource):
    guard = Guard(
        resource=extra_resource,
        authorization_servers=[live_as.base_url],
        verifier=JWTVerifier(issuers=[live_as.base_url], audience=extra_resource, keys=JWKSKeySource(f"{live_as.base_url}/jwks")),
        policy=Policy(tools={"*": ["tools:use"]}),
    )
    upstream = StdioUpstream(COMMAND)
    with ThreadedServer(create_gateway_app(guard, upstream, "/mcp"), extra_socket):
        yield upstream


@asynccontextmanager
async def sdk_session(url: str, token: str = "unused", **callbacks):
    """The official SDK client, initialized, with ``callbacks`` (elicitation_callback, logging_callback, …)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=WAIT) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=WAIT, **callbacks) as session,
    ):
        with anyio.fail_after(WAIT):
            await session.initialize()
            yield session


async def raw_session(http: httpx2.AsyncClient, url: str, **headers) -> str:
    """A session opened by hand (initialize and initialized, nothing else: no GET stream); its id."""
    response = await http.post(url, json=INITIALIZE, headers={**JSON_ONLY, **headers})
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    initialized = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                  headers={**JSON_ONLY, **headers, "mcp-session-id": session_id})
    assert initialized.status_code == 202
    return session_id


async def sse_messages(response):
    async for _, message in sse_events(response):
        if message is not None:
            yield message


async def sse_events(response):
    """``(id, message)`` of each SSE event; the message of a priming event (empty data) is ``None``."""
    event_id, data = None, []
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and (event_id is not None or data):
            yield event_id, json.loads("\n".join(data)) if any(data) else None
            event_id, data = None, []


def call(request_id: int, tool: str, **arguments) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


def call_with_progress(request_id: int, tool: str, **arguments) -> dict:
    request = call(request_id, tool, **arguments)
    request["params"]["_meta"] = {"progressToken": f"progress-{request_id}"}
    return request


def wait_until(condition, message: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


# --- through the whole gateway (guard + live AS) ---

async def test_stdio_server_behind_the_gateway(live_as, gateway, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:use")

    async def work(session):
        tools = {t.name for t in (await session.list_tools()).tools}
        echoed = await session.call_tool("echo", {"text": "hi"})
        pid = await session.call_tool("pid", {})
        return tools, echoed.content[0].text, pid.content[0].text

    tools, echoed, first_pid = await with_session(extra_resource, token, work)
    _, _, second_pid = await with_session(extra_resource, token, work)
    assert {"echo", "pid", "crash"} <= tools and echoed == "echo: hi"
    assert first_pid != second_pid, "each MCP session gets its own process"
    assert gateway.sessions == {}, "closing a session (DELETE) ends its process"


async def test_a_crashed_child_is_reported_and_the_next_session_works(live_as, gateway, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:use")

    async def crash(session):
        try:
            await session.call_tool("crash", {})
        except MCPError as error:
            return error.message
        return "no error"

    reported = await with_session(extra_resource, token, crash)
    assert "the MCP server process exited (status 3)" in reported
    result = await with_session(extra_resource, token, lambda s: s.call_tool("echo", {"text": "again"}))
    assert result.content[0].text == "echo: again"


def test_stdio_gateway_still_challenges(live_as, gateway, extra_resource):
    response = httpx2.post(extra_resource, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert response.status_code == 401 and "resource_metadata=" in response.headers["www-authenticate"]


async def test_the_child_asks_the_client_during_a_tool_call(live_as, gateway, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:use")
    asked = []

    async def answer(context, params: types.ElicitRequestParams):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    async with sdk_session(extra_resource, token, elicitation_callback=answer) as session:
        result = await session.call_tool("ask", {"question": "Which colour?"})
    assert asked == ["Which colour?"]
    assert result.content[0].text == "answer: blue", "the client's answer (a POSTed JSON-RPC response) reached the child"


async def test_progress_and_logs_reach_the_client_while_the_tool_runs(live_as, gateway, extra_resource, tmp_path):
    token, _ = live_as.machine_token(extra_resource, "tools:use")
    flag = tmp_path / "progress-seen"
    events = []

    async def on_log(params: types.LoggingMessageNotificationParams):
        events.append(("log", params.data))

    async def on_progress(progress, total, message):
        events.append(("progress", message))
        flag.touch()  # the tool waits for this file: it ends only if the progress arrived while it ran

    async with sdk_session(extra_resource, token, logging_callback=on_log) as session:
        result = await session.call_tool("wait_for", {"path": str(flag)}, progress_callback=on_progress)
    assert result.content[0].text == "seen", result.content[0].text
    assert events[:2] == [("log", "waiting for progress-seen"), ("progress", "waiting for the client")]


async def test_a_session_belongs_to_the_caller_that_started_it(live_as, gateway, extra_resource):
    alice, _ = live_as.machine_token(extra_resource, "tools:use")
    mallory, _ = live_as.machine_token(extra_resource, "tools:use")
    async with httpx2.AsyncClient(timeout=WAIT) as http:
        session_id = await raw_session(http, extra_resource, authorization=f"Bearer {alice}")
        as_mallory = {**JSON_ONLY, "authorization": f"Bearer {mallory}", "mcp-session-id": session_id}
        stolen = await http.post(extra_resource, json=call(1, "echo", text="mine now"), headers=as_mallory)
        listen = await http.get(extra_resource, headers=as_mallory)
        delete = await http.delete(extra_resource, headers=as_mallory)
        as_alice = {**JSON_ONLY, "authorization": f"Bearer {alice}", "mcp-session-id": session_id}
        still_hers = await http.post(extra_resource, json=call(2, "echo", text="still mine"), headers=as_alice)
    assert [stolen.status_code, listen.status_code, delete.status_code] == [404, 404, 404]
    assert still_hers.json()["result"]["content"][0]["text"] == "echo: still mine"


async def test_a_broken_post_stream_resumes_with_last_event_id(live_as, gateway, extra_resource, tmp_path):
    """A tool call's SSE stream breaks after its first message; the tool answers while the client is
    away; a GET with ``Last-Event-ID`` (and the session id and the token) gets the rest of that
    stream, the answer included. Without the token it is 401 (the guard), with another caller's 404."""
    alice, _ = live_as.machine_token(extra_resource, "tools:use")
    mallory, _ = live_as.machine_token(extra_resource, "tools:use")
    flag = tmp_path / "go"
    async with httpx2.AsyncClient(timeout=WAIT) as http:
        session_id = await raw_session(http, extra_resource, authorization=f"Bearer {alice}")
        as_alice = {**PROTOCOL, "authorization": f"Bearer {alice}", "mcp-session-id": session_id}
        with anyio.fail_after(WAIT):
            async with http.stream("POST", extra_resource, json=call_with_progress(1, "wait_for", path=str(flag)),
                                   headers={**BOTH, **as_alice}) as response:
                events = sse_events(response)
                priming, first = await anext(events), await anext(events)
            # leaving the block closed the connection: the stream broke after its first message
            flag.touch()
            child = gateway.sessions[session_id.rpartition(".")[0]]  # the client's id is the child's, bound to alice
            await anyio.to_thread.run_sync(wait_until, lambda: not child.waiting,
                                           "the tool never answered")
            resume = {"accept": "text/event-stream", "last-event-id": first[0]}
            no_token = await http.get(extra_resource, headers={**resume, **PROTOCOL, "mcp-session-id": session_id})
            not_hers = await http.get(extra_resource, headers={**resume, **as_alice, "authorization": f"Bearer {mallory}"})
            async with http.stream("GET", extra_resource, headers={**resume, **as_alice}) as resumed:
                rest = [event async for event in sse_events(resumed)]
    assert priming[1] is None and first[1]["method"] == "notifications/message"
    assert no_token.status_code == 401 and "resource_metadata=" in no_token.headers["www-authenticate"]
    assert not_hers.status_code == 404, "a session, and so its events, belongs to the caller that started it"
    assert resumed.status_code == 200
    assert [m.get("params", {}).get("message") for _, m in rest[:2]] == ["waiting for the client", "seen"]
    assert rest[-1][1]["id"] == 1 and rest[-1][1]["result"]["content"][0]["text"] == "seen", "the answer came while away"
    ids = [priming[0], first[0], *(event_id for event_id, _ in rest)]
    assert len(set(ids)) == len(ids) == 5, "every event has its own id"
    assert len({event_id.rpartition("-")[0] for event_id in ids}) == 1, "an id names the stream it is on"


# --- the bare upstream: session lifecycle ---

async def test_the_clients_answer_is_forwarded_to_its_child_with_202(loopback_server):
    with loopback_server(StdioUpstream(COMMAND)) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            other = await raw_session(http, base)  # a second child, which must not get the answer
            session_id = await raw_session(http, base)
            with anyio.fail_after(WAIT):
                async with http.stream("POST", base, json=call(1, "ask", question="Which colour?"),
                                       headers={**BOTH, "mcp-session-id": session_id}) as response:
                    messages = sse_messages(response)
                    request = await anext(messages)
                    assert request["method"] == "elicitation/create" and request["params"]["message"] == "Which colour?"
                    answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"action": "accept", "content": {"answer": "green"}}}
                    accepted = await http.post(base, json=answer, headers={**BOTH, "mcp-session-id": session_id})
                    result = await anext(messages)
            assert accepted.status_code == 202 and accepted.content == b""
            assert result["id"] == 1 and result["result"]["content"][0]["text"] == "answer: green"
            echo = await http.post(base, json=call(2, "echo", text="still here"), headers={**JSON_ONLY, "mcp-session-id": other})
            assert echo.json()["result"]["content"][0]["text"] == "echo: still here"


async def test_a_forgotten_session_is_ended_after_the_idle_timeout(loopback_server):
    upstream = StdioUpstream(COMMAND, idle_timeout=0.3)
    with loopback_server(upstream) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            session_id = await raw_session(http, base)
            process = upstream.sessions[session_id].process
            await anyio.to_thread.run_sync(wait_until, lambda: session_id not in upstream.sessions, "the idle session was not ended")
            await anyio.to_thread.run_sync(wait_until, lambda: process.returncode is not None, "the idle session's child still runs")
            later = await http.post(base, json=call(1, "echo", text="anyone?"), headers={**JSON_ONLY, "mcp-session-id": session_id})
    assert later.status_code == 404 and "start a new one" in later.json()["error"]["message"]


async def test_a_session_in_use_is_not_idle(loopback_server, tmp_path):
    upstream = StdioUpstream(COMMAND, idle_timeout=0.3)
    flag = tmp_path / "go"
    with loopback_server(upstream) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            session_id = await raw_session(http, base)
            headers = {**BOTH, "mcp-session-id": session_id}
            with anyio.fail_after(WAIT):
                async with http.stream("POST", base, json=call(1, "wait_for", path=str(flag)), headers=headers) as response:
                    messages = sse_messages(response)
                    await anext(messages)  # the tool runs: a request is in flight
                    await anyio.sleep(1.5)  # five idle timeouts
                    flag.touch()
                    result = [m async for m in messages if "result" in m]
                assert result[0]["result"]["content"][0]["text"] == "seen", "a request in flight keeps its session"
                async with http.stream("GET", base, headers={"accept": "text/event-stream", "mcp-session-id": session_id}) as listening:
                    assert listening.status_code == 200
                    await anyio.sleep(1.5)
                    assert session_id in upstream.sessions, "an open GET stream keeps its session"
            await anyio.to_thread.run_sync(wait_until, lambda: session_id not in upstream.sessions,
                                           "once no request and no stream is open, the session is idle and ends")


async def test_a_request_in_flight_keeps_its_session_when_its_post_breaks(loopback_server, tmp_path):
    """A broken POST is not a cancellation: its session outlives many idle timeouts, and the client
    that resumes gets what it missed, then the answer live as the tool gives it."""
    upstream = StdioUpstream(COMMAND, idle_timeout=0.3)
    flag = tmp_path / "go"
    with loopback_server(upstream) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            session_id = await raw_session(http, base)
            headers = {**PROTOCOL, "mcp-session-id": session_id}
            with anyio.fail_after(WAIT):
                async with http.stream("POST", base, json=call(1, "wait_for", path=str(flag)), headers={**BOTH, **headers}) as response:
                    priming = await anext(sse_events(response))
                await anyio.sleep(1.5)  # five idle timeouts, and no connection open
                alive = session_id in upstream.sessions
                resume = {**headers, "accept": "text/event-stream", "last-event-id": priming[0]}
                async with http.stream("GET", base, headers=resume) as resumed:
                    events = sse_events(resumed)
                    missed = await anext(events)
                    flag.touch()
                    rest = [message async for _, message in events]
            await anyio.to_thread.run_sync(wait_until, lambda: session_id not in upstream.sessions,
                                           "once answered, the session is idle again and ends")
    assert alive, "a request in flight keeps its session, connected or not"
    assert missed[1]["method"] == "notifications/message", "what was sent while the client was away comes first"
    assert rest[0] is None, "then a priming event for the new connection"
    assert rest[-1]["id"] == 1 and rest[-1]["result"]["content"][0]["text"] == "seen"


async def test_a_cancelled_request_no_longer_holds_its_post(loopback_server, tmp_path):
    with loopback_server(StdioUpstream(COMMAND)) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            session_id = await raw_session(http, base)
            headers = {**BOTH, "mcp-session-id": session_id}
            with anyio.fail_after(WAIT):
                async with http.stream("POST", base, json=call(7, "wait_for", path=str(tmp_path / "never")), headers=headers) as response:
                    messages = sse_messages(response)
                    await anext(messages)  # the tool runs
                    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
                    assert (await http.post(base, json=cancel, headers=headers)).status_code == 202
                    last = [m async for m in messages][-1]
    assert last["id"] == 7 and last["error"]["message"] == "request cancelled", "the child does not answer a cancelled request"


async def test_a_full_gateway_answers_503_with_retry_after(loopback_server):
    with loopback_server(StdioUpstream(COMMAND, max_sessions=1)) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            first = await raw_session(http, base)
            full = await http.post(base, json=INITIALIZE, headers=JSON_ONLY)
            await http.delete(base, headers={"mcp-session-id": first})
            again = await http.post(base, json=INITIALIZE, headers=JSON_ONLY)
    assert full.status_code == 503 and int(full.headers["retry-after"]) > 0
    assert full.json()["id"] == 0 and "limit of 1 MCP sessions" in full.json()["error"]["message"]
    assert again.status_code == 200, "ending a session frees its slot"


@pytest.mark.parametrize(("command", "error", "status"), [
    (["/nonexistent/mcp-server"], "the MCP server command cannot be started", 502),
    ([sys.executable, "-c", "import sys; sys.exit(2)"], "the MCP server process exited (status 2)", 200),
], ids=["not-found", "exits-at-once"])
async def test_a_command_that_cannot_serve_is_a_clear_error(loopback_server, command, error, status):
    with loopback_server(StdioUpstream(command)) as base:
        async with (
            httpx2.AsyncClient(timeout=WAIT) as http,
            streamable_http_client(base, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(WAIT), pytest.raises(MCPError) as raised:
                await session.initialize()
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            raw = await http.post(base, json=INITIALIZE, headers=JSON_ONLY)
    assert error in raised.value.message, "the SDK client shows the gateway's reason"
    assert raw.status_code == status and error in raw.json()["error"]["message"] and raw.json()["id"] == 0


async def test_a_chatty_child_does_not_block_and_its_stderr_is_logged(loopback_server, caplog):
    caplog.set_level(logging.INFO, logger="gatehouse.gateway.stdio")
    with loopback_server(StdioUpstream(COMMAND)) as base:
        async with sdk_session(base) as session:
            with anyio.fail_after(WAIT):
                result = await session.call_tool("chatty", {"kilobytes": 512})  # 8 times a Linux pipe's buffer
    assert result.content[0].text == "still answering"
    chatter = [r for r in caplog.records if r.name == "gatehouse.gateway.stdio" and "chatty child: xxx" in r.getMessage()]
    assert len(chatter) == 512 and "(session " in chatter[0].getMessage()


class CutOnce(httpx2.AsyncBaseTransport):
    """Breaks the SSE answer to the first ``tools/call`` once ``after`` went by, as a network failure would."""

    def __init__(self, after: bytes):
        self.inner = httpx2.AsyncHTTPTransport()
        self.after = after
        self.sent: list[httpx2.Request] = []
        self.cut = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append(request)
        response = await self.inner.handle_async_request(request)
        if self.cut or request.method != "POST" or b'"tools/call"' not in request.content:
            return response
        self.cut = True
        return httpx2.Response(response.status_code, headers=response.headers, stream=CutStream(response.stream, self.after),
                               request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CutStream(httpx2.AsyncByteStream):
    def __init__(self, inner, after: bytes):
        self.inner, self.after = inner, after

    async def __aiter__(self):
        seen = b""
        async for chunk in self.inner:
            yield chunk
            seen += chunk
            if self.after in seen:
                raise httpx2.ReadError("the connection broke (a test cut it)")

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_sdk_client_resumes_a_broken_stream_by_itself(loopback_server, tmp_path):
    """The official SDK client reads the priming event's ``retry``, and after a broken tool call stream
    reconnects with GET and ``Last-Event-ID`` on its own: it gets every message once, then the answer."""
    flag = tmp_path / "progress-seen"
    events = []
    cutter = CutOnce(after=b"waiting for the client")

    async def on_log(params: types.LoggingMessageNotificationParams):
        events.append(("log", params.data))

    async def on_progress(progress, total, message):
        events.append(("progress", message))
        flag.touch()

    with loopback_server(StdioUpstream(COMMAND, retry_interval=300)) as base:
        async with (
            httpx2.AsyncClient(transport=cutter, timeout=WAIT) as http,
            streamable_http_client(base, http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=WAIT, logging_callback=on_log) as session,
        ):
            with anyio.fail_after(WAIT):
                await session.initialize()
                result = await session.call_tool("wait_for", {"path": str(flag)}, progress_callback=on_progress)
    resumed = [r.headers.get("last-event-id", "") for r in cutter.sent if r.method == "GET"]
    assert cutter.cut and len([i for i in resumed if i.startswith("p")]) == 1, resumed  # the tool call's stream, once
    assert result.content[0].text == "seen"
    assert events == [("log", "waiting for progress-seen"), ("progress", "waiting for the client"), ("progress", "seen")]


async def test_an_unknown_or_forgotten_event_id_is_400_and_the_session_lives_on(loopback_server):
    upstream = StdioUpstream(COMMAND)
    with loopback_server(upstream) as base:
        async with httpx2.AsyncClient(timeout=WAIT) as http:
            session_id = await raw_session(http, base)
            headers = {**BOTH, **PROTOCOL, "mcp-session-id": session_id}
            upstream.sessions[session_id].events.max_events = 2  # a tiny log: the first events are soon let go of
            with anyio.fail_after(WAIT):
                async with http.stream("POST", base, json=call_with_progress(1, "wait_for", path="/"), headers=headers) as response:
                    sent = [event async for event in sse_events(response)]
            listen = {"accept": "text/event-stream", **PROTOCOL, "mcp-session-id": session_id}
            forgotten = await http.get(base, headers={**listen, "last-event-id": sent[1][0]})
            never_sent = await http.get(base, headers={**listen, "last-event-id": "p99-1"})
            garbage = await http.get(base, headers={**listen, "last-event-id": "not an event id"})
            still = await http.post(base, json=call(2, "echo", text="still here"), headers={**JSON_ONLY, "mcp-session-id": session_id})
    assert [m["method"] for _, m in sent[1:-1]] == ["notifications/message", "notifications/progress", "notifications/progress"]
    assert forgotten.status_code == 400 and "no longer kept" in forgotten.json()["error"]["message"]
    assert never_sent.status_code == garbage.status_code == 400
    assert "names no event of this session" in never_sent.json()["error"]["message"]
    assert still.json()["result"]["content"][0]["text"] == "echo: still here"


def test_the_event_log_is_bounded_and_replays_one_stream():
    events = EventLog(max_events=4, max_bytes=1000)
    post, listen = events.new_stream("p"), events.new_stream("g")
    ids = [events.append(stream, b"x", False).id for stream in (post, listen, post, listen, post, post)]
    assert ids == ["p1-1", "g2-2", "p1-3", "g2-4", "p1-5", "p1-6"] and len(events) == 4
    assert [e.id for e in events.after(*events.cursor("p1-3"))] == ["p1-5", "p1-6"], "only that stream, only after"
    assert events.after(*events.cursor("g2-4")) == []
    with pytest.raises(UnknownEvent, match="no longer kept"):
        events.cursor("p1-1")  # p1-3 still is, but the log cannot tell whether all that came after p1-1 is
    for unknown in ("p3-1", "p1-7", "x1-1", "p1", "", "p01-2"):
        with pytest.raises(UnknownEvent, match="names no event"):
            events.cursor(unknown)
    events.append(post, b"y" * 2000, True)
    assert len(events) == 1, "a byte cap, but the newest event is always kept"
