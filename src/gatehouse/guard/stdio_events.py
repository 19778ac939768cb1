"""The stdio gateway's SSE events: their ids, and each session's bounded log of recent ones.

Streamable HTTP (specification 2025-11-25, "Transports"), "Resumability and Redelivery": an
event ``id`` must be unique across all the streams of a session, and should say which stream
it belongs to, so that a ``GET`` with ``Last-Event-ID`` can be answered with the rest of *that*
stream and nothing of another. An id here is ``<stream>-<seq>``: ``<stream>`` is ``p<n>`` for
the SSE answer to a POST and ``g<n>`` for a GET stream, numbered per session, and ``<seq>``
counts the events of the session, so ids never repeat and order the events.

A session keeps its last ``MAX_EVENTS`` events (and no more than ``MAX_BYTES`` of them, though
always the newest), which is what a client can get again. Resuming after an event the log has
let go of is refused, since what came after it may be lost with it.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

MAX_EVENTS = 1000
MAX_BYTES = 4 * 1024 * 1024
STREAM_KEY = re.compile(r"([pg])([1-9][0-9]*)")


class UnknownEvent(Exception):
    """``Last-Event-ID`` names no event this session sent, or one whose successors are no longer kept."""


@dataclass(frozen=True, slots=True)
class Event:
    """One message for the client, as JSON; ``id`` is ``None`` in a JSON answer, which cannot be resumed."""

    id: str | None
    data: bytes
    response: bool = False


def frame(event: Event, retry_ms: int | None = None) -> bytes:
    """The SSE bytes of ``event``. An empty ``data`` is a priming event, which carries ``retry``.

    "Sending Messages to the Server", 6: the server should at once send "an SSE event consisting
    of an event ID and an empty ``data`` field in order to prime the client to reconnect", and a
    ``retry`` field, in milliseconds, tells the client how long to wait before it does.
    """
    head = b"id: " + event.id.encode() + b"\n" if event.id else b""
    if not event.data:
        return head + (b"retry: %d\n" % retry_ms if retry_ms is not None else b"") + b"data: \n\n"
    return head + b"event: message\ndata: " + event.data + b"\n\n"


class EventLog:
    """A session's stream numbers, event ids and recent events (a bounded FIFO)."""

    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.seq = 0  # the last sequence number given out
        self.streams = 0  # the last stream number given out
        self.forgotten = 0  # the sequence number of the newest event let go of
        self._bytes = 0
        self._events: deque[tuple[int, str, Event]] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def new_stream(self, kind: str) -> str:
        """The key of a new stream: ``kind`` is ``p`` (a POST's answer) or ``g`` (a GET stream)."""
        self.streams += 1
        return f"{kind}{self.streams}"

    def next_id(self, stream: str) -> str:
        """A fresh event id on ``stream`` that is not kept (a priming event: nothing to send again)."""
        self.seq += 1
        return f"{stream}-{self.seq}"

    def append(self, stream: str, data: bytes, response: bool) -> Event:
        event = Event(self.next_id(stream), data, response)
        self._events.append((self.seq, stream, event))
        self._bytes += len(data)
        while len(self._events) > self.max_events or (self._bytes > self.max_bytes and len(self._events) > 1):
            seq, _, old = self._events.popleft()
            self._bytes -= len(old.data)
            self.forgotten = seq
        return event

    def cursor(self, last_event_id: str) -> tuple[str, int]:
        """The stream and position ``Last-Event-ID`` names; :class:`UnknownEvent` if it cannot be resumed."""
        stream, _, seq = last_event_id.strip().rpartition("-")
        match = STREAM_KEY.fullmatch(stream)
        if match is None or not seq.isdigit() or int(match[2]) > self.streams or int(seq) > self.seq:
            raise UnknownEvent(f"Last-Event-ID {last_event_id[:80]!r} names no event of this session")
        if int(seq) < self.forgotten:
            raise UnknownEvent(f"the events after Last-Event-ID {last_event_id[:80]!r} are no longer kept "
                               f"(the gateway keeps the last {self.max_events} of a session)")
        return stream, int(seq)

    def after(self, stream: str, seq: int) -> list[Event]:
        """The kept events of ``stream`` that came after event number ``seq``, in order."""
        return [event for number, key, event in self._events if key == stream and number > seq]
