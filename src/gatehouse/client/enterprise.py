"""Enterprise-managed authorization (SEP-990): the enterprise IdP grants access to the MCP server.

Two legs, each one request:

1. At the enterprise IdP, a token exchange (RFC 8693 section 2.1): the user's ID token as
   ``subject_token`` (``subject_token_type`` ``urn:ietf:params:oauth:token-type:id_token``),
   ``requested_token_type`` ``urn:ietf:params:oauth:token-type:id-jag``, ``audience`` the MCP
   AS issuer and ``resource`` the MCP server. The answer's ``access_token`` is an Identity
   Assertion JWT Authorization Grant (ID-JAG; ``issued_token_type`` must say so, section 2.2.1).
2. At the MCP AS, the jwt-bearer grant (RFC 7523 section 2.1, ``jwt_bearer.py``) with the ID-JAG
   as ``assertion``, the client authenticated with its secret (``client_secret_basic``).

A fresh ID-JAG is requested for every token request. The ID token comes from
``EnterpriseIdp.id_token`` or ``id_token_file`` (signing in to the IdP is the application's
part); the IdP's token endpoint from ``token_endpoint``, else its OpenID Connect discovery
document. Neither token is ever logged or stored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2

from gatehouse.client.errors import AuthorizationFailed, ClientError, ServerUnreachable
from gatehouse.client.jwt_bearer import AssertionSource, JwtBearerProvider, configured_client
from gatehouse.client.options import ClientOptions, EnterpriseIdp
from gatehouse.client.token_storage import BoundTokenStorage
from gatehouse.netguard import is_loopback_host

TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
IDP_TIMEOUT = 30.0


def _check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return url
    raise ClientError(f"the enterprise IdP endpoint {url} must use https (http only on loopback); the ID token is not sent to it")


def basic_credentials(client_id: str, client_secret: str) -> str:
    """HTTP Basic with both parts form-encoded first (RFC 6749 section 2.3.1)."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _id_token(idp: EnterpriseIdp) -> str:
    if idp.id_token:
        return idp.id_token
    try:
        return Path(idp.id_token_file).read_text().strip()
    except (OSError, UnicodeDecodeError, TypeError):
        raise ClientError(f"cannot read the ID token file {idp.id_token_file}; sign in to {idp.issuer} again") from None


async def _json_answer(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = json.loads(await response.aread())
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


async def _token_endpoint(idp: EnterpriseIdp, http: httpx2.AsyncClient) -> str:
    """``token_endpoint``, else the one in the IdP's OpenID Connect discovery document (section 4)."""
    if idp.token_endpoint:
        return _check_endpoint(idp.token_endpoint)
    url = _check_endpoint(idp.issuer.rstrip("/") + "/.well-known/openid-configuration")
    response = await http.get(url)
    document = await _json_answer(response)
    if response.status_code != 200 or document.get("issuer") != idp.issuer or not isinstance(document.get("token_endpoint"), str):
        raise AuthorizationFailed(f"no usable OpenID Connect discovery document for the enterprise IdP {idp.issuer} at {url}")
    return _check_endpoint(document["token_endpoint"])


async def request_id_jag(idp: EnterpriseIdp, audience: str, resource: str) -> str:
    """Leg 1: the ID-JAG for ``audience`` (the MCP AS issuer) and ``resource`` (RFC 8693 section 2.1)."""
    data = {
        "grant_type": TOKEN_EXCHANGE_GRANT_TYPE,
        "requested_token_type": ID_JAG_TYPE,
        "audience": audience,
        "resource": resource,
        "subject_token": _id_token(idp),
        "subject_token_type": ID_TOKEN_TYPE,
    }
    headers = {}
    if idp.client_secret:
        headers["Authorization"] = basic_credentials(idp.client_id, idp.client_secret)
    else:
        data["client_id"] = idp.client_id
    try:
        async with httpx2.AsyncClient(timeout=IDP_TIMEOUT) as http:
            endpoint = await _token_endpoint(idp, http)
            response = await http.post(endpoint, data=data, headers=headers)
            answer = await _json_answer(response)
    except httpx2.HTTPError as exc:
        raise ServerUnreachable(f"cannot reach the enterprise IdP {idp.issuer} ({type(exc).__name__})") from None
    if response.status_code != 200:
        error = answer.get("error") if isinstance(answer.get("error"), str) else f"HTTP {response.status_code}"
        description = answer.get("error_description")
        detail = f"{error}: {description[:200]}" if isinstance(description, str) else error
        raise AuthorizationFailed(f"the enterprise IdP {idp.issuer} refused to grant access to {resource} ({detail})")
    grant = answer.get("access_token")
    if answer.get("issued_token_type") != ID_JAG_TYPE or not isinstance(grant, str):
        raise AuthorizationFailed(f"the enterprise IdP {idp.issuer} answered the token exchange without an ID-JAG")
    return grant


def id_jag_source(idp: EnterpriseIdp) -> AssertionSource:
    async def fresh_grant(audience: str, resource: str) -> str:
        return await request_id_jag(idp, audience, resource)

    return fresh_grant


def create_enterprise_provider(server_url: str, options: ClientOptions, storage: BoundTokenStorage,
                               status: Callable[[str], None]) -> JwtBearerProvider:
    client = configured_client(options.client_id, options.client_secret)
    return JwtBearerProvider(
        server_url, options, storage, status, client, id_jag_source(options.enterprise_idp), send_client_id=False,
    )
