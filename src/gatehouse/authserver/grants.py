"""The grant types, as Authlib grant classes with Gatehouse's storage and rules.

- authorization_code (RFC 6749 section 4.1) with PKCE S256 required (RFC 7636, AS-4), the
  ``resource`` indicator (RFC 8707, AS-10) and single, atomic redemption (AS-11);
- refresh_token (RFC 6749 section 6) with rotation and reuse detection (RFC 9700 section
  4.14.2, AS-13);
- client_credentials (RFC 6749 section 4.4, AS-17).

Every grant binds its access token to the request's DPoP key when the request carries a proof
(RFC 9449 section 5); refresh tokens of public clients are bound to it too, and a refresh must
then prove possession of the same key. An authorization request's ``dpop_jkt`` binds the code
to a key (section 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from sqlalchemy import bindparam, select, update

from gatehouse.authserver import audit, refresh_delivery
from gatehouse.authserver.dpop import require_proof_if_registered
from gatehouse.authserver.resources import TargetError
from gatehouse.authserver.tokens import (
    claim_refresh_token,
    new_grant,
    revoke_grant,
    subject_for,
    user_of,
)
from gatehouse.instance_secrets import token_hash
from gatehouse.store.models import AuthorizationCode, Grant, RefreshToken
from gatehouse.timeutil import utcnow

CLIENT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")


class RequireS256(CodeChallenge):
    """PKCE with S256 only, required for every authorization request (AS-4, S-A2)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("'code_challenge' is required: use PKCE with S256 (RFC 7636)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be 'S256'; 'plain' and a missing method are refused")
        super().validate_code_challenge(grant, redirect_uri)


def _requested_resources(request) -> list[str]:
    return list(request.payload.datalist.get("resource", []))


class _GatehouseGrant:
    """What every grant shares: the per-request store session and the token issuer."""

    @property
    def ctx(self):
        return self.server.ctx

    @property
    def db(self):
        return self.request.db

    @property
    def dpop_jkt(self) -> str | None:
        proof = self.request.dpop
        return proof.jkt if proof is not None else None

    def refresh_binding(self) -> str | None:
        """The key a new family's refresh tokens are bound to: the proof's, for a public client (RFC 9449 section 5)."""
        return self.dpop_jkt if self.request.client.is_public else None

    def _issue(self, grant_row, user, scope, resource, include_refresh_token, refresh_scope=None, replaces=None):
        client = self.request.client
        require_proof_if_registered(client, self.request.dpop)
        return self.ctx.tokens.issue(
            self.db,
            grant_row.id,
            client_id=client.client_id,
            subject=subject_for(user, client.client_id),
            scope=scope,
            resource=resource,
            include_refresh_token=include_refresh_token,
            refresh_scope=refresh_scope,
            jkt=self.dpop_jkt,
            replaces=replaces,
        )


class AuthorizationCodeGrant(_GatehouseGrant, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def __init__(self, request, server):
        super().__init__(request, server)
        self.register_hook("after_validate_authorization_request_payload", _resolve_resource_and_scope)

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        """Authlib's check (RFC 6749 section 3.1.2.3), without the requested URI in the error
        description: it may hold characters section 5.2 forbids there, a server error in Authlib."""
        requested = request.payload.redirect_uri
        if requested and not client.check_redirect_uri(requested):
            raise InvalidRequestError("the redirect URI is not registered for this client")
        return grants.AuthorizationCodeGrant.validate_authorization_redirect_uri(request, client)

    def save_authorization_code(self, code, request):
        now = utcnow()
        self.db.add(
            AuthorizationCode(
                code_hash=token_hash(code),
                client_id=request.client.client_id,
                user_id=request.user.id,
                redirect_uri=request.payload.redirect_uri or request.client.get_default_redirect_uri(),
                redirect_uri_sent=bool(request.payload.redirect_uri),
                scope=request.scope,
                resource=request.gatehouse_resource.uri,
                code_challenge=request.payload.data["code_challenge"],
                code_challenge_method="S256",
                auth_time=request.auth_time,
                dpop_jkt=request.payload.data.get("dpop_jkt"),
                created_at=now,
                expires_at=now + timedelta(seconds=self.ctx.settings.authorization_code_ttl),
            )
        )

    def query_authorization_code(self, code, client):
        row = self.db.scalar(select(AuthorizationCode).where(AuthorizationCode.code_hash == token_hash(code)))
        if row is None or row.client_id != client.client_id:
            raise InvalidGrantError("the authorization code is unknown or was issued to another client")
        if row.expires_at <= utcnow():
            raise InvalidGrantError("the authorization code has expired; start the authorization again")
        return _CodeView(row)

    def validate_token_request(self):
        super().validate_token_request()
        code = self.request.authorization_code
        if not code.redirect_uri_sent and self.request.payload.redirect_uri not in (None, code.redirect_uri):
            raise InvalidGrantError("'redirect_uri' differs from the authorization request")
        requested = _requested_resources(self.request)
        if requested and requested != [code.resource]:
            raise TargetError(f"the code was granted for {code.resource}, not {requested[0]}")
        if code.dpop_jkt is not None and self.dpop_jkt != code.dpop_jkt:
            raise InvalidGrantError("the code is bound to a DPoP key (dpop_jkt, RFC 9449 section 10): send a DPoP proof of that key")
        if code.redeemed_at is not None:
            # RFC 6749 section 4.1.2: a replayed code revokes what it issued. Reached only by
            # the client the code belongs to, after its PKCE verifier was checked.
            _on_error_revoke_code_grant(self.request, code.id)
            raise InvalidGrantError("the authorization code was already used; the tokens issued for it are revoked")

    def authenticate_user(self, authorization_code):
        return user_of(self.db, authorization_code.user_id)

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        code = self.request.authorization_code
        resource = self.ctx.resources.resolve([code.resource])
        grant_row = new_grant(
            self.db, client_id=code.client_id, user_id=code.user_id, grant_type=self.GRANT_TYPE, scope=code.scope,
            resource=code.resource, dpop_jkt=self.refresh_binding(),
        )
        self.db.flush()
        self.request.gatehouse_grant = grant_row
        return self._issue(grant_row, user, code.scope, resource, include_refresh_token)

    def delete_authorization_code(self, authorization_code):
        grant_id = self.request.gatehouse_grant.id
        redeemed = self.db.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == authorization_code.id, AuthorizationCode.redeemed_at.is_(None))
            .values(redeemed_at=utcnow(), grant_id=grant_id)
        ).rowcount
        if redeemed != 1:
            _on_error_revoke_code_grant(self.request, authorization_code.id)
            raise InvalidGrantError("the authorization code was already used")
        audit.record(
            self.db,
            audit.TOKEN_ISSUED,
            client_id=authorization_code.client_id,
            user_id=authorization_code.user_id,
            grant_id=grant_id,
            grant_type=self.GRANT_TYPE,
            resource=authorization_code.resource,
            scope=authorization_code.scope,
        )


def _resolve_resource_and_scope(grant, redirect_uri):
    """Authorization request: the ``resource`` (AS-10), the scopes granted for it, a well-formed ``dpop_jkt``."""
    request = grant.request
    dpop_jkt = request.payload.data.get("dpop_jkt")
    if dpop_jkt is not None and not _THUMBPRINT.fullmatch(dpop_jkt):
        raise InvalidRequestError("'dpop_jkt' must be the base64url SHA-256 JWK thumbprint of the DPoP key (RFC 9449 section 10)")
    registry = grant.server.ctx.resources
    resource = registry.resolve(_requested_resources(request))
    request.gatehouse_resource = resource
    request.scope = " ".join(registry.granted_scopes(resource, request.payload.scope))


def _on_error_revoke_code_grant(request, code_id: int) -> None:
    def revoke(session):
        grant_id = session.scalar(select(AuthorizationCode.grant_id).where(AuthorizationCode.id == code_id))
        audit.record(session, audit.CODE_REPLAY, client_id=request.client.client_id, grant_id=grant_id)
        if grant_id:
            revoke_grant(session, grant_id, "authorization_code_replay")

    request.error_effects.append(revoke)


class _CodeView:
    """The AuthorizationCodeMixin face of a stored code for Authlib."""

    def __init__(self, row: AuthorizationCode):
        self.row = row

    def __getattr__(self, name):
        return getattr(self.row, name)

    def get_redirect_uri(self):
        return self.row.redirect_uri if self.row.redirect_uri_sent else None

    def get_scope(self):
        return self.row.scope


class RefreshTokenGrant(_GatehouseGrant, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        row = self.db.connection().execute(_SELECT_REFRESH_TOKEN, {"token_hash": token_hash(refresh_token)}).first()
        if row is None or row.client_id != self.request.client.client_id:
            raise InvalidGrantError("the refresh token is unknown or was issued to another client")
        if row.revoked_at is not None:
            raise InvalidGrantError("the grant behind this refresh token was revoked; authorize again")
        lost_successor = self._judge_rotated(row) if row.rotated_at is not None else None
        if row.expires_at <= utcnow():
            raise InvalidGrantError("the refresh token has expired; authorize again")
        requested = _requested_resources(self.request)
        if requested and requested != [row.resource]:
            raise TargetError(f"the grant is for {row.resource}, not {requested[0]}")
        if row.dpop_jkt is not None and self.dpop_jkt != row.dpop_jkt:
            raise InvalidGrantError(
                "the refresh token is bound to a DPoP key (RFC 9449 section 5): send a DPoP proof signed with that key"
            )
        self.request.gatehouse_grant = _GrantOfToken(row.grant_id, row.user_id, row.resource)
        return _RefreshTokenView(row, lost_successor)

    def _judge_rotated(self, row) -> int:
        """A rotated-out token presented again (gatehouse.authserver.refresh_delivery): reuse
        revokes the grant (S-R1); a rotation whose answer is in flight is waited for; the
        successor of an answer that was lost is returned, to be voided."""
        timeout = self.ctx.settings.refresh_delivery_timeout
        successor = refresh_delivery.successor_of(self.db.connection(), row.id)
        verdict = refresh_delivery.judge(successor, timeout)
        if verdict is refresh_delivery.Verdict.PENDING and not self._last_attempt():
            raise refresh_delivery.RotationInFlight(successor.id, successor.deadline(timeout))
        if verdict is not refresh_delivery.Verdict.LOST:
            raise self._reuse_detected(row.grant_id)
        return successor.id

    def _last_attempt(self) -> bool:
        return self.request.prepared.attempt >= refresh_delivery.MAX_ATTEMPTS

    def authenticate_user(self, refresh_token):
        grant_row = self.request.gatehouse_grant
        if grant_row.user_id is None:
            return _ClientAsUser()
        return user_of(self.db, grant_row.user_id)

    def issue_token(self, user, refresh_token):
        grant_row = self.request.gatehouse_grant
        scope = self.request.payload.scope or refresh_token.get_scope()
        scope = " ".join(dict.fromkeys(scope.split()))
        resource = self.ctx.resources.resolve([grant_row.resource])
        # a narrower scope applies to this access token only; the new refresh token keeps the
        # presented one's scope (RFC 6749 section 6, OAuth 2.1 section 4.3)
        return self._issue(
            grant_row, None if isinstance(user, _ClientAsUser) else user, scope, resource, True, refresh_token.get_scope(),
            replaces=refresh_token.row.id,
        )

    def revoke_old_credential(self, refresh_token):
        """Rotate: retire the presented token (S-R4: one winner), or the successor whose answer was lost."""
        lost = refresh_token.lost_successor
        if lost is not None:
            claimed = refresh_delivery.void_lost_successor(self.db, lost)
        else:
            claimed = claim_refresh_token(self.db, refresh_token.row.id)
        if not claimed and not self._last_attempt():
            raise refresh_delivery.RotationInFlight()  # judged again, in a new transaction, once settled
        if not claimed:
            raise self._reuse_detected(refresh_token.row.grant_id)
        if lost is not None:
            audit.record(
                self.db, audit.REFRESH_ANSWER_LOST, client_id=refresh_token.row.client_id, grant_id=refresh_token.row.grant_id
            )
        audit.record(
            self.db,
            audit.TOKEN_REFRESHED,
            client_id=refresh_token.row.client_id,
            grant_id=refresh_token.row.grant_id,
        )

    def _reuse_detected(self, grant_id: str) -> InvalidGrantError:
        """S-R1 (RFC 9700 section 4.14.2): the error, with the grant's revocation queued."""
        client_id = self.request.client.client_id

        def revoke(session):
            audit.record(session, audit.REFRESH_REUSE, client_id=client_id, grant_id=grant_id)
            revoke_grant(session, grant_id, "refresh_token_reuse")

        self.request.error_effects.append(revoke)
        return InvalidGrantError("the refresh token was already used; the whole grant is revoked (reuse detection)")


_tokens, _grants = RefreshToken.__table__, Grant.__table__
_SELECT_REFRESH_TOKEN = (
    select(
        _tokens.c.id, _tokens.c.client_id, _tokens.c.scope, _tokens.c.expires_at, _tokens.c.rotated_at,
        _grants.c.id.label("grant_id"), _grants.c.user_id, _grants.c.resource, _grants.c.revoked_at, _grants.c.dpop_jkt,
    )
    .join(_grants, _grants.c.id == _tokens.c.grant_id)
    .where(_tokens.c.token_hash == bindparam("token_hash"))
)


@dataclass(frozen=True)
class _GrantOfToken:
    id: str
    user_id: int | None
    resource: str


class _RefreshTokenView:
    """The TokenMixin face of a refresh-token row for Authlib."""

    def __init__(self, row, lost_successor: int | None = None):
        self.row = row
        self.lost_successor = lost_successor

    def check_client(self, client):
        return client.client_id == self.row.client_id

    def get_scope(self):
        return self.row.scope


class _ClientAsUser:
    """Stands in for the user of a client-credentials grant, which has none."""


class ClientCredentialsGrant(_GatehouseGrant, grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        registry = self.ctx.resources
        client = self.request.client
        resource = registry.resolve(_requested_resources(self.request))
        scopes = registry.granted_scopes(resource, self.request.payload.scope)
        allowed = (client.metadata.get("scope") or "").split()
        if allowed:
            if self.request.payload.scope is None:
                scopes = [s for s in scopes if s in allowed]
            elif not set(scopes) <= set(allowed):
                raise InvalidScopeError(f"this client may request only: {' '.join(allowed)}")
        scope = " ".join(scopes)
        grant_row = new_grant(
            self.db, client_id=client.client_id, user_id=None, grant_type=self.GRANT_TYPE, scope=scope, resource=resource.uri
        )
        self.db.flush()
        audit.record(self.db, audit.TOKEN_ISSUED, client_id=client.client_id, grant_id=grant_row.id, grant_type=self.GRANT_TYPE)
        return self._issue(grant_row, None, scope, resource, False)
