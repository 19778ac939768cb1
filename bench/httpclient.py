"""A minimal HTTP/1.1 keep-alive client over asyncio streams, built for load generation.

Why hand-rolled: a full client (httpx and friends) spends far more CPU per request than the
servers under test, so with one core for the generator it would measure itself. This client
does the least HTTP/1.1 needs: one request at a time per connection, ``Content-Length`` and
chunked bodies, ``Connection: close``, and a transparent reconnect when the server has closed
an idle connection.

Requests are plain ``bytes`` built once by :func:`build_request` so a hot loop can reuse them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["HttpConnection", "Response", "build_request", "build_request_head", "finish_request", "request_target"]

_MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class Response:
    """A parsed HTTP response: status, headers (lower-cased names, in order) and body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), e.g. all ``Set-Cookie`` lines."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request_target(url: str) -> str:
    """The origin-form request target (path plus query) of an absolute or relative URL."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def build_request_head(method: str, target: str, host: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    """The request line and headers, without ``Content-Length`` and the closing blank line."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers or ():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def finish_request(head: bytes, body: bytes = b"", with_length: bool = True) -> bytes:
    """Complete a head from :func:`build_request_head` with ``Content-Length`` and ``body``."""
    if not with_length:
        return head + b"\r\n" + body
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def build_request(
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    """Serialise one HTTP/1.1 request; ``target`` is the path (and query) to request."""
    head = build_request_head(method, target, host, headers)
    return finish_request(head, body, with_length=bool(body) or method not in ("GET", "HEAD"))


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port``; not safe for concurrent requests."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the TCP connection (closing any previous one)."""
        self.close()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        """Close the connection; the next request reconnects."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def send(self, raw: bytes) -> Response:
        """Send a request built by :func:`build_request` and read its response.

        A request that finds the kept-alive connection closed by the server, before any byte of
        the response arrived, is retried once on a fresh connection.
        """
        fresh = self._writer is None
        if fresh:
            await self.connect()
        try:
            return await self._roundtrip(raw)
        except _StaleConnection as exc:
            self.close()
            if fresh:
                raise ConnectionError("server closed the connection without answering") from exc
        except BaseException:
            self.close()
            raise
        await self.connect()
        try:
            return await self._roundtrip(raw)
        except _StaleConnection as exc:
            raise ConnectionError("server closed the connection without answering") from exc
        except BaseException:
            self.close()
            raise

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Build and send one request; ``url`` may be absolute (its origin is ignored) or a path."""
        return await self.send(build_request(method, request_target(url), self.host_header, headers, body))

    async def _roundtrip(self, raw: bytes) -> Response:
        writer = self._writer
        reader = self._reader
        assert writer is not None and reader is not None
        try:
            writer.write(raw)
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ConnectionError("connection closed mid-response") from exc
            raise _StaleConnection from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _StaleConnection from exc
        except asyncio.LimitOverrunError as exc:
            raise ConnectionError("response head too large") from exc
        status, headers, length, chunked, close = _parse_head(head)
        if chunked:
            body = await _read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length) if length else b""
        else:
            body = await reader.read()
            close = True
        if close:
            self.close()
        return Response(status, headers, body)


class _StaleConnection(Exception):
    """The server closed the connection before sending any byte of the response."""


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], int | None, bool, bool]:
    """Parse the status line and headers: (status, headers, content-length, chunked, close)."""
    if len(head) > _MAX_HEAD:
        raise ConnectionError("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    if not status_line.startswith("HTTP/1."):
        raise ConnectionError(f"bad status line {status_line!r}")
    status = int(status_line[9:12])
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    close = status_line.startswith("HTTP/1.0")
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers.append((name, value))
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            close = value.lower() == "close"
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, headers, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body (RFC 9112 section 7.1), discarding any trailers."""
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
