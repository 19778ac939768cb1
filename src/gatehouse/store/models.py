"""SQLAlchemy models: the one place the schema is described.

Times are naive UTC (`gatehouse.timeutil.utcnow`), the same on SQLite and PostgreSQL.

Codes, refresh tokens, client secrets and registration access tokens are stored only as
SHA-256 hashes (AS-20); a database leak yields nothing that can be replayed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: DateTime(),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class Client(Base):
    """A pre-registered (static) or dynamically registered (RFC 7591) client.

    CIMD clients are not stored here: their metadata document is the source of truth.
    ``resource_server_for``, set only by an administrator, makes the client a resource server
    that may introspect the access tokens issued for that resource URI (RFC 7662).
    """

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    client_secret_expires_at: Mapped[datetime | None]
    registration_token_hash: Mapped[str | None] = mapped_column(String(64))
    client_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    resource_server_for: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Consent(Base):
    """What a user approved for a client (AS-16), remembered per (user, client)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(255))
    client_name: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list[str]]
    resources: Mapped[list[str]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AuthorizationCode(Base):
    __tablename__ = "authorization_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    redirect_uri_sent: Mapped[bool] = mapped_column(Boolean)
    scope: Mapped[str] = mapped_column(Text)
    resource: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(16))
    auth_time: Mapped[datetime]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    redeemed_at: Mapped[datetime | None]
    grant_id: Mapped[str | None] = mapped_column(String(36))
    #: RFC 9449 section 10: the DPoP key the code may be redeemed with (``dpop_jkt``)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))


class Grant(Base):
    """A token family: everything issued from one authorization (or one client-credentials call)."""

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(255), index=True)
    grant_type: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    resource: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    #: RFC 9449 section 5: the thumbprint of the DPoP key the family's refresh tokens are bound to
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_grants_user_client", "user_id", "client_id"),)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    # the token whose rotation issued this one; when the answer carrying it was sent
    # (gatehouse.authserver.refresh_delivery)
    replaces_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    delivered_at: Mapped[datetime | None]


class AccessToken(Base):
    """The record of an issued JWT access token, by ``jti``: ties it to its grant."""

    __tablename__ = "access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Revocation(Base):
    """An access token revoked before its expiry (RFC 7009), kept until it would have expired."""

    __tablename__ = "revocations"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(64))


class ClientAssertionUse(Base):
    """``jti`` values of RFC 7523 assertions already used (section 3, item 7): client assertions
    keyed by their client, authorization grant assertions (jwt-bearer grant) by their issuer."""

    __tablename__ = "client_assertion_jtis"

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class DPoPProofUse(Base):
    """``jti`` values of DPoP proofs the token endpoint accepted, per key (RFC 9449 section 11.1),
    kept until the proof's ``iat`` is too old for it to pass again."""

    __tablename__ = "dpop_proof_jtis"

    jkt: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SigningKey(Base):
    """An ES256 key. Published from ``created_at``; signs from ``active_from``; retired once
    every token it signed has expired."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]]
    private_jwk_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    active_from: Mapped[datetime]
    superseded_at: Mapped[datetime | None]
    retire_after: Mapped[datetime | None]


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[int | None]
    grant_id: Mapped[str | None] = mapped_column(String(36))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]


class Note(Base):
    """A note of the demo MCP server (``gatehouse serve`` at /mcp), owned by a token subject."""

    __tablename__ = "demo_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class UpstreamIdentity(Base):
    """A local user's account at an upstream provider, keyed by (issuer, subject), never by email
    (UP-1): two upstream accounts with one email are two users."""

    __tablename__ = "upstream_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime]


class UpstreamToken(Base):
    """The upstream token vault (UP-3): one row per (user, provider), its access and refresh token
    encrypted with a key derived from the instance secret (JWE ``dir``/``A256GCM``).

    ``refresh_claim`` and ``refresh_claimed_until``: the lease of the one caller refreshing the
    tokens, so a rotating refresh token is spent once even across instances."""

    __tablename__ = "upstream_tokens"
    __table_args__ = (UniqueConstraint("user_id", "provider"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(64))
    tokens_encrypted: Mapped[str] = mapped_column(Text)
    token_type: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    refresh_claim: Mapped[str | None] = mapped_column(String(32))
    refresh_claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class UpstreamLoginState(Base):
    """A pending upstream sign-in (its own ``state``, PKCE and ``nonce``, UP-1), kept in the store
    so any instance can finish it; single use, bound to the browser that started it (S-U2)."""

    __tablename__ = "upstream_login_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    browser_hash: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(128))
    next_url: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(255))
    consented: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class RateLimitCounter(Base):
    """Events counted for one rate-limit key in one fixed window (``window_start``, epoch seconds),
    shared by every instance on the database; rows are deleted once ``expires_at`` has passed."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
