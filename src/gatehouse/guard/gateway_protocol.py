"""uvicorn's HTTP/1.1 protocol with the gateway's fast path in front of its ASGI dispatch.

A POST to the gateway's endpoint is held back from uvicorn until its body is complete; then the
fast path (fast_path.py) either forwards it at once or declines, and the request is handed to
uvicorn exactly as it would have been (headers, body, end), so every other request, and every
request the fast path declines, is served by the ASGI app as before. Responses written here
follow uvicorn's own framing and default headers, keep-alive timer and pipelining order: a
request that arrives while a forwarded one is open is queued by uvicorn as a pipelined request,
and starts once the forwarded response is written.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gatehouse.guard.fast_path import FastForwarder
from gatehouse.guard.guard import MAX_BODY


def gateway_protocol(forwarder: FastForwarder, path: str) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``) for a gateway serving ``path``."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"forwarder": forwarder, "fast_path_url": path.encode()})


class _ForwardedRequest:
    """Stands for the forwarded request in uvicorn's pipelining check: a response still to come."""

    response_complete = False


_IN_FLIGHT = _ForwardedRequest()


class GatewayHttpProtocol(HttpToolsProtocol):
    forwarder: FastForwarder
    fast_path_url: bytes

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exchange = None
        self._held_body: list[bytes] | None = None
        self._held_size = 0
        self._keep_alive = True

    # -- request side --

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            # pipelined behind a forwarded request: queued by uvicorn, started once that response is written
            self.cycle = _IN_FLIGHT
            super().on_headers_complete()
            return
        if (
            self.url == self.fast_path_url
            and self.parser.get_method() == b"POST"
            and not self.expect_100_continue
            and self.parser.get_http_version() == "1.1"
            and not self.parser.should_upgrade()
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self._held_body = []
            self._held_size = 0
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._held_body is None:
            super().on_body(body)
            return
        self._held_body.append(body)
        self._held_size += len(body)
        if self._held_size > MAX_BODY:
            self._to_asgi(b"".join(self._held_body), complete=False)

    def on_message_complete(self) -> None:
        if self._held_body is None:
            super().on_message_complete()
            return
        body = b"".join(self._held_body)
        self._held_body = None
        self._keep_alive = self.parser.should_keep_alive()
        if not self.forwarder.try_forward(self, self.headers, body):
            self._to_asgi(body, complete=True)

    def _to_asgi(self, body: bytes, *, complete: bool) -> None:
        """Hand the held request to uvicorn as if it had never been held."""
        self._held_body = None
        super().on_headers_complete()
        if body:
            super().on_body(body)
        if complete:
            super().on_message_complete()

    # -- response side, called by the fast path's Exchange --

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        for name, value in self.server_state.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        for name, value in headers:
            parts += [name, b": ", value, b"\r\n"]
        if not self._keep_alive:
            parts.append(b"connection: close\r\n")
        if self.access_log:
            self.access_logger.info('%s - "POST %s HTTP/1.1" %d', _client(self.client), self.url.decode("latin-1"), status)
        return parts

    def fast_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        parts = self._head(status, headers)
        parts += [b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body]
        self._write(b"".join(parts))
        self._exchange_done()

    def fast_start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        parts = self._head(status, headers)
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
        self._write(b"".join(parts))

    def fast_body(self, data: bytes) -> bool:
        """Write one chunk (RFC 9112 section 7.1); True when the client is not keeping up."""
        if data:
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
        return self.flow.write_paused

    def fast_end(self) -> None:
        self._write(b"0\r\n\r\n")
        self._exchange_done()

    def _write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def _exchange_done(self) -> None:
        self.exchange = None
        if not self._keep_alive:
            self.transport.close()
            return
        self.on_response_complete()

    # -- connection events --

    def connection_lost(self, exc: Exception | None) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_left()
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.exchange is not None:
            self.exchange.client_drained()

    def shutdown(self) -> None:
        if self.exchange is None:
            super().shutdown()
        else:  # uvicorn waits for open connections: this one closes once its response is written
            self._keep_alive = False


def _client(client) -> str:
    return "%s:%d" % client if client else "-"
