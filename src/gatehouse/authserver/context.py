"""Everything the authorization server's handlers share, built once per app."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gatehouse.authserver.cimd import ClientMetadataResolver
from gatehouse.authserver.dpop import TokenEndpointDPoP
from gatehouse.authserver.keys import KeyRing, ensure_signing_key
from gatehouse.authserver.login_throttle import LoginThrottle
from gatehouse.authserver.process_counters import ProcessCounters
from gatehouse.authserver.refresh_delivery import DeliveryLedger
from gatehouse.authserver.ratelimit import CounterBackend, Limiter, Unlimited
from gatehouse.authserver.resources import ResourceRegistry
from gatehouse.authserver.tokens import TokenIssuer
from gatehouse.authserver.trusted_idps import TrustedIdPs
from gatehouse.authserver.upstream.providers import UpstreamProviders
from gatehouse.authserver.upstream.vault import UpstreamVault
from gatehouse.config import Settings
from gatehouse.instance_secrets import load_or_create_secret_key
from gatehouse.store import db as store_db
from gatehouse.store.first_start import first_start_lock
from gatehouse.store.rate_counters import StoreCounters

_current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar("gatehouse_db", default=None)


@dataclass
class RateLimits:
    """Every limit of the AS (settings in :class:`~gatehouse.config.Settings`), on one shared backend."""

    registration: Limiter
    token_per_client: Limiter
    token_per_address: Limiter
    failed_client_auth: Limiter
    cimd_fetches: Limiter
    login: LoginThrottle

    @classmethod
    def from_settings(cls, s: Settings, backend: CounterBackend, secret: bytes) -> RateLimits:
        return cls(
            registration=Limiter("register", s.registration_rate_per_minute, 60, backend),
            token_per_client=Limiter("token-client", s.token_rate_per_minute_per_client, 60, backend),
            token_per_address=Limiter("token-address", s.token_rate_per_minute_per_address, 60, backend),
            failed_client_auth=Limiter("client-auth-fail", s.failed_client_auth_per_minute, 60, backend),
            cimd_fetches=Limiter("cimd-host", s.cimd_fetches_per_minute_per_host, 60, backend),
            login=LoginThrottle(s, backend, secret),
        )


def counter_backend(settings: Settings, engine: Engine) -> CounterBackend:
    """Redis when ``redis_url`` is set; else the store on PostgreSQL, and this process's memory on
    SQLite (one instance: nothing to share, process_counters.py); nothing when rate limits are off."""
    if not settings.rate_limits:
        return Unlimited()
    if settings.redis_url:
        from gatehouse.authserver.redis_counters import RedisCounters  # only deployments with Redis load it

        return RedisCounters(settings.redis_url, settings.redis_key_prefix)
    if engine.dialect.name == "sqlite":
        return ProcessCounters()
    return StoreCounters(engine)


@dataclass
class AuthServerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secret: bytes
    keyring: KeyRing
    issuer: str
    resources: ResourceRegistry
    tokens: TokenIssuer = field(init=False)
    cimd: ClientMetadataResolver = field(init=False)
    limits: RateLimits = field(init=False)
    dpop: TokenEndpointDPoP = field(init=False)
    trusted_idps: TrustedIdPs = field(init=False)
    upstream: UpstreamProviders = field(init=False)
    upstream_vault: UpstreamVault = field(init=False)
    deliveries: DeliveryLedger = field(init=False)
    read_sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self):
        s = self.settings
        self.tokens = TokenIssuer(self.issuer, self.keyring, s.refresh_token_ttl)
        self.limits = RateLimits.from_settings(s, counter_backend(s, self.engine), self.secret)
        self.cimd = ClientMetadataResolver(
            timeout=s.cimd_fetch_timeout, max_bytes=s.cimd_max_bytes, allow_insecure_loopback=s.cimd_allow_insecure_loopback,
            fetch_limit=self.limits.cimd_fetches,
        )
        self.dpop = TokenEndpointDPoP(f"{self.issuer}/token", s, self.secret)
        self.trusted_idps = TrustedIdPs(s.trusted_idps, timeout=s.cimd_fetch_timeout)
        self.upstream = UpstreamProviders(s.upstream, leeway=s.clock_leeway)
        self.upstream_vault = UpstreamVault(self.sessions, self.upstream, self.secret)
        self.deliveries = DeliveryLedger(self.sessions)
        self.read_sessions = store_db.read_only_session_factory(self.engine)

    @property
    def max_token_ttl(self) -> timedelta:
        return timedelta(seconds=self.resources.max_token_ttl)

    def current_session(self) -> Session:
        session = _current_session.get()
        if session is None:
            raise RuntimeError("no store session is open for this request")
        return session

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A transaction bound to this thread's context, so Authlib hooks can reach it."""
        with store_db.transaction(self.sessions) as session:
            token = _current_session.set(session)
            try:
                yield session
            finally:
                _current_session.reset(token)

    def run_with_effects(self, work: Callable[[Session], object], effects_of: Callable[[object], list]) -> object:
        """Run ``work`` in a transaction; if its answer is an error, roll back and write
        the side effects the error queued (revocations, audit events) on their own."""
        with store_db.writer_lock(self.engine):
            return self._run_with_effects(work, effects_of)

    def _run_with_effects(self, work, effects_of):
        session = self.sessions()
        token = _current_session.set(session)
        try:
            session.begin()
            try:
                result = work(session)
                effects = effects_of(result)
            except BaseException:
                session.rollback()
                raise
            if not effects:
                session.commit()
                return result
            session.rollback()
            with session.begin():
                for effect in effects:
                    effect(session)
            return result
        finally:
            _current_session.reset(token)
            session.close()


def build_context(settings: Settings, *, migrate: bool = True) -> AuthServerContext:
    """Open the store (migrating it), load or create the instance secret and signing key."""
    engine = store_db.create_store_engine(settings.effective_database_url)
    sessions = store_db.session_factory(engine)
    with first_start_lock(engine, settings.data_dir, secret_in_data_dir=not settings.secret_key):
        if migrate:
            store_db.upgrade(engine)
        secret = load_or_create_secret_key(settings.secret_key, settings.data_dir)
        with store_db.transaction(sessions) as session:
            ensure_signing_key(session, secret)
    keyring = KeyRing(store_db.read_only_session_factory(engine), secret)
    keyring.reload()
    resources = ResourceRegistry(settings.effective_resources(), settings.access_token_ttl)
    return AuthServerContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        secret=secret,
        keyring=keyring,
        issuer=settings.public_issuer,
        resources=resources,
    )
