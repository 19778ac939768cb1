"""Authorization server metadata: RFC 8414 and OpenID Connect Discovery 1.0 (AS-2, AS-3), with
``dpop_signing_alg_values_supported`` (RFC 9449 section 5.1) and, when trusted IdPs are configured,
the jwt-bearer grant (RFC 7523) and ``authorization_grant_profiles_supported`` (ID-JAG draft
section 7.2), and, when upstream providers are configured, the token-exchange grant (RFC 8693) by
which resource servers get upstream tokens."""

from __future__ import annotations

from urllib.parse import urlsplit

from gatehouse.authserver.clients import JWT_BEARER, SUPPORTED_AUTH_METHODS, SUPPORTED_GRANT_TYPES
from gatehouse.authserver.token_exchange import TOKEN_EXCHANGE


def authorization_server_metadata(
    issuer: str,
    scopes: list[str],
    *,
    dpop_algorithms: list[str] | None = None,
    grant_profiles: list[str] | None = None,
    jwt_bearer: bool = False,
    token_exchange: bool = False,
) -> dict:
    auth_methods = list(SUPPORTED_AUTH_METHODS)
    grant_types = [g for g in SUPPORTED_GRANT_TYPES if g != JWT_BEARER or jwt_bearer]
    if token_exchange:
        grant_types.append(TOKEN_EXCHANGE)
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "registration_endpoint": f"{issuer}/register",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": [m for m in auth_methods if m != "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }
    if dpop_algorithms:
        document["dpop_signing_alg_values_supported"] = list(dpop_algorithms)
    if grant_profiles:
        document["authorization_grant_profiles_supported"] = list(grant_profiles)
    return document


def well_known_paths(issuer: str) -> tuple[list[str], list[str]]:
    """Paths for the RFC 8414 and OIDC documents; path-inserted when the issuer has a path."""
    path = urlsplit(issuer).path.rstrip("/")
    if not path:
        return ["/.well-known/oauth-authorization-server"], ["/.well-known/openid-configuration"]
    return (
        [f"/.well-known/oauth-authorization-server{path}"],
        [f"/.well-known/openid-configuration{path}", f"{path}/.well-known/openid-configuration"],
    )
