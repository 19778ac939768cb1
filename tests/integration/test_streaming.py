"""Streaming through the guard and the gateway: notifications, resumption, slow and broken upstreams (issue 3).

Every test runs real servers on loopback (uvicorn), with tokens from a real Gatehouse AS and,
where a client speaks MCP, the official SDK client. Tools that must not finish before the client
has seen something wait for it on a ``threading.Event`` the client sets (the server runs in
another thread): a proxy that buffered the stream would make them give up, and the test fail,
instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import anyio
import httpx2
import pytest
from fastmcp import Context as FastMCPContext
from fastmcp import FastMCP
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer

from gatehouse.config import ResourceConfig
from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy
from gatehouse.guard.gateway import HTTPUpstream, create_gateway_app
from tests.conftest import ThreadedServer, free_socket
from tests.support.broken_upstream import broken_upstream, json_cut_after, sse_cut_after
from tests.support.event_store import InMemoryEventStore
from tests.support.mcp_client import with_session

SCOPE = "tools:call"
WAIT = 10  # seconds a tool waits for the client before giving up
CLIENT_DEADLINE = 30  # seconds a test's client side may take before it fails instead of hanging
MCP_POST = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
RESUME_HEADERS = ("accept", "mcp-session-id", "last-event-id", "mcp-protocol-version")

# log notifications (ctx.info) are deprecated from protocol 2026-07-28 on; sessions here speak 2025-11-25
pytestmark = pytest.mark.filterwarnings("ignore:The logging capability is deprecated")


@pytest.fixture
def as_overrides(extra_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="Streaming tools", scopes=[SCOPE])]}


@pytest.fixture
def token(live_as, extra_resource) -> str:
    return live_as.machine_token(extra_resource, SCOPE)[0]


@pytest.fixture
def tools():
    return Tools()


# --- the servers ---------------------------------------------------------------------------------


async def until(event: threading.Event, failure: str) -> None:
    if not await anyio.to_thread.run_sync(event.wait, WAIT):
        raise RuntimeError(failure)


class Tools:
    """The tool bodies, shared by the SDK and FastMCP servers, and the signals between them and the client."""

    def __init__(self):
        self.first_seen = threading.Event()  # the client saw progress 1
        self.replayed = threading.Event()  # the client saw progress 2, sent while its stream was cut
        self.slow_running = threading.Event()
        self.release_slow = threading.Event()

    def client_saw(self, progress: float) -> None:
        if progress == 1:
            self.first_seen.set()
        elif progress == 2:
            self.replayed.set()

    async def countdown(self, ctx) -> str:
        await ctx.report_progress(1, 2, "ignition")
        await ctx.info("engines on")
        await until(self.first_seen, "the client never saw the first progress report: the stream is buffered")
        await ctx.report_progress(2, 2, "lift-off")
        await ctx.info("cleared the tower")
        return "in orbit"

    async def interrupted(self, ctx) -> str:
        await ctx.report_progress(1, 3, "before the cut")
        await ctx.close_sse_stream()  # the server ends the POST's SSE stream; events go on into the event store
        await ctx.report_progress(2, 3, "while the client was away")
        await until(self.replayed, "the client never resumed the stream")
        await ctx.report_progress(3, 3, "after the client came back")
        return "resumed"

    async def slow(self) -> str:
        self.slow_running.set()
        await until(self.release_slow, "the test never released the slow tool")
        return "finally"


def sdk_app(tools: Tools, **transport):
    """An official-SDK MCP server (Streamable HTTP at /mcp); ``transport`` goes to ``streamable_http_app``."""
    mcp = MCPServer(name="streaming")

    @mcp.tool()
    async def countdown(ctx: Context) -> str:
        """Two progress reports and two log messages, then the result."""
        return await tools.countdown(ctx)

    @mcp.tool()
    async def interrupted(ctx: Context) -> str:
        """Cut its own SSE stream after the first progress report, then carry on."""
        return await tools.interrupted(ctx)

    @mcp.tool()
    async def slow() -> str:
        """Answer only when the test releases it."""
        return await tools.slow()

    @mcp.tool()
    async def shout(text: str) -> str:
        """Upper-case the text, at once."""
        return text.upper()

    return mcp.streamable_http_app(**transport)


def fastmcp_app(tools: Tools, **transport):
    """A FastMCP server at /mcp; ``transport`` (event store, retry interval) goes to ``http_app``."""
    mcp = FastMCP("streaming")

    @mcp.tool
    async def countdown(ctx: FastMCPContext) -> str:
        """Two progress reports and two log messages, then the result."""
        return await tools.countdown(ctx)

    @mcp.tool
    async def interrupted(ctx: FastMCPContext) -> str:
        """Cut its own SSE stream after the first progress report, then carry on."""
        return await tools.interrupted(ctx)

    return mcp.http_app(path="/mcp", **transport)


def guard_for(live_as, resource: str) -> Guard:
    return Guard(
        resource=resource,
        authorization_servers=[live_as.base_url],
        verifier=JWTVerifier(issuers=[live_as.base_url], audience=resource, keys=JWKSKeySource(f"{live_as.base_url}/jwks")),
        policy=Policy(default=[SCOPE]),
    )


@contextlib.contextmanager
def gateway(live_as, sock, resource: str, upstream_url: str, **upstream_options):
    """The HTTP gateway on ``sock``, guarding ``resource`` and forwarding to ``upstream_url``."""
    proxy = HTTPUpstream(upstream_url, connect_timeout=2, **upstream_options)
    with ThreadedServer(create_gateway_app(guard_for(live_as, resource), proxy, "/mcp"), sock):
        yield


@contextlib.contextmanager
def deployed(deployment: str, live_as, sock, resource: str, tools: Tools, **transport):
    """``tools`` served at ``resource`` (bound to ``sock``) behind the guard library or the gateway."""
    if deployment == "gateway":
        upstream_sock = free_socket()
        with ThreadedServer(sdk_app(tools, **transport), upstream_sock):
            with gateway(live_as, sock, resource, f"http://127.0.0.1:{upstream_sock.getsockname()[1]}/mcp"):
                yield
        return
    app = sdk_app(tools, **transport) if deployment == "sdk" else fastmcp_app(tools, **transport)
    with ThreadedServer(guard_for(live_as, resource).protect(app), sock):
        yield


# --- the client ----------------------------------------------------------------------------------


async def call_and_record(url: str, token: str, tool: str, tools: Tools, **http_options) -> list[tuple[str, str]]:
    """Call ``tool`` with the SDK client; what arrived, in order: ("progress"|"log"|"result", text)."""
    received: list[tuple[str, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append(("progress", message))
        tools.client_saw(progress)

    async def on_log(params) -> None:
        data = params.data  # FastMCP sends {"msg": ..., "extra": ...}, the SDK the bare message
        received.append(("log", data["msg"] if isinstance(data, dict) else data))

    async with (
        asyncio.timeout(CLIENT_DEADLINE),
        httpx2.AsyncClient(headers=bearer(token), timeout=30, **http_options) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, logging_callback=on_log) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, {}, progress_callback=on_progress)
    assert not result.is_error, result.content
    received.append(("result", result.content[0].text))
    return received


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def call(request_id: int, tool: str, **arguments) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


# --- 1. notifications stream through -------------------------------------------------------------


@pytest.mark.parametrize("deployment", ["sdk", "fastmcp", "gateway"])
async def test_notifications_arrive_while_the_tool_runs(live_as, deployment, extra_socket, extra_resource, token, tools):
    """Progress and log notifications reach the client in order and before the result, while the tool
    is still running (it waits until the client has seen the first one), over an SSE session through
    the guard on an SDK server, on a FastMCP server, and through the gateway (issue 3, item 1)."""
    with deployed(deployment, live_as, extra_socket, extra_resource, tools):
        received = await call_and_record(extra_resource, token, "countdown", tools)
    assert received == [
        ("progress", "ignition"), ("log", "engines on"),
        ("progress", "lift-off"), ("log", "cleared the tower"),
        ("result", "in orbit"),
    ]


# --- 2. sessions resume --------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", ["sdk", "fastmcp", "gateway"])
async def test_a_cut_stream_resumes_with_last_event_id(live_as, deployment, extra_socket, extra_resource, token, tools):
    """When a tool call's SSE stream is cut after the first event, the SDK client reconnects with GET,
    ``Last-Event-ID``, its ``Mcp-Session-Id`` and its token, and gets what was sent while it was away,
    then the rest live, then the result; the same GET without a token gets 401 (issue 3, RS-3)."""
    sent: list[httpx2.Request] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request)

    # retry_interval: the reconnection delay (ms) the server's priming event tells the client
    with deployed(deployment, live_as, extra_socket, extra_resource, tools, event_store=InMemoryEventStore(), retry_interval=50):
        received = await call_and_record(extra_resource, token, "interrupted", tools, event_hooks={"request": [record]})
        resumes = [r for r in sent if r.method == "GET" and "last-event-id" in r.headers]
        assert resumes, "the client never resumed with Last-Event-ID"
        without_token = {k: v for k, v in resumes[0].headers.items() if k in RESUME_HEADERS}
        unauthenticated = httpx2.get(extra_resource, headers=without_token, timeout=10)
    assert received == [
        ("progress", "before the cut"), ("progress", "while the client was away"),
        ("progress", "after the client came back"), ("result", "resumed"),
    ]
    assert {r.headers.get("mcp-session-id") for r in sent[1:]} == {resumes[0].headers["mcp-session-id"]}, "one session throughout"
    assert resumes[0].headers["authorization"] == f"Bearer {token}"
    assert unauthenticated.status_code == 401 and "resource_metadata=" in unauthenticated.headers["www-authenticate"]


# --- 3. a slow upstream --------------------------------------------------------------------------


async def test_gateway_answers_504_for_a_slow_upstream_and_keeps_serving(live_as, extra_socket, extra_resource, token, tools):
    """An upstream that does not answer within the gateway's read timeout gets the client a 504 with a
    JSON-RPC error saying so; while that call hangs upstream, and after its 504, other sessions' calls
    to a fast tool through the same gateway go through (issue 3, "Upstream errors")."""
    upstream_sock = free_socket()
    upstream = sdk_app(tools, json_response=True, stateless_http=True)  # JSON answers: nothing is sent until the result

    async def shout(text: str) -> str:
        result = await with_session(extra_resource, token, lambda s: s.call_tool("shout", {"text": text}))
        assert not result.is_error, result.content
        return result.content[0].text

    upstream_url = f"http://127.0.0.1:{upstream_sock.getsockname()[1]}/mcp"
    try:
        with (
            ThreadedServer(upstream, upstream_sock),
            gateway(live_as, extra_socket, extra_resource, upstream_url, read_timeout=0.5),
        ):
            async with asyncio.timeout(CLIENT_DEADLINE), httpx2.AsyncClient(headers=bearer(token), timeout=30) as http:
                slow_call = asyncio.create_task(http.post(extra_resource, json=call(1, "slow"), headers=MCP_POST))
                assert await anyio.to_thread.run_sync(tools.slow_running.wait, WAIT), "the slow call never reached the upstream"
                during = await shout("while it hangs")
                slow = await slow_call
                after = await shout("after its 504")
    finally:
        tools.release_slow.set()
    assert slow.status_code == 504
    assert slow.json()["error"]["code"] == -32603 and "did not answer in time" in slow.json()["error"]["message"]
    assert (during, after) == ("WHILE IT HANGS", "AFTER ITS 504")


# --- 4. an upstream that breaks mid-response -----------------------------------------------------
# These two depend on the gateway change in src/gatehouse/guard/gateway.py (issue 3, "Upstream
# errors"): the gateway before it relayed a cut stream as a truncated 200 and fails them.

PROGRESS_7 = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7, "progress": 1, "total": 2}}


async def test_gateway_ends_a_broken_sse_stream_with_an_error_for_the_open_request(live_as, extra_socket, extra_resource, token):
    """When the upstream drops the connection in the middle of an SSE answer, the client gets the events
    sent so far, then a JSON-RPC error response for the request that got no answer, and the stream
    ends cleanly (issue 3, "Upstream errors")."""
    with (
        broken_upstream(sse_cut_after(PROGRESS_7)) as (upstream_url, requests),
        gateway(live_as, extra_socket, extra_resource, upstream_url),
    ):
        async with (
            asyncio.timeout(CLIENT_DEADLINE),
            httpx2.AsyncClient(headers=bearer(token), timeout=30) as http,
            http.stream("POST", extra_resource, json=call(7, "countdown"), headers=MCP_POST) as response,
        ):
            events = [(sse.event, json.loads(sse.data)) async for sse in httpx2.EventSource(response)]
    assert requests == [call(7, "countdown")]
    assert response.status_code == 200
    assert events[0] == ("message", PROGRESS_7)
    assert len(events) == 2, events
    event, error = events[1]
    assert event == "message" and error["jsonrpc"] == "2.0" and error["id"] == 7 and "result" not in error
    assert error["error"]["code"] == -32603 and "broke the connection" in error["error"]["message"]


async def test_gateway_answers_502_for_a_json_answer_cut_short(live_as, extra_socket, extra_resource, token):
    """When the upstream drops the connection in the middle of a JSON answer, the client gets a 502 with
    a JSON-RPC error saying the upstream broke the connection, not a truncated 200 (issue 3, "Upstream errors")."""
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "never complete"}]}}
    with (
        broken_upstream(json_cut_after(answer, keep=30)) as (upstream_url, _),
        gateway(live_as, extra_socket, extra_resource, upstream_url),
    ):
        response = httpx2.post(extra_resource, json=call(7, "countdown"), headers={**MCP_POST, **bearer(token)}, timeout=30)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == -32603 and "broke the connection" in response.json()["error"]["message"]
