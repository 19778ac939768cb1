"""``gatehouse gateway``: the guard in front of any Streamable HTTP MCP server, whatever its language.

The proxy streams both ways without buffering (SSE answers and the GET stream pass through
as they arrive), keeps ``Mcp-Session-Id`` and ``Last-Event-ID``, drops the client's
``Authorization`` header before the upstream (RS-8; configured upstream credentials replace
it), and turns an upstream that is down, slow or cut off into a 502 or 504 that says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from gatehouse.guard import caller as caller_context
from gatehouse.guard.asgi import jsonrpc_error, read_body, send_json
from gatehouse.guard.discovery import discover_endpoint
from gatehouse.guard.guard import JSONRPC_MESSAGES_KEY, MAX_BODY
from gatehouse.guard.sse import EventRelay, open_request_ids
from gatehouse.guard.upstream_client import UpstreamBroken, UpstreamError, UpstreamPool, UpstreamRefused, UpstreamTimeout

log = logging.getLogger("gatehouse.gateway")

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
}
NOT_FORWARDED = HOP_BY_HOP | {b"authorization", b"dpop", b"cookie", b"proxy"}  # proxy: httpoxy (CVE-2016-5385)
# uvicorn writes its own date and server; the gateway is the one resource the client authenticates to,
# so the upstream's challenges would send the client to the wrong authorization server
SET_BY_THE_GATEWAY = HOP_BY_HOP | {b"date", b"server", b"www-authenticate"}
FORWARDED_METHODS = {"GET", "POST", "DELETE", "OPTIONS"}
HOLD_JSON_UP_TO = 1024 * 1024


class HTTPUpstream:
    """An ASGI app that forwards every request to ``upstream`` (an MCP endpoint URL).

    ``read_timeout`` bounds the wait for the upstream's response head and, except in an SSE
    stream (which may rightly stay quiet for long), each silence inside a response body.
    """

    def __init__(
        self,
        upstream: str,
        *,
        upstream_headers: Iterable[tuple[str, str]] = (),
        identity_header: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
    ):
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.path = (parts.path.rstrip("/") or "/").encode()
        self.read_timeout = read_timeout
        self.upstream_headers = [(k.lower().encode(), v.encode()) for k, v in upstream_headers]
        self.identity_header = identity_header.lower().encode() if identity_header else None
        self._not_from_the_client = NOT_FORWARDED | {name for name, _ in self.upstream_headers} | {self.identity_header}
        self.pool = UpstreamPool(upstream, connect_timeout=connect_timeout, read_timeout=read_timeout)

    def forwarded_headers(self, headers: list[tuple[bytes, bytes]], caller) -> list[tuple[bytes, bytes]]:
        """The client's headers as the upstream gets them: no credentials of the client (RS-8),
        the configured upstream credentials, and the caller's subject if so configured.

        A server that reads headers CGI-style takes ``_`` for ``-`` (``HTTP_X_USER``), so a client
        header that would pass for one the gateway drops or sets is dropped too."""
        dropped = self._not_from_the_client
        forwarded = [(k, v) for k, v in headers if (k.replace(b"_", b"-") if b"_" in k else k) not in dropped]
        if self.identity_header and caller is not None:
            forwarded.append((self.identity_header, caller.subject.encode()))
        return forwarded + self.upstream_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in FORWARDED_METHODS:
            await send_json(send, 405, jsonrpc_error(-32600, f"{method} is not part of the MCP Streamable HTTP transport"),
                            [(b"allow", b"GET, POST, DELETE")])
            return
        _, body, too_large = await read_body(receive, MAX_BODY)
        if too_large:
            await send_json(send, 413, jsonrpc_error(-32600, f"the request body is larger than {MAX_BODY} bytes"))
            return
        caller = scope.get(caller_context.SCOPE_KEY)  # the session is the caller's own: the guard checked
        query = scope.get("query_string", b"")
        target = self.path + b"?" + query if query else self.path
        messages = scope.get(JSONRPC_MESSAGES_KEY) or []
        try:
            response = await self.pool.request(method, target, self.forwarded_headers(scope["headers"], caller), body)
        except UpstreamError as exc:
            await _gateway_error(send, exc, messages, self.upstream)
            return
        if response.status == 401:
            response.abort()
            await _gateway_error(send, UpstreamRefused(), messages, self.upstream)
            return
        headers = [(k, v) for k, v in response.headers if k not in SET_BY_THE_GATEWAY]
        if (response.header(b"content-type") or b"").startswith(b"text/event-stream"):
            relay = EventRelay(open_request_ids(messages))
            await _relay_event_stream(response, relay, headers, receive, send, self.upstream)
        else:
            await _relay_response(response, headers, send, self.read_timeout, self.upstream, messages)

    async def aclose(self) -> None:
        self.pool.close()


async def _relay_response(response, headers, send: Send, idle_timeout: float, upstream: str, messages: list[dict]) -> None:
    """A plain response: held until whole (up to 1 MiB), so a break before the end can still become a 502."""
    held: list[bytes] = []
    size = 0
    started = False
    try:
        async for chunk in response.chunks(idle_timeout):
            if started:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                continue
            held.append(chunk)
            size += len(chunk)
            if size > HOLD_JSON_UP_TO:
                started = True
                await send({"type": "http.response.start", "status": response.status, "headers": headers})
                await send({"type": "http.response.body", "body": b"".join(held), "more_body": True})
    except UpstreamError as exc:
        if not started:
            await _gateway_error(send, exc, messages, upstream)
            return
        log.warning("upstream %s: %s", upstream, exc)
    if started:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = b"".join(held)
    await send({"type": "http.response.start", "status": response.status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _relay_event_stream(response, relay: EventRelay, headers, receive: Receive, send: Send, upstream: str) -> None:
    """An SSE stream, event by event as it arrives; a client that leaves closes the upstream connection."""
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    watcher = asyncio.create_task(_abort_when_client_leaves(receive, response))
    try:
        async for chunk in response.chunks(None):
            events = relay.whole_events(chunk)
            if events:
                await send({"type": "http.response.body", "body": events, "more_body": True})
    except UpstreamBroken as exc:
        if not watcher.done():
            log.warning("upstream %s: %s", upstream, exc)
            errors = relay.errors_for_open_requests(f"{exc}; the request may not have been carried out, try again")
            if errors:
                await send({"type": "http.response.body", "body": errors, "more_body": True})
    except UpstreamError as exc:
        log.warning("upstream %s: %s", upstream, exc)
    finally:
        watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _abort_when_client_leaves(receive: Receive, response) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    response.abort()


async def _gateway_error(send: Send, exc: UpstreamError, messages: list[dict], upstream: str) -> None:
    log.warning("upstream %s: %s", upstream, exc)
    await send_json(send, gateway_error_status(exc), gateway_error_body(exc, open_request_ids(messages)))


def gateway_error_status(exc: UpstreamError) -> int:
    """504 for an upstream that did not answer in time, else 502 (RFC 9110 sections 15.6.3, 15.6.5)."""
    return 504 if isinstance(exc, UpstreamTimeout) else 502


def gateway_error_body(exc: UpstreamError, open_requests: set[object]) -> dict:
    """A JSON-RPC error that names the request when there was exactly one."""
    body = jsonrpc_error(-32603, f"{exc}; {exc.advice}")
    if len(open_requests) == 1:
        body["id"] = next(iter(open_requests))
    return body


def discover_jwks_uri(issuer: str, timeout: float = 10.0) -> str:
    """The AS's ``jwks_uri`` from its metadata."""
    return discover_endpoint(issuer, "jwks_uri", "keys", timeout)


def create_gateway_app(guard, upstream, path: str):
    """The gateway's ASGI app: the guard's metadata routes and ``path``, forwarded to ``upstream``."""
    return GatewayApp(guard, upstream, path)


class GatewayApp:
    """Routes by exact path, without a router: the gateway serves one endpoint and its metadata.

    Serve it with ``http=app.http_protocol`` in uvicorn: for an HTTP upstream, that protocol
    forwards plain JSON-RPC POSTs on a fast path (fast_path.py) and hands the rest to this app.
    """

    def __init__(self, guard, upstream, path: str):
        self.guarded = guard.protect(upstream, refuse_ambiguous_json=True)  # the upstream may parse JSON otherwise
        self.upstream = upstream
        self.verifier = guard.verifier
        self.paths = {*guard.metadata_paths, path}
        self.http_protocol = "auto"
        if isinstance(upstream, HTTPUpstream):
            from gatehouse.guard.fast_path import FastForwarder
            from gatehouse.guard.gateway_protocol import gateway_protocol

            self.http_protocol = gateway_protocol(FastForwarder(guard, upstream), path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] in self.paths:
            await self.guarded(scope, receive, send)
        elif scope["type"] == "http":
            await send_json(send, 404, {"error": "not_found", "error_description": f"nothing is served at {scope['path']}"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.aclose()
                if hasattr(self.verifier, "aclose"):
                    await self.verifier.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
