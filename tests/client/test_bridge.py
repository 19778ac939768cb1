"""``gatehouse bridge``: the official SDK's stdio client, through the bridge, to Streamable HTTP servers.

Against an unguarded SDK server the real CLI runs as a subprocess; against the guarded demo notes
server, ``run_bridge`` runs in-process with a static bearer token through a pair of OS pipes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.client.bridge import run_bridge
from tests.conftest import ThreadedServer

GATEHOUSE = [sys.executable, "-m", "gatehouse.cli"]
DEADLINE = 30


# --- an unguarded MCP server (official SDK) ------------------------------------------------------


class Name(BaseModel):
    name: str


def tool_server_app() -> Starlette:
    """Tools that exercise every direction a message can travel, served at /mcp without any auth."""
    mcp = MCPServer(name="bridge-test-tools", title="Bridge test tools", version="1.2.3")

    @mcp.tool()
    def echo(text: str) -> str:
        """Say it back."""
        return f"echo: {text}"

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def forecast(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        """A tool whose ``region`` travels as a header too (2026-07-28: Mcp-Param-Region)."""
        return f"sunny in {region}"

    @mcp.tool()
    def fail(reason: str) -> str:
        """Fail with ``reason``."""
        raise ToolError(reason)

    @mcp.tool()
    async def ask_name(ctx: Context) -> str:
        """Ask the client for a name (elicitation/create, on this call's stream)."""
        answer = await ctx.elicit("What is your name?", Name)
        return f"hello {answer.data.name}" if answer.action == "accept" else f"no name: {answer.action}"

    @mcp.tool()
    async def client_roots(ctx: Context) -> str:
        """Ask the client for its roots (roots/list)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            listed = await ctx.session.list_roots()
        return " ".join(str(root.uri) for root in listed.roots)

    @mcp.tool()
    async def work(ctx: Context) -> str:
        """Log, report progress, then finish."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await ctx.info("starting")
        await ctx.report_progress(1, 2, "half way")
        await ctx.report_progress(2, 2, "done")
        return "worked"

    @mcp.tool()
    async def announce(ctx: Context) -> str:
        """Tell the client the tool list changed: an unsolicited notification, on the GET stream."""
        await ctx.session.send_tool_list_changed()
        return "announced"

    sdk = mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with mcp.session_manager.run():
            yield

    return Starlette(routes=[Route("/mcp", sdk)], lifespan=lifespan)


@pytest.fixture
def tool_server(loopback_server):
    with loopback_server(tool_server_app()) as base_url:
        yield f"{base_url}/mcp"


# --- what a host sees --------------------------------------------------------------------------


@dataclass
class HostRecord:
    """Everything the host received besides results."""

    logs: list[str] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    tools_changed: anyio.Event = field(default_factory=anyio.Event)

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(str(params.data))

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(message or "")

    async def on_message(self, message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.tools_changed.set()


async def answer_elicitation(context, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def list_roots(context) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///home/ada/project", name="project")])


def session_callbacks(record: HostRecord) -> dict:
    return dict(elicitation_callback=answer_elicitation, list_roots_callback=list_roots,
                logging_callback=record.on_log, message_handler=record.on_message)


async def exercise_every_direction(session: ClientSession, record: HostRecord) -> None:
    """initialize, list, call, a server request answered by the host, notifications both ways."""
    initialized = await session.initialize()
    assert initialized.server_info.name == "bridge-test-tools" and initialized.server_info.version == "1.2.3"
    names = {tool.name for tool in (await session.list_tools()).tools}
    assert {"echo", "add", "ask_name", "client_roots", "work", "announce"} <= names

    echoed = await session.call_tool("echo", {"text": "hi"})
    assert echoed.content[0].text == "echo: hi"
    assert (await session.call_tool("ask_name", {})).content[0].text == "hello Ada"
    assert (await session.call_tool("client_roots", {})).content[0].text == "file:///home/ada/project"

    worked = await session.call_tool("work", {}, progress_callback=record.on_progress)
    assert worked.content[0].text == "worked"
    assert record.progress == ["half way", "done"] and record.logs == ["starting"]

    await session.call_tool("announce", {})
    with anyio.fail_after(5):
        await record.tools_changed.wait()

    failed = await session.call_tool("fail", {"reason": "on purpose"})
    assert failed.is_error and "on purpose" in failed.content[0].text


# --- the CLI under the SDK's stdio client ------------------------------------------------------


@pytest.fixture(autouse=True)
def credentials_dir(tmp_path, monkeypatch):
    """Every bridge process keeps its tokens under tmp_path, never in the user's data directory."""
    monkeypatch.setenv("GATEHOUSE_CREDENTIALS_DIR", str(tmp_path / "credentials"))


def bridge_params(url: str, *extra: str, env: dict | None = None) -> StdioServerParameters:
    """The SDK's stdio client passes only a few variables on; the credential store's is one of them here."""
    return StdioServerParameters(command=GATEHOUSE[0], args=[*GATEHOUSE[1:], "bridge", url, *extra],
                                 env={"GATEHOUSE_CREDENTIALS_DIR": os.environ["GATEHOUSE_CREDENTIALS_DIR"], **(env or {})})


async def test_sdk_stdio_client_through_the_cli_bridge(tool_server, tmp_path):
    record = HostRecord()
    with open(tmp_path / "stderr", "w+") as errlog:
        with anyio.fail_after(DEADLINE):
            async with (
                stdio_client(bridge_params(tool_server), errlog=errlog) as (read, write),
                ClientSession(read, write, **session_callbacks(record)) as session,
            ):
                await exercise_every_direction(session, record)
        errlog.seek(0)
        assert "Traceback" not in errlog.read()


async def test_sdk_high_level_client_negotiates_through_the_bridge(tool_server):
    """``mcp.Client`` probes ``server/discover``: 2026-07-28 requests need headers the bridge adds."""
    with anyio.fail_after(DEADLINE):
        async with Client(bridge_params(tool_server)) as client:
            assert client.protocol_version == "2026-07-28"
            assert {tool.name for tool in (await client.list_tools()).tools} >= {"echo", "add"}
            assert (await client.call_tool("add", {"a": 2, "b": 3})).structured_content == {"result": 5}
            assert (await client.call_tool("forecast", {"region": "Île-de-France"})).content[0].text == "sunny in Île-de-France"


def run_cli_bridge(url: str, *lines: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess:
    return subprocess.run([*GATEHOUSE, "bridge", url], input="".join(line + "\n" for line in lines),
                          capture_output=True, text=True, timeout=timeout)


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw host", "version": "0"}}})


def stdout_messages(result: subprocess.CompletedProcess) -> list[dict]:
    """Every stdout line must be a JSON-RPC message: nothing else may reach the host."""
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    return messages


def test_unreachable_server_answers_pending_requests_and_exits_1(extra_socket):
    closed_port = extra_socket.getsockname()[1]  # bound, never listening: connections are refused
    result = run_cli_bridge(f"http://127.0.0.1:{closed_port}/mcp", "this is not json", INITIALIZE)
    parse_error, answer = stdout_messages(result)
    assert parse_error["id"] is None and parse_error["error"]["code"] == types.PARSE_ERROR
    assert answer["id"] == 1 and "cannot reach" in answer["error"]["message"]
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == [
        "gatehouse bridge: ignored a line on stdin that is not a JSON-RPC message (ValidationError)",
        f"gatehouse bridge: {answer['error']['message']}",
    ]


def test_stdin_closing_ends_a_healthy_bridge_with_0(tool_server):
    result = run_cli_bridge(tool_server, INITIALIZE)
    (answer,) = stdout_messages(result)
    assert answer["result"]["serverInfo"]["name"] == "bridge-test-tools"
    assert result.returncode == 0, result.stderr


# --- the CLI bridge logging in to the guarded demo server ----------------------------------------


async def add_and_list_note(params: StdioServerParameters, title: str, errlog) -> str:
    with anyio.fail_after(DEADLINE):
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            added = await session.call_tool("add_note", {"title": title, "body": "through the bridge"})
            assert not added.is_error, added.content
            return str((await session.call_tool("list_notes", {})).content)


async def test_cli_bridge_logs_in_with_client_credentials(live_as, tmp_path):
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                              redirect_uris=None, scope="notes:read notes:write")
    params = bridge_params(live_as.resource, "--client-credentials", "--client-id", client["client_id"],
                           "--scope", "notes:read notes:write", env={"GATEHOUSE_CLIENT_SECRET": client["client_secret"]})
    with open(tmp_path / "stderr", "w+") as errlog:
        assert "Machine note" in await add_and_list_note(params, "Machine note", errlog)
        errlog.seek(0)
        assert "Traceback" not in errlog.read()


async def test_cli_bridge_opens_the_browser_on_first_use_only(live_as, user_agent, tmp_path):
    browser = {name: value for name, value in os.environ.items() if name == "BROWSER" or name.startswith("GATEHOUSE_TEST_UA_")}
    params = bridge_params(live_as.resource, env=browser)
    with open(tmp_path / "stderr", "w+") as errlog:
        assert "First" in await add_and_list_note(params, "First", errlog)
        assert len(user_agent.opened()) == 1
        assert "Second" in await add_and_list_note(params, "Second", errlog)
        assert len(user_agent.opened()) == 1, "the second bridge process used the stored tokens"
        errlog.seek(0)
        assert "Traceback" not in errlog.read()


def test_cli_bridge_exits_at_once_when_the_login_fails(live_as):
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                              redirect_uris=None, scope="notes:read")
    bridge = subprocess.Popen(
        [*GATEHOUSE, "bridge", live_as.resource, "--client-credentials", "--client-id", client["client_id"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GATEHOUSE_CLIENT_SECRET": "not-the-secret"},
    )
    try:
        bridge.stdin.write(INITIALIZE + "\n")
        bridge.stdin.flush()
        answer = json.loads(bridge.stdout.readline())
        assert bridge.wait(timeout=10) == 1, "stdin is still open: the bridge stopped by itself"
        stderr = bridge.stderr.read()
    finally:
        bridge.kill()
        bridge.communicate()
    assert answer["id"] == 1 and "rejected the client credentials" in answer["error"]["message"]
    assert stderr.splitlines()[1:] == [f"gatehouse bridge: {answer['error']['message']}"]
    assert "not-the-secret" not in stderr


# --- run_bridge in-process, against the guarded demo server ------------------------------------


class BearerToken(httpx2.Auth):
    """A static access token: stands in for the login until a test needs the real flow."""

    def __init__(self, token: str):
        self.token = token

    def auth_flow(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


@dataclass
class InProcessBridge:
    exit_code: int | None = None
    log_lines: list[str] = field(default_factory=list)
    finished: anyio.Event = field(default_factory=anyio.Event)


@contextlib.asynccontextmanager
async def bridged_session(url: str, auth: httpx2.Auth | None, **callbacks) -> AsyncIterator[tuple[ClientSession, InProcessBridge]]:
    """``run_bridge`` on one pair of OS pipes, an SDK ``ClientSession`` on the other ends."""
    host_to_bridge_r, host_to_bridge_w = os.pipe()
    bridge_to_host_r, bridge_to_host_w = os.pipe()
    bridge_stdin = open(host_to_bridge_r, "rb")
    bridge_stdout = anyio.wrap_file(open(bridge_to_host_w, "w", encoding="utf-8"))
    host_stdout = anyio.wrap_file(open(host_to_bridge_w, "w", encoding="utf-8"))
    host_stdin = anyio.wrap_file(open(bridge_to_host_r, encoding="utf-8"))
    state = InProcessBridge()
    to_session, session_read = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    session_write, from_session = anyio.create_memory_object_stream[SessionMessage](16)

    async def bridge() -> None:
        try:
            state.exit_code = await run_bridge(url, auth, stdin=bridge_stdin, stdout=bridge_stdout, log=state.log_lines.append)
        finally:
            await bridge_stdout.aclose()
            state.finished.set()

    async def host_reads() -> None:
        async with to_session:
            async for line in host_stdin:
                await to_session.send(SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False)))

    async def host_writes() -> None:
        async with from_session:
            async for item in from_session:
                await host_stdout.write(item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n")
                await host_stdout.flush()
        await host_stdout.aclose()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(bridge)
        tasks.start_soon(host_reads)
        tasks.start_soon(host_writes)
        try:
            async with ClientSession(session_read, session_write, **callbacks) as session:
                yield session, state
        finally:
            session_write.close()
            with anyio.fail_after(10):
                await state.finished.wait()
    await host_stdin.aclose()
    bridge_stdin.close()


async def test_demo_server_through_the_bridge_with_a_token(live_as):
    token, _ = live_as.machine_token(live_as.resource, "notes:read notes:write")
    with anyio.fail_after(DEADLINE):
        async with bridged_session(live_as.resource, BearerToken(token)) as (session, state):
            await session.initialize()
            names = {tool.name for tool in (await session.list_tools()).tools}
            added = await session.call_tool("add_note", {"title": "Bridge", "body": "through stdio"})
            listed = await session.call_tool("list_notes", {})
    assert {"add_note", "list_notes", "read_note", "delete_note"} <= names
    assert not added.is_error and "Bridge" in str(listed.content)
    assert state.exit_code == 0 and state.log_lines == []


async def test_insufficient_scope_is_explained_and_the_session_goes_on(live_as):
    token, _ = live_as.machine_token(live_as.resource, "notes:read")
    with anyio.fail_after(DEADLINE):
        async with bridged_session(live_as.resource, BearerToken(token)) as (session, state):
            await session.initialize()
            with pytest.raises(MCPError) as refused:
                await session.call_tool("add_note", {"title": "x", "body": "y"})
            listed = await session.call_tool("list_notes", {})
    assert "HTTP 403 insufficient_scope" in str(refused.value) and "notes:write" in str(refused.value)
    assert not listed.is_error and state.exit_code == 0


async def test_a_refused_token_is_fatal(live_as):
    with anyio.fail_after(DEADLINE):
        async with bridged_session(live_as.resource, BearerToken("not-a-token")) as (session, state):
            with pytest.raises(MCPError) as refused:
                await session.initialize()
            with anyio.fail_after(5):
                await state.finished.wait()  # without waiting for stdin to close
    assert "refused the credentials (HTTP 401 invalid_token" in str(refused.value)
    assert state.exit_code == 1 and len(state.log_lines) == 1 and "HTTP 401" in state.log_lines[0]


async def test_after_a_failure_a_new_initialize_opens_a_new_session(extra_socket):
    """Requests are refused with the reason until the host starts over; then the bridge tries again."""
    url = f"http://127.0.0.1:{extra_socket.getsockname()[1]}/mcp"  # bound, not yet listening
    with contextlib.ExitStack() as later:
        with anyio.fail_after(DEADLINE):
            async with bridged_session(url, None) as (session, state):
                with pytest.raises(MCPError, match="cannot reach"):
                    await session.initialize()
                with pytest.raises(MCPError, match="cannot reach"):
                    await session.list_tools()
                later.enter_context(ThreadedServer(tool_server_app(), extra_socket))
                await session.initialize()
                assert (await session.call_tool("echo", {"text": "again"})).content[0].text == "echo: again"
    assert state.exit_code == 0 and len(state.log_lines) == 1 and "cannot reach" in state.log_lines[0]
