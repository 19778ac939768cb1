"""A guarded MCP server that checks tokens by introspection (RFC 7662) at a real Gatehouse AS.

The resource server is a client registered with ``resource_server_for``; AS-14 still keeps
every other client to its own tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time

import httpx2
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy import inspect
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.config import ResourceConfig
from gatehouse.guard import Guard, IntrospectionVerifier, Policy, current_caller
from gatehouse.guard.introspection import CREDENTIALS_REFUSED, UNREACHABLE
from gatehouse.store import db
from tests.conftest import ThreadedServer, free_socket
from tests.support.gateway_process import GATEHOUSE, wait_until_serving
from tests.support.mcp_client import with_session

OTHER_RESOURCE = "http://127.0.0.1:9/other/mcp"


@pytest.fixture
def as_overrides(extra_resource):
    return {"resources": [
        ResourceConfig(uri=extra_resource, name="Opaque tools", scopes=["tools:read"]),
        ResourceConfig(uri=OTHER_RESOURCE, name="Another server", scopes=["tools:read"]),
    ]}



def machine_client(live_as) -> tuple[str, str]:
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic", redirect_uris=None)
    return client["client_id"], client["client_secret"]


def token_for(live_as, credentials: tuple[str, str], resource: str) -> str:
    response = live_as.post_token({"grant_type": "client_credentials", "resource": resource}, auth=credentials)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def introspect(live_as, credentials: tuple[str, str], token: str) -> dict:
    response = httpx2.post(f"{live_as.base_url}/introspect", data={"token": token}, auth=credentials)
    assert response.status_code == 200, response.text
    return response.json()


class CountingTransport(httpx2.AsyncHTTPTransport):
    """Counts the introspection requests that really go out."""

    def __init__(self):
        super().__init__()
        self.requests = 0

    async def handle_async_request(self, request):
        self.requests += 1
        return await super().handle_async_request(request)


def tools_app(live_as, resource: str, verifier) -> Starlette:
    mcp = MCPServer(name="opaque-tools")

    @mcp.tool()
    async def whoami(ctx: Context) -> str:
        """Who the guard says is calling."""
        return current_caller(ctx).subject

    sdk = mcp.streamable_http_app(
        streamable_http_path="/mcp", transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    guard = Guard(resource=resource, authorization_servers=[live_as.base_url], verifier=verifier, policy=Policy(default=["tools:read"]))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with mcp.session_manager.run():
            yield

    return Starlette(routes=[Route(p, guard.protect(sdk)) for p in [*guard.metadata_paths, "/mcp"]], lifespan=lifespan)


@pytest.fixture
def serve_tools(live_as, extra_socket, extra_resource):
    """``serve_tools(**verifier_options)``: the guarded server on ``extra_resource``, checking by introspection."""
    rs_credentials = live_as.register_resource_server(extra_resource)

    @contextlib.contextmanager
    def serve(**options):
        values = dict(endpoint=f"{live_as.base_url}/introspect", client_id=rs_credentials[0], client_secret=rs_credentials[1],
                      issuers=[live_as.base_url], audience=extra_resource, cache_ttl=60)
        values.update(options)
        with ThreadedServer(tools_app(live_as, extra_resource, IntrospectionVerifier(**values)), extra_socket):
            yield

    serve.rs_credentials = rs_credentials
    return serve


def call_without_sdk(resource: str, token: str) -> httpx2.Response:
    """One ``initialize`` request: 200 once the guard lets the token through."""
    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
    return httpx2.post(resource, headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})


async def whoami_five_times(session) -> list[str]:
    return [(await session.call_tool("whoami", {})).content[0].text for _ in range(5)]


async def test_a_valid_token_works_and_costs_one_introspection(live_as, serve_tools, extra_resource):
    client = machine_client(live_as)
    token = token_for(live_as, client, extra_resource)
    transport = CountingTransport()
    with serve_tools(http_client=httpx2.AsyncClient(transport=transport, trust_env=False)):
        subjects = await with_session(extra_resource, token, whoami_five_times)
    assert subjects == [client[0]] * 5
    assert transport.requests == 1, "initialize, notifications and five calls: one introspection, then the cache"


async def test_a_token_for_another_resource_is_refused(live_as, serve_tools, extra_resource):
    token = token_for(live_as, machine_client(live_as), OTHER_RESOURCE)
    with serve_tools():
        response = call_without_sdk(extra_resource, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert introspect(live_as, serve_tools.rs_credentials, token) == {"active": False}, \
        "the AS shows a resource server only the tokens issued for it (RS-4: no passthrough)"


async def test_a_revoked_token_is_refused_once_the_cache_ttl_passes(live_as, serve_tools, extra_resource):
    client = machine_client(live_as)
    token = token_for(live_as, client, extra_resource)
    with serve_tools(cache_ttl=0.5):
        assert call_without_sdk(extra_resource, token).status_code == 200
        revoked = httpx2.post(f"{live_as.base_url}/revoke", data={"token": token}, auth=client)
        assert revoked.status_code == 200
        assert call_without_sdk(extra_resource, token).status_code == 200, "still cached"
        time.sleep(0.6)
        after = call_without_sdk(extra_resource, token)
    assert after.status_code == 401 and "not active" in after.json()["error_description"]


def test_the_permission_model_of_the_introspection_endpoint(live_as, serve_tools, extra_resource):
    owner, other = machine_client(live_as), machine_client(live_as)
    token = token_for(live_as, owner, extra_resource)
    assert introspect(live_as, other, token) == {"active": False}, "AS-14: an ordinary client sees only its own tokens"
    assert introspect(live_as, owner, token)["active"] is True
    seen = introspect(live_as, serve_tools.rs_credentials, token)
    assert seen["active"] is True and seen["aud"] == extra_resource and seen["sub"] == owner[0]


def test_a_resource_server_client_gets_no_tokens_of_its_own(live_as, serve_tools, extra_resource):
    response = live_as.post_token({"grant_type": "client_credentials", "resource": extra_resource}, auth=serve_tools.rs_credentials)
    assert response.status_code in (400, 401) and response.json()["error"] == "unauthorized_client"


async def test_wrong_resource_server_credentials_are_a_logged_configuration_error(live_as, serve_tools, extra_resource, caplog):
    token = token_for(live_as, machine_client(live_as), extra_resource)
    with caplog.at_level(logging.ERROR, logger="gatehouse.introspection"), serve_tools(client_secret="not-the-secret"):
        response = call_without_sdk(extra_resource, token)
    assert response.status_code == 401 and response.json()["error_description"] == CREDENTIALS_REFUSED
    assert "configuration error" in caplog.text and serve_tools.rs_credentials[0] in caplog.text
    assert token not in caplog.text


async def test_an_introspection_endpoint_that_is_down_refuses_clearly(live_as, serve_tools, extra_resource):
    token = token_for(live_as, machine_client(live_as), extra_resource)
    dead = free_socket()
    dead_endpoint = f"http://127.0.0.1:{dead.getsockname()[1]}/introspect"
    dead.close()
    with serve_tools(endpoint=dead_endpoint):
        response = call_without_sdk(extra_resource, token)
    assert response.status_code == 401
    assert response.json()["error_description"] == UNREACHABLE
    assert UNREACHABLE in response.headers["www-authenticate"]


def test_migration_0003_round_trips(store_url):
    from alembic import command

    engine = db.create_store_engine(store_url)
    try:
        db.upgrade(engine)
        config = db.alembic_config(store_url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        with engine.connect() as connection:
            assert "resource_server_for" not in {c["name"] for c in inspect(connection).get_columns("clients")}
        db.upgrade(engine)
        with engine.connect() as connection:
            assert "resource_server_for" in {c["name"] for c in inspect(connection).get_columns("clients")}
    finally:
        engine.dispose()


# -- the CLI: `gatehouse clients add --resource-server` and `gatehouse gateway --introspect` --

def cli_env(live_as, extra_resource, **more) -> dict:
    resources = [{"uri": extra_resource, "scopes": ["tools:read"]}]
    env = {**os.environ, "GATEHOUSE_DATABASE_URL": live_as.settings.database_url, "GATEHOUSE_RESOURCES": json.dumps(resources)}
    env.pop("GATEHOUSE_INTROSPECTION_CLIENT_SECRET", None)
    return {**env, **more}


def run_cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([*GATEHOUSE, *args], capture_output=True, text=True, env=env, timeout=60)


def plain_upstream() -> Starlette:
    mcp = MCPServer(name="plain-upstream")

    @mcp.tool()
    async def whoami(ctx: Context) -> str:
        """The subject the gateway forwarded."""
        return ctx.request_context.request.headers.get("x-subject", "")

    sdk = mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with mcp.session_manager.run():
            yield

    return Starlette(routes=[Route("/mcp", sdk)], lifespan=lifespan)


async def test_cli_registers_a_resource_server_and_runs_the_gateway_with_introspection(
    live_as, loopback_server, extra_socket, extra_resource, tmp_path
):
    env = cli_env(live_as, extra_resource)
    data_dir = str(live_as.settings.data_dir)
    unknown = run_cli("clients", "add", "--name", "Gateway", "--resource-server", "https://nowhere.example/mcp", "--data-dir", data_dir, env=env)
    assert unknown.returncode == 1 and "issues no tokens for" in unknown.stderr and "Traceback" not in unknown.stderr
    added = run_cli("clients", "add", "--name", "Gateway", "--resource-server", extra_resource, "--data-dir", data_dir, env=env)
    assert added.returncode == 0, added.stderr
    client_id = added.stdout.split("client_id:")[1].split()[0]
    secret = added.stdout.split("client_secret:")[1].split()[0]
    assert f"May introspect the access tokens issued for {extra_resource}" in added.stdout

    port = extra_socket.getsockname()[1]
    gateway_args = ["gateway", "--issuer", live_as.base_url, "--port", str(port), "--introspect", "--client-id", client_id]
    no_secret = run_cli(*gateway_args, "--upstream", "http://127.0.0.1:9/mcp", env=env)
    assert no_secret.returncode == 1 and "GATEHOUSE_INTROSPECTION_CLIENT_SECRET" in no_secret.stderr
    both = run_cli(*gateway_args, "--introspection-endpoint", f"{live_as.base_url}/introspect", "--upstream", "http://127.0.0.1:9/mcp", env=env)
    assert both.returncode == 2 and "not both" in both.stderr

    secret_file = tmp_path / "introspection-secret"
    secret_file.write_text(secret + "\n")
    caller = machine_client(live_as)
    token = token_for(live_as, caller, extra_resource)
    extra_socket.close()
    with loopback_server(plain_upstream()) as upstream:
        process = subprocess.Popen(
            [*GATEHOUSE, *gateway_args, "--client-secret-file", str(secret_file), "--upstream", f"{upstream}/mcp",
             "--identity-header", "X-Subject"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_until_serving(process, extra_resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))
            subject = await with_session(extra_resource, token, lambda s: s.call_tool("whoami", {}))
            refused = call_without_sdk(extra_resource, token_for(live_as, machine_client(live_as), OTHER_RESOURCE))
        finally:
            process.terminate()
            process.communicate(timeout=15)
    assert not subject.is_error and subject.content[0].text == caller[0], "the caller's subject reaches the upstream"
    assert refused.status_code == 401
