"""Authlib's authorization server, adapted to Starlette requests and Gatehouse's store.

Authlib is synchronous: handlers read the request body asynchronously, then run the
Authlib call in Starlette's thread pool with one store transaction per request. Side
effects that must survive an error answer (a grant revoked on reuse, an audit event for a
failed client authentication) are queued on ``request.error_effects`` and written in a
transaction of their own after the failed one is rolled back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import AuthorizationServer
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    OAuth2Error,
    UnsupportedResponseTypeError,
)
from authlib.oauth2.rfc6749.requests import (
    JsonPayload,
    JsonRequest,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7592 import ClientConfigurationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gatehouse.authserver import audit
from gatehouse.authserver.cimd import ClientMetadataDocumentError
from gatehouse.authserver.clients import (
    KIND_DYNAMIC,
    GatehouseClientMetadataClaims,
    OAuthClient,
    load_stored_client,
    store_client,
)
from gatehouse.authserver.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
    RequireS256,
)
from gatehouse.authserver.jwt_bearer import IdentityAssertionGrant, WorkloadIdentityGrant
from gatehouse.authserver.ratelimit import RateLimited, TooManyRequests
from gatehouse.authserver.resources import describable
from gatehouse.authserver.token_exchange import TokenExchangeGrant
from gatehouse.authserver.tokens import revoke_grant
from gatehouse.instance_secrets import hashes_match, token_hash
from gatehouse.netguard import FetchError, fetch_limited
from gatehouse.store.models import (
    Client,
    ClientAssertionUse,
    Grant,
    RefreshToken,
    Revocation,
)
from gatehouse.timeutil import epoch, utcnow


@dataclass
class PreparedRequest:
    """What Authlib needs of an HTTP request, read ahead of the thread-pool hop."""

    method: str
    uri: str
    headers: Mapping[str, str]
    query: list[tuple[str, str]]
    form: list[tuple[str, str]] = field(default_factory=list)
    json: dict | None = None
    remote_addr: str | None = None
    attempt: int = 1  # runs of this request so far (gatehouse.authserver.refresh_delivery)


class _Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]):
        self._datalist: defaultdict[str, list] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self):
        return self._data

    @property
    def datalist(self):
        return self._datalist


class GatehouseRequest(OAuth2Request):
    def __init__(self, prepared: PreparedRequest, db: Session, use_form: bool):
        super().__init__(prepared.method, prepared.uri, headers=prepared.headers)
        self.prepared = prepared
        self.db = db
        self.payload = _Payload(prepared.form if use_form else prepared.query)
        self._args = _Payload(prepared.query).data
        self._form = _Payload(prepared.form).data
        self.error_effects: list[Callable[[Session], None]] = []
        self.gatehouse_grant = None
        self.gatehouse_resource = None
        self.auth_time = None
        self.dpop = None

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self._form


class _JsonPayload(JsonPayload):
    def __init__(self, data):
        self._data = data

    @property
    def data(self):
        return self._data


class GatehouseJsonRequest(JsonRequest):
    def __init__(self, prepared: PreparedRequest, db: Session):
        super().__init__(prepared.method, prepared.uri, prepared.headers)
        self.prepared = prepared
        self.db = db
        self.payload = _JsonPayload(prepared.json or {})
        self.error_effects: list[Callable[[Session], None]] = []


@dataclass
class AuthlibResponse:
    status: int
    body: object
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "location":
                return value
        return None


#: The store's client_id columns hold 255 characters; a longer metadata-document URL is refused.
MAX_CLIENT_ID_LENGTH = 255


class GatehouseAuthorizationServer(AuthorizationServer):
    def __init__(self, ctx):
        super().__init__(scopes_supported=None)
        self.ctx = ctx
        self.register_grant(AuthorizationCodeGrant, [RequireS256(required=True)])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)
        if ctx.settings.trusted_idps:
            self.register_grant(IdentityAssertionGrant)
            self.register_grant(WorkloadIdentityGrant)
        if ctx.settings.upstream:
            self.register_grant(TokenExchangeGrant)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(self))
        self.register_endpoint(GatehouseRevocationEndpoint(self))
        self.register_endpoint(GatehouseIntrospectionEndpoint(self))
        self.registration = GatehouseRegistrationEndpoint(self, claims_classes=[GatehouseClientMetadataClaims])
        self.configuration = GatehouseConfigurationEndpoint(self, claims_classes=[GatehouseClientMetadataClaims])
        self._current_request: GatehouseRequest | None = None

    # -- Authlib hooks --
    def query_client(self, client_id):
        db = self.ctx.current_session()
        if not isinstance(client_id, str) or not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
            return None
        if self.ctx.cimd.is_metadata_url(client_id):
            try:
                return self.ctx.cimd.resolve(client_id)
            except ClientMetadataDocumentError as exc:
                raise InvalidClientError(description=describable(f"client metadata document refused: {exc}")) from exc
            except RateLimited as exc:
                raise TooManyRequests(exc.retry_after, f"client metadata documents fetched from {urlsplit(client_id).hostname}") from exc
        return load_stored_client(db, client_id)

    def save_token(self, token, request):
        """Tokens are stored by :class:`TokenIssuer` as they are minted."""

    def validate_requested_scope(self, scope):
        """Scopes are checked against the requested resource by the grants."""

    def send_signal(self, name, *args, **kwargs):
        pass

    def create_oauth2_request(self, request):
        return request

    def create_json_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return AuthlibResponse(status, body, list(headers))

    def get_authorization_grant(self, request):
        try:
            return super().get_authorization_grant(request)
        except ValueError:
            # Authlib makes the raw response_type the error's description and refuses characters
            # RFC 6749 forbids there (a server error); answer with the same error, described safely
            client = self.query_client(request.payload.client_id)
            requested = request.payload.redirect_uri
            redirect_uri = None
            if client is not None and not requested:
                redirect_uri = client.get_default_redirect_uri()
            elif client is not None and client.check_redirect_uri(requested):
                redirect_uri = requested
            raise UnsupportedResponseTypeError(
                "code", "response_type must be 'code'", redirect_uri=redirect_uri, state=request.payload.state
            ) from None

    def handle_error_response(self, request, error):
        if not error.description:
            # every error answer carries a description (Authlib leaves some without one)
            error.description = describable(error.get_error_description() or error.error)
        if isinstance(error, InvalidClientError) and getattr(request, "error_effects", None) is not None:
            client_id = request.payload.client_id if hasattr(request, "payload") else None
            remote = request.prepared.remote_addr

            def record_failure(session):
                audit.record(
                    session, audit.CLIENT_AUTH_FAILED, client_id=client_id, remote_addr=remote, reason=error.description
                )

            request.error_effects.append(record_failure)
            request.client_auth_failed = True
        return super().handle_error_response(request, error)

    def get_error_uri(self, request, error):
        return None


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt`` client authentication (RFC 7523 section 2.2, OIDC Core section 9)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: GatehouseAuthorizationServer):
        super().__init__(validate_jti=True, leeway=server.ctx.settings.clock_leeway)
        self.server = server

    def get_audiences(self):
        issuer = self.server.ctx.issuer
        return [issuer, f"{issuer}/token", f"{issuer}/revoke", f"{issuer}/introspect"]

    def validate_jti(self, claims, jti):
        db = self.server.ctx.current_session()
        client_id = str(claims.get("sub"))
        if db.get(ClientAssertionUse, (client_id, str(jti))) is not None:
            return False
        expires = claims.get("exp")
        expires_at = utcnow() + timedelta(hours=1)
        if isinstance(expires, int | float):
            expires_at = datetime.fromtimestamp(expires, UTC).replace(tzinfo=None)
        db.add(ClientAssertionUse(client_id=client_id, jti=str(jti), expires_at=expires_at))
        try:
            db.flush()
        except IntegrityError:
            return False
        return True

    def resolve_client_public_key(self, client: OAuthClient):
        jwks = client.metadata.get("jwks")
        if jwks:
            return KeySet.import_key_set(jwks)
        jwks_uri = client.metadata.get("jwks_uri")
        if not jwks_uri:
            raise InvalidClientError(description="the client has no 'jwks' or 'jwks_uri' for private_key_jwt")
        settings = self.server.ctx.settings
        try:
            fetched = fetch_limited(
                jwks_uri,
                max_bytes=64 * 1024,
                timeout=settings.cimd_fetch_timeout,
                allow_insecure_loopback=settings.cimd_allow_insecure_loopback,
            )
            return KeySet.import_key_set(fetched.json())
        except (FetchError, ValueError, TypeError) as exc:
            raise InvalidClientError(description=f"the client's jwks_uri could not be used: {exc}") from exc


@dataclass
class TokenRef:
    """A token found by revocation or introspection: refresh token or access token."""

    kind: str
    client_id: str
    grant_id: str | None
    active: bool
    claims: dict
    jti: str | None = None
    expires_at: object = None

    def check_client(self, client):
        return client.client_id == self.client_id


def _find_token(server: GatehouseAuthorizationServer, token_string: str, hint: str | None) -> TokenRef | None:
    db = server.ctx.current_session()
    row = db.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash(token_string)))
    if row is not None:
        grant = db.get(Grant, row.grant_id)
        active = row.rotated_at is None and row.expires_at > utcnow() and grant is not None and grant.revoked_at is None
        claims = {"scope": row.scope, "client_id": row.client_id, "token_type": "refresh_token", "exp": epoch(row.expires_at)}
        if grant is not None:
            claims["aud"] = grant.resource
        return TokenRef("refresh_token", row.client_id, row.grant_id, active, claims, expires_at=row.expires_at)
    verified = server.ctx.tokens.verify_access_token(db, token_string, leeway=0)
    if verified is None:
        return None
    claims = dict(verified.claims)
    return TokenRef(
        "access_token",
        claims.get("client_id", ""),
        verified.record.grant_id if verified.record else None,
        not verified.revoked,
        claims,
        jti=claims.get("jti"),
        expires_at=verified.record.expires_at if verified.record else None,
    )


def _audiences(claims: dict) -> list:
    audience = claims.get("aud")
    return audience if isinstance(audience, list) else [audience]


class GatehouseRevocationEndpoint(RevocationEndpoint):
    """RFC 7009: a client revokes its own tokens; a refresh token takes its whole grant along."""

    CLIENT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]

    def create_endpoint_request(self, request):
        return request

    def query_token(self, token_string, token_type_hint):
        return _find_token(self.server, token_string, token_type_hint)

    def revoke_token(self, token, request):
        db = request.db
        if token.kind == "refresh_token" or token.grant_id is None:
            if token.grant_id:
                revoke_grant(db, token.grant_id, "revoked_by_client")
            return
        if db.get(Revocation, token.jti) is None:
            db.add(Revocation(jti=token.jti, expires_at=token.expires_at, revoked_at=utcnow(), reason="revoked_by_client"))
        audit.record(db, audit.TOKEN_REVOKED, client_id=token.client_id, grant_id=token.grant_id, jti=token.jti)


class GatehouseIntrospectionEndpoint(IntrospectionEndpoint):
    """RFC 7662: an authenticated client introspects its own tokens (AS-14), and a resource
    server (a client an administrator registered with ``resource_server_for``) introspects the
    access tokens issued for its resource (section 2.1). Anything else is ``active: false``."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def create_endpoint_request(self, request):
        return request

    def query_token(self, token_string, token_type_hint):
        return _find_token(self.server, token_string, token_type_hint)

    def check_permission(self, token, client, request):
        if token.client_id == client.client_id:
            return True
        resource = client.resource_server_for
        return bool(resource) and token.kind == "access_token" and resource in _audiences(token.claims)

    def introspect_token(self, token):
        if not token.active:
            return {"active": False}
        return {"active": True, "iss": self.server.ctx.issuer, **token.claims}

    def create_introspection_payload(self, token):
        if not token:
            return {"active": False}
        return self.introspect_token(token)


class GatehouseRegistrationEndpoint(ClientRegistrationEndpoint):
    """RFC 7591 dynamic registration; the AS picks the ``client_id`` (AS-6)."""

    def authenticate_token(self, request):
        return True

    def get_server_metadata(self):
        return None

    def extract_client_metadata(self, request):
        data = request.payload.data
        if "client_id" in data or "client_secret" in data:
            request.payload._data = {k: v for k, v in data.items() if k not in ("client_id", "client_secret")}
        metadata = super().extract_client_metadata(request)
        return {k: v for k, v in metadata.items() if v is not None}  # a null member is an absent one, not echoed

    def generate_client_info(self, request):
        return {}

    def save_client(self, client_info, client_metadata, request):
        client_metadata = {k: v for k, v in client_metadata.items() if v is not None}
        with_secret = client_metadata.get("token_endpoint_auth_method") in ("client_secret_basic", "client_secret_post")
        client, secret, registration_token = store_client(
            request.db, KIND_DYNAMIC, client_metadata, with_secret=with_secret, with_registration_token=True
        )
        client.extra = {"client_secret": secret, "registration_access_token": registration_token}
        audit.record(
            request.db,
            audit.CLIENT_REGISTERED,
            client_id=client.client_id,
            remote_addr=request.prepared.remote_addr,
            client_name=client.client_name,
        )
        return client

    def generate_client_registration_info(self, client, request):
        info = dict(client.client_info)
        if client.extra.get("client_secret"):
            info["client_secret"] = client.extra["client_secret"]
        info["registration_access_token"] = client.extra["registration_access_token"]
        info["registration_client_uri"] = f"{self.server.ctx.issuer}/register/{client.client_id}"
        return info


class InvalidRegistrationToken(OAuth2Error):
    """RFC 7592 section 2 / RFC 6750 section 3.1: a missing or wrong registration access token."""

    error = "invalid_token"
    status_code = 401

    def get_headers(self):
        return [*super().get_headers(), ("WWW-Authenticate", 'Bearer error="invalid_token"')]


class GatehouseConfigurationEndpoint(ClientConfigurationEndpoint):
    """RFC 7592 read, update and delete, with the registration access token."""

    def create_configuration_response(self, request):
        token = self.authenticate_token(request)
        client = self.authenticate_client(request)
        if token is None or client is None or not token.check_client(client):
            raise InvalidRegistrationToken("the registration access token is missing or not valid for this client")
        return super().create_configuration_response(request)

    def authenticate_token(self, request):
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        return _RegistrationToken(value.strip())

    def authenticate_client(self, request):
        client = load_stored_client(request.db, request.path_client_id)
        if client is None or client.kind != KIND_DYNAMIC:
            return None
        return client

    def revoke_access_token(self, request, token):
        pass

    def check_permission(self, client, request):
        return True

    def delete_client(self, client, request):
        db = request.db
        for grant_id in db.scalars(select(Grant.id).where(Grant.client_id == client.client_id, Grant.revoked_at.is_(None))):
            revoke_grant(db, grant_id, "client_deleted")
        db.delete(db.get(Client, client.client_id))
        audit.record(db, audit.CLIENT_DELETED, client_id=client.client_id)

    def update_client(self, client, client_metadata, request):
        row = request.db.get(Client, client.client_id)
        row.client_metadata = client_metadata
        row.updated_at = utcnow()
        audit.record(request.db, audit.CLIENT_UPDATED, client_id=client.client_id)
        client.metadata = client_metadata
        return client

    def generate_client_registration_info(self, client, request):
        return {"registration_client_uri": f"{self.server.ctx.issuer}/register/{client.client_id}"}

    def get_server_metadata(self):
        return None


class _RegistrationToken:
    def __init__(self, value: str):
        self.value = value

    def check_client(self, client: OAuthClient) -> bool:
        return hashes_match(self.value, client.registration_token_hash)

