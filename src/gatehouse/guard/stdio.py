"""A stdio MCP server served over Streamable HTTP: one child process per MCP session.

``gatehouse gateway -- <command> [args…]`` puts this behind the guard. Each session starts
with an ``initialize`` POST, which starts the command; the session's messages are written to
its stdin one JSON-RPC message per line (the MCP stdio transport), and what it writes back is
answered on the POST that asked (as SSE, or JSON when the client accepts only JSON) or sent
on the session's GET stream. ``DELETE`` ends the child; a child that exits ends its session
with an error on every request still waiting, and the next ``initialize`` starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field

from starlette.types import Receive, Scope, Send

from gatehouse.guard.asgi import jsonrpc_error, read_body, send_json

log = logging.getLogger("gatehouse.gateway.stdio")

SESSION_HEADER = b"mcp-session-id"
MAX_LINE = 16 * 1024 * 1024


def _is_response(message: dict) -> bool:
    return "id" in message and ("result" in message or "error" in message) and "method" not in message


def _id_key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class ChildSession:
    id: str
    process: asyncio.subprocess.Process
    waiting: dict[str, asyncio.Queue] = field(default_factory=dict)
    listeners: set[asyncio.Queue] = field(default_factory=set)
    closed: bool = False
    reader: asyncio.Task | None = None

    async def send(self, messages: list[dict]) -> None:
        data = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in messages)
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    def route(self, message: dict) -> None:
        if _is_response(message):
            queue = self.waiting.get(_id_key(message["id"]))
            if queue is not None:
                queue.put_nowait(message)
                return
        targets = list(self.waiting.values())[-1:] or list(self.listeners)
        for queue in targets:
            queue.put_nowait(message)

    def fail_waiting(self, reason: str) -> None:
        for key, queue in list(self.waiting.items()):
            queue.put_nowait({"jsonrpc": "2.0", "id": json.loads(key), "error": {"code": -32603, "message": reason}})
        for queue in self.listeners:
            queue.put_nowait(None)


class StdioUpstream:
    """ASGI app: the Streamable HTTP side of stdio MCP servers started from ``command``."""

    def __init__(self, command: list[str], *, max_sessions: int = 100, env: dict | None = None):
        if not command:
            raise ValueError("give the stdio MCP server's command after --")
        self.command = command
        self.max_sessions = max_sessions
        self.env = env
        self.sessions: dict[str, ChildSession] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        session_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == SESSION_HEADER), None)
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, session_id)
        elif method == "GET":
            await self._listen(scope, send, session_id)
        elif method == "DELETE":
            session = self.sessions.pop(session_id, None) if session_id else None
            if session is not None:
                await self._stop(session)
            await send_json(send, 200 if session else 404, {} if session else jsonrpc_error(-32001, "session not found"))
        else:
            await send_json(send, 405, jsonrpc_error(-32600, "use POST, GET or DELETE"))

    async def _post(self, scope: Scope, receive: Receive, send: Send, session_id: str | None) -> None:
        _, body, too_large = await read_body(receive, MAX_LINE)
        if too_large:
            await send_json(send, 413, jsonrpc_error(-32600, f"the request body is larger than {MAX_LINE} bytes"))
            return
        try:
            data = json.loads(body)
            messages = data if isinstance(data, list) else [data]
            if not messages or not all(isinstance(m, dict) for m in messages):
                raise ValueError
        except ValueError:
            await send_json(send, 400, jsonrpc_error(-32700, "the body is not a JSON-RPC message"))
            return
        if session_id is None:
            if not any(m.get("method") == "initialize" for m in messages):
                await send_json(send, 400, jsonrpc_error(-32600, "start a session with an initialize request"))
                return
            session = await self._start()
            if session is None:
                await send_json(send, 503, jsonrpc_error(-32603, "too many sessions, or the MCP server command cannot start"))
                return
        else:
            session = self.sessions.get(session_id)
            if session is None or session.closed:
                await send_json(send, 404, jsonrpc_error(-32001, "session not found; start a new one with initialize"))
                return
        requests = [m for m in messages if "method" in m and "id" in m]
        queue: asyncio.Queue = asyncio.Queue()
        for request in requests:
            session.waiting[_id_key(request["id"])] = queue
        try:
            await session.send(messages)
        except (BrokenPipeError, ConnectionResetError):
            session.fail_waiting("the MCP server process has exited")
        headers = [(SESSION_HEADER, session.id.encode())]
        if not requests:
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
        try:
            if "text/event-stream" in accept:
                await _stream_answers(send, headers, queue, len(requests))
            else:
                answers = []
                while len(answers) < len(requests):
                    message = await queue.get()
                    if _is_response(message):
                        answers.append(message)
                answer = answers[0] if not isinstance(data, list) else answers
                await send_json(send, 200, answer, headers)
        finally:
            for request in requests:
                session.waiting.pop(_id_key(request["id"]), None)

    async def _listen(self, scope: Scope, send: Send, session_id: str | None) -> None:
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            await send_json(send, 404, jsonrpc_error(-32001, "session not found"))
            return
        queue: asyncio.Queue = asyncio.Queue()
        session.listeners.add(queue)
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), (SESSION_HEADER, session.id.encode())]})
            while (message := await queue.get()) is not None:
                await send({"type": "http.response.body", "body": _event(message), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            session.listeners.discard(queue)

    async def _start(self) -> ChildSession | None:
        if len(self.sessions) >= self.max_sessions:
            return None
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=self.env, limit=MAX_LINE
            )
        except OSError as exc:
            log.error("cannot start the MCP server %s: %s", self.command[0], exc)
            return None
        session = ChildSession(secrets.token_hex(16), process)
        session.reader = asyncio.create_task(self._read(session))
        self.sessions[session.id] = session
        return session

    async def _read(self, session: ChildSession) -> None:
        stdout = session.process.stdout
        while True:
            try:
                line = await stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.warning("session %s: a message longer than %d bytes was dropped", session.id, MAX_LINE)
                continue
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                session.route(message)
        code = await session.process.wait()
        session.closed = True
        self.sessions.pop(session.id, None)
        log.warning("the MCP server of session %s exited with status %s", session.id, code)
        session.fail_waiting(f"the MCP server process exited (status {code}); start a new session")

    async def _stop(self, session: ChildSession) -> None:
        session.closed = True
        if session.process.returncode is None:
            session.process.terminate()
            try:
                await asyncio.wait_for(session.process.wait(), 5)
            except asyncio.TimeoutError:
                session.process.kill()
        if session.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await session.reader

    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            await self._stop(session)
        self.sessions.clear()


def _event(message: dict) -> bytes:
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


async def _stream_answers(send: Send, headers: list, queue: asyncio.Queue, expected: int) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), *headers]})
    answered = 0
    while answered < expected:
        message = await queue.get()
        if _is_response(message):
            answered += 1
        await send({"type": "http.response.body", "body": _event(message), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
