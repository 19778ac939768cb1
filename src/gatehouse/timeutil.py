"""Time in one place, so tests can move the clock (S-T3) without patching call sites."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta()


def utcnow() -> datetime:
    """Naive UTC now (the store keeps naive UTC), shifted by :func:`travel` in tests."""
    return datetime.now(UTC).replace(tzinfo=None) + _offset


def travel(delta: timedelta) -> None:
    """Move this process's clock by ``delta`` (used by tests that expire codes and tokens)."""
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta()


def epoch(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())
