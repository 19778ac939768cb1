"""Binding each MCP session to the user who started it (MCP security best practices, "Session Hijacking").

A Streamable HTTP server knows its sessions by the ``Mcp-Session-Id`` header alone, so anyone
holding a valid token and someone else's session id could post into that session or open its
GET stream, where the server's requests meant for the owner arrive. The best practices ask for
session ids bound to user-specific information (their example: ``<user_id>:<session_id>``).

The guard binds them without keeping a table: the id the client sees is the server's own id, a
``.`` and a tag, an HMAC-SHA256 (RFC 2104) over the caller's issuer and subject and the server's
id under a secret only the guard holds. A request's id must carry its caller's tag; the server
gets its own id back, without the tag. Another user's token, an altered id or one tagged under
another secret gets 404, the answer for an unknown session, which tells the client to start a
new one (MCP transports, "Session Management").

Nothing is stored: the binding outlives a restart of the guard, holds across worker processes
and gateway instances given the same secret, and no session can fall out of a table and go to
whoever uses it next.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.types import Message, Send

SESSION_HEADER = b"mcp-session-id"
REPEATED_SESSION = "the request carries more than one Mcp-Session-Id header: send exactly one"
NOT_YOURS = "Session not found: start a new MCP session"
MIN_SECRET_BYTES = 32
_TAG_BYTES = 16  # 128 bits: a forged tag is a guess in 2**128


class SessionBinding:
    """Turns the server's session ids into ids bound to a caller, and back.

    ``secret``: shared by every guard that must accept the others' session ids (workers,
    instances, the process after a restart); a random one per process when not given.
    """

    def __init__(self, secret: bytes | None = None):
        if secret is not None and len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the session secret must be at least {MIN_SECRET_BYTES} bytes long")
        self._secret = secret or secrets.token_bytes(MIN_SECRET_BYTES)

    def for_client(self, server_id: bytes, caller) -> bytes:
        """The id the caller is given for the server's session ``server_id``."""
        return server_id + b"." + self._tag(server_id, caller)

    def for_server(self, client_id: bytes, caller) -> bytes | None:
        """The server's id inside ``client_id``, or None when ``client_id`` is not this caller's."""
        server_id, dot, tag = client_id.rpartition(b".")
        if not dot or not hmac.compare_digest(tag, self._tag(server_id, caller)):
            return None
        return server_id

    def bound_headers(self, headers: list[tuple[bytes, bytes]], caller) -> list[tuple[bytes, bytes]]:
        """A response's headers with the session id the server names bound to ``caller``."""
        return [(k, self.for_client(v, caller)) if k.lower() == SESSION_HEADER else (k, v) for k, v in headers]

    def binding_answers(self, send: Send, caller) -> Send:
        """``send``, giving the caller a bound id wherever the server names its session."""

        async def bind(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": self.bound_headers(message.get("headers", ()), caller)}
            await send(message)

        return bind

    def _tag(self, server_id: bytes, caller) -> bytes:
        issuer, subject = (caller.issuer, caller.subject) if caller is not None else ("", "")
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in (issuer.encode(), subject.encode(), server_id):
            mac.update(len(part).to_bytes(4, "big") + part)
        return base64.urlsafe_b64encode(mac.digest()[:_TAG_BYTES]).rstrip(b"=")


def with_session_id(headers: list[tuple[bytes, bytes]], session_id: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` with the one ``Mcp-Session-Id`` set to ``session_id``."""
    return [(k, session_id) if k == SESSION_HEADER else (k, v) for k, v in headers]
