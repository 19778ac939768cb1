"""The upstream token vault (UP-3): the tokens a user's upstream sign-in yielded, kept by the AS for
the tools that call the upstream API for that user, never handed to MCP clients.

- **Encrypted at rest**: one row per (user, provider); access and refresh token are a JWE
  (RFC 7516, ``dir`` + ``A256GCM``) under a key derived from the instance secret. The plaintext
  names its row (user id, provider), so a ciphertext copied to another row does not decrypt to a
  usable token. ``token_type``, ``scope`` and ``expires_at`` are kept in clear, for the pages.
- **Refreshed by the AS** (RFC 6749 section 6) when the access token has expired or expires within
  :data:`REFRESH_MARGIN`. Providers rotate refresh tokens, so two callers must never both spend
  one: the refresher takes a lease on the row with one atomic ``UPDATE ... WHERE no live lease``
  (as the token endpoint claims a refresh token, S-R4), calls the provider with no transaction
  or lock held, and writes the result only while its lease is still the row's. Other callers,
  on any instance, wait for the new token. A refresh token the provider refuses
  (``invalid_grant``: revoked, expired) is deleted and the caller told to sign in again.
- **Revoked** with the user's consent to hold them: :meth:`UpstreamVault.revoke` deletes the
  row and then, after the transaction commits, asks the provider to revoke the tokens (RFC 7009
  where it has a ``revocation_endpoint``; GitHub's own API), best effort, never failing the caller.

When the vault's tokens are revoked (the rule, applied by the connected-apps page):

1. the user removes the link to the provider → that provider's tokens;
2. the user removes an app and, after that, no app holds a live grant of the user's → all of the
   user's upstream tokens (no MCP client is left that could use them);
3. a provider refuses the refresh token → that provider's tokens.

Removing one app while others keep grants leaves the vault alone; so does a client revoking its
own tokens at ``/revoke`` (RFC 7009 by the client is not the user withdrawing consent). Signing in
through the provider again fills the vault again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import httpx2
from authlib.integrations.base_client.errors import OAuthError
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import delete, event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gatehouse.authserver import audit
from gatehouse.authserver.upstream.providers import UpstreamProviders
from gatehouse.instance_secrets import derive_key, new_token
from gatehouse.store import db as store_db
from gatehouse.store.models import UpstreamIdentity, UpstreamToken
from gatehouse.timeutil import utcnow
from gatehouse.upstream_errors import UpstreamNotLinked, UpstreamReauthorizationRequired, UpstreamUnavailable

log = logging.getLogger("gatehouse.upstream.vault")

REFRESH_MARGIN = timedelta(seconds=60)
#: how long a refresher holds the row; longer than any refresh call can take (HTTP timeout)
LEASE = timedelta(seconds=45)
POLL_INTERVAL = 0.05
_ENCRYPTION = {"alg": "dir", "enc": "A256GCM"}
_FIELDS = ("access_token", "refresh_token")


@dataclass(frozen=True)
class UpstreamAccessToken:
    """A usable upstream access token. ``expires_at`` is naive UTC (as the store keeps time)."""

    access_token: str = field(repr=False)
    expires_at: datetime | None
    scope: str
    token_type: str


@dataclass(frozen=True)
class _Snapshot:
    """What one look at the row found: a fresh token, or a refresh to make (with our lease), or a wait."""

    fresh: UpstreamAccessToken | None = None
    refresh_token: str | None = field(default=None, repr=False)
    lease: str | None = None
    lease_until: datetime | None = None


class UpstreamVault:
    def __init__(self, sessions: sessionmaker[Session], providers: UpstreamProviders, secret: bytes):
        self.sessions = sessions
        self._readers = store_db.read_only_session_factory(sessions.kw["bind"])
        self.providers = providers
        self._key = OctKey.import_key(derive_key(secret, "gatehouse upstream token vault v1"))

    # -- encryption --
    def _seal(self, user_id: int, provider: str, tokens: dict) -> str:
        plaintext = {"uid": user_id, "provider": provider, **{k: tokens[k] for k in _FIELDS if tokens.get(k)}}
        return jwe.encrypt_compact(_ENCRYPTION, json.dumps(plaintext).encode(), self._key)

    def _open(self, row: UpstreamToken) -> dict:
        """The tokens of ``row``; :class:`UpstreamReauthorizationRequired` if they cannot be read
        (another instance secret, or a ciphertext that belongs to another row)."""
        try:
            data = json.loads(jwe.decrypt_compact(row.tokens_encrypted, self._key).plaintext)
        except (JoseError, ValueError, TypeError):
            data = None
        if not isinstance(data, dict) or data.get("uid") != row.user_id or data.get("provider") != row.provider:
            raise UpstreamReauthorizationRequired(
                row.provider, f"the stored {row.provider} tokens cannot be decrypted with this server's secret; sign in through {row.provider} again"
            )
        return data

    # -- store --
    def store(self, db: Session, *, user_id: int, provider: str, token: dict) -> None:
        """Keep the upstream token response ``token`` for (user, provider), replacing what was there.

        A response without a refresh token keeps the stored one (RFC 6749 section 6: the old one
        stays valid unless a new one is issued; Google, for one, sends it only at first consent)."""
        now = utcnow()
        row = db.scalar(select(UpstreamToken).where(UpstreamToken.user_id == user_id, UpstreamToken.provider == provider))
        tokens = {k: token.get(k) for k in _FIELDS}
        if not tokens["refresh_token"] and row is not None:
            try:
                tokens["refresh_token"] = self._open(row).get("refresh_token")
            except UpstreamReauthorizationRequired:
                pass
        sealed = self._seal(user_id, provider, tokens)
        expires_at = _expiry(token, now)
        token_type = str(token.get("token_type") or "Bearer")[:32]
        scope = self._granted_scope(provider, token.get("scope"))
        if row is None:
            try:
                with db.begin_nested():
                    db.add(
                        UpstreamToken(
                            user_id=user_id, provider=provider, tokens_encrypted=sealed, token_type=token_type, scope=scope,
                            expires_at=expires_at, refresh_claim=None, refresh_claimed_until=None, created_at=now, updated_at=now,
                        )
                    )
                return
            except IntegrityError:  # the same user's sign-in in another browser stored first: replace it
                row = db.scalar(select(UpstreamToken).where(UpstreamToken.user_id == user_id, UpstreamToken.provider == provider))
        row.tokens_encrypted = sealed
        row.token_type = token_type
        row.scope = scope or row.scope
        row.expires_at = expires_at
        row.refresh_claim = None
        row.refresh_claimed_until = None
        row.updated_at = now

    def _granted_scope(self, provider: str, scope: object) -> str:
        """RFC 6749 section 5.1: a response without ``scope`` granted what was asked."""
        if isinstance(scope, list):
            return " ".join(scope)
        if scope:
            return str(scope)
        upstream = self.providers.get(provider)
        return " ".join(upstream.config.scopes or ()) if upstream else ""

    # -- use --
    async def fresh_access_token(self, user_id: int, provider: str) -> UpstreamAccessToken:
        """A live access token for (user, provider), refreshed first if needed.

        Raises :class:`UpstreamNotLinked` (never signed in there, or unlinked),
        :class:`UpstreamReauthorizationRequired` (the provider refused the refresh token, or none
        is held), :class:`UpstreamUnavailable` (the provider could not be reached, or answered 5xx)."""
        upstream = self.providers.get(provider)
        if upstream is None:
            raise UpstreamNotLinked(provider, f"no upstream provider named {provider!r} is configured on this server")
        deadline = utcnow() + LEASE + timedelta(seconds=5)
        while True:
            snapshot = await anyio.to_thread.run_sync(self._look, user_id, provider)
            if snapshot.fresh is not None:
                return snapshot.fresh
            if snapshot.lease is not None:
                return await self._refresh(user_id, provider, upstream, snapshot)
            if utcnow() > deadline:
                raise UpstreamUnavailable(provider, f"refreshing the {upstream.label} token is taking too long; try again")
            await anyio.sleep(POLL_INTERVAL)

    def _look(self, user_id: int, provider: str) -> _Snapshot:
        """A read-only look first (most calls end here); a write transaction only to take the lease."""
        with self._readers() as db:
            row = self._row(db, user_id, provider)
            tokens = self._open(row)
            now = utcnow()
            if row.expires_at is None or row.expires_at > now + REFRESH_MARGIN:
                return _Snapshot(fresh=UpstreamAccessToken(tokens["access_token"], row.expires_at, row.scope, row.token_type))
            if not tokens.get("refresh_token"):
                raise UpstreamReauthorizationRequired(
                    provider, f"the {provider} access token has expired and {provider} gave no refresh token; sign in through {provider} again"
                )
            if row.refresh_claimed_until is not None and row.refresh_claimed_until > now:
                return _Snapshot()  # another caller is refreshing
        return self._claim(user_id, provider)

    def _claim(self, user_id: int, provider: str) -> _Snapshot:
        """Take the refresh lease with one atomic UPDATE: at most one caller gets it (cf. S-R4)."""
        with store_db.transaction(self.sessions) as db:
            row = self._row(db, user_id, provider)
            tokens = self._open(row)
            now = utcnow()
            if row.expires_at is None or row.expires_at > now + REFRESH_MARGIN:
                return _Snapshot(fresh=UpstreamAccessToken(tokens["access_token"], row.expires_at, row.scope, row.token_type))
            lease, until = new_token(16), now + LEASE
            claimed = db.execute(
                update(UpstreamToken)
                .where(
                    UpstreamToken.id == row.id,
                    UpstreamToken.updated_at == row.updated_at,
                    (UpstreamToken.refresh_claim.is_(None)) | (UpstreamToken.refresh_claimed_until <= now),
                )
                .values(refresh_claim=lease, refresh_claimed_until=until)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1 or not tokens.get("refresh_token"):
                return _Snapshot()
            return _Snapshot(refresh_token=tokens["refresh_token"], lease=lease, lease_until=until)

    @staticmethod
    def _row(db: Session, user_id: int, provider: str) -> UpstreamToken:
        row = db.scalar(select(UpstreamToken).where(UpstreamToken.user_id == user_id, UpstreamToken.provider == provider))
        if row is not None:
            return row
        linked = db.scalar(select(UpstreamIdentity.id).where(UpstreamIdentity.user_id == user_id, UpstreamIdentity.provider == provider))
        if linked is None:
            raise UpstreamNotLinked(provider, f"the user has not signed in through {provider}; sign in through {provider} first")
        raise UpstreamReauthorizationRequired(provider, f"Gatehouse holds no {provider} token for the user; sign in through {provider} again")

    async def _refresh(self, user_id: int, provider: str, upstream, snapshot: _Snapshot) -> UpstreamAccessToken:
        try:
            token = await upstream.refresh(snapshot.refresh_token)
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "unauthorized_client", "invalid_client"):
                await anyio.to_thread.run_sync(self._drop_refused, user_id, provider, snapshot.lease, exc.error)
                raise UpstreamReauthorizationRequired(
                    provider, f"{upstream.label} refused to refresh the user's token ({exc.error}); sign in through {upstream.label} again"
                ) from None
            await anyio.to_thread.run_sync(self._release, user_id, provider, snapshot.lease)
            raise UpstreamUnavailable(provider, f"{upstream.label} refused to refresh the token ({exc.error}); try again later") from None
        except (httpx2.HTTPError, ValueError, RuntimeError) as exc:
            await anyio.to_thread.run_sync(self._release, user_id, provider, snapshot.lease)
            log.warning("upstream %s refresh failed: %s", provider, type(exc).__name__)
            raise UpstreamUnavailable(provider, f"{upstream.label} could not be reached to refresh the token ({_what(exc)}); try again later") from None
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            await anyio.to_thread.run_sync(self._release, user_id, provider, snapshot.lease)
            raise UpstreamUnavailable(provider, f"{upstream.label}'s refresh answer has no access token; try again later")
        return await anyio.to_thread.run_sync(self._save_refreshed, user_id, provider, snapshot, token)

    def _save_refreshed(self, user_id: int, provider: str, snapshot: _Snapshot, token: dict) -> UpstreamAccessToken:
        now = utcnow()
        tokens = {"access_token": token["access_token"], "refresh_token": token.get("refresh_token") or snapshot.refresh_token}
        expires_at = _expiry(token, now)
        with store_db.transaction(self.sessions) as db:
            row = db.scalar(select(UpstreamToken).where(UpstreamToken.user_id == user_id, UpstreamToken.provider == provider))
            if row is None or row.refresh_claim != snapshot.lease:
                raise UpstreamUnavailable(provider, f"the {provider} link changed while its token was refreshed; try again")
            scope = token.get("scope")
            row.tokens_encrypted = self._seal(user_id, provider, tokens)
            row.expires_at = expires_at
            row.scope = (" ".join(scope) if isinstance(scope, list) else str(scope)) if scope else row.scope
            row.token_type = str(token.get("token_type") or row.token_type)[:32]
            row.refresh_claim = None
            row.refresh_claimed_until = None
            row.updated_at = now
            audit.record(db, audit.UPSTREAM_TOKEN_REFRESHED, user_id=user_id, provider=provider)
            return UpstreamAccessToken(tokens["access_token"], expires_at, row.scope, row.token_type)

    def _release(self, user_id: int, provider: str, lease: str) -> None:
        with store_db.transaction(self.sessions) as db:
            db.execute(
                update(UpstreamToken)
                .where(UpstreamToken.user_id == user_id, UpstreamToken.provider == provider, UpstreamToken.refresh_claim == lease)
                .values(refresh_claim=None, refresh_claimed_until=None)
            )

    def _drop_refused(self, user_id: int, provider: str, lease: str, error: str) -> None:
        with store_db.transaction(self.sessions) as db:
            gone = db.execute(
                delete(UpstreamToken).where(
                    UpstreamToken.user_id == user_id, UpstreamToken.provider == provider, UpstreamToken.refresh_claim == lease
                )
            )
            if gone.rowcount:
                audit.record(db, audit.UPSTREAM_TOKENS_REVOKED, user_id=user_id, provider=provider, reason=f"refresh_refused:{error}")

    def held_providers(self, db: Session, user_id: int) -> set[str]:
        """The providers whose tokens the vault holds for the user."""
        return set(db.scalars(select(UpstreamToken.provider).where(UpstreamToken.user_id == user_id)))

    # -- revoke --
    def revoke(self, db: Session, *, user_id: int, provider: str | None = None, reason: str = "revoked") -> None:
        """Delete the user's stored tokens (of ``provider``, or all); once ``db`` commits, ask each
        provider to revoke them too (best effort, in the background)."""
        query = select(UpstreamToken).where(UpstreamToken.user_id == user_id)
        if provider is not None:
            query = query.where(UpstreamToken.provider == provider)
        rows = list(db.scalars(query))
        revocations = []
        for row in rows:
            try:
                revocations.append((row.provider, self._open(row)))
            except UpstreamReauthorizationRequired:
                pass
            db.delete(row)
            audit.record(db, audit.UPSTREAM_TOKENS_REVOKED, user_id=user_id, provider=row.provider, reason=reason)
        if revocations:
            event.listen(db, "after_commit", lambda _session: self._revoke_at_providers(revocations), once=True)

    def _revoke_at_providers(self, revocations: list[tuple[str, dict]]) -> None:
        def run():
            for name, tokens in revocations:
                upstream = self.providers.get(name)
                if upstream is None:
                    continue
                try:
                    asyncio.run(upstream.revoke(tokens))
                except Exception as exc:  # noqa: BLE001 - best effort: the tokens are gone from here already
                    log.info("upstream %s did not confirm the revocation: %s", name, type(exc).__name__)

        threading.Thread(target=run, name="gatehouse-upstream-revoke", daemon=True).start()


def _expiry(token: dict, now: datetime) -> datetime | None:
    """``expires_at`` of a token response (RFC 6749 section 5.1 ``expires_in``), or None if unknown."""
    expires_in = token.get("expires_in")
    try:
        seconds = int(expires_in)
    except (TypeError, ValueError):
        expires_at = token.get("expires_at")
        return datetime.fromtimestamp(int(expires_at), UTC).replace(tzinfo=None) if isinstance(expires_at, int | float) else None
    return now + timedelta(seconds=max(seconds, 0))


def _what(exc: Exception) -> str:
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
