"""The README's guard examples, for the official SDK and for FastMCP, with real tokens and clients."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx2
import pytest

from gatehouse.config import ResourceConfig
from tests.conftest import ThreadedServer, free_socket
from tests.support.mcp import with_session

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FRAMEWORKS = ["guard_sdk_server", "guard_fastmcp_server"]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    return request.param


@pytest.fixture
def server_socket():
    sock = free_socket()
    yield sock
    sock.close()


@pytest.fixture
def resource(server_socket):
    return f"http://127.0.0.1:{server_socket.getsockname()[1]}/mcp"


@pytest.fixture
def as_overrides(resource):
    return {"resources": [ResourceConfig(uri=resource, name="Hello", scopes=["hello:read"])]}


def machine_token(live_as, resource: str) -> tuple[str, str]:
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                              redirect_uris=None)
    response = live_as.post_token({"grant_type": "client_credentials", "resource": resource},
                                  auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200, response.text
    return response.json()["access_token"], client["client_id"]


async def test_guarded_framework_server(live_as, framework, server_socket, resource):
    app = load_example(framework).build_app(live_as.base_url, resource)
    token, client_id = machine_token(live_as, resource)
    with ThreadedServer(app, server_socket):
        unauthenticated = httpx2.post(resource, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        result = await with_session(resource, token, lambda s: s.call_tool("hello", {}))
    assert unauthenticated.status_code == 401 and "resource_metadata=" in unauthenticated.headers["www-authenticate"]
    assert not result.is_error and f"Hello, {client_id}!" in result.content[0].text
