"""Fixtures for the client library's tests: a stand-in browser, options on a temporary store, MCP calls.

The client does not care which store backend the AS uses, so ``live_as`` runs on SQLite only here.
"""

from __future__ import annotations

import stat
import sys
import time
import webbrowser
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gatehouse.client.options import ClientOptions

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gatehouse.db'}"


@dataclass
class UserAgent:
    """The ``BROWSER`` program's controls and what it was asked to open."""

    log: Path
    monkeypatch: pytest.MonkeyPatch

    def sign_in_as(self, username: str, password: str) -> None:
        self.monkeypatch.setenv("GATEHOUSE_TEST_UA_USERNAME", username)
        self.monkeypatch.setenv("GATEHOUSE_TEST_UA_PASSWORD", password)

    def answer(self, mode: str) -> None:
        """``approve``, ``deny`` or ``ignore`` (a browser that never comes back)."""
        self.monkeypatch.setenv("GATEHOUSE_TEST_UA_MODE", mode)

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def opened(self) -> list[str]:
        """The URLs the client had the browser open."""
        return [line.removeprefix("open ") for line in self.events() if line.startswith("open ")]

    def pages(self, count: int = 1, timeout: float = 10.0) -> list[str]:
        """``<status> <title>`` of each page the client's listener showed at the end of a sign-in,
        once ``count`` of them are logged (the browser program writes after the client has moved on)."""
        deadline = time.monotonic() + timeout
        while True:
            pages = [line.removeprefix("answered ") for line in self.events() if line.startswith("answered ")]
            if len(pages) >= count or time.monotonic() > deadline:
                return pages
            time.sleep(0.05)


def install_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, log: Path) -> None:
    """Make ``webbrowser`` start ``module.main(url)`` as the user's browser (``BROWSER``, no shell)."""
    program = tmp_path / f"browser-{module.rsplit('.', 1)[-1]}"
    program.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
        f"from {module} import main\nsys.exit(main(sys.argv[1]))\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(program))
    monkeypatch.setenv("GATEHOUSE_TEST_UA_LOG", str(log))
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})


@pytest.fixture
def user_agent(tmp_path, monkeypatch, live_as) -> UserAgent:
    """A browser that signs in to ``live_as`` as alice and approves, unless told otherwise."""
    agent = UserAgent(tmp_path / "opened.log", monkeypatch)
    install_browser(tmp_path, monkeypatch, "tests.client.user_agent", agent.log)
    agent.sign_in_as(*live_as.add_user())
    agent.answer("approve")
    return agent


@pytest.fixture
def options(tmp_path):
    """``ClientOptions`` on a temporary credential store; keyword arguments override."""
    storage = tmp_path / "credentials"

    def make(**changes) -> ClientOptions:
        values = {"storage_dir": storage, "login_timeout": 30.0, **changes}
        return ClientOptions(**values)

    return make


async def call_tool(url: str, auth: httpx2.Auth, tool: str, arguments: dict | None = None):
    """One MCP session with ``url`` through ``auth``: initialize, then call ``tool``."""
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await session.call_tool(tool, arguments or {})


def refreshes_at(live_as) -> int:
    """How many refresh-token grants the AS has answered (its audit log)."""
    from sqlalchemy import func, select

    from gatehouse.store.models import AuditEvent

    with live_as.ctx.unit_of_work() as session:
        return session.scalar(select(func.count()).where(AuditEvent.event == "token.refreshed"))


def registrations_at(live_as) -> int:
    from sqlalchemy import func, select

    from gatehouse.store.models import AuditEvent

    with live_as.ctx.unit_of_work() as session:
        return session.scalar(select(func.count()).where(AuditEvent.event == "client.registered"))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}



@pytest.fixture
def standin(loopback_server):
    """The stand-in MCP server and authorization servers of tests/client/standin.py, on loopback."""
    from tests.client.standin import StandIn

    behaviour = StandIn()
    with loopback_server(behaviour.app()) as base_url:
        behaviour.base_url = base_url
        yield behaviour


@pytest.fixture
def browser_log(tmp_path, monkeypatch) -> Path:
    """Install the stand-in browser (approving, no account) without a live AS; returns its log of URLs."""
    log = tmp_path / "opened.log"
    install_browser(tmp_path, monkeypatch, "tests.client.user_agent", log)
    return log


async def fetch(url: str, auth: httpx2.Auth, method: str = "GET") -> httpx2.Response:
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        return await http.request(method, url)


def leaf_error(error: BaseException) -> BaseException:
    """The one exception inside nested exception groups (the MCP transport's task groups wrap it)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def failure_of(awaitable, kind: type[BaseException] = Exception) -> BaseException:
    """Await ``awaitable``, which must fail with ``kind`` (possibly inside exception groups); return it."""
    try:
        await awaitable
    except BaseException as raised:  # noqa: BLE001 - inspected below
        error = leaf_error(raised)
        if not isinstance(error, kind):
            raise
        return error
    raise AssertionError(f"expected {kind.__name__}, nothing was raised")
