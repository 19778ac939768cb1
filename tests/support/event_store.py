"""An in-memory ``EventStore`` for Streamable HTTP resumability (the SDK ships only the interface)."""

from __future__ import annotations

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage


class InMemoryEventStore(EventStore):
    """Every event of every stream, in the order stored; ids are the positions, counted from 1."""

    def __init__(self) -> None:
        self._events: list[tuple[StreamId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._events.append((stream_id, message))
        return str(len(self._events))

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if not last_event_id.isdigit() or not 1 <= int(last_event_id) <= len(self._events):
            return None
        last = int(last_event_id)
        stream_id = self._events[last - 1][0]
        for position, (stream, message) in enumerate(self._events[last:], start=last + 1):
            if stream == stream_id and message is not None:  # priming events (None) carry no message
                await send_callback(EventMessage(message, str(position)))
        return stream_id
