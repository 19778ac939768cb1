"""The doctor's HTTP client: every request it makes, with limits, recorded as evidence.

The doctor requests URLs that servers name in their metadata, so each request is bounded:

- a short timeout (``timeout`` seconds for connecting and for each read);
- a response size cap (``max_bytes``): a larger body is cut off and the exchange says so;
- redirects are followed only when a probe asks (metadata GETs, at most ``MAX_REDIRECTS`` hops)
  and only to ``http``/``https`` URLs; the hops are part of the evidence;
- requests that carry a credential (an access token, a refresh token, a client secret) never
  follow a redirect, so the credential reaches only the URL it is meant for;
- no proxy from the environment (``trust_env=False``), as the client library's revocation does.

An ``Exchange`` is the evidence of one request: method, URL, selected request and response
headers, the status and a body excerpt, with credentials redacted (``Authorization`` values,
tokens, codes and secrets in forms and JSON bodies).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx2

from gatehouse import __version__

MAX_BYTES = 256 * 1024
MAX_REDIRECTS = 3
BODY_EXCERPT = 400
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
SECRET_FIELDS = {"access_token", "refresh_token", "id_token", "code", "code_verifier", "client_secret", "token",
                 "assertion", "client_assertion", "registration_access_token", "subject_token"}
SHOWN_RESPONSE_HEADERS = ("content-type", "www-authenticate", "location", "cache-control", "access-control-allow-origin",
                          "access-control-allow-methods", "access-control-allow-headers", "access-control-expose-headers",
                          "mcp-session-id")
SHOWN_REQUEST_HEADERS = ("authorization", "origin", "content-type", "access-control-request-method",
                         "access-control-request-headers", "mcp-protocol-version")
USER_AGENT = f"gatehouse-doctor/{__version__}"


def _redact_form(text: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs:
        return text
    return "&".join(f"{k}={'<redacted>' if k in SECRET_FIELDS else v}" for k, v in pairs)


def _redact_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<redacted>" if k in SECRET_FIELDS and isinstance(v, str) else _redact_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    return value


def redact_body(body: bytes, content_type: str | None) -> str:
    """A printable excerpt of ``body`` with every credential field replaced by ``<redacted>``."""
    text = body.decode("utf-8", "replace")
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        text = _redact_form(text)
    else:
        try:
            text = json.dumps(_redact_json(json.loads(text)), separators=(",", ":"))
        except ValueError:
            pass
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "…"


def _redact_header(name: str, value: str) -> str:
    if name == "authorization":
        scheme = value.split(" ", 1)[0]
        return f"{scheme} <redacted>"
    return value


@dataclass
class Exchange:
    """One request and its answer (or the error instead of one)."""

    method: str
    url: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None
    status: int | None = None
    headers: httpx2.Headers = field(default_factory=httpx2.Headers)
    body: bytes = b""
    error: str | None = None
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)
    """The URLs redirected from, in order; ``url`` is the last one requested."""
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def reached(self) -> bool:
        return self.status is not None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_values(self, name: str) -> list[str]:
        return self.headers.get_list(name)

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (or was cut off)."""
        if self.truncated or not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def json_object(self) -> dict | None:
        value = self.json()
        return value if isinstance(value, dict) else None

    def line(self) -> str:
        """``GET url → 200 application/json``, or the error: the evidence in one line."""
        request = f"{self.method} {self.url}"
        if self.status is None:
            return f"{request} → {self.error}"
        kind = (self.header("content-type") or "").split(";")[0]
        detail = f" {kind}" if kind else ""
        cut = " (cut off)" if self.truncated else ""
        via = f" (redirected from {self.redirects[0]})" if self.redirects else ""
        return f"{request} → {self.status}{detail}{cut}{via}"

    def to_evidence(self) -> dict[str, Any]:
        shown = {name: "\n".join(_redact_header(name, v) for v in self.headers.get_list(name))
                 for name in SHOWN_RESPONSE_HEADERS if name in self.headers}
        return {
            "method": self.method,
            "url": self.url,
            "request_headers": self.request_headers,
            "request_body": self.request_body,
            "redirected_from": self.redirects,
            "status": self.status,
            "response_headers": shown,
            "body": redact_body(self.body, self.header("content-type")) if self.body else "",
            "error": self.error,
        }


def describe_error(exc: Exception) -> str:
    """A transport failure in words: what happened, never a traceback."""
    if isinstance(exc, httpx2.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out waiting for the answer"
    if isinstance(exc, httpx2.ConnectError):
        reason = str(exc).split("] ", 1)[-1] or "connection failed"
        return f"cannot connect ({reason})"
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return "not an http(s) URL"
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.LocalProtocolError)):
        return f"HTTP protocol error ({exc})"
    if isinstance(exc, httpx2.InvalidURL):
        return f"invalid URL ({exc})"
    return f"{type(exc).__name__}: {exc}"


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class Prober:
    """One ``httpx2.AsyncClient`` for every probe of a run (``async with Prober() as prober``)."""

    def __init__(self, timeout: float = 5.0, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout), follow_redirects=False, trust_env=False,
            headers={"User-Agent": USER_AGENT}, limits=httpx2.Limits(max_connections=20),
        )

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, data: dict[str, str] | None = None,
        json_body: Any = None, follow_redirects: bool = False, read_body: bool = True,
    ) -> Exchange:
        """Send one request (and, if asked and safe, follow its redirects); never raises for HTTP reasons."""
        headers = dict(headers or {})
        carries_credential = "authorization" in {k.lower() for k in headers} or bool(data and SECRET_FIELDS & set(data))
        follow = follow_redirects and not carries_credential and method in ("GET", "HEAD")
        redirects: list[str] = []
        started = time.perf_counter()
        while True:
            exchange = await self._once(method, url, headers, data, json_body, read_body)
            location = exchange.header("location")
            if not (follow and exchange.status in REDIRECT_STATUSES and location) or len(redirects) >= MAX_REDIRECTS:
                break
            target = urljoin(url, location)
            if not is_http_url(target):
                exchange.error = f"redirect to a non-http(s) URL ({target[:80]}) not followed"
                break
            redirects.append(url)
            url = target
        exchange.redirects = redirects
        exchange.elapsed_ms = (time.perf_counter() - started) * 1000
        return exchange

    async def _once(
        self, method: str, url: str, headers: dict[str, str], data: dict[str, str] | None, json_body: Any, read_body: bool,
    ) -> Exchange:
        shown = {k.lower(): _redact_header(k.lower(), v) for k, v in headers.items() if k.lower() in SHOWN_REQUEST_HEADERS}
        body_note = _redact_form("&".join(f"{k}={v}" for k, v in data.items())) if data else None
        if json_body is not None:
            body_note = json.dumps(_redact_json(json_body), separators=(",", ":"))[:BODY_EXCERPT]
        exchange = Exchange(method, url, shown, body_note)
        if not is_http_url(url):
            exchange.error = "not an http(s) URL"
            return exchange
        try:
            async with self.http.stream(method, url, headers=headers, data=data, json=json_body) as response:
                exchange.status = response.status_code
                exchange.headers = response.headers
                chunks, size = [], 0
                if not read_body:  # a stream (SSE) may stay open: the status and headers are the evidence
                    return exchange
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.max_bytes:
                        exchange.truncated = True
                        exchange.error = f"the answer is larger than {self.max_bytes // 1024} KiB; read no further"
                        break
                exchange.body = b"".join(chunks)[: self.max_bytes]
        except httpx2.HTTPError as exc:
            exchange.error = describe_error(exc)
        return exchange
