"""``gatehouse gateway``: the guard in front of any Streamable HTTP MCP server, whatever its language.

The proxy streams both ways without buffering (SSE answers and the GET stream pass through
as they arrive), keeps ``Mcp-Session-Id`` and ``Last-Event-ID``, drops the client's
``Authorization`` header before the upstream (RS-8; configured upstream credentials replace
it), and turns an upstream that is down, slow or cut off into a 502 or 504 that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx2
from starlette.types import Receive, Scope, Send

from gatehouse.guard import caller as caller_context
from gatehouse.guard.asgi import jsonrpc_error, send_json

log = logging.getLogger("gatehouse.gateway")

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
}
NOT_FORWARDED = HOP_BY_HOP | {b"authorization", b"cookie"}


class HTTPUpstream:
    """An ASGI app that forwards every request to ``upstream`` (an MCP endpoint URL)."""

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
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_headers = [(k.lower().encode(), v.encode()) for k, v in upstream_headers]
        self.identity_header = identity_header.lower().encode() if identity_header else None
        self.client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(connect=connect_timeout, read=read_timeout, write=30.0, pool=connect_timeout),
            trust_env=False,
            follow_redirects=False,
            limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
        )

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in NOT_FORWARDED]
        if self.identity_header:
            headers = [(k, v) for k, v in headers if k.lower() != self.identity_header]
            caller = scope.get(caller_context.SCOPE_KEY)
            if caller is not None:
                headers.append((self.identity_header, caller.subject.encode()))
        return headers + self.upstream_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        query = scope.get("query_string", b"")
        url = self.upstream + (f"?{query.decode('latin-1')}" if query else "")
        request = self.client.build_request(scope["method"], url, headers=self._headers(scope), content=_request_body(receive))
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.TimeoutException:
            await _gateway_error(send, 504, "the upstream MCP server did not answer in time")
            return
        except httpx2.HTTPError as exc:
            log.warning("upstream %s unreachable: %s", self.upstream, exc)
            await _gateway_error(send, 502, "the upstream MCP server cannot be reached")
            return
        try:
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx2.HTTPError as exc:
                log.warning("upstream %s broke the stream: %s", self.upstream, exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()


async def _request_body(receive: Receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _gateway_error(send: Send, status: int, message: str) -> None:
    await send_json(send, status, jsonrpc_error(-32603, message))


def discover_jwks_uri(issuer: str, timeout: float = 10.0) -> str:
    """The AS's ``jwks_uri`` from its RFC 8414 metadata (OIDC discovery as a fallback)."""
    from gatehouse.authserver.metadata import well_known_paths

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(issuer))
    rfc8414, oidc = well_known_paths(issuer)
    problems = []
    for path in [*rfc8414, *oidc]:
        try:
            response = httpx2.get(origin + path, timeout=timeout, trust_env=False)
        except httpx2.HTTPError as exc:
            problems.append(f"{origin + path}: {exc}")
            continue
        if response.status_code != 200:
            problems.append(f"{origin + path}: HTTP {response.status_code}")
            continue
        try:
            metadata = response.json()
        except ValueError:
            problems.append(f"{origin + path}: not JSON")
            continue
        if metadata.get("issuer") != issuer:
            problems.append(f"{origin + path}: issuer is {metadata.get('issuer')!r}, not {issuer!r}")
            continue
        if isinstance(metadata.get("jwks_uri"), str):
            return metadata["jwks_uri"]
        problems.append(f"{origin + path}: no jwks_uri")
    raise LookupError("cannot find the authorization server's keys: " + "; ".join(problems))


def create_gateway_app(guard, upstream: HTTPUpstream, path: str):
    """The gateway: metadata routes and ``path`` guarded, forwarded to ``upstream``."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.routing import Route

    guarded = guard.protect(upstream)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await upstream.aclose()

    return Starlette(routes=[Route(p, guarded) for p in [*guard.metadata_paths, path]], lifespan=lifespan)
