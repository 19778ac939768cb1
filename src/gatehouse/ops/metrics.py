"""Prometheus metrics (``prometheus_client``), exposed at ``/metrics`` in the text format.

HTTP requests are counted by method, *route template* (``/register/{client_id:path}``, never
the raw path, so the number of series stays bounded) and status, with a latency histogram.
Security events are counted from the audit log once their transaction commits
(:func:`gatehouse.authserver.audit.on_committed`), so a rolled-back request counts nothing.
Rate-limited requests are the 429 answers, counted per route.

Several worker processes (``gatehouse serve --workers N``) each count in files under
``PROMETHEUS_MULTIPROC_DIR`` (:mod:`gatehouse.ops.worker_metrics` sets it up before this module
is imported) and every scrape sums them, whichever process answers it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gatehouse.authserver import audit
from gatehouse.ops.http_middleware import HTTPMiddleware, ResponseStatus

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

HTTP_REQUESTS = Counter(
    "gatehouse_http_requests", "HTTP requests answered, by method, route template and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "gatehouse_http_request_duration_seconds", "Time to answer an HTTP request (to the end of its body), by route template.",
    ["method", "route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
TOKENS_ISSUED = Counter("gatehouse_tokens_issued", "Grants issued at the token endpoint, by grant type.", ["grant_type"])
REFRESHES = Counter("gatehouse_token_refreshes", "Refresh tokens rotated (refresh_token grant).")
REFRESH_REUSE = Counter(
    "gatehouse_refresh_token_reuse_detected", "Refresh tokens presented again after rotation; each revoked its grant (RFC 9700 4.14.2)."
)
REFRESH_ANSWERS_LOST = Counter(
    "gatehouse_refresh_answers_lost",
    "Rotated refresh tokens presented again whose new token's answer never reached the client; rotated again (issue 7).",
)
CODE_REPLAY = Counter("gatehouse_authorization_code_replay_detected", "Authorization codes presented a second time.")
FAILED_LOGINS = Counter("gatehouse_failed_logins", "Sign-ins refused for a wrong username or password.")
FAILED_CLIENT_AUTH = Counter("gatehouse_failed_client_authentications", "Client authentications refused at the token, revocation and introspection endpoints.")
RATE_LIMITED = Counter("gatehouse_rate_limited_requests", "Requests refused with 429 Too Many Requests, by route template.", ["route"])
AUDIT_EVENTS = Counter("gatehouse_audit_events", "Audit events committed, by event name (gatehouse.authserver.audit).", ["event"])
PURGED_ROWS = Counter("gatehouse_retention_purged_rows", "Expired rows deleted by the retention task, by table.", ["table"])

_AUDIT_COUNTERS = {
    audit.TOKEN_REFRESHED: REFRESHES,
    audit.REFRESH_REUSE: REFRESH_REUSE,
    audit.REFRESH_ANSWER_LOST: REFRESH_ANSWERS_LOST,
    audit.CODE_REPLAY: CODE_REPLAY,
    audit.LOGIN_FAILED: FAILED_LOGINS,
    audit.CLIENT_AUTH_FAILED: FAILED_CLIENT_AUTH,
}


def count_audit_event(event: str, details: dict) -> None:
    AUDIT_EVENTS.labels(event=event[:64]).inc()
    if event == audit.TOKEN_ISSUED:
        TOKENS_ISSUED.labels(grant_type=str(details.get("grant_type", "unknown"))[:64]).inc()
    elif event == audit.TOKEN_REFRESHED:
        TOKENS_ISSUED.labels(grant_type="refresh_token").inc()
        REFRESHES.inc()
    elif event in _AUDIT_COUNTERS:
        _AUDIT_COUNTERS[event].inc()


def install() -> None:
    """Start counting audit events (idempotent)."""
    audit.on_committed(count_audit_event)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition() -> bytes:
    """Every metric in the Prometheus text format: this process's, or all workers' summed."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_endpoint(request: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def bearer_protected(token: str):
    """``/metrics`` on the public port: only with ``Authorization: Bearer <GATEHOUSE_METRICS_TOKEN>``,
    compared in constant time (digests of equal length, so not even the length leaks)."""
    expected = hashlib.sha256(token.encode()).digest()

    async def protected_metrics(request: Request) -> Response:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        presented = hashlib.sha256(credentials.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
            return JSONResponse(
                {"error": "invalid_token", "error_description": "metrics need Authorization: Bearer <GATEHOUSE_METRICS_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="gatehouse-metrics"', "Cache-Control": "no-store"},
            )
        return await metrics_endpoint(request)

    return protected_metrics


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that answered (``/register/{client_id:path}``), with the path of
    any mount it sits under; ``<unmatched>`` when none did (404s)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return UNMATCHED_ROUTE
    mount_prefix = scope.get("root_path", "")[len(root_path):]
    return mount_prefix + path


class MetricsMiddleware(HTTPMiddleware):
    """Counts each HTTP request and times it to the end of its response body."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        response = ResponseStatus(send)
        try:
            await self.app(scope, receive, response.send)
        finally:
            status = response.code
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope, root_path)
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            HTTP_LATENCY.labels(method=method, route=route).observe(response.seconds_since(started))
            if status == 429:
                RATE_LIMITED.labels(route=route).inc()


def count_purge(report) -> None:
    """Add a retention pass's deletions (:class:`gatehouse.ops.retention.PurgeReport`)."""
    for table, count in report.deleted.items():
        if count:
            PURGED_ROWS.labels(table=table).inc(count)
