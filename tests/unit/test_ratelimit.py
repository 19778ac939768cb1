"""The shared rate limiter (issue 7): the sliding-window arithmetic, and each counter backend
(SQLite file, PostgreSQL, Redis) for real: exact limits under concurrency, refunds, purging,
two instances on one store, and failing open when the store is gone."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gatehouse.authserver import ratelimit
from gatehouse.authserver.login_throttle import backoff_limiters
from gatehouse.authserver.ratelimit import Counts, Limiter, RateLimited, Window, fits, seconds_until_allowed, wait_phrase
from gatehouse.config import Settings
from gatehouse.store import db as store_db
from gatehouse.store.models import RateLimitCounter
from gatehouse.store.rate_counters import StoreCounters
from tests.conftest import create_postgres_database, drop_postgres_database, missing_component

REDIS_URL = os.environ.get("GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START = 1_800_000_000  # a multiple of 60


# -- the arithmetic ----------------------------------------------------------------------------

def _after(counts: Counts, window: Window, seconds: float) -> tuple[Counts, Window]:
    """The counts as seen ``seconds`` later, when nothing else was admitted meanwhile."""
    later = Window.at(window.start + window.elapsed + seconds, window.length)
    if later.start == window.start:
        return counts, later
    if later.start == window.start + window.length:
        return Counts(counts.current, 0), later
    return Counts(0, 0), later


@settings(max_examples=500, deadline=None)
@given(
    previous=st.integers(0, 200), current=st.integers(0, 200), limit=st.integers(1, 100),
    length=st.sampled_from([1, 3, 60, 300, 900]), fraction=st.floats(0, 0.999),
)
def test_retry_after_is_exactly_when_one_more_fits(previous, current, limit, length, fraction):
    window = Window(length, START, fraction * length)
    counts = Counts(previous, current)
    if fits(counts, window, limit):
        return
    wait = seconds_until_allowed(counts, window, limit)
    assert wait >= 1
    assert fits(*_after(counts, window, wait), limit), "after Retry-After, one more event must fit"
    if wait > 1:
        assert not fits(*_after(counts, window, wait - 1), limit), "Retry-After must not be longer than needed"


def test_a_burst_at_the_end_of_a_window_still_counts_after_the_boundary():
    """What a plain fixed window gets wrong: 10 events at 59 s, then a fresh window at 60 s."""
    end_of_window = Window(60, START, 59.0)
    assert not fits(Counts(0, 10), end_of_window, 10)
    just_after = Window(60, START + 60, 1.0)
    assert not fits(Counts(10, 0), just_after, 10)
    assert seconds_until_allowed(Counts(10, 0), just_after, 10) == 5  # 10 * (1 - 6/60) + 1 <= 10
    assert fits(Counts(10, 0), Window(60, START + 60, 6.0), 10)


def test_a_limit_of_zero_refuses_everything_for_a_window():
    assert not fits(Counts(0, 0), Window(60, START, 0.0), 0)
    assert seconds_until_allowed(Counts(0, 0), Window(60, START, 0.0), 0) == 60


@pytest.mark.parametrize("seconds, phrase", [(1, "1 second"), (45, "45 seconds"), (60, "1 minute"), (61, "2 minutes"), (900, "15 minutes")])
def test_wait_phrase(seconds, phrase):
    assert wait_phrase(seconds) == phrase


@pytest.mark.parametrize("cap, expected", [
    (900, [(5, 60), (10, 300), (20, 857)]),
    (2000, [(5, 60), (10, 300), (20, 1904)]),
    (120, [(5, 60), (10, 109)]),
    (3, [(5, 2)]),
])
def test_login_backoff_steps_never_outlast_the_maximum_lockout(cap, expected):
    limiters = backoff_limiters(Settings(failed_login_per_minute=5, login_max_lockout=cap), ratelimit.Unlimited())
    assert [(lim.limit, lim.window) for lim in limiters] == expected
    for limiter in limiters:  # the longest lockout: the limit reached at the very start of a window
        full = Counts(0, limiter.limit)
        assert seconds_until_allowed(full, Window(limiter.window, START, 0.0), limiter.limit) <= cap


# -- the backends, for real --------------------------------------------------------------------

@pytest.fixture
def clock(monkeypatch):
    """The limiter's wall clock, 10 s into a window."""
    now = SimpleNamespace(now=START + 10.0)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now.now))
    return now


def _redis_counters(prefix: str):
    import redis

    from gatehouse.authserver.redis_counters import RedisCounters

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        missing_component(f"Redis not reachable at {REDIS_URL}: {exc}")
    return RedisCounters(REDIS_URL, prefix)


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def make_backend(request, tmp_path):
    """``make_backend()`` -> a new backend on the same shared counters (one more "instance")."""
    engines, cleanup = [], []
    if request.param == "redis":
        prefix = f"gh-test-{uuid.uuid4().hex[:8]}"

        def make():
            return _redis_counters(prefix)

        def clean():
            client = _redis_counters(prefix).client
            for name in client.scan_iter(f"{prefix}:*"):
                client.delete(name)

        cleanup.append(clean)
    else:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'gatehouse.db'}"
        else:
            url = create_postgres_database()
            cleanup.append(lambda: drop_postgres_database(url.rsplit("/", 1)[1]))
        engine = store_db.create_store_engine(url)
        store_db.upgrade(engine)
        engines.append(engine)

        def make():
            engines.append(store_db.create_store_engine(url))
            return StoreCounters(engines[-1])

    make.kind = request.param
    yield make
    for engine in engines:
        engine.dispose()
    for step in reversed(cleanup):
        step()


def test_hits_are_admitted_up_to_the_limit_and_refusals_say_how_long_to_wait(make_backend, clock):
    limiter = Limiter("t", 3, 60, make_backend())
    for _ in range(3):
        assert limiter.hit("198.51.100.7") is not None
    with pytest.raises(RateLimited) as refused:
        limiter.hit("198.51.100.7")
    assert refused.value.retry_after == 70  # 3 * (1 - 20/60) + 0 + 1 <= 3, 20 s into the next window
    assert limiter.hit("198.51.100.8") is not None, "another subject has its own count"

    clock.now += 69
    with pytest.raises(RateLimited) as still:
        limiter.hit("198.51.100.7")
    assert still.value.retry_after == 1
    clock.now += 1
    assert limiter.hit("198.51.100.7") is not None, "refused hits were not counted: Retry-After was honest"


def test_two_instances_share_one_count(make_backend, clock):
    first, second = Limiter("t", 4, 60, make_backend()), Limiter("t", 4, 60, make_backend())
    for limiter in (first, second, first, second):
        limiter.hit("client-a")
    for limiter in (first, second):
        with pytest.raises(RateLimited):
            limiter.hit("client-a")
        with pytest.raises(RateLimited):
            limiter.check("client-a")


def test_check_counts_nothing_and_record_counts_regardless(make_backend, clock):
    limiter = Limiter("t", 2, 60, make_backend())
    for _ in range(5):
        limiter.check("k")
    limiter.record("k")
    limiter.check("k")
    limiter.record("k")
    with pytest.raises(RateLimited):
        limiter.check("k")
    limiter.record("k")  # a failure that happened anyway is still counted
    with pytest.raises(RateLimited) as refused:
        limiter.check("k")
    assert refused.value.retry_after == 50 + 40  # 3 * (1 - e/60) + 1 <= 2 from 40 s into the next window


def test_a_refund_gives_the_place_back(make_backend, clock):
    limiter = Limiter("t", 1, 60, make_backend())
    ticket = limiter.hit("alice|203.0.113.9")
    with pytest.raises(RateLimited):
        limiter.hit("alice|203.0.113.9")
    limiter.refund(ticket)
    limiter.refund(ticket)  # never below zero
    assert limiter.hit("alice|203.0.113.9") is not None
    with pytest.raises(RateLimited):
        limiter.hit("alice|203.0.113.9")


def test_long_subjects_are_hashed_into_the_key(make_backend, clock):
    limiter = Limiter("t", 1, 60, make_backend())
    long_subject = "u" * 1000
    assert len(limiter.key(long_subject)) < ratelimit.MAX_KEY_LENGTH
    limiter.hit(long_subject)
    with pytest.raises(RateLimited):
        limiter.hit(long_subject)
    limiter.hit("u" * 999 + "v")


def test_concurrent_hits_never_overshoot_the_limit(make_backend):
    """Instances (separate engines or clients) and threads hitting one key at once: exactly ``limit`` get in."""
    limiters = [Limiter("t", 25, 3600, make_backend()) for _ in range(3)]
    admitted, refused = [], []
    barrier = threading.Barrier(12)

    def worker(n):
        barrier.wait()
        for _ in range(5):
            try:
                limiters[n % 3].hit("shared")
                admitted.append(n)
            except RateLimited:
                refused.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(admitted) == 25 and len(refused) == 60 - 25


def test_old_windows_are_purged_by_later_writes(make_backend, clock, monkeypatch):
    if make_backend.kind == "redis":  # Redis expires a window's key itself, two windows after it was created
        backend = make_backend()
        Limiter("t", 100, 60, backend).hit("k")
        Limiter("t", 100, 60, backend).record("j")
        for name in backend.client.scan_iter(f"{backend.prefix}:*"):
            assert 0 < backend.client.ttl(name) <= 121
        return
    from gatehouse.store import rate_counters

    monkeypatch.setattr(rate_counters, "PURGE_EVERY", 5)
    backend = make_backend()
    limiter = Limiter("t", 100, 60, backend)
    for n in range(4):
        limiter.hit(f"old-{n}")
    clock.now += 3 * 60  # two windows later, those counts weigh nothing any more
    limiter.hit("new")
    with backend.engine.connect() as connection:
        keys = connection.scalars(select(RateLimitCounter.key)).all()
        assert keys == ["t:new"]
        assert connection.scalar(select(func.count()).select_from(RateLimitCounter)) == 1


# -- failing open ------------------------------------------------------------------------------

def test_an_unreachable_database_fails_open_with_a_warning(caplog, monkeypatch):
    from tests.conftest import free_socket

    sock = free_socket()  # bound, never listening: connections are refused at once
    port = sock.getsockname()[1]
    monkeypatch.setattr(ratelimit, "_last_warning", float("-inf"))
    engine = store_db.create_store_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing")
    try:
        limiter = Limiter("t", 0, 60, StoreCounters(engine))
        with caplog.at_level(logging.WARNING, logger="gatehouse.ratelimit"):
            assert limiter.hit("k") is None  # a limit of 0 would refuse: the limiter is open
            limiter.check("k")
            limiter.record("k")
        warnings = [r for r in caplog.records if r.name == "gatehouse.ratelimit"]
        assert len(warnings) == 1, "one warning, not one per request"
        assert "failing open" in warnings[0].getMessage()
    finally:
        engine.dispose()
        sock.close()


def test_an_unreachable_redis_fails_open_quickly(caplog, monkeypatch):
    import time

    from gatehouse.authserver.redis_counters import RedisCounters
    from tests.conftest import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    monkeypatch.setattr(ratelimit, "_last_warning", float("-inf"))
    limiter = Limiter("t", 0, 60, RedisCounters(f"redis://127.0.0.1:{port}/0"))
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="gatehouse.ratelimit"):
            assert limiter.hit("k") is None
            limiter.check("k")
        assert time.monotonic() - started < 5
        assert any("failing open" in r.getMessage() for r in caplog.records if r.name == "gatehouse.ratelimit")
    finally:
        sock.close()
