"""The README's guard examples, for the official SDK and for FastMCP, with real tokens and clients."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx2
import pytest

from gatehouse.config import ResourceConfig
from tests.conftest import ThreadedServer
from tests.support.mcp_client import with_session

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
def as_overrides(extra_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="Hello", scopes=["hello:read"])]}


async def test_guarded_framework_server(live_as, framework, extra_socket, extra_resource):
    resource = extra_resource
    app = load_example(framework).build_app(live_as.base_url, resource)
    token, client_id = live_as.machine_token(resource)
    with ThreadedServer(app, extra_socket):
        unauthenticated = httpx2.post(resource, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        result = await with_session(resource, token, lambda s: s.call_tool("hello", {}))
    assert unauthenticated.status_code == 401 and "resource_metadata=" in unauthenticated.headers["www-authenticate"]
    assert not result.is_error and f"Hello, {client_id}!" in result.content[0].text
