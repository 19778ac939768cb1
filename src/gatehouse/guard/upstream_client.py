"""The gateway's hop to its upstream: pooled HTTP/1.1 connections (RFC 9112) with a C parser.

Why not httpx2 here: the gateway proxies every MCP request, and httpx2's request and
response objects, header normalisation and layered streams cost more CPU per request than the
upstream MCP server's own work (bench/guard.py: the gateway process took 52% of the server core
while proxying through httpx2). A proxy needs none of it: the request head is written as bytes
and the response is parsed by ``httptools`` (llhttp, the parser uvicorn uses), with the body
handed on chunk by chunk as it arrives.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Protocol
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """The upstream could not give a whole answer."""

    advice = "try again later"  # what the client is told to do, after the cause


class UpstreamUnreachable(UpstreamError):
    """No connection to the upstream, or it closed one before answering."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer (or went silent) within the read timeout."""


class UpstreamBroken(UpstreamError):
    """The upstream closed the connection or sent bad HTTP in the middle of a response."""


class UpstreamRefused(UpstreamError):
    """The upstream answered 401: it wants credentials from the gateway, not from the client."""

    advice = "the operator of the gateway has to fix them"

    def __init__(self) -> None:
        super().__init__(
            "the upstream MCP server refused the gateway's request (401 Unauthorized): the credentials the gateway "
            "sends it (--upstream-headers-file) are missing or wrong"
        )


_PAUSE_ABOVE = 256 * 1024


class ExchangeCallbacks(Protocol):
    """What :meth:`_Connection.start` reports a response to, from the event loop's callbacks."""

    def on_head(self, response: UpstreamResponse) -> None: ...
    def on_chunk(self, chunk: bytes) -> None: ...
    def on_end(self) -> None: ...
    def on_error(self, error: UpstreamError) -> None: ...

    @property
    def may_stay_silent(self) -> bool:
        """True once the response is an event stream, which may rightly stay quiet for long."""
IDEMPOTENT_METHODS = {"GET", "DELETE", "OPTIONS"}


class UpstreamResponse:
    """One response: status and headers first, then body chunks as the upstream sends them."""

    def __init__(self, connection: _Connection):
        self._connection = connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def chunks(self, idle_timeout: float | None):
        """Body chunks until the response ends; :class:`UpstreamBroken` or :class:`UpstreamTimeout` if it doesn't."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _PAUSE_ABOVE:
                    self._connection.resume()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if idle_timeout is None:
                    await self._waiter
                else:
                    await asyncio.wait_for(self._waiter, idle_timeout)
            except TimeoutError:
                self.abort()
                raise UpstreamTimeout("the upstream MCP server went silent in the middle of a response") from None
            finally:
                self._waiter = None

    def abort(self) -> None:
        """Stop reading: the connection is closed, never reused."""
        self._connection.close()

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= _PAUSE_ABOVE:
            self._connection.pause()
        self._wake()

    def _finish(self, error: UpstreamError | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one request at a time."""

    def __init__(self, pool: UpstreamPool):
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: UpstreamResponse | None = None
        self._exchange: ExchangeCallbacks | None = None
        self._head: asyncio.Future | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._progress = 0
        self._received_any = False
        self._paused = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        if self._response is None:
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamBroken("the upstream MCP server sent a response that is not valid HTTP/1.1"))
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._response is not None:
            if not self._received_any:
                self._fail(UpstreamUnreachable("the upstream MCP server closed the connection without answering"))
            else:
                self._fail(UpstreamBroken("the upstream MCP server broke the connection in the middle of a response"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        response = self._response
        response.status = self._parser.get_status_code()
        response.keep_alive = self._parser.should_keep_alive()
        if self._exchange is not None:
            self._progress += 1
            self._exchange.on_head(response)
        elif self._head is not None and not self._head.done():
            self._head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._exchange is not None:
            self._progress += 1
            self._exchange.on_chunk(body)
        else:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        response, exchange = self._response, self._exchange
        self._response = self._exchange = None
        if exchange is not None:
            self._stop_watchdog()
        if response.keep_alive and not self.closed:
            self._pool._release(self)
        else:
            self.close()
        if exchange is not None:
            exchange.on_end()
        else:
            response._finish()

    # used by the pool and the response

    async def send(self, head: bytes, body: bytes, timeout: float) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        self._response = UpstreamResponse(self)
        self._head = waiting = loop.create_future()
        self._received_any = False
        self._transport.write(head + body if body else head)
        timer = loop.call_later(timeout, self._time_out, waiting)
        try:
            return await waiting
        finally:
            timer.cancel()
            if self._head is waiting:  # a finished response may already have handed the connection on
                self._head = None

    def start(self, head: bytes, body: bytes, exchange: ExchangeCallbacks, timeout: float) -> None:
        """Send one request and report its response to ``exchange`` as it arrives, from the
        event loop's callbacks: no task and no future per request (the gateway's fast path)."""
        self._response = UpstreamResponse(self)
        self._exchange = exchange
        self._received_any = False
        self._transport.write(head + body if body else head)
        self._read_timeout = timeout
        self._watchdog = asyncio.get_running_loop().call_later(timeout, self._watch, self._progress)

    def _watch(self, progress_then: int) -> None:
        """One timer per request for both limits: the wait for the head, and each silence inside
        a body that is not an event stream."""
        exchange = self._exchange
        if exchange is None:
            return
        head_seen = self._response is not None and self._response.status != 0
        if head_seen and exchange.may_stay_silent:
            self._watchdog = None
            return
        if self._progress != progress_then:
            self._watchdog = asyncio.get_running_loop().call_later(self._read_timeout, self._watch, self._progress)
            return
        self._watchdog = None
        if head_seen:
            self._fail(UpstreamTimeout("the upstream MCP server went silent in the middle of a response"))
        else:
            self._fail(UpstreamTimeout("the upstream MCP server did not answer in time"))
        self.close()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _time_out(self, waiting: asyncio.Future) -> None:
        if waiting.done():
            return
        self._fail(UpstreamTimeout("the upstream MCP server did not answer in time"))
        self.close()

    def _fail(self, error: UpstreamError) -> None:
        response, self._response = self._response, None
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            self._stop_watchdog()
            exchange.on_error(error)
            return
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if response is not None:
            response._finish(error)

    def abandon(self) -> None:
        """The client left: close the connection without reporting the response it cuts short."""
        self._response = self._exchange = None
        self._stop_watchdog()
        self.close()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    @property
    def usable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()


class UpstreamPool:
    """Keep-alive connections to one upstream origin, reused one request at a time."""

    def __init__(
        self, url: str, *, connect_timeout: float, read_timeout: float, max_idle: int = 64, reuse_within: float = 4.0
    ):
        """``reuse_within``: seconds an idle connection is reused for, under the common 5 s keep-alive of servers."""
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if default_port else f"{host}:{self.port}").encode()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.reuse_within = reuse_within
        self._idle: collections.deque[_Connection] = collections.deque()

    def request_head(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The request line and header section (RFC 9112 sections 3 and 5)."""
        lines = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        if body or method in ("POST", "PUT", "PATCH"):
            lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    def idle_connection(self) -> _Connection | None:
        """A kept-alive connection ready for a request now, or None (then use :meth:`request`)."""
        return self._reusable()

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        """Send one request; the response comes back once its head has arrived (RFC 9112 section 3)."""
        head = self.request_head(method, target, headers, body)
        connection = self._reusable()
        if connection is not None:
            try:
                return await connection.send(head, body, self.read_timeout)
            except UpstreamUnreachable:
                # the upstream closed the idle connection as the request went out; a POST may
                # have been acted on, so only idempotent methods are sent again (RFC 9112 section 9.3.1)
                if method not in IDEMPOTENT_METHODS:
                    raise
        connection = await self._connect()
        return await connection.send(head, body, self.read_timeout)

    def _reusable(self) -> _Connection | None:
        fresh_after = time.monotonic() - self.reuse_within
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and connection.idle_since > fresh_after:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl), self.connect_timeout
            )
        except TimeoutError:
            raise UpstreamUnreachable(f"no connection to the upstream MCP server within {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise UpstreamUnreachable(f"the upstream MCP server cannot be reached ({exc.strerror or exc})") from None
        return connection

    def _release(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
