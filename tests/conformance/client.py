"""The conformance client: what the official MCP conformance harness runs for each client scenario.

Run by the harness as ``<python> tests/conformance/client.py <server-url>`` (it appends the URL),
with ``MCP_CONFORMANCE_SCENARIO`` (the scenario name) and ``MCP_CONFORMANCE_CONTEXT`` (JSON:
pre-registered ``client_id``/``client_secret``, ``private_key_pem`` and ``signing_algorithm``
for client credentials with ``private_key_jwt``, ...) and ``MCP_CONFORMANCE_PROTOCOL_VERSION``
(2026-07-28 means the stateless lifecycle, older versions the initialize handshake) in the
environment.

Authorization is done by ``gatehouse.client`` and nothing else: this file only turns the
scenario and its context into ``ClientOptions`` the way a user would configure the library,
then talks MCP with the official SDK client over an ``httpx2.AsyncClient`` whose ``auth`` is the
library's. There is no auth code here on purpose: a failing scenario is a library bug.

Extension scenarios (DPoP, workload identity federation, enterprise-managed authorization)
plug in through ``tests/conformance/extension_scenarios.py``, when it exists: its
``options_for(scenario, context)`` returns the ``ClientOptions`` for a scenario it handles, or
``None`` to leave the scenario to the defaults below. A returned ``storage_dir`` of ``None`` is
replaced by this run's fresh temporary directory.

Exit status: 0 when the session initialized, listed tools and called one; 1 with one line on
stderr otherwise (scenarios where the client must give up expect exactly that).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx2
from mcp.client import Client
from mcp.client.client import MODERN_PROTOCOL_VERSIONS
from mcp.client.streamable_http import streamable_http_client

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import ClientError
from gatehouse.client.options import ClientOptions

HERE = Path(__file__).resolve().parent
CIMD_CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
CLIENT_CREDENTIALS_SCENARIOS = ("auth/client-credentials-basic", "auth/client-credentials-jwt")


def _extension_options(scenario: str, context: dict) -> ClientOptions | None:
    """``extension_scenarios.options_for(scenario, context)``, if that module exists."""
    path = HERE / "extension_scenarios.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("extension_scenarios", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.options_for(scenario, context)


def options_for(scenario: str, context: dict, workdir: Path) -> ClientOptions:
    """The options a user of the library would give for this scenario."""
    storage = workdir / "tokens"
    extension = _extension_options(scenario, context)
    if extension is not None:
        return extension if extension.storage_dir is not None else dataclasses.replace(extension, storage_dir=storage)
    if scenario in CLIENT_CREDENTIALS_SCENARIOS:
        key_file = None
        if context.get("private_key_pem"):
            key_file = workdir / "client-key.pem"
            key_file.write_text(context["private_key_pem"])
            key_file.chmod(0o600)
        return ClientOptions(
            client_id=context.get("client_id"),
            client_secret=None if key_file else context.get("client_secret"),
            client_credentials=True,
            private_key_file=key_file,
            storage_dir=storage,
        )
    # An interactive client, signing in headlessly (the harness's AS approves at once). Like a
    # user who published a client ID metadata document, it offers it; the library uses it only
    # when the AS advertises support, else pre-registered credentials or dynamic registration.
    return ClientOptions(
        client_id=context.get("client_id"),
        client_secret=context.get("client_secret"),
        client_metadata_url=CIMD_CLIENT_METADATA_URL,
        headless=True,
        open_browser=False,
        login_timeout=20,
        storage_dir=storage,
        client_name="Gatehouse conformance client",
    )


def connect_mode(protocol_version: str | None) -> str:
    """The SDK client's ``mode`` for the protocol version the harness asks for: a 2026-07-28 (or
    later) version is adopted as is (the stateless lifecycle); older ones use the initialize handshake."""
    if protocol_version in MODERN_PROTOCOL_VERSIONS:
        return protocol_version
    return "legacy"


async def run(server_url: str, options: ClientOptions, protocol_version: str | None) -> None:
    auth = create_auth(server_url, options, status=lambda line: print(f"status: {line}", file=sys.stderr))
    async with (
        httpx2.AsyncClient(auth=auth, timeout=20) as http,
        Client(streamable_http_client(server_url, http_client=http), mode=connect_mode(protocol_version)) as client,
    ):
        tools = (await client.list_tools()).tools
        print(f"tools: {[tool.name for tool in tools]}", file=sys.stderr)
        if tools:
            name = "test-tool" if any(tool.name == "test-tool" for tool in tools) else tools[0].name
            result = await client.call_tool(name, {})
            print(f"called {name}: isError={result.is_error}", file=sys.stderr)


def _first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap what the flow raised)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: client.py <server-url>  (MCP_CONFORMANCE_SCENARIO, MCP_CONFORMANCE_CONTEXT in the environment)",
              file=sys.stderr)
        return 2
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    with tempfile.TemporaryDirectory(prefix="gatehouse-conformance-") as tmp:
        try:
            options = options_for(scenario, context, Path(tmp))
            asyncio.run(run(argv[1], options, os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION")))
        except BaseException as exc:  # noqa: BLE001 - one line on stderr, exit 1
            error = _first_error(exc)
            if isinstance(error, KeyboardInterrupt):
                raise
            kind = "" if isinstance(error, ClientError) else f"{type(error).__name__}: "
            print(f"client.py [{scenario}]: {kind}{error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
