"""A stdio MCP server served over Streamable HTTP: one child process per MCP session.

``gatehouse gateway -- <command> [args…]`` puts this behind the guard. It is the server side
of the MCP Streamable HTTP transport (specification 2025-11-25, "Transports"); the children and
their sessions live in :mod:`gatehouse.guard.stdio_sessions`.

- POST ("Sending Messages to the Server"): an ``initialize`` without ``Mcp-Session-Id`` starts a
  child and a session. Notifications and responses (such as the client's answer to the child's
  ``elicitation/create`` or ``sampling/createMessage``) go to the child and are answered 202.
  Requests are answered on their POST: as SSE, which also carries the child's requests and
  notifications as they come (progress, logs), or as JSON when the client accepts only JSON.
- GET ("Listening for Messages from the Server"): an SSE stream for what the child sends outside
  any request.
- DELETE and "Session Management": ``DELETE`` ends the session; a session that is unknown, ended,
  idle for too long, or started by another caller is 404, and the client must start a new one.
  Sessions are bound to the caller the guard verified (issuer and subject), as the transport's
  security warning asks, so a leaked session id is useless to anyone else.
- "Resumability and Redelivery" is not offered: events carry no ``id``, so clients never ask
  for a replay with ``Last-Event-ID``.

A full gateway answers 503 with ``Retry-After``; a command that cannot start answers 502.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import Receive, Scope, Send

from gatehouse.guard import caller as caller_context
from gatehouse.guard.asgi import jsonrpc_error, read_body, send_json
from gatehouse.guard.stdio_sessions import (
    MAX_LINE,
    ChildSession,
    CommandFailed,
    SessionRegistry,
    SessionsFull,
    Stream,
    is_response,
)

SESSION_HEADER = b"mcp-session-id"
RETRY_AFTER = 30
NOT_FOUND = jsonrpc_error(-32001, "session not found; start a new one with initialize")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]


class StdioUpstream:
    """ASGI app: the Streamable HTTP side of stdio MCP servers started from ``command``.

    ``idle_timeout`` (seconds; ``None`` for never) ends a session that has no request in flight
    and no GET stream open for that long, so a client that never sends ``DELETE`` does not keep
    its child forever.
    """

    def __init__(self, command: list[str], *, max_sessions: int = 100, idle_timeout: float | None = 1800.0,
                 env: dict | None = None):
        if not command:
            raise ValueError("give the stdio MCP server's command after --")
        self.registry = SessionRegistry(command, max_sessions=max_sessions, idle_timeout=idle_timeout, env=env)

    @property
    def sessions(self) -> dict[str, ChildSession]:
        return self.registry.sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        session_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == SESSION_HEADER), None)
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
            await self._listen(receive, send, session)
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
        if session_id is None:
            initialize = next((m for m in messages if m.get("method") == "initialize"), None)
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
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
        with session.in_use():
            await self._exchange(receive, send, session, messages, batch=body.lstrip().startswith(b"["),
                                 sse="text/event-stream" in accept)

    async def _exchange(self, receive: Receive, send: Send, session: ChildSession, messages: list[dict], *,
                        batch: bool, sse: bool) -> None:
        requests = [m for m in messages if "method" in m and "id" in m]
        stream = Stream(sse=sse)
        session.expect(requests, stream)
        if requests and sse:
            session.open(stream)
        watcher = asyncio.create_task(_close_on_disconnect(receive, stream))
        try:
            try:
                await session.send(messages)
            except (BrokenPipeError, ConnectionResetError):
                session.fail_waiting("the MCP server process has exited")
            headers = [(SESSION_HEADER, session.id.encode())]
            if not requests:
                await send({"type": "http.response.start", "status": 202, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
            elif sse:
                await _stream_answers(send, headers, stream, len(requests))
            else:
                answers = []
                while len(answers) < len(requests):
                    if (message := await stream.queue.get()) is None:
                        return
                    if is_response(message):
                        answers.append(message)
                await send_json(send, 200, answers if batch else answers[0], headers)
        finally:
            watcher.cancel()
            session.forget(requests, stream)

    async def _listen(self, receive: Receive, send: Send, session: ChildSession) -> None:
        stream = Stream(sse=True)
        with session.in_use():
            session.listeners.append(stream)
            session.open(stream)
            watcher = asyncio.create_task(_close_on_disconnect(receive, stream))
            try:
                await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, (SESSION_HEADER, session.id.encode())]})
                while (message := await stream.queue.get()) is not None:
                    await send({"type": "http.response.body", "body": _event(message), "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                watcher.cancel()
                if stream in session.listeners:
                    session.listeners.remove(stream)

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


def _error(request: dict, code: int, message: str) -> dict:
    return {**jsonrpc_error(code, message), "id": request.get("id")}


def _event(message: dict) -> bytes:
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


async def _close_on_disconnect(receive: Receive, stream: Stream) -> None:
    """End ``stream`` when the client goes away: uvicorn silently drops what is sent after that."""
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.close()


async def _stream_answers(send: Send, headers: list, stream: Stream, expected: int) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    answered = 0
    while answered < expected:
        if (message := await stream.queue.get()) is None:
            return
        if is_response(message):
            answered += 1
        await send({"type": "http.response.body", "body": _event(message), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
