"""Retention: expired rows are deleted in small batches, by a background task and ``gatehouse db purge``.

A row goes once it expired more than ``retention_grace`` seconds ago (``cutoff = now - grace``):
authorization codes, access-token records, revocations, ``jti`` replay rows (RFC 7523 client
assertions, RFC 9449 DPoP proofs), upstream login states and rate-limit counters.

Refresh tokens are kept as long as their family (grant) has a refresh token that has not
expired: a rotated token presented again revokes the family (reuse detection, RFC 9700 section
4.14.2, ``grants.RefreshTokenGrant.authenticate_refresh_token``) even after its own expiry, so
it must outlive it. A family's rows go together, once its newest token has expired. A grant
goes once nothing issued from it is left (no code, refresh token or access-token record).
Audit events are kept forever unless ``audit_retention_days`` is set.

Each batch reads up to ``retention_batch_size`` expired keys without a write lock, then deletes
those keys in one short transaction that checks the expiry again; between batches it sleeps
``retention_batch_pause`` seconds, so requests are never queued behind a purge. Deleting by key
with the condition repeated is idempotent: instances purging at the same time only find less to do.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
from sqlalchemy import Engine, Table, delete, exists, select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from gatehouse.config import Settings
from gatehouse.store import db as store_db
from gatehouse.store.models import Base
from gatehouse.timeutil import epoch, utcnow

log = logging.getLogger("gatehouse.retention")

#: tables whose rows simply expire: (table, column holding the expiry)
EXPIRING_TABLES = (
    ("authorization_codes", "expires_at"),
    ("access_tokens", "expires_at"),
    ("revocations", "expires_at"),
    ("client_assertion_jtis", "expires_at"),
    ("dpop_proof_jtis", "expires_at"),
    ("upstream_login_states", "expires_at"),
)


@dataclass(frozen=True)
class PurgeRule:
    """Which rows of ``table`` may go, for a given cutoff time."""

    table: Table
    condition: ColumnElement[bool]

    @property
    def name(self) -> str:
        return self.table.name


@dataclass
class PurgeReport:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def summary(self) -> str:
        counts = ", ".join(f"{name}={count}" for name, count in self.deleted.items() if count) or "nothing expired"
        return f"purged {self.total} expired rows in {self.batches} batches, {self.seconds:.2f} s ({counts})"


def purge_rules(settings: Settings, now: datetime) -> list[PurgeRule]:
    """The rules, in an order where every row a later rule waits for has had its turn."""
    tables = Base.metadata.tables
    cutoff = now - timedelta(seconds=settings.retention_grace)
    rules = [PurgeRule(tables[name], tables[name].c[column] < cutoff) for name, column in EXPIRING_TABLES if name in tables]

    refresh = tables["refresh_tokens"]
    family_member = refresh.alias("family_member")
    rules.append(PurgeRule(refresh, (refresh.c.expires_at < cutoff) & ~exists().where(
        family_member.c.grant_id == refresh.c.grant_id, family_member.c.expires_at >= cutoff
    )))
    grants = tables["grants"]
    leftovers = [
        exists().where(tables["refresh_tokens"].c.grant_id == grants.c.id),
        exists().where(tables["access_tokens"].c.grant_id == grants.c.id),
        exists().where(tables["authorization_codes"].c.grant_id == grants.c.id),
    ]
    rules.append(PurgeRule(grants, (grants.c.created_at < cutoff) & ~leftovers[0] & ~leftovers[1] & ~leftovers[2]))

    if "rate_limit_counters" in tables:  # expiry in epoch seconds
        counters = tables["rate_limit_counters"]
        rules.append(PurgeRule(counters, counters.c.expires_at < epoch(cutoff)))
    if settings.audit_retention_days > 0:
        events = tables["audit_events"]
        rules.append(PurgeRule(events, events.c.at < now - timedelta(days=settings.audit_retention_days)))
    return rules


class Purger:
    """Runs purge passes on one store."""

    def __init__(self, engine: Engine, settings: Settings):
        self.settings = settings
        self.sessions = store_db.session_factory(engine)
        self.readers = store_db.read_only_session_factory(engine)

    def _expired_keys(self, rule: PurgeRule, limit: int) -> list[tuple]:
        key = list(rule.table.primary_key.columns)
        with self.readers() as session:
            return [tuple(row) for row in session.execute(select(*key).where(rule.condition).limit(limit))]

    def _delete(self, rule: PurgeRule, keys: list[tuple]) -> int:
        key = list(rule.table.primary_key.columns)
        chosen = key[0].in_([k[0] for k in keys]) if len(key) == 1 else tuple_(*key).in_(keys)
        with store_db.transaction(self.sessions) as session:
            return session.execute(delete(rule.table).where(chosen, rule.condition)).rowcount

    def batches(self, rule: PurgeRule, batch_size: int) -> Iterator[int]:
        """Delete ``rule``'s rows a batch at a time, yielding each batch's count."""
        while True:
            keys = self._expired_keys(rule, batch_size)
            if not keys:
                return
            yield self._delete(rule, keys)
            if len(keys) < batch_size:
                return

    def run_pass(
        self, *, now: datetime | None = None, batch_size: int | None = None, pause: float | None = None,
        should_stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep,
    ) -> PurgeReport:
        """One pass over every rule; ``should_stop`` is asked between batches."""
        started = time.perf_counter()
        batch_size = batch_size or self.settings.retention_batch_size
        pause = self.settings.retention_batch_pause if pause is None else pause
        report = PurgeReport()
        for rule in purge_rules(self.settings, now or utcnow()):
            report.deleted[rule.name] = 0
            for count in self.batches(rule, batch_size):
                report.deleted[rule.name] += count
                report.batches += 1
                if should_stop():
                    break
                sleep(pause)
            if should_stop():
                break
        report.seconds = time.perf_counter() - started
        return report


def log_report(report: PurgeReport) -> None:
    log.info("retention: %s", report.summary(), extra={"purged": report.deleted, "batches": report.batches})


@asynccontextmanager
async def retention_task(engine: Engine, settings: Settings, on_report: Callable[[PurgeReport], None] = lambda r: None):
    """Purge every ``retention_interval`` seconds while the app runs (0 turns it off). The first
    pass comes after a random part of the interval, so instances started together spread out."""
    interval = settings.retention_interval
    if interval <= 0:
        yield
        return
    purger = Purger(engine, settings)
    stopping = anyio.Event()
    own_thread = anyio.CapacityLimiter(1)

    async def run_periodically() -> None:
        await anyio.sleep(interval * random.uniform(0.5, 1.0))
        while True:
            try:
                report = await anyio.to_thread.run_sync(
                    lambda: purger.run_pass(should_stop=stopping.is_set), abandon_on_cancel=True, limiter=own_thread
                )
                log_report(report)
                on_report(report)
            except Exception:  # noqa: BLE001 - a failed pass is logged and tried again next time
                log.exception("retention: the purge pass failed; trying again in %s s", interval)
            await anyio.sleep(interval)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_periodically)
        try:
            yield
        finally:
            stopping.set()
            tasks.cancel_scope.cancel()
