"""Relaying a Server-Sent Events stream event by event, and answering what a broken one left open.

An upstream that breaks the connection in the middle of an SSE answer to a POST leaves the
client waiting for responses that will never come. The relay forwards whole events only (so the
client never holds half an event), notes which JSON-RPC requests of the POST have been answered,
and can then close the stream with an error response for each request still open (MCP
Streamable HTTP transport, "Sending Messages to the Server"; JSON-RPC 2.0 section 5).
"""

from __future__ import annotations

import json
import re

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_DATA_LINE = re.compile(rb"^data: ?(.*?)\r?$", re.MULTILINE)
_UPSTREAM_BROKE = -32603


class EventRelay:
    """Splits upstream bytes into whole SSE events and tracks the open JSON-RPC request ids."""

    def __init__(self, open_request_ids: set[object]):
        self.open_ids = open_request_ids
        self._partial = b""

    def whole_events(self, chunk: bytes) -> bytes:
        """The whole events that ``chunk`` completes (possibly none); the rest waits for more bytes."""
        data = self._partial + chunk if self._partial else chunk
        if data.endswith((b"\n\n", b"\r\r")):
            self._partial = b""
            complete = data
        else:
            last_end = None
            for last_end in _EVENT_END.finditer(data):
                pass
            if last_end is None:
                self._partial = data
                return b""
            complete, self._partial = data[: last_end.end()], data[last_end.end() :]
        if self.open_ids:
            self._note_answers(complete)
        return complete

    def _note_answers(self, events: bytes) -> None:
        for event in _EVENT_END.split(events):
            payload = b"\n".join(_DATA_LINE.findall(event))
            if not payload:
                continue
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            for item in message if isinstance(message, list) else [message]:
                if isinstance(item, dict) and ("result" in item or "error" in item):
                    answered = item.get("id")
                    if _is_request_id(answered):
                        self.open_ids.discard(answered)

    def errors_for_open_requests(self, reason: str) -> bytes:
        """One SSE ``message`` event with a JSON-RPC error for each request still unanswered."""
        events = []
        for request_id in self.open_ids:
            error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": _UPSTREAM_BROKE, "message": reason}}
            events.append(b"event: message\ndata: " + json.dumps(error).encode() + b"\n\n")
        self.open_ids = set()
        return b"".join(events)


def open_request_ids(messages: list[dict]) -> set[object]:
    """The ids of the JSON-RPC requests (not notifications, not responses) among ``messages``."""
    return {m["id"] for m in messages if "method" in m and _is_request_id(m.get("id"))}


def _is_request_id(value: object) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)
