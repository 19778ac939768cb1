"""Grants and the tokens issued from them.

Access tokens are RFC 9068 JWTs (``typ: at+jwt``, ES256, ``kid``) whose ``aud`` is the one
resource they were issued for (RFC 8707); a DPoP-bound one carries ``cnf.jkt`` and is issued
as ``token_type: DPoP`` (RFC 9449 section 6.1). Refresh tokens are opaque 256-bit values stored
as hashes (AS-20) that rotate on every use (AS-13, RFC 9700 section 4.14.2).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from gatehouse.authserver import audit
from gatehouse.authserver.keys import ALGORITHM, KeyRing
from gatehouse.authserver.resources import Resource
from gatehouse.instance_secrets import new_token, token_hash
from gatehouse.store.models import AccessToken, Grant, RefreshToken, Revocation, User
from gatehouse.timeutil import epoch, utcnow

# Statements of the token endpoint's hot path, built once (bench/authserver.py: building and
# hashing a statement per call cost more than running it on SQLite).
_INSERT_ACCESS_TOKEN = insert(AccessToken.__table__)
_INSERT_REFRESH_TOKEN = insert(RefreshToken.__table__)
_CLAIM_REFRESH_TOKEN = (
    update(RefreshToken.__table__)
    .where(RefreshToken.__table__.c.id == bindparam("row_id"), RefreshToken.__table__.c.rotated_at.is_(None))
    .values(rotated_at=bindparam("now"))
)
_SELECT_ACTIVE_USER = select(User.__table__.c.id, User.__table__.c.username).where(
    User.__table__.c.id == bindparam("user_id"), User.__table__.c.disabled.is_(False)
)


def new_grant(
    session: Session, *, client_id: str, user_id: int | None, grant_type: str, scope: str, resource: str,
    dpop_jkt: str | None = None,
) -> Grant:
    """A token family; ``dpop_jkt`` binds its refresh tokens to that DPoP key (RFC 9449 section 5)."""
    grant = Grant(
        id=str(uuid.uuid4()),
        user_id=user_id,
        client_id=client_id,
        grant_type=grant_type,
        scope=scope,
        resource=resource,
        created_at=utcnow(),
        dpop_jkt=dpop_jkt,
    )
    session.add(grant)
    return grant


def revoke_grant(session: Session, grant_id: str, reason: str, **audit_details) -> None:
    """Revoke a token family: the grant, every refresh token and every live access token of it."""
    now = utcnow()
    result = session.execute(
        update(Grant).where(Grant.id == grant_id, Grant.revoked_at.is_(None)).values(revoked_at=now, revoked_reason=reason)
    )
    live = session.execute(
        select(AccessToken.jti, AccessToken.expires_at).where(AccessToken.grant_id == grant_id, AccessToken.expires_at > now)
    ).all()
    known = set(session.scalars(select(Revocation.jti).where(Revocation.jti.in_([jti for jti, _ in live])))) if live else set()
    for jti, expires_at in live:
        if jti not in known:
            session.add(Revocation(jti=jti, expires_at=expires_at, revoked_at=now, reason=reason))
    if result.rowcount:
        grant = session.get(Grant, grant_id)
        audit.record(
            session,
            audit.GRANT_REVOKED,
            client_id=grant.client_id if grant else None,
            user_id=grant.user_id if grant else None,
            grant_id=grant_id,
            reason=reason,
            **audit_details,
        )


def revoke_grants_of(session: Session, user_id: int, client_id: str, reason: str) -> int:
    ids = session.scalars(
        select(Grant.id).where(Grant.user_id == user_id, Grant.client_id == client_id, Grant.revoked_at.is_(None))
    ).all()
    for grant_id in ids:
        revoke_grant(session, grant_id, reason)
    return len(ids)


@dataclass(frozen=True)
class VerifiedAccessToken:
    claims: dict
    record: AccessToken | None
    revoked: bool


class TokenIssuer:
    def __init__(self, issuer: str, keyring: KeyRing, refresh_token_ttl: int):
        self.issuer = issuer
        self.keyring = keyring
        self.refresh_token_ttl = refresh_token_ttl

    def issue(
        self,
        session: Session,
        grant_id: str,
        *,
        client_id: str,
        subject: str,
        scope: str,
        resource: Resource,
        include_refresh_token: bool,
        refresh_scope: str | None = None,
        jkt: str | None = None,
        replaces: int | None = None,
    ) -> dict:
        """Mint an access token (and a refresh token) for grant ``grant_id``; rows join the session's transaction.

        ``refresh_scope``: the new refresh token's scope when it differs from the access token's
        (on refresh it stays that of the presented refresh token, RFC 6749 section 6).
        ``jkt``: the thumbprint of the DPoP key the access token is bound to (RFC 9449 section 6.1).
        ``replaces``: the refresh token this rotation retires (gatehouse.authserver.refresh_delivery)."""
        now = utcnow()
        ttl = resource.access_token_ttl
        jti = new_token(16)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": resource.uri,
            "client_id": client_id,
            "scope": scope,
            "iat": epoch(now),
            "exp": epoch(now) + ttl,
            "jti": jti,
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        key = self.keyring.signing_key()
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}
        access_token = jwt.encode(header, claims, key.private, algorithms=[ALGORITHM])
        # Core inserts: the token endpoint is the AS's hot path, and the ORM unit of work
        # costs more than the SQL itself here (bench/authserver.py, refresh grant)
        connection = session.connection()
        connection.execute(
            _INSERT_ACCESS_TOKEN,
            {"jti": jti, "grant_id": grant_id, "client_id": client_id, "expires_at": now + timedelta(seconds=ttl)},
        )
        token_type = "Bearer" if jkt is None else "DPoP"
        token = {"access_token": access_token, "token_type": token_type, "expires_in": ttl, "scope": scope}
        if include_refresh_token:
            refresh = new_token()
            connection.execute(
                _INSERT_REFRESH_TOKEN,
                {
                    "token_hash": token_hash(refresh),
                    "grant_id": grant_id,
                    "client_id": client_id,
                    "scope": refresh_scope or scope,
                    "created_at": now,
                    "expires_at": now + timedelta(seconds=self.refresh_token_ttl),
                    "replaces_id": replaces,
                },
            )
            token["refresh_token"] = refresh
        return token

    def verify_access_token(self, session: Session, token: str, leeway: int = 0) -> VerifiedAccessToken | None:
        """Check one of our own access tokens (for introspection and revocation): signature,
        ``typ``, issuer, expiry, and whether it or its grant was revoked."""
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, UnicodeError):
            return None
        if header.get("typ") != "at+jwt" or header.get("alg") != ALGORITHM:
            return None
        key = self.keyring.public_key(str(header.get("kid")))
        if key is None:
            return None
        try:
            decoded = jwt.decode(token, key, algorithms=[ALGORITHM])
            jwt.JWTClaimsRegistry(leeway=leeway, iss={"essential": True, "value": self.issuer}, exp={"essential": True}).validate(
                decoded.claims
            )
        except (JoseError, ValueError):
            return None
        jti = decoded.claims.get("jti")
        record = session.get(AccessToken, jti) if isinstance(jti, str) else None
        revoked = record is None or session.get(Revocation, jti) is not None
        if record is not None and not revoked:
            grant = session.get(Grant, record.grant_id)
            revoked = grant is None or grant.revoked_at is not None
        return VerifiedAccessToken(decoded.claims, record, revoked)


def subject_for(user, client_id: str) -> str:
    """``sub`` of a token: the user's name, or the client itself for client credentials."""
    return user.username if user is not None else client_id


def user_of(session: Session, user_id: int | None):
    """The active user ``user_id`` (id and username), or None."""
    if user_id is None:
        return None
    return session.connection().execute(_SELECT_ACTIVE_USER, {"user_id": user_id}).first()


def claim_refresh_token(session: Session, row_id: int) -> bool:
    """Mark a refresh token used, atomically: True for exactly one of any concurrent callers (S-R4)."""
    result = session.connection().execute(_CLAIM_REFRESH_TOKEN, {"row_id": row_id, "now": utcnow()})
    return result.rowcount == 1

