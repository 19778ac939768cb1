"""Binding each MCP session to the user who started it (MCP security best practices, "Session Hijacking").

A Streamable HTTP server knows its sessions by the ``Mcp-Session-Id`` header alone, so anyone
holding a valid token and someone else's session id could post into that session or open its
GET stream, where the server's requests meant for the owner arrive. The guard checks the token
on every request; this table adds that the session is the caller's own: the session an
``initialize`` answer names is recorded for its caller, a request in that session from another
issuer and subject gets 404 (as an unknown session does), and a successful DELETE forgets it.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.types import Message, Send

SESSION_HEADER = b"mcp-session-id"
REPEATED_SESSION = "the request carries more than one Mcp-Session-Id header: send exactly one"
NOT_YOURS = "Session not found: start a new MCP session"


class SessionOwners:
    """Which caller each session belongs to, for up to ``limit`` sessions (least recently used dropped).

    A session not in the table (one started before a restart, or dropped) goes to the first
    caller that uses it.
    """

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self._owners: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    def admits(self, session_id: bytes, caller) -> bool:
        owner = (caller.issuer, caller.subject) if caller is not None else ("", "")
        known = self._owners.get(session_id)
        if known is None:
            self._owners[session_id] = owner
            if len(self._owners) > self.limit:
                self._owners.popitem(last=False)
            return True
        if known != owner:
            return False
        self._owners.move_to_end(session_id)
        return True

    def forget(self, session_id: bytes) -> None:
        self._owners.pop(session_id, None)

    def recording_new_session(self, send: Send, caller) -> Send:
        """``send``, noting the session a successful answer starts as the caller's."""

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                for name, value in message.get("headers", ()):
                    if name.lower() == SESSION_HEADER:
                        self.admits(value, caller)
            await send(message)

        return record

    def forgetting_on_success(self, send: Send, session_id: bytes) -> Send:
        """``send``, dropping the session once a DELETE of it succeeds."""

        async def forget(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                self.forget(session_id)
            await send(message)

        return forget


def session_ids(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [value for name, value in headers if name == SESSION_HEADER]
