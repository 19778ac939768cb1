"""The loopback redirect listener: a tiny HTTP server on 127.0.0.1 (RFC 8252 section 7.3, CL-16).

It is bound before the browser opens, on an ephemeral port unless a preferred one is free, and
answers ``GET /callback?...`` by handing the query to a callback that returns the page to show.
Anything else gets 404 or 405. Pages are static text: nothing from the query is echoed into them
except through HTML escaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

CALLBACK_PATH = "/callback"
MAX_HEAD_BYTES = 16 * 1024
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class Page:
    """What the browser is shown when it lands on the listener."""

    status: int
    title: str
    message: str


CallbackHandler = Callable[[dict[str, list[str]]], Page]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def render(page: Page) -> bytes:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(page.title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}"
        "h1{font-size:1.4rem}</style></head>"
        f"<body><h1>{html.escape(page.title)}</h1><p>{html.escape(page.message)}</p></body></html>"
    ).encode()
    head = (
        f"HTTP/1.1 {page.status} {_REASONS.get(page.status, 'Error')}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Referrer-Policy: no-referrer\r\n"
        "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'\r\n"
        "X-Frame-Options: DENY\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


def bind_loopback(preferred_port: int | None = None) -> socket.socket:
    """A listening socket on 127.0.0.1: ``preferred_port`` when it is free, else an ephemeral one."""
    for port in ([preferred_port] if preferred_port else []) + [0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(16)
        sock.setblocking(False)
        return sock
    raise OSError("no loopback port could be bound")


class LoopbackListener:
    """Serves the redirect URI ``http://127.0.0.1:<port>/callback`` until closed."""

    def __init__(self, preferred_port: int | None = None):
        self._socket = bind_loopback(preferred_port)
        self.port = self._socket.getsockname()[1]
        self.redirect_uri = f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"
        self._server: asyncio.base_events.Server | None = None
        self._handler: CallbackHandler | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self, handler: CallbackHandler) -> None:
        self._handler = handler
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, sock=self._socket, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        else:
            self._socket.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                return
            if len(head) > MAX_HEAD_BYTES:
                return
            writer.write(render(self._answer(head)))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    def _answer(self, head: bytes) -> Page:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return Page(400, "Bad request", "This is Gatehouse's sign-in listener; it did not understand the request.")
        method, target, _ = parts
        url = urlsplit(target)
        if url.path != CALLBACK_PATH:
            return Page(404, "Not found", "This is Gatehouse's sign-in listener; there is nothing else here.")
        if method != "GET":
            return Page(405, "Method not allowed", "The sign-in answer must arrive as a GET request.")
        assert self._handler is not None
        return self._handler(parse_qs(url.query, keep_blank_values=True))
