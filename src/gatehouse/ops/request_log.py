"""Structured logs and request ids.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token (1 to 128 of
``A-Z a-z 0-9 . _ : -``), else a new random one. It is echoed in the response's ``X-Request-ID``
and held in a context variable, so every log line written while the request runs carries it.

One access line per request (logger ``gatehouse.access``): method, path without its query
string (a query can hold codes and tokens), status, duration and client address; health checks
and metrics scrapes at DEBUG so they do not drown the rest. ``--log-format json`` writes one JSON
object per line; ``text`` a line for people. Both pass every line through
:func:`gatehouse.authserver.log_redaction.redact`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from gatehouse.authserver.log_redaction import redact
from gatehouse.ops.http_middleware import HTTPMiddleware, ResponseStatus

REQUEST_ID_HEADER = "X-Request-ID"
LOG_FORMATS = ("text", "json")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("gatehouse_request_id", default=None)
access_log = logging.getLogger("gatehouse.access")

# attributes every LogRecord has; anything else on a record came in through ``extra=``
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "color_message",  # uvicorn's copy of the message with terminal colours
}


def current_request_id() -> str | None:
    """The id of the request being answered in this context, if any."""
    return _request_id.get()


def request_id_from(value: str | None) -> str:
    """The caller's id if it is a sane token, else a new one (32 hex digits)."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return secrets.token_hex(16)


class RequestLogMiddleware(HTTPMiddleware):
    """Request id in, request id out, one access line."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = request_id_from(incoming.decode("latin-1"))
        token = _request_id.set(request_id)
        started = time.perf_counter()

        def add_request_id(start: Message) -> None:
            MutableHeaders(scope=start).append(REQUEST_ID_HEADER, request_id)

        response = ResponseStatus(send, on_start=add_request_id)
        try:
            await self.app(scope, receive, response.send)
        except BaseException:
            _log_access(scope, response, started)
            raise  # the id stays set: the 500 handler and the server log the failure after this, with it
        _log_access(scope, response, started)
        _request_id.reset(token)


def _log_access(scope: Scope, response: ResponseStatus, started: float) -> None:
    status = response.code
    path = scope.get("path", "")
    client = scope.get("client")
    access_log.log(
        logging.DEBUG if path in QUIET_PATHS else logging.INFO,
        "%s %s %s", scope["method"], path, status,
        extra={
            "method": scope["method"],
            "path": path,
            "status": status,
            "duration_ms": round(response.seconds_since(started) * 1000, 2),
            "client": client[0] if client else None,
        },
    )


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` when the record is handled, in the thread that wrote it (a
    formatter may run later, elsewhere, where the request's context is gone)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


def _scrub(value):
    return redact(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, _scrub(value))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-02 10:00:00,123 INFO gatehouse.access [request id] message`` (access lines add the duration)."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        line = super().format(record)
        if "duration_ms" in record.__dict__:
            line += f" {record.duration_ms}ms {record.client or '-'}"
        return redact(line)


def logging_config(log_format: str, level: str) -> dict:
    """A ``logging.config.dictConfig`` for ``gatehouse serve`` and its uvicorn (also in its workers):
    everything to stderr through one formatter; uvicorn's own access log off (ours replaces it)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of: {', '.join(LOG_FORMATS)}")
    level = level.upper()
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gatehouse": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "filters": {"request_id": {"()": f"{RequestIdFilter.__module__}.{RequestIdFilter.__qualname__}"}},
        "handlers": {"stderr": {
            "class": "logging.StreamHandler", "formatter": "gatehouse", "filters": ["request_id"], "stream": "ext://sys.stderr",
        }},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
