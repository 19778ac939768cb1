"""A stdio MCP server served over Streamable HTTP: one child process per MCP session.

``gatehouse gateway -- <command> [args…]`` puts this behind the guard. It is the server side
of the MCP Streamable HTTP transport (specification 2025-11-25, "Transports"); the children and
their sessions live in :mod:`gatehouse.guard.stdio_sessions`, the streams of a session in
:mod:`gatehouse.guard.stdio_streams`, and SSE event ids in :mod:`gatehouse.guard.stdio_events`.

- POST ("Sending Messages to the Server"): an ``initialize`` without ``Mcp-Session-Id`` starts a
  child and a session. Notifications and responses (such as the client's answer to the child's
  ``elicitation/create`` or ``sampling/createMessage``) go to the child and are answered 202.
  Requests are answered on their POST: as SSE, which also carries the child's requests and
  notifications as they come (progress, logs), or as JSON when the client accepts only JSON.
- GET ("Listening for Messages from the Server"): an SSE stream for what the child sends outside
  any request.
- "Resumability and Redelivery": every SSE event has an ``id`` that names its stream, and an SSE
  stream starts with a priming event (an id, the ``retry`` delay and empty data: "Sending
  Messages to the Server", 6) for clients of 2025-11-25 or later. A client whose connection broke
  sends ``GET`` with ``Last-Event-ID`` and gets the rest of that stream: what it missed (a POST's
  answer too, if it came meanwhile), then the rest live. A broken POST does not cancel its
  request ("Sending Messages to the Server", 6: disconnection is not cancellation) once the
  client holds an event id of it. An id this session never sent, or one the session's bounded
  log no longer reaches, is answered 400: the stream cannot be resumed, but the session lives on.
- DELETE and "Session Management": ``DELETE`` ends the session; a session that is unknown, ended,
  idle for too long, or started by another caller is 404, and the client must start a new one.
  Sessions are bound to the caller the guard verified (issuer and subject), as the transport's
  security warning asks, so a leaked session id (or event id) is useless to anyone else.

A full gateway answers 503 with ``Retry-After``; a command that cannot start answers 502.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import Receive, Scope, Send

from gatehouse.guard import caller as caller_context
from gatehouse.guard.asgi import jsonrpc_error, read_body, send_bytes, send_json
from gatehouse.guard.sessions import SESSION_HEADER
from gatehouse.guard.stdio_events import UnknownEvent, frame
from gatehouse.guard.stdio_sessions import MAX_LINE, CommandFailed, SessionRegistry, SessionsFull
from gatehouse.guard.stdio_streams import ChildSession, Stream

RETRY_AFTER = 30
NOT_FOUND = jsonrpc_error(-32001, "session not found; start a new one with initialize")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
PRIMING_SINCE = "2025-11-25"  # older clients cannot read an event with empty data (the SDK primes from here on too)
ASSUMED_VERSION = "2025-03-26"  # "Protocol Version Header": what to assume without the header


class StdioUpstream:
    """ASGI app: the Streamable HTTP side of stdio MCP servers started from ``command``.

    ``idle_timeout`` (seconds; ``None`` for never) ends a session that has no request in flight
    and no GET stream open for that long, so a client that never sends ``DELETE`` does not keep
    its child forever. ``retry_interval`` (milliseconds; ``None`` to leave it to the client) is
    the ``retry`` of the priming events: how long a client waits before it resumes a broken stream.
    """

    def __init__(self, command: list[str], *, max_sessions: int = 100, idle_timeout: float | None = 1800.0,
                 retry_interval: int | None = 1000, env: dict | None = None):
        if not command:
            raise ValueError("give the stdio MCP server's command after --")
        self.registry = SessionRegistry(command, max_sessions=max_sessions, idle_timeout=idle_timeout, env=env)
        self.retry_interval = retry_interval

    @property
    def sessions(self) -> dict[str, ChildSession]:
        return self.registry.sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        session_id = _header(scope, b"mcp-session-id")
        caller = scope.get(caller_context.SCOPE_KEY)
        owner = (caller.issuer, caller.subject) if caller is not None else None
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, session_id, owner)
        elif method not in ("GET", "DELETE"):
            await send_json(send, 405, jsonrpc_error(-32600, "use POST, GET or DELETE"), [(b"allow", b"POST, GET, DELETE")])
        elif (session := self.registry.get(session_id, owner)) is None:
            await send_json(send, 404, NOT_FOUND)
        elif method == "GET":
            await self._listen(scope, receive, send, session)
        else:
            await self.registry.end(session, "the client ended the session")
            await send_json(send, 200, {})

    async def _post(self, scope: Scope, receive: Receive, send: Send, session_id: str | None,
                    owner: tuple[str, str] | None) -> None:
        _, body, too_large = await read_body(receive, MAX_LINE)
        if too_large:
            await send_json(send, 413, jsonrpc_error(-32600, f"the request body is larger than {MAX_LINE} bytes"))
            return
        try:
            messages = _messages(body)
        except ValueError:
            await send_json(send, 400, jsonrpc_error(-32700, "the body is not a JSON-RPC message"))
            return
        initialize = next((m for m in messages if m.get("method") == "initialize"), None)
        if session_id is None:
            if initialize is None:
                await send_json(send, 400, jsonrpc_error(-32600, "start a session with an initialize request"))
                return
            try:
                session = await self.registry.start(owner)
            except SessionsFull:
                full = (f"the gateway already runs its limit of {self.registry.max_sessions} MCP sessions; "
                        f"retry in {RETRY_AFTER} s, or end a session you no longer use (DELETE)")
                await send_json(send, 503, _error(initialize, -32000, full), [(b"retry-after", str(RETRY_AFTER).encode())])
                return
            except CommandFailed:
                cannot = "the MCP server command cannot be started; the gateway's log says why"
                await send_json(send, 502, _error(initialize, -32603, cannot))
                return
        else:
            session = self.registry.get(session_id, owner)
            if session is None:
                await send_json(send, 404, NOT_FOUND)
                return
        version = _field(initialize, "params", "protocolVersion") if initialize else _header(scope, b"mcp-protocol-version")
        with session.in_use():
            await self._exchange(receive, send, session, messages, batch=body.lstrip().startswith(b"["),
                                 sse="text/event-stream" in (_header(scope, b"accept") or ""), prime=_primes(version))

    async def _exchange(self, receive: Receive, send: Send, session: ChildSession, messages: list[dict], *,
                        batch: bool, sse: bool, prime: bool) -> None:
        requests = [m for m in messages if "method" in m and "id" in m]
        headers = [(SESSION_HEADER, session.id.encode())]
        if not requests:
            await _forward(session, messages)
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        stream = session.answer(requests, sse=sse)
        queue = session.connect(stream, prime=prime, flush=sse)
        watcher = asyncio.create_task(_close_on_disconnect(receive, queue))
        try:
            await _forward(session, messages)
            if sse:
                await self._stream(send, stream, queue, headers)
                return
            answers = []
            while (event := await queue.get()) is not None:
                if event.response:
                    answers.append(event.data)
            if stream.ended and answers:
                body = b"[" + b",".join(answers) + b"]" if batch else answers[0]
                await send_bytes(send, 200, body, [(b"content-type", b"application/json"), *headers])
        finally:
            watcher.cancel()
            session.disconnect(stream, queue)

    async def _listen(self, scope: Scope, receive: Receive, send: Send, session: ChildSession) -> None:
        """A GET: a new stream, or with ``Last-Event-ID`` the rest of the stream that event was on."""
        last_event_id = _header(scope, b"last-event-id")
        replay = []
        if last_event_id:
            try:
                stream, replay = session.resume(last_event_id)
            except UnknownEvent as exc:
                await send_json(send, 400, jsonrpc_error(-32600, f"cannot resume: {exc}"))
                return
        else:
            stream = session.listen()
        with session.in_use():
            queue = session.connect(stream, replay=replay, prime=_primes(_header(scope, b"mcp-protocol-version")),
                                    flush=stream.listener)
            watcher = asyncio.create_task(_close_on_disconnect(receive, queue))
            try:
                await self._stream(send, stream, queue, [(SESSION_HEADER, session.id.encode())])
            finally:
                watcher.cancel()
                session.disconnect(stream, queue)

    async def _stream(self, send: Send, stream: Stream, queue: asyncio.Queue, headers: list) -> None:
        """Send the events of ``queue`` as SSE until it ends (the stream ended, or another connection took it over)."""
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
        while (event := await queue.get()) is not None:
            await send({"type": "http.response.body", "body": frame(event, self.retry_interval), "more_body": True})
            stream.sent = True
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self.registry.aclose()


def _messages(body: bytes) -> list[dict]:
    data = json.loads(body)
    messages = data if isinstance(data, list) else [data]
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("not JSON-RPC")
    return messages


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


def _field(value: object, *path: str) -> object:
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _primes(version: object) -> bool:
    """Whether a client of protocol ``version`` gets priming events (it can read an event with empty data)."""
    return (version if isinstance(version, str) else ASSUMED_VERSION) >= PRIMING_SINCE


def _error(request: dict, code: int, message: str) -> dict:
    return {**jsonrpc_error(code, message), "id": request.get("id")}


async def _forward(session: ChildSession, messages: list[dict]) -> None:
    try:
        await session.send(messages)
    except (BrokenPipeError, ConnectionResetError):
        session.fail_waiting("the MCP server process has exited")


async def _close_on_disconnect(receive: Receive, queue: asyncio.Queue) -> None:
    """End the connection fed by ``queue`` when the client goes away: uvicorn silently drops what is sent after that."""
    while (await receive())["type"] != "http.disconnect":
        pass
    queue.put_nowait(None)
