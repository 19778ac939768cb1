"""The JWT bearer authorization grant (RFC 7523 section 2.1), for clients that hold an assertion.

Two extensions obtain tokens this way: workload identity federation (the assertion is a JWT the
workload's platform issued, ``workload_identity.py``) and enterprise-managed authorization (an
ID-JAG from the enterprise IdP, ``enterprise.py``). ``JwtBearerGrant`` is the SDK provider for
this grant, in the shape of the SDK's ``ClientCredentialsOAuthProvider``: the MCP server's
protected resource metadata leads to the AS (as for every Gatehouse provider, and restricted to
``ClientOptions.issuer`` when set), then one token request carries
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and ``assertion``, with ``resource``
(RFC 8707) and the chosen scopes. A refused grant is reported once; the flow never retries it
with another grant type.

The SDK's ``IdentityAssertionOAuthProvider`` sends the same grant, but only to an AS fixed in
advance with no protected resource metadata, outside the SDK's flow (so none of Gatehouse's
storage, refresh, DPoP and checks); the assertion source keeps its ``(audience, resource)`` shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import JWT_BEARER_GRANT_TYPE, OAuthClientInformationFull, OAuthClientMetadata
from mcp.shared.exceptions import MCPDeprecationWarning

from gatehouse.client.options import ClientOptions
from gatehouse.client.provider import GatehouseFlow
from gatehouse.client.token_storage import BoundTokenStorage

AssertionSource = Callable[[str, str], Awaitable[str]]
"""``await source(audience, resource)``: an assertion for the AS issuer ``audience``, for ``resource``."""


class JwtBearerGrant(OAuthClientProvider):
    """RFC 7523 section 2.1 with a client configured in advance (no registration)."""

    def __init__(self, server_url: str, storage: BoundTokenStorage, client: OAuthClientInformationFull,
                 assertion: AssertionSource, *, send_client_id: bool):
        metadata = OAuthClientMetadata(
            redirect_uris=None, grant_types=[JWT_BEARER_GRANT_TYPE],
            token_endpoint_auth_method=client.token_endpoint_auth_method,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            super().__init__(server_url, metadata, storage, None, None)
        self._assertion = assertion
        self._send_client_id = send_client_id

    async def _perform_authorization(self) -> httpx2.Request:
        context = self.context
        resource = context.get_resource_url()
        data = {
            "grant_type": JWT_BEARER_GRANT_TYPE,
            "assertion": await self._assertion(str(context.oauth_metadata.issuer), resource),
            "resource": resource,
        }
        if self._send_client_id and context.client_info is not None:
            data["client_id"] = context.client_info.client_id
        if context.client_metadata.scope:
            data["scope"] = context.client_metadata.scope
        data, headers = context.prepare_token_auth(data, {"Content-Type": "application/x-www-form-urlencoded"})
        return httpx2.Request("POST", self._get_token_endpoint(), data=data, headers=headers)


class JwtBearerProvider(GatehouseFlow, JwtBearerGrant):
    """A Gatehouse provider for the jwt-bearer grant: ``assertion`` supplies each assertion."""

    code_flow = False

    def __init__(self, server_url: str, options: ClientOptions, storage: BoundTokenStorage, status: Callable[[str], None],
                 client: OAuthClientInformationFull, assertion: AssertionSource, *, send_client_id: bool):
        super().__init__(server_url, storage, client, assertion, send_client_id=send_client_id)
        self._setup_gatehouse(storage, options, status, fixed_client=client)


def configured_client(client_id: str, client_secret: str | None) -> OAuthClientInformationFull:
    """The client as the AS knows it: ``client_secret_basic`` with a secret (RFC 6749 section 2.3.1), else none."""
    return OAuthClientInformationFull(
        client_id=client_id, client_secret=client_secret, redirect_uris=None, grant_types=[JWT_BEARER_GRANT_TYPE],
        token_endpoint_auth_method="client_secret_basic" if client_secret else "none",
    )
