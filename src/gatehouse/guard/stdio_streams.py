"""A stdio MCP session's streams: which one each message of the child goes on, and resuming them.

What the child writes goes to one HTTP stream of its session (Streamable HTTP, specification
2025-11-25, "Sending Messages to the Server", "Listening for Messages from the Server" and
"Multiple Connections"): a response to the POST that asked for it, anything else to one stream
only, never broadcast. The process side of a session is :mod:`gatehouse.guard.stdio_sessions`.

A stream is not its HTTP connection ("Resumability and Redelivery"): every SSE event goes into
the session's :class:`~gatehouse.guard.stdio_events.EventLog` with an id, and when the
connection breaks the stream goes on without one. A request in flight is still answered, into
the log, and a ``GET`` with ``Last-Event-ID`` attaches a new connection, which gets what that
stream sent after that event, then the rest live. A disconnection is not a cancellation (the
client sends ``notifications/cancelled`` for that), so the session keeps its child meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from gatehouse.guard.stdio_events import Event, EventLog

log = logging.getLogger("gatehouse.gateway.stdio")

MAX_UNSENT = 1000


def is_response(message: dict) -> bool:
    return "id" in message and ("result" in message or "error" in message) and "method" not in message


def id_key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(eq=False)
class Stream:
    """A POST's answer (SSE, or JSON when ``key`` is ``None``) or a GET stream, with the connection on it now.

    ``queue`` feeds the HTTP response that carries the stream (``None`` ends that response); it is
    ``None`` itself while the client is away. ``sent``: an event went out, so the client may hold
    an id to resume from. A POST's stream ends after its ``expected`` answers; a GET stream ends
    with its session.
    """

    key: str | None
    expected: int = 0
    queue: asyncio.Queue | None = None
    sent: bool = False
    ended: bool = False

    @property
    def sse(self) -> bool:
        return self.key is not None

    @property
    def listener(self) -> bool:
        return self.key is not None and self.key.startswith("g")

    def put(self, event: Event | None) -> None:
        if self.queue is not None:
            self.queue.put_nowait(event)


@dataclass(eq=False)
class ChildSession:
    id: str
    process: asyncio.subprocess.Process
    owner: tuple[str, str] | None = None
    waiting: dict[str, Stream] = field(default_factory=dict)  # request id -> the stream its answer goes on
    progress: dict[str, Stream] = field(default_factory=dict)  # progress token -> the stream of the request that set it
    streams: dict[str, Stream] = field(default_factory=dict)  # SSE streams that have not ended, by key
    listeners: list[Stream] = field(default_factory=list)  # GET streams, oldest first
    unsent: list[dict] = field(default_factory=list)  # messages for the client while it had no stream
    events: EventLog = field(default_factory=EventLog)
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

    def answer(self, requests: list[dict], *, sse: bool) -> Stream:
        """The stream that answers a POST of ``requests``: their answers, and their progress, go on it."""
        stream = Stream(self.events.new_stream("p") if sse else None, expected=len(requests))
        for request in requests:
            self.waiting[id_key(request["id"])] = stream
            token = _field(request, "params", "_meta", "progressToken")
            if token is not None:
                self.progress[id_key(token)] = stream
        if stream.sse:
            self.streams[stream.key] = stream
        return stream

    def listen(self) -> Stream:
        """A new GET stream. GET streams whose client went away without resuming them are let go."""
        for old in [s for s in self.listeners if s.queue is None]:
            self._drop_listener(old)
        stream = Stream(self.events.new_stream("g"))
        self.listeners.append(stream)
        self.streams[stream.key] = stream
        return stream

    def resume(self, last_event_id: str) -> tuple[Stream, list[Event]]:
        """The stream ``Last-Event-ID`` belongs to, and its kept events after that one.

        Raises :class:`~gatehouse.guard.stdio_events.UnknownEvent`. A POST's stream that has
        ended can still be replayed (its answer may have come while the client was away); a GET
        stream that was let go is taken up again.
        """
        key, seq = self.events.cursor(last_event_id)
        stream = self.streams.get(key)
        if stream is None and key.startswith("g"):
            stream = Stream(key)
            self.listeners.append(stream)
            self.streams[key] = stream
        elif stream is None:
            stream = Stream(key, ended=True)
        return stream, self.events.after(key, seq)

    def connect(self, stream: Stream, *, replay: Iterable[Event] = (), prime: bool = False, flush: bool = False) -> asyncio.Queue:
        """A new connection for ``stream``: ``replay``, a priming event, then (``flush``) what had no stream, then live.

        A previous connection of the stream is ended: one message, one stream, one connection.
        """
        stream.put(None)
        stream.queue = queue = asyncio.Queue()
        for event in replay:
            queue.put_nowait(event)
        if stream.ended:
            queue.put_nowait(None)
            return queue
        if prime and stream.sse:
            queue.put_nowait(Event(self.events.next_id(stream.key), b""))
        if flush:
            unsent, self.unsent = self.unsent, []
            for message in unsent:
                self.deliver(stream, message)
        return queue

    def disconnect(self, stream: Stream, queue: asyncio.Queue) -> None:
        """``queue``'s HTTP response is over; the stream waits for the client to resume it.

        Unless the client cannot: a JSON answer, or an SSE stream that sent no event (no id) yet.
        Such a stream ends, and its requests are no longer awaited.
        """
        if stream.queue is not queue:
            return  # another connection took the stream over
        stream.queue = None
        if stream.ended or stream.sent:
            return
        if stream in self.listeners:
            self._drop_listener(stream)
        else:
            self._end(stream)

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
            self.deliver(stream, {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32800, "message": "request cancelled"}})

    def route(self, message: dict) -> None:
        """Hand one message from the child to the stream it belongs on."""
        if is_response(message):
            stream = self.waiting.pop(id_key(message["id"]), None)
            if stream is None:
                log.debug("session %s: dropped an answer to request %s, which no one waits for", self.id[:8], message["id"])
            else:
                self.last_active = asyncio.get_running_loop().time()  # the client has the idle timeout to fetch it
                self.deliver(stream, message)
            return
        stream = None
        if message.get("method") == "notifications/progress":
            stream = self.progress.get(id_key(_field(message, "params", "progressToken")))
        if stream is None or not stream.sse:
            posts = [s for s in self.waiting.values() if s.sse]
            stream = posts[-1] if posts else self._listener()
        if stream is not None:
            self.deliver(stream, message)
        elif len(self.unsent) < MAX_UNSENT:
            self.unsent.append(message)  # until the client opens a stream (it opens its GET stream after initialize)
        else:
            log.warning("session %s: the client opens no stream; a message from the MCP server was dropped", self.id[:8])

    def deliver(self, stream: Stream, message: dict) -> None:
        """Put ``message`` on ``stream``: into the log with an id if it is SSE, and to its connection if it has one."""
        data = json.dumps(message, separators=(",", ":")).encode()
        response = is_response(message)
        event = self.events.append(stream.key, data, response) if stream.sse else Event(None, data, response)
        stream.put(event)
        if response:
            stream.expected -= 1
            if stream.expected <= 0:
                self._end(stream)

    def fail_waiting(self, reason: str) -> None:
        """Answer every request still waiting with ``reason`` and end the GET streams."""
        waiting, self.waiting = self.waiting, {}
        for key, stream in waiting.items():
            self.deliver(stream, {"jsonrpc": "2.0", "id": json.loads(key), "error": {"code": -32603, "message": reason}})
        for stream in list(self.listeners):
            self._drop_listener(stream)
        self.progress.clear()

    def _listener(self) -> Stream | None:
        """The GET stream for a message unrelated to any request: the newest connected one, else the newest."""
        connected = [s for s in self.listeners if s.queue is not None]
        return (connected or self.listeners or [None])[-1]

    def _drop_listener(self, stream: Stream) -> None:
        self.listeners.remove(stream)
        self._end(stream)

    def _end(self, stream: Stream) -> None:
        stream.ended = True
        stream.put(None)
        if stream.key is not None:
            self.streams.pop(stream.key, None)
        for key in [k for k, s in self.waiting.items() if s is stream]:
            del self.waiting[key]
        for token in [t for t, s in self.progress.items() if s is stream]:
            del self.progress[token]


def _field(value: object, *path: str) -> object:
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _line(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
