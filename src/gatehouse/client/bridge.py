"""``gatehouse bridge``: a stdio MCP server that relays every message to a remote Streamable HTTP MCP server.

The host speaks newline-delimited JSON-RPC on our stdin and stdout (MCP 2025-11-25, Transports,
"stdio"); the remote is reached over Streamable HTTP ("Streamable HTTP") with the SDK's own
transport, so its GET stream for server-initiated messages, session ids and resumption come for free.
Messages are relayed as they are, both ways: requests, responses, notifications and the server's
own requests (sampling, elicitation, roots/list). The bridge only adds the per-message HTTP headers
Streamable HTTP asks of a client ("Protocol Version Header"; 2026-07-28 "Standard Headers"), which a
stdio host cannot send itself.

Nothing but protocol messages reaches stdout. When the remote fails, every request still waiting is
answered with a JSON-RPC error that says why and one line goes to stderr. An authorization failure
ends the bridge at once (exit 1); after any other failure, requests are refused with the same reason
until the host starts a new session (``initialize``), which tries the remote again, or closes stdin
(exit 1).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx2
from mcp.client.auth.exceptions import OAuthFlowError
from mcp.client.auth.utils import extract_field_from_www_auth
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)

from gatehouse.client.errors import AuthorizationFailed, ClientError, ServerUnreachable

DRAIN_SECONDS = 5.0
"""After stdin closes, how long answers to requests already sent may still arrive."""

SESSION_OPENERS = ("initialize", "server/discover")


def log_to_stderr(line: str) -> None:
    print(f"gatehouse bridge: {line}", file=sys.stderr, flush=True)


async def run_bridge(
    server_url: str,
    auth: httpx2.Auth | None,
    *,
    stdin: BinaryIO | None = None,
    stdout: anyio.AsyncFile[str] | None = None,
    log: Callable[[str], None] = log_to_stderr,
) -> int:
    """Relay MCP between stdin/stdout (default: the process's) and ``server_url``; return the exit code.

    0 when stdin closes after a healthy session; 1 when the remote failed: at once for an
    authorization failure, else once stdin closes.
    """
    lines = StdinLines(stdin or sys.stdin.buffer)
    async with open_http_client(auth) as http, stdio_server(lines, stdout) as (local_read, local_write):
        async with local_write:
            code = await Bridge(server_url, http, local_read, local_write, log).run()
        lines.close()
    return code


class StdinLines:
    """Lines of a binary stream, read in a daemon thread: the bridge can stop without waiting for the host's next line.

    (``stdio_server`` reads stdin in an AnyIO worker thread, which neither cancellation nor exit interrupts.)
    The thread reads the file descriptor itself, never ``sys.stdin``'s buffer, whose lock it would
    still hold when the interpreter shuts down.
    """

    CHUNK = 1 << 16

    def __init__(self, stream: BinaryIO):
        self.fd = stream.fileno()
        self._send, self._receive = anyio.create_memory_object_stream[str | None](math.inf)
        self._reader: threading.Thread | None = None

    def __aiter__(self) -> StdinLines:
        return self

    async def __anext__(self) -> str:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, args=(anyio.lowlevel.current_token(),), daemon=True)
            self._reader.start()
        line = await self._receive.receive()
        if line is None:
            raise StopAsyncIteration
        return line

    def close(self) -> None:
        """End the lines here, whatever the stream still holds."""
        self._send.send_nowait(None)

    def _read(self, token) -> None:
        unread = bytearray()
        while chunk := self._next_chunk():
            unread += chunk
            while (end := unread.find(b"\n")) >= 0:
                line = unread[: end + 1].decode("utf-8", errors="replace")
                del unread[: end + 1]
                if not self._deliver(line, token):
                    return
        if unread:
            self._deliver(unread.decode("utf-8", errors="replace"), token)
        self._deliver(None, token)

    def _next_chunk(self) -> bytes:
        try:
            return os.read(self.fd, self.CHUNK)
        except OSError:
            return b""

    def _deliver(self, line: str | None, token) -> bool:
        try:
            anyio.from_thread.run_sync(self._send.send_nowait, line, token=token)
        except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True


def open_http_client(auth: httpx2.Auth | None) -> httpx2.AsyncClient:
    """An HTTP client whose refusals say why (see ``ExplainedAuth``), with the SDK transports' timeouts:
    a response stream may stay quiet for minutes while a tool works."""
    return httpx2.AsyncClient(auth=ExplainedAuth(auth), timeout=httpx2.Timeout(30.0, read=300.0))


class ExplainedAuth(httpx2.Auth):
    """Runs ``inner`` (or nothing), then puts the server's final refusal into words (RFC 6750 section 3).

    A 401 that survives the auth flow cannot be fixed by retrying, so it is raised as
    ``AuthorizationFailed``. Other refusals (403 ``insufficient_scope`` after a failed step-up, a 400
    from the guard) are recorded per JSON-RPC id in ``refusals``: the SDK's transport answers them
    with a bare "Server returned an error response", and ``explain`` adds what the server said.
    """

    def __init__(self, inner: httpx2.Auth | None):
        self.inner = inner
        self.refusals: dict[RequestId | None, str] = {}

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow = self.inner.async_auth_flow(request) if self.inner else _unchanged(request)
        response = None
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            pass
        finally:
            await flow.aclose()
        if response is None or response.status_code < 400 or response.status_code >= 500:
            return
        await response.aread()
        refusal = describe_refusal(response)
        if response.status_code == 401:
            raise AuthorizationFailed(f"{request.url} refused the credentials ({refusal})")
        self.refusals[_jsonrpc_id(request)] = refusal

    def explain(self, request_id: RequestId | None, error: ErrorData) -> ErrorData:
        """``error`` with the server's stated reason appended, when the transport made it up."""
        refusal = self.refusals.pop(request_id, None)
        if refusal is None or error.code != INTERNAL_ERROR:
            return error
        return error.model_copy(update={"message": f"{error.message}: {refusal}"})


async def _unchanged(request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
    yield request


def describe_refusal(response: httpx2.Response) -> str:
    """``HTTP 403 insufficient_scope: <what the server said>`` from the challenge or the OAuth error body."""
    error = extract_field_from_www_auth(response, "error")
    description = extract_field_from_www_auth(response, "error_description")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = error or _text(body.get("error"))
        description = description or _text(body.get("error_description"))
    words = f"HTTP {response.status_code}" + (f" {error}" if error else "")
    return f"{words}: {description}" if description else words


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _jsonrpc_id(request: httpx2.Request) -> RequestId | None:
    """The id of the JSON-RPC request ``request`` carries (not of a response: ids of the server's own requests differ)."""
    try:
        body = json.loads(request.content)
    except (ValueError, httpx2.RequestNotRead):
        return None
    return body.get("id") if isinstance(body, dict) and "method" in body else None


def describe_failure(error: BaseException, server_url: str) -> str:
    """One line that says what went wrong with ``server_url`` and, where it helps, what to do."""
    if isinstance(error, ClientError | MCPError):
        return str(error)
    if isinstance(error, OAuthFlowError):
        return f"authorization with {server_url} failed: {error}"
    if isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout):
        return f"cannot reach {server_url}: {error or type(error).__name__}; check the URL and that the server is running"
    if isinstance(error, httpx2.TimeoutException):
        return f"{server_url} did not answer in time"
    if isinstance(error, httpx2.HTTPError):
        return f"HTTP error talking to {server_url}: {error or type(error).__name__}"
    return f"unexpected error talking to {server_url}: {type(error).__name__}: {error}"


def is_fatal(error: BaseException) -> bool:
    """An authorization failure: no later request can succeed, so the bridge stops at once."""
    return isinstance(error, OAuthFlowError) or (isinstance(error, ClientError) and not isinstance(error, ServerUnreachable))


def root_cause(error: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups from the transport's task group."""
    while isinstance(error, BaseExceptionGroup):
        failures = [e for e in error.exceptions if isinstance(e, Exception)]
        error = (failures or error.exceptions)[0]
    return error


class ProtocolHeaders:
    """The per-message HTTP headers the host cannot send over stdio, worked out from the messages themselves.

    Handshake-era sessions (2025-06-18 and later, "Protocol Version Header") send the negotiated
    ``MCP-Protocol-Version`` on every message after ``initialize``. 2026-07-28 requests carry their
    version in ``params._meta`` and must mirror it, their method, the name they act on and any
    ``x-mcp-header`` arguments as headers ("Standard Headers"); the last are learned from tools/list.
    """

    def __init__(self) -> None:
        self.negotiated_version: str | None = None
        self.param_headers: dict[str, dict[tuple[str, ...], str]] = {}

    def for_message(self, message: Any) -> dict[str, str] | None:
        if isinstance(message, JSONRPCRequest | JSONRPCNotification):
            params = message.params or {}
            meta = params.get("_meta")
            version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
            if isinstance(version, str):
                return self._modern(message.method, params, version)
            if message.method == "initialize":
                return None
        return {MCP_PROTOCOL_VERSION_HEADER: self.negotiated_version} if self.negotiated_version else None

    def _modern(self, method: str, params: dict[str, Any], version: str) -> dict[str, str]:
        headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: method}
        name_key = NAME_BEARING_METHODS.get(method)
        if name_key and isinstance(name := params.get(name_key), str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        if method == "tools/call" and (declared := self.param_headers.get(params.get("name"))):
            headers.update(mcp_param_headers(declared, params.get("arguments") or {}))
        return headers

    def learn(self, method: str, result: dict[str, Any]) -> None:
        if method == "initialize" and isinstance(result.get("protocolVersion"), str):
            self.negotiated_version = result["protocolVersion"]
        elif method == "tools/list":
            for tool in result.get("tools") or []:
                schema = tool.get("inputSchema")
                if find_invalid_x_mcp_header(schema) is None and (declared := x_mcp_header_map(schema)):
                    self.param_headers[tool.get("name")] = declared


@dataclass
class RemoteFailed:
    """Why a remote session ended before stdin did."""

    error: BaseException


class Bridge:
    """One stdio host relayed to one remote: a remote session per ``initialize``, each relayed until it ends."""

    def __init__(self, server_url: str, http: httpx2.AsyncClient, local_read, local_write, log: Callable[[str], None]):
        self.server_url = server_url
        self.http = http
        self.explained = http.auth if isinstance(http.auth, ExplainedAuth) else ExplainedAuth(None)
        self.local_read = local_read
        self.local_write = local_write
        self.log = log
        self.pending: dict[RequestId, str] = {}
        self.headers = ProtocolHeaders()
        self.all_answered = anyio.Event()

    async def run(self) -> int:
        opening: SessionMessage | None = None
        while True:
            outcome = await self._relay(opening)
            if outcome is None:
                return 0
            reason = describe_failure(outcome.error, self.server_url)
            self.log(reason)
            await self._answer_pending(reason)
            if is_fatal(outcome.error):
                return 1
            opening = await self._refuse_until_new_session(reason)
            if opening is None:
                return 1

    async def _relay(self, opening: SessionMessage | None) -> RemoteFailed | None:
        """Relay one remote session; None when stdin closed, else why the remote failed."""
        self.headers = ProtocolHeaders()
        try:
            async with streamable_http_client(self.server_url, http_client=self.http) as (remote_read, remote_write):
                async with anyio.create_task_group() as relaying:
                    relaying.start_soon(self._to_host, remote_read)
                    if opening is not None:
                        await self._to_remote(opening, remote_write)
                    async for item in self.local_read:
                        await self._to_remote(item, remote_write)
                    await self._drain()
                    relaying.cancel_scope.cancel()
        except Exception as exc:  # noqa: BLE001 - every transport failure is answered, none is raised
            return RemoteFailed(root_cause(exc))
        return None

    async def _to_remote(self, item: SessionMessage | Exception, remote_write) -> None:
        if isinstance(item, Exception):
            await self._unreadable_input(item)
            return
        message = item.message
        if isinstance(message, JSONRPCRequest):
            self.pending[message.id] = message.method
            self.all_answered = anyio.Event()
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            self._settle((message.params or {}).get("requestId"))
        headers = self.headers.for_message(message)
        await remote_write.send(SessionMessage(message, ClientMessageMetadata(headers=headers) if headers else None))

    async def _to_host(self, remote_read) -> None:
        async for item in remote_read:
            if isinstance(item, Exception):
                self.log(f"ignored a message from {self.server_url} that is not JSON-RPC: {item}")
                continue
            message = item.message
            answered = isinstance(message, JSONRPCResponse | JSONRPCError) and message.id in self.pending
            if answered:
                method = self.pending.pop(message.id)
                if isinstance(message, JSONRPCResponse):
                    self.headers.learn(method, message.result)
                else:
                    message = message.model_copy(update={"error": self.explained.explain(message.id, message.error)})
            await self.local_write.send(SessionMessage(message))
            if answered:
                self._settle(None)

    def _settle(self, request_id: RequestId | None) -> None:
        """``request_id`` needs no answer any more (cancelled by the host); note when none is awaited."""
        self.pending.pop(request_id, None)
        if not self.pending:
            self.all_answered.set()

    async def _drain(self) -> None:
        if self.pending:
            with anyio.move_on_after(DRAIN_SECONDS):
                await self.all_answered.wait()

    async def _answer_pending(self, reason: str) -> None:
        for request_id in list(self.pending):
            await self._reply_error(request_id, CONNECTION_CLOSED, reason)
        self.pending.clear()

    async def _refuse_until_new_session(self, reason: str) -> SessionMessage | None:
        """Answer requests with ``reason`` until the host opens a new session (returned) or closes stdin."""
        async for item in self.local_read:
            if isinstance(item, Exception):
                await self._unreadable_input(item)
            elif isinstance(item.message, JSONRPCRequest):
                if item.message.method in SESSION_OPENERS:
                    return item
                await self._reply_error(item.message.id, CONNECTION_CLOSED, reason)
        return None

    async def _unreadable_input(self, error: Exception) -> None:
        self.log(f"ignored a line on stdin that is not a JSON-RPC message ({type(error).__name__})")
        await self._reply_error(None, PARSE_ERROR, "Parse error: the line is not a JSON-RPC message")

    async def _reply_error(self, request_id: RequestId | None, code: int, text: str) -> None:
        error = JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=text))
        await self.local_write.send(SessionMessage(error))
