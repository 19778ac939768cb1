"""The servers the benchmark measures and the scenarios run against each.

A *suite* starts one server (a subprocess pinned to the server core), does its one-time setup
and yields a :class:`Target`; its *scenarios* then each build the workers for one load run.

* ``starlette``  - A: bare Starlette, one POST endpoint with a small JSON answer.
* ``sdk``        - B: the MCP SDK's auth routes over an in-memory provider.
* ``gatehouse``  - C: ``gatehouse serve``, once per store (SQLite, PostgreSQL).

Adding a scenario means writing one ``async def make(target, n) -> list[Worker]`` and listing it
in a suite's ``scenarios``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow import (
    AuthCodeFlow,
    CookieJar,
    Endpoints,
    FlowError,
    basic_auth,
    discover,
    form_body,
    register_client,
)
from httpclient import HttpConnection, build_request, request_target
from loadgen import AuthCodeWorker, RefreshWorker, StaticWorker, Worker
from servers import ServerProcess, ServerTracker, free_port, fresh_postgres_database

from gatehouse.config import raised_rate_limits_env

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
REDIRECT_URI = "http://127.0.0.1:9/cb"
SCOPE = "notes:read"
SETUP_TIMEOUT = 60.0
METADATA_PATH = "/.well-known/oauth-authorization-server"


class Skip(Exception):
    """A suite cannot run here (missing CLI, database unreachable, ...)."""


class SetupError(Exception):
    """A setup step outside HTTP failed (e.g. ``gatehouse users add``)."""


@dataclass
class RunConfig:
    """What every suite needs to know about the run."""

    server_cpu: int | None
    work_dir: Path
    gatehouse: Path
    server_log_level: str | None = "warning"


@dataclass
class Target:
    """A running server plus what its setup produced, handed to the scenarios."""

    server: ServerProcess
    store: str
    endpoints: Endpoints
    username: str = ""
    password: str = ""
    pg_database: str | None = None
    server_cpu: int | None = None
    session: CookieJar = field(default_factory=CookieJar)  # the setup's logged-in browser session
    public_client_extra: dict[str, Any] = field(default_factory=dict)  # more DCR metadata, if needed
    cache: dict[str, Any] = field(default_factory=dict)  # setup results shared by a target's scenarios

    def connection(self) -> HttpConnection:
        return HttpConnection(self.server.host, self.server.port)

    @property
    def resource(self) -> str:
        return self.endpoints.default_resource

    def tracker(self) -> ServerTracker:
        """Follows the server's processes (and its PostgreSQL backends) during a load run."""
        return ServerTracker(self.server.pid, self.server_cpu, self.pg_database)


@dataclass
class Scenario:
    key: str
    title: str
    make_workers: Callable[[Target, int], Awaitable[list[Worker]]]
    unit: str = "grants"  # what one op is, plural: grants, flows, fetches, requests


@dataclass
class Suite:
    key: str
    label: str
    store: str
    launch: Callable[[RunConfig], contextlib.AbstractAsyncContextManager[Target]]
    scenarios: list[Scenario]


# --------------------------------------------------------------------------------------------
# Shared setup steps
# --------------------------------------------------------------------------------------------


async def public_client(target: Target) -> str:
    """Register (once per target) the public authorization-code client; returns its id."""
    if "public_client" not in target.cache:
        metadata = {
            "client_name": "gatehouse-bench public",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
            **target.public_client_extra,
        }
        async with _setup_connection(target) as conn:
            info = await register_client(conn, target.endpoints.registration, metadata)
        target.cache["public_client"] = info["client_id"]
    return target.cache["public_client"]


def code_flow(target: Target, client_id: str) -> AuthCodeFlow:
    return AuthCodeFlow(
        endpoints=target.endpoints,
        client_id=client_id,
        redirect_uri=REDIRECT_URI,
        username=target.username,
        password=target.password,
        scope=SCOPE,
        resource=target.resource,
    )


@contextlib.asynccontextmanager
async def _setup_connection(target: Target) -> AsyncIterator[HttpConnection]:
    conn = target.connection()
    try:
        async with asyncio.timeout(SETUP_TIMEOUT):
            yield conn
    finally:
        conn.close()


async def _login_once(target: Target, flow: AuthCodeFlow) -> None:
    """Log the target's setup session in (one full flow), so later setup flows skip the login."""
    if target.cache.get("logged_in"):
        return
    async with _setup_connection(target) as conn:
        result = await flow.authorize(conn, target.session)
        await flow.exchange_code(conn, result)
    target.cache["logged_in"] = True


def _copy_jar(jar: CookieJar) -> CookieJar:
    copy = CookieJar()
    copy.cookies = dict(jar.cookies)
    return copy


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


async def make_bare_post(target: Target, n: int) -> list[Worker]:
    """A: POST a small form to the bare Starlette endpoint."""
    workers: list[Worker] = []
    for _ in range(n):
        conn = target.connection()
        raw = build_request(
            "POST",
            "/echo",
            conn.host_header,
            [("Content-Type", "application/x-www-form-urlencoded")],
            b"grant_type=refresh_token&refresh_token=abc&client_id=xyz",
        )
        workers.append(StaticWorker(conn, raw, 200, b'"ok"'))
    return workers


async def make_refresh(target: Target, n: int) -> list[Worker]:
    """Refresh grant: each worker holds its own refresh token (one code flow each) and rotates it."""
    client_id = await public_client(target)
    flow = code_flow(target, client_id)
    await _login_once(target, flow)
    token_path = request_target(target.endpoints.token)
    workers: list[Worker] = []
    for _ in range(n):
        conn = target.connection()
        bootstrap = _refresh_bootstrap(flow, conn, target.session)
        async with asyncio.timeout(SETUP_TIMEOUT):
            refresh_token = await bootstrap()
        workers.append(RefreshWorker(conn, token_path, client_id, refresh_token, bootstrap))
    return workers


def _refresh_bootstrap(flow: AuthCodeFlow, conn: HttpConnection, session: CookieJar) -> Callable[[], Awaitable[str]]:
    """A function that runs one code flow on ``conn`` and returns the new refresh token."""

    async def bootstrap() -> str:
        result = await flow.authorize(conn, _copy_jar(session))
        tokens = await flow.exchange_code(conn, result)
        if "refresh_token" not in tokens:
            raise FlowError(f"no refresh_token in the code exchange answer: {sorted(tokens)}")
        return str(tokens["refresh_token"])

    return bootstrap


async def make_client_credentials(target: Target, n: int) -> list[Worker]:
    """Client-credentials grant by a confidential client (client_secret_basic)."""
    if "cc_client" not in target.cache:
        metadata = {
            "client_name": "gatehouse-bench service",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": SCOPE,
        }
        async with _setup_connection(target) as conn:
            target.cache["cc_client"] = await register_client(conn, target.endpoints.registration, metadata)
    info = target.cache["cc_client"]
    if not info.get("client_secret"):
        raise FlowError("the confidential client was registered without a client_secret")
    headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        basic_auth(info["client_id"], info["client_secret"]),
    ]
    body = form_body({"grant_type": "client_credentials", "scope": SCOPE, "resource": target.resource})
    token_path = request_target(target.endpoints.token)
    workers: list[Worker] = []
    for _ in range(n):
        conn = target.connection()
        raw = build_request("POST", token_path, conn.host_header, headers, body)
        workers.append(StaticWorker(conn, raw, 200, b'"access_token"'))
    return workers


def make_authcode(keep_session: bool) -> Callable[[Target, int], Awaitable[list[Worker]]]:
    """Full authorization-code flows; a fresh browser session per flow unless ``keep_session``."""

    async def make(target: Target, n: int) -> list[Worker]:
        client_id = await public_client(target)
        flow = code_flow(target, client_id)
        await _login_once(target, flow)  # checks the flow works (and gives consent) before the load
        workers = [AuthCodeWorker(target.connection(), flow, keep_session) for _ in range(n)]
        if keep_session:  # each worker logs its own session in now, so the window has no logins
            async with asyncio.timeout(SETUP_TIMEOUT):
                for worker in workers:
                    await worker.op()
        return workers

    return make


async def make_jwks(target: Target, n: int) -> list[Worker]:
    """GET the JWKS document."""
    path = request_target(target.endpoints.jwks)
    workers: list[Worker] = []
    for _ in range(n):
        conn = target.connection()
        workers.append(StaticWorker(conn, build_request("GET", path, conn.host_header), 200, b'"keys"'))
    return workers


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _uvicorn_argv(app: str, port: int) -> list[str]:
    """uvicorn, one worker, the bench apps importable; no access log (the stack's ceiling)."""
    return [
        sys.executable, "-m", "uvicorn", app,
        "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def _running(server: ServerProcess, ready_path: str, timeout: float = 60.0) -> AsyncIterator[ServerProcess]:
    """Start ``server``, wait until it answers ``ready_path``, always stop it afterwards."""
    try:
        server.start()
        await server.wait_ready(ready_path, timeout)
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def launch_starlette(config: RunConfig) -> AsyncIterator[Target]:
    port = free_port()
    argv = _uvicorn_argv("apps.bare:app", port)
    server = ServerProcess("starlette", argv, port, config.work_dir / f"starlette-{port}.log", cpu=config.server_cpu)
    async with _running(server, "/health"):
        base = server.base_url
        endpoints = Endpoints(base, base + "/authorize", base + "/token", base + "/register", base + "/jwks")
        yield Target(server, "-", endpoints, server_cpu=config.server_cpu)


@contextlib.asynccontextmanager
async def launch_sdk(config: RunConfig) -> AsyncIterator[Target]:
    port = free_port()
    env = {**os.environ, "BENCH_ISSUER": f"http://127.0.0.1:{port}"}
    server = ServerProcess(
        "sdk-reference",
        _uvicorn_argv("apps.sdk_reference:app", port),
        port,
        config.work_dir / f"sdk-{port}.log",
        env=env,
        cpu=config.server_cpu,
    )
    async with _running(server, METADATA_PATH):
        conn = HttpConnection(server.host, port)
        try:
            endpoints = await discover(conn, server.base_url)
        finally:
            conn.close()
        # The SDK only lets a client ask for scopes it registered with.
        extra = {"scope": SCOPE}
        yield Target(server, "memory", endpoints, server_cpu=config.server_cpu, public_client_extra=extra)


@functools.cache
def check_gatehouse_cli(gatehouse: Path) -> str:
    """Raise :class:`Skip` unless ``gatehouse serve`` is installed and answers ``--help``;
    return the help text (to see which options this version has)."""
    if not gatehouse.exists():
        raise Skip(f"gatehouse CLI not found at {gatehouse}")
    try:
        proc = subprocess.run(
            [str(gatehouse), "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Skip(f"gatehouse CLI does not run: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise Skip(f"`gatehouse serve --help` failed (exit {proc.returncode}): {last[0]}")
    return proc.stdout


def _add_user(gatehouse: Path, data_dir: Path, env: dict[str, str], username: str, password: str) -> None:
    proc = subprocess.run(
        [str(gatehouse), "users", "add", username, "--password-stdin", "--data-dir", str(data_dir)],
        input=password + "\n",
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-500:]
        raise SetupError(f"`gatehouse users add` failed (exit {proc.returncode}): {output}")


def launch_gatehouse(store: str) -> Callable[[RunConfig], contextlib.AbstractAsyncContextManager[Target]]:
    """A launcher for ``gatehouse serve`` on ``store`` ("sqlite" or "postgresql")."""

    @contextlib.asynccontextmanager
    async def launch(config: RunConfig) -> AsyncIterator[Target]:
        help_text = check_gatehouse_cli(config.gatehouse)
        async with _store_env(store) as (env, pg_database):
            data_dir = Path(tempfile.mkdtemp(prefix=f"gatehouse-{store}-", dir=config.work_dir))
            port = free_port()
            argv = [
                str(config.gatehouse), "serve",
                "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
            ]  # fmt: skip
            if config.server_log_level and "--log-level" in help_text:
                argv += ["--log-level", config.server_log_level]
            log = config.work_dir / f"gatehouse-{store}-{port}.log"
            env = {**env, **raised_rate_limits_env()}  # 16 clients on one address would meet the shipped limits
            server = ServerProcess(f"gatehouse ({store})", argv, port, log, env=env, cpu=config.server_cpu)
            async with _running(server, METADATA_PATH):
                username, password = "bench", secrets.token_urlsafe(18)
                _add_user(config.gatehouse, data_dir, env, username, password)
                conn = HttpConnection(server.host, port)
                try:
                    endpoints = await discover(conn, server.base_url)
                finally:
                    conn.close()
                yield Target(server, store, endpoints, username, password, pg_database, config.server_cpu)

    return launch


@contextlib.asynccontextmanager
async def _store_env(store: str) -> AsyncIterator[tuple[dict[str, str], str | None]]:
    """The server's environment for ``store``; for PostgreSQL, around a fresh database."""
    env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_DATABASE_URL"}
    if store == "sqlite":
        yield env, None
        return
    with contextlib.ExitStack() as stack:
        try:
            name = stack.enter_context(fresh_postgres_database())
        except Exception as exc:
            raise Skip(f"PostgreSQL on 127.0.0.1:5432 unavailable: {exc}") from exc
        env["GATEHOUSE_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        yield env, name


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------


def gatehouse_scenarios() -> list[Scenario]:
    return [
        Scenario("refresh", "refresh grant", make_refresh),
        Scenario("client-credentials", "client credentials", make_client_credentials),
        Scenario("authcode", "auth-code flow (login each)", make_authcode(keep_session=False), unit="flows"),
        Scenario("authcode-session", "auth-code flow (session)", make_authcode(keep_session=True), unit="flows"),
        Scenario("jwks", "JWKS fetch", make_jwks, unit="fetches"),
    ]


def all_suites() -> list[Suite]:
    bare = Scenario("bare", "POST /echo", make_bare_post, unit="requests")
    sdk_refresh = Scenario("refresh", "refresh grant", make_refresh)
    return [
        Suite("starlette", "A starlette", "-", launch_starlette, [bare]),
        Suite("sdk", "B MCP SDK (ref.)", "memory", launch_sdk, [sdk_refresh]),
        Suite("gatehouse-sqlite", "C gatehouse", "sqlite", launch_gatehouse("sqlite"), gatehouse_scenarios()),
        Suite(
            "gatehouse-postgresql", "C gatehouse", "postgresql", launch_gatehouse("postgresql"), gatehouse_scenarios()
        ),
    ]


def default_gatehouse_cli() -> Path:
    """``gatehouse`` next to the running interpreter, else the project's venv."""
    beside = Path(sys.executable).parent / "gatehouse"
    if beside.exists():
        return beside
    found = shutil.which("gatehouse")
    return Path(found) if found else PROJECT_DIR / ".venv" / "bin" / "gatehouse"


__all__ = [
    "RunConfig",
    "Scenario",
    "SetupError",
    "Skip",
    "Suite",
    "Target",
    "all_suites",
    "default_gatehouse_cli",
]
