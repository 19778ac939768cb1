"""Provider details that no fixture provider exercises: Entra's multi-tenant issuer and a
discovery document that tries to steer the HTTP client (UP-1)."""

from __future__ import annotations

import anyio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.authserver.upstream.providers import UpstreamProviders
from gatehouse.config import UpstreamConfig

ENTRA_TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"


def test_UP_1_entra_common_checks_iss_against_the_token_tenant():
    providers = UpstreamProviders([UpstreamConfig(name="work", kind="entra", client_id="c", client_secret="s")])
    options = providers.get("work")._claims_options({"issuer": ENTRA_TEMPLATE})
    same_tenant = options["iss"].pop("validate")
    assert options["iss"] == {"essential": True} and options["aud"] == {"essential": True, "values": ["c"]}
    tenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
    assert same_tenant({"tid": tenant}, f"https://login.microsoftonline.com/{tenant}/v2.0")
    assert not same_tenant({"tid": tenant}, "https://login.microsoftonline.com/another-tenant/v2.0")
    assert not same_tenant({}, "https://login.microsoftonline.com//v2.0")


def test_UP_1_a_discovery_document_cannot_steer_the_client_or_weaken_the_algorithms(loopback_server):
    documents = {}

    async def discovery(request):
        return JSONResponse(documents["doc"])

    app = Starlette(routes=[Route("/.well-known/openid-configuration", discovery)])
    with loopback_server(app) as issuer:
        documents["doc"] = {
            "issuer": issuer, "authorization_endpoint": f"{issuer}/auth", "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks", "verify": False, "proxy": "http://127.0.0.1:1", "follow_redirects": True,
            "id_token_signing_alg_values_supported": ["none", "HS256", "RS256", "ES256"],
        }
        provider = UpstreamProviders([UpstreamConfig(name="corp", issuer=issuer, client_id="c", client_secret="s")]).get("corp")
        metadata = anyio.run(provider.metadata)
    assert not {"verify", "proxy", "follow_redirects"} & set(metadata)
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
