"""Health checks for load balancers and orchestrators.

``/healthz`` (liveness): the process answers; it touches nothing else, so a database outage
never gets healthy processes restarted. ``/readyz`` (readiness): this instance can serve
requests now: the store answers a cheap query within :data:`STORE_TIMEOUT` seconds and a
signing key is loaded. 200 with each check's detail, or 503 naming the check that failed and why.
The database driver's own message (host names, database names) is added for callers on
loopback only; everyone gets the reason, and the log gets the message.
"""

from __future__ import annotations

import ipaddress
import logging
import time

import anyio
from sqlalchemy import select, text
from starlette.requests import Request
from starlette.responses import JSONResponse

from gatehouse.authserver.context import AuthServerContext
from gatehouse.store.db import READ_ONLY
from gatehouse.store.models import SigningKey

log = logging.getLogger("gatehouse.health")

STORE_TIMEOUT = 2.0
NO_STORE = {"Cache-Control": "no-store"}
_PING = select(SigningKey.kid).limit(1)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line}"[:300]


def _from_loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


class Readiness:
    """``/readyz`` for one authorization server context."""

    def __init__(self, ctx: AuthServerContext, timeout: float = STORE_TIMEOUT):
        self.ctx = ctx
        self.timeout = timeout
        # its own threads: a hung database must not take the request thread pool with it
        self._threads = anyio.CapacityLimiter(2)

    def _ping_store(self) -> None:
        with self.ctx.engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SET LOCAL statement_timeout = {int(self.timeout * 1000)}"))
            connection.execute(_PING).first()
            connection.rollback()

    async def _store(self) -> dict:
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout):
                await anyio.to_thread.run_sync(self._ping_store, abandon_on_cancel=True, limiter=self._threads)
        except TimeoutError:
            log.warning("readiness: no answer from the store within %g s", self.timeout)
            return {"status": "failed", "reason": f"no answer from the database within {self.timeout:g} s"}
        except Exception as exc:  # noqa: BLE001 - any failure to query means "not reachable"
            log.warning("readiness: the store is not reachable: %s", _reason(exc))
            return {"status": "failed", "reason": "the database is not reachable", "detail": _reason(exc)}
        return {"status": "ok", "duration_ms": round((time.perf_counter() - started) * 1000, 2)}

    def _signing_keys(self) -> dict:
        kid = self.ctx.keyring.loaded_signing_kid()
        if kid is None:
            return {"status": "failed", "reason": "no signing key is loaded that may sign now"}
        return {"status": "ok", "kid": kid}

    async def readyz(self, request: Request) -> JSONResponse:
        checks = {"store": await self._store(), "signing_keys": self._signing_keys()}
        ready = all(check["status"] == "ok" for check in checks.values())
        if not _from_loopback(request):
            for check in checks.values():
                check.pop("detail", None)
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503,
                            headers=NO_STORE)
