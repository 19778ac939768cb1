"""Small raw-ASGI helpers shared by the guard, the gateway and the stdio bridge."""

from __future__ import annotations

import json

from starlette.types import Message, Receive, Send


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_bytes(send, status, json.dumps(body).encode(), [(b"content-type", b"application/json"), *(headers or [])])


def jsonrpc_error(code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


async def read_body(receive: Receive, limit: int) -> tuple[Message | None, bytes, bool]:
    """The whole body, as one ``http.request`` message to hand on, its bytes, and whether it was too large."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body = message.get("body", b"")
        if len(body) > limit:
            return None, b"", True
        return message, body, False
    chunks = bytearray()
    while True:
        if message["type"] == "http.disconnect":
            break
        chunks.extend(message.get("body", b""))
        if len(chunks) > limit:
            return None, b"", True
        if not message.get("more_body", False):
            break
        message = await receive()
    body = bytes(chunks)
    return {"type": "http.request", "body": body, "more_body": False}, body, False
