"""The stdio gateway's MCP sessions: one child process each, started, routed to, reaped and stopped here.

A child speaks the MCP stdio transport (one JSON-RPC message per line on stdin and stdout;
stderr is its log, which is read line by line into this module's logger so that a chatty
child never blocks on a full pipe). What the child writes goes to an HTTP stream of its
session (Streamable HTTP, "Sending Messages to the Server" and "Listening for Messages from
the Server"): a response to the POST that asked for it, anything else to one stream only,
never broadcast.

Sessions end on ``DELETE``, when the child exits, or after ``idle_timeout`` seconds with no
request in flight and no GET stream open (one reaper task for all sessions). An ended session's
id is forgotten, so the client gets 404 and must start a new session (Streamable HTTP, "Session
Management"). A child is stopped as the MCP lifecycle asks of a stdio client ("Shutdown"):
close its stdin, then SIGTERM, then SIGKILL, each after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field

log = logging.getLogger("gatehouse.gateway.stdio")

MAX_LINE = 16 * 1024 * 1024
STDERR_LINE = 4096
STOP_GRACE = 2.0
MAX_UNSENT = 1000


class SessionsFull(Exception):
    """Every session slot is taken."""


class CommandFailed(Exception):
    """The MCP server command cannot be started."""


def is_response(message: dict) -> bool:
    return "id" in message and ("result" in message or "error" in message) and "method" not in message


def id_key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(eq=False)
class Stream:
    """One HTTP response that carries messages to the client: a POST's SSE or JSON answer, or a GET stream."""

    sse: bool
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def close(self) -> None:
        self.queue.put_nowait(None)


@dataclass(eq=False)
class ChildSession:
    id: str
    process: asyncio.subprocess.Process
    owner: tuple[str, str] | None = None
    waiting: dict[str, Stream] = field(default_factory=dict)  # request id -> the POST that waits for its answer
    progress: dict[str, Stream] = field(default_factory=dict)  # progress token -> the POST whose request set it
    listeners: list[Stream] = field(default_factory=list)  # open GET streams
    unsent: list[dict] = field(default_factory=list)  # messages for the client while it had no stream open
    busy: int = 0
    last_active: float = 0.0
    closed: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)

    @contextlib.contextmanager
    def in_use(self):
        """Mark an HTTP request (or an open GET stream) on this session: a busy session is never idle."""
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self.last_active = asyncio.get_running_loop().time()

    def expect(self, requests: list[dict], stream: Stream) -> None:
        for request in requests:
            self.waiting[id_key(request["id"])] = stream
            token = _field(request, "params", "_meta", "progressToken")
            if token is not None:
                self.progress[id_key(token)] = stream

    def forget(self, requests: list[dict], stream: Stream) -> None:
        for key in [id_key(r["id"]) for r in requests]:
            if self.waiting.get(key) is stream:
                del self.waiting[key]
        for token in [t for t, s in self.progress.items() if s is stream]:
            del self.progress[token]

    async def send(self, messages: list[dict]) -> None:
        self.process.stdin.write(b"".join(_line(m) for m in messages))
        await self.process.stdin.drain()
        for message in messages:
            if message.get("method") == "notifications/cancelled":
                self._cancelled(_field(message, "params", "requestId"))

    def _cancelled(self, request_id: object) -> None:
        """The client cancelled a request: the child need not answer it ("Cancellation"), so stop waiting."""
        stream = self.waiting.pop(id_key(request_id), None)
        if stream is not None:
            stream.queue.put_nowait({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32800, "message": "request cancelled"}})

    def route(self, message: dict) -> None:
        """Hand one message from the child to the stream it belongs on."""
        if is_response(message):
            stream = self.waiting.get(id_key(message["id"]))
            if stream is None:
                log.debug("session %s: dropped an answer to request %s, which no one waits for", self.id[:8], message["id"])
            else:
                stream.queue.put_nowait(message)
            return
        stream = None
        if message.get("method") == "notifications/progress":
            stream = self.progress.get(id_key(_field(message, "params", "progressToken")))
        if stream is None or not stream.sse:
            open_posts = [s for s in self.waiting.values() if s.sse]
            stream = open_posts[-1] if open_posts else (self.listeners[0] if self.listeners else None)
        if stream is not None:
            stream.queue.put_nowait(message)
        elif len(self.unsent) < MAX_UNSENT:
            self.unsent.append(message)  # until the client opens a stream (it opens its GET stream after initialize)
        else:
            log.warning("session %s: the client opens no stream; a message from the MCP server was dropped", self.id[:8])

    def open(self, stream: Stream) -> None:
        """A new stream to the client: the messages that had no stream go out on it first."""
        for message in self.unsent:
            stream.queue.put_nowait(message)
        self.unsent.clear()

    def fail_waiting(self, reason: str) -> None:
        """Answer every request still waiting with ``reason`` and end the GET streams."""
        for key, stream in self.waiting.items():
            stream.queue.put_nowait({"jsonrpc": "2.0", "id": json.loads(key), "error": {"code": -32603, "message": reason}})
        for stream in self.listeners:
            stream.close()
        self.waiting.clear()
        self.progress.clear()
        self.listeners.clear()


class SessionRegistry:
    """The live sessions of one stdio command, at most ``max_sessions`` of them."""

    def __init__(self, command: list[str], *, max_sessions: int, idle_timeout: float | None, env: dict | None):
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("the idle timeout must be a positive number of seconds")
        self.command = command
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.env = env
        self.sessions: dict[str, ChildSession] = {}
        self._starting = 0
        self._reaper: asyncio.Task | None = None

    def get(self, session_id: str | None, owner: tuple[str, str] | None) -> ChildSession | None:
        """The live session ``session_id``, if ``owner`` started it (a session is bound to its caller)."""
        session = self.sessions.get(session_id) if session_id else None
        if session is None or session.closed or session.owner != owner:
            return None
        return session

    async def start(self, owner: tuple[str, str] | None) -> ChildSession:
        if len(self.sessions) + self._starting >= self.max_sessions:
            raise SessionsFull
        self._starting += 1  # a slot is taken from now on, so concurrent starts cannot pass the limit
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env, limit=MAX_LINE,
            )
        except OSError as exc:
            log.error("cannot start the MCP server %r: %s", self.command[0], exc)
            raise CommandFailed from exc
        finally:
            self._starting -= 1
        session = ChildSession(secrets.token_hex(16), process, owner, last_active=asyncio.get_running_loop().time())
        session.tasks = [asyncio.create_task(self._read(session)), asyncio.create_task(_log_stderr(session))]
        self.sessions[session.id] = session
        if self.idle_timeout is not None and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.create_task(self._reap(self.idle_timeout))
        return session

    async def end(self, session: ChildSession, reason: str) -> None:
        """Forget ``session`` and stop its child."""
        self.sessions.pop(session.id, None)
        session.closed = True
        session.fail_waiting(reason)
        process = session.process
        for stop in (process.stdin.close, process.terminate, process.kill):
            if process.returncode is not None:
                break
            with contextlib.suppress(OSError):  # ProcessLookupError included: it has just exited
                stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_GRACE)
        _, pending = await asyncio.wait(session.tasks, timeout=STOP_GRACE)
        for task in pending:
            task.cancel()

    async def _read(self, session: ChildSession) -> None:
        stdout = session.process.stdout
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                log.warning("session %s: a message longer than %d bytes was dropped", session.id[:8], MAX_LINE)
                continue
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                log.debug("session %s: the child wrote a line that is not JSON", session.id[:8])
                continue
            if isinstance(message, dict):
                session.route(message)
        code = await session.process.wait()
        if not session.closed:
            session.closed = True
            self.sessions.pop(session.id, None)
            log.warning("the MCP server of session %s exited with status %s", session.id[:8], code)
            session.fail_waiting(f"the MCP server process exited (status {code}); start a new session")

    async def _reap(self, idle_timeout: float) -> None:
        """End every session that has been idle for ``idle_timeout`` seconds; one task for all sessions."""
        loop = asyncio.get_running_loop()
        while self.sessions:
            await asyncio.sleep(min(idle_timeout / 4, 30.0))
            now = loop.time()
            idle = [s for s in self.sessions.values() if not s.busy and now - s.last_active >= idle_timeout]
            for session in idle:
                log.info("session %s was idle for %.0f s: ending it", session.id[:8], now - session.last_active)
            await asyncio.gather(*(self.end(s, "the session was idle for too long") for s in idle))

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self.end(s, "the gateway is shutting down") for s in list(self.sessions.values())))


async def _log_stderr(session: ChildSession) -> None:
    """Read the child's stderr as it comes, one log record a line, so the child never blocks on it."""
    pid = session.process.pid
    while True:
        try:
            line = await session.process.stderr.readline()
        except ValueError:
            continue
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip()
        log.info("MCP server %s (session %s): %s", pid, session.id[:8], text[:STDERR_LINE])


def _field(value: object, *path: str) -> object:
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _line(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
