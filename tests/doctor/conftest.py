"""Fixtures for the doctor's tests: the command on its own Typer app, stand-in servers, a browser.

The doctor does not care which store backend the AS uses, so ``live_as`` runs on SQLite only here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from gatehouse import timeutil
from gatehouse.authserver.context import build_context
from gatehouse.config import ResourceConfig
from gatehouse.doctor.command import doctor
from gatehouse.serve import create_embedded_app
from tests.client.conftest import UserAgent, install_browser
from tests.conftest import LiveAS, ThreadedServer, free_socket, make_settings
from tests.doctor.standin import Faults, StandIn, stripping_proxy

NOTES_SCOPES = ["notes:read", "notes:write"]


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gatehouse.db'}"


def cli() -> typer.Typer:
    """The command mounted the way cli.py mounts it (``app.command("doctor")(doctor)``)."""
    app = typer.Typer()
    app.command("doctor")(doctor)

    @app.command("version")
    def version() -> None:  # a second command, so Typer keeps the subcommand name as in the real CLI
        pass

    return app


@dataclass
class Run:
    exit_code: int
    output: str
    stderr: str

    @property
    def report(self) -> dict:
        return json.loads(self.output)

    def check(self, check_id: str) -> dict:
        matches = [c for c in self.report["checks"] if c["id"] == check_id]
        assert matches, f"no check {check_id} in {[c['id'] for c in self.report['checks']]}"
        return matches[0]

    def status(self, check_id: str) -> str:
        return self.check(check_id)["status"]

    def statuses(self) -> dict[str, str]:
        return {c["id"]: c["status"] for c in self.report["checks"]}

    def failing(self) -> list[str]:
        return [c["id"] for c in self.report["checks"] if c["status"] == "fail"]

    def pitfalls(self) -> set[str]:
        return {c["pitfall"] for c in self.report["checks"] if c["pitfall"] and c["status"] == "fail"}


def run_doctor(*args: str) -> Run:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli(), ["doctor", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def standin(loopback_server):
    """``standin(Faults(...))`` serves a stand-in MCP server + AS on loopback; returns it (``.resource`` is the URL)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def serve(faults: Faults | None = None) -> StandIn:
            server = StandIn(faults)
            server.base_url = stack.enter_context(loopback_server(server.app()))
            return server

        yield serve


@pytest.fixture
def behind_stripping_proxy(loopback_server, standin):
    """A correct stand-in behind a proxy that strips ``WWW-Authenticate``; returns the stand-in, its URLs on the proxy."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        server = standin()
        proxy = stack.enter_context(loopback_server(stripping_proxy(server.base_url)))
        server.base_url = proxy
        yield server


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """``browser(live)``: the BROWSER stand-in of tests/client, signing in to ``live`` as alice and approving."""

    def install(live: LiveAS) -> UserAgent:
        agent = UserAgent(tmp_path / "opened.log", monkeypatch)
        install_browser(tmp_path, monkeypatch, "tests.client.user_agent", agent.log)
        agent.sign_in_as(*live.add_user())
        agent.answer("approve")
        return agent

    return install


@pytest.fixture
def gatehouse_with_another_resource(tmp_path, store_url):
    """``gatehouse serve``'s app with a second resource configured at ``<issuer>/elsewhere/mcp``: (LiveAS, that URL)."""
    sock = free_socket()
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    other = f"{base}/elsewhere/mcp"
    settings = make_settings(tmp_path, store_url, port, resources=[
        ResourceConfig(uri=f"{base}/mcp", name="Gatehouse notes (demo MCP server)", scopes=NOTES_SCOPES),
        ResourceConfig(uri=other, name="Another MCP server", scopes=["notes:read"]),
    ])
    ctx = build_context(settings)
    with ThreadedServer(create_embedded_app(ctx), sock):
        yield LiveAS(base, ctx, settings), other
    ctx.engine.dispose()
    timeutil.reset()
