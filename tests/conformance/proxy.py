"""A small test-only reverse proxy (ASGI), for putting the conformance harness in front of Gatehouse.

- The server suite sends no token: the proxy adds a valid ``Authorization`` header to each
  request, so the harness goes through the real guard in front of the demo MCP server.
- ``rewrite_json`` changes JSON answers on chosen paths (see test_authorization_server.py).

Everything else passes through unchanged, in both directions: method, path, query, body, the
``Host`` and ``Origin`` headers (so the server's own DNS-rebinding checks still see what the
harness sent), status, headers and cookies; answers are streamed chunk by chunk (SSE), and a
stream ends when either side goes away.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx2

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
}


class ReverseProxy:
    def __init__(
        self,
        upstream: str,
        *,
        headers: dict[str, str] | None = None,
        rewrite_json: Callable[[str, dict], dict] | None = None,
    ):
        self.upstream = upstream.rstrip("/")
        self.headers = {name.lower().encode(): value.encode() for name, value in (headers or {}).items()}
        self.rewrite_json = rewrite_json
        self._http: httpx2.AsyncClient | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._http is not None:
                    await self._http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None), follow_redirects=False)
        return self._http

    async def _proxy(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        dropped = HOP_BY_HOP | {b"content-length"} | set(self.headers)
        headers = [(k, v) for k, v in scope["headers"] if k not in dropped]
        headers += list(self.headers.items())
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope["query_string"].decode("latin-1")
        url = self.upstream + path.decode("latin-1") + (f"?{query}" if query else "")
        request = self.http.build_request(scope["method"], url, headers=headers, content=body)
        response = await self.http.send(request, stream=True)
        try:
            out_headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            if self.rewrite_json is not None and "json" in response.headers.get("content-type", ""):
                payload = await response.aread()
                document = json.loads(payload) if payload else None
                if isinstance(document, dict):
                    payload = json.dumps(self.rewrite_json(scope["path"], document)).encode()
                out_headers = [(k, v) for k, v in out_headers if k not in (b"content-length", b"content-encoding")]
                out_headers.append((b"content-length", str(len(payload)).encode()))
                await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
                await send({"type": "http.response.body", "body": payload})
                return
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async with anyio.create_task_group() as group:

                async def until_disconnect():
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(until_disconnect)
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                group.cancel_scope.cancel()
        finally:
            await response.aclose()
