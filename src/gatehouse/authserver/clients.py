"""OAuth clients: the model Authlib works with, the metadata rules shared by every kind of
registration (static AS-7, dynamic RFC 7591 / AS-6, metadata documents AS-5), and storage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc7591 import ClientMetadataClaims
from authlib.oauth2.rfc7591.errors import (
    InvalidClientMetadataError,
    InvalidRedirectURIError,
)
from joserfc.errors import InvalidClaimError, JoseError
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from gatehouse.authserver.redirects import redirect_uri_matches, redirect_uri_problem
from gatehouse.authserver.resources import describable
from gatehouse.instance_secrets import hashes_match, new_token, token_hash
from gatehouse.store.models import Client
from gatehouse.timeutil import epoch, utcnow

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", JWT_BEARER)
SUPPORTED_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
DEFAULT_GRANT_TYPES = ["authorization_code", "refresh_token"]

KIND_STATIC = "static"
KIND_DYNAMIC = "dynamic"
KIND_METADATA_DOCUMENT = "cimd"


@dataclass
class OAuthClient(ClientMixin):
    """A client as Authlib sees it, whatever kind of registration it came from."""

    client_id: str
    kind: str
    metadata: dict[str, Any]
    secret_hash: str | None = None
    secret_expires_at: datetime | None = None
    registration_token_hash: str | None = None
    issued_at: datetime | None = None
    resource_server_for: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_name(self) -> str:
        return self.metadata.get("client_name") or self.client_id

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.metadata.get("redirect_uris") or [])

    @property
    def token_endpoint_auth_method(self) -> str:
        return self.metadata.get("token_endpoint_auth_method", "none")

    @property
    def grant_types(self) -> list[str]:
        """The registered grant types; an empty list (an introspection-only resource server) means none."""
        grant_types = self.metadata.get("grant_types")
        return list(DEFAULT_GRANT_TYPES if grant_types is None else grant_types)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    # -- ClientMixin (Authlib) --
    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_redirect_uri(self, redirect_uri):
        return any(redirect_uri_matches(registered, redirect_uri) for registered in self.redirect_uris)

    def check_client_secret(self, client_secret):
        if self.secret_expires_at is not None and self.secret_expires_at <= utcnow():
            return False
        return hashes_match(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types

    # -- RFC 7592 --
    @property
    def client_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"client_id": self.client_id}
        if self.issued_at:
            info["client_id_issued_at"] = epoch(self.issued_at)
        if self.secret_hash:
            info["client_secret_expires_at"] = 0 if self.secret_expires_at is None else epoch(self.secret_expires_at)
        return info

    @property
    def client_metadata(self) -> dict[str, Any]:
        return dict(self.metadata)


class GatehouseClientMetadataClaims(ClientMetadataClaims):
    """RFC 7591 section 2 metadata with Gatehouse's rules (AS-6): safe redirect URIs,
    supported grant types and auth methods, ``application_type``."""

    REGISTERED_CLAIMS = [*ClientMetadataClaims.REGISTERED_CLAIMS, "application_type", "dpop_bound_access_tokens"]

    def validate_redirect_uris(self):
        uris = self.get("redirect_uris")
        grant_types = self.get("grant_types") or DEFAULT_GRANT_TYPES
        if uris is None:
            if "authorization_code" in grant_types:
                raise InvalidRedirectURIError("redirect_uris is required for the authorization_code grant")
            return
        if not isinstance(uris, list) or (not uris and "authorization_code" in grant_types):
            raise InvalidRedirectURIError("redirect_uris must be a non-empty array of URIs")
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem:
                raise InvalidRedirectURIError(describable(problem))

    def validate_token_endpoint_auth_method(self):
        method = self.setdefault("token_endpoint_auth_method", "client_secret_basic")
        if method not in SUPPORTED_AUTH_METHODS:
            raise InvalidClaimError("token_endpoint_auth_method")
        if method == "private_key_jwt" and not (self.get("jwks") or self.get("jwks_uri")):
            raise InvalidClientMetadataError("private_key_jwt needs 'jwks' or 'jwks_uri'")

    def validate_grant_types(self):
        grant_types = self.setdefault("grant_types", list(DEFAULT_GRANT_TYPES))
        if not isinstance(grant_types, list) or not grant_types:
            raise InvalidClaimError("grant_types")
        unsupported = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
        if unsupported:
            raise InvalidClientMetadataError(
                describable(f"unsupported grant type {unsupported[0]!r}; supported: {', '.join(SUPPORTED_GRANT_TYPES)}")
            )
        if "client_credentials" in grant_types and self.get("token_endpoint_auth_method") == "none":
            raise InvalidClientMetadataError("client_credentials needs an authenticated client, not 'none'")

    def validate_response_types(self):
        response_types = self.setdefault(
            "response_types", ["code"] if "authorization_code" in self.get("grant_types", []) else []
        )
        if not isinstance(response_types, list) or any(r != "code" for r in response_types):
            raise InvalidClientMetadataError("only the 'code' response type is supported (OAuth 2.1)")

    def validate_client_name(self):
        name = self.get("client_name")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
            raise InvalidClientMetadataError("client_name must be a non-empty string of at most 200 characters")

    def validate_scope(self):
        scope = self.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidClaimError("scope")

    def validate_contacts(self):
        contacts = self.get("contacts")
        if contacts is not None and not (isinstance(contacts, list) and all(isinstance(c, str) for c in contacts)):
            raise InvalidClaimError("contacts")

    def validate_software_id(self):
        self._require_string("software_id")

    def validate_software_version(self):
        self._require_string("software_version")

    def _require_string(self, key):
        """RFC 7591 section 2 defines these members as strings; Authlib does not check."""
        if self.get(key) is not None and not isinstance(self[key], str):
            raise InvalidClaimError(key)

    def _validate_uri(self, key, uri=None):
        """URI metadata must be strings: Authlib's check assumes one (a server error otherwise)."""
        value = self.get(key) if uri is None else uri
        if value is not None and not isinstance(value, str):
            raise InvalidClaimError(key)
        super()._validate_uri(key, uri)

    def validate_jwks(self):
        """A JWK Set object (RFC 7517 section 5); joserfc raises TypeError or KeyError on other shapes."""
        jwks = self.get("jwks")
        if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
            raise InvalidClaimError("jwks")
        try:
            super().validate_jwks()
        except (TypeError, KeyError, AttributeError) as exc:
            raise InvalidClaimError("jwks") from exc

    def validate(self, now=None, leeway=0):
        application_type = self.get("application_type")
        if application_type is not None and application_type not in ("web", "native"):
            raise InvalidClientMetadataError("application_type must be 'web' or 'native'")
        if self.get("dpop_bound_access_tokens") not in (None, True, False):
            raise InvalidClientMetadataError("dpop_bound_access_tokens must be true or false (RFC 9449 section 5.2)")
        # grant types first: redirect URI and auth method rules depend on them
        self.validate_token_endpoint_auth_method()
        self.validate_grant_types()
        super().validate(now, leeway)


def validate_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """Check client metadata by the registration rules; return the registered claims."""
    if not isinstance(data, dict):
        raise InvalidClientMetadataError("client metadata must be a JSON object")
    claims = GatehouseClientMetadataClaims(data, {})
    try:
        claims.validate()
    except JoseError as exc:
        raise InvalidClientMetadataError(exc.description) from exc
    return claims.get_registered_claims()


def client_from_row(values: Mapping[str, Any]) -> OAuthClient:
    """From a row of the ``clients`` table (column names as keys)."""
    return OAuthClient(
        client_id=values["client_id"],
        kind=values["kind"],
        metadata=values["metadata"],
        secret_hash=values["client_secret_hash"],
        secret_expires_at=values["client_secret_expires_at"],
        registration_token_hash=values["registration_token_hash"],
        issued_at=values["created_at"],
        resource_server_for=values.get("resource_server_for"),
    )


_SELECT_CLIENT = select(Client.__table__).where(Client.__table__.c.client_id == bindparam("client_id"))


def load_stored_client(session: Session, client_id: str) -> OAuthClient | None:
    if "\x00" in client_id:  # no client id holds one, and PostgreSQL refuses it in a query
        return None
    row = session.connection().execute(_SELECT_CLIENT, {"client_id": client_id}).mappings().first()
    return client_from_row(row) if row else None


def store_client(
    session: Session,
    kind: str,
    metadata: dict[str, Any],
    *,
    client_id: str | None = None,
    with_secret: bool,
    with_registration_token: bool = False,
    resource_server_for: str | None = None,
) -> tuple[OAuthClient, str | None, str | None]:
    """Create a client; returns it with its secret and registration access token (shown once).

    ``resource_server_for`` (administrators only) lets the client introspect the access tokens
    issued for that resource URI."""
    now = utcnow()
    secret = new_token() if with_secret else None
    registration_token = new_token() if with_registration_token else None
    values = {
        "client_id": client_id or new_token(16),
        "kind": kind,
        "client_secret_hash": token_hash(secret) if secret else None,
        "client_secret_expires_at": None,
        "registration_token_hash": token_hash(registration_token) if registration_token else None,
        "metadata": metadata,
        "resource_server_for": resource_server_for,
        "created_at": now,
        "updated_at": now,
    }
    session.connection().execute(insert(Client.__table__), values)
    return client_from_row(values), secret, registration_token


def list_stored_clients(session: Session) -> list[OAuthClient]:
    table = Client.__table__
    return [client_from_row(row) for row in session.execute(select(table).order_by(table.c.created_at)).mappings()]
