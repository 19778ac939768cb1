"""Shared fixtures: real stores (SQLite file, PostgreSQL) and a real AS on loopback.

Every test that takes ``live_as`` (or ``store_url``) runs once per store backend. Without a
reachable PostgreSQL the PostgreSQL run is skipped locally, and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import uvicorn

from gatehouse import timeutil
from gatehouse.authserver.context import AuthServerContext, build_context
from gatehouse.authserver.users import create_user
from gatehouse.config import Settings
from gatehouse.serve import create_embedded_app

POSTGRES_ADMIN_URL = os.environ.get(
    "GATEHOUSE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytest_plugins = ["tests.upstream.fixtures"]  # upstream identity providers and APIs (tests/upstream/README.md)


def missing_component(message: str):
    """Skip locally; in CI a missing component is a failure."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: components must be present)")
    pytest.skip(message)


def _postgres_admin():
    import psycopg

    url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True, connect_timeout=3)


def create_postgres_database(prefix: str = "gh_test") -> str:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = _postgres_admin()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not here"
        missing_component(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_postgres_database(name: str) -> None:
    """End every session on database ``name`` and drop it."""
    with _postgres_admin() as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gatehouse.db'}"
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url.rsplit("/", 1)[1])


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadedServer:
    """uvicorn serving an ASGI app on an already-bound loopback socket, in a thread."""

    def __init__(self, app, sock: socket.socket):
        self.sock = sock
        http = getattr(app, "http_protocol", "auto")  # the gateway's fast path (gatehouse.guard.gateway_protocol)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False, http=http))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@dataclass
class LiveAS:
    base_url: str
    ctx: AuthServerContext
    settings: Settings

    @property
    def resource(self) -> str:
        return f"{self.base_url}/mcp"

    def add_user(self, username: str = "alice", password: str = "correct horse battery") -> tuple[str, str]:
        with self.ctx.unit_of_work() as session:
            create_user(session, username, password)
        return username, password

    def register(self, **metadata) -> dict:
        body = {"client_name": "Test client", "redirect_uris": ["http://127.0.0.1:9/callback"], "token_endpoint_auth_method": "none"}
        body.update(metadata)
        response = httpx2.post(f"{self.base_url}/register", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def register_resource_server(self, resource: str) -> tuple[str, str]:
        """What ``gatehouse clients add --resource-server RESOURCE`` stores: an introspection-only
        client (RFC 7662 section 2.1); its id and secret."""
        from gatehouse.authserver.clients import KIND_STATIC, store_client, validate_metadata

        metadata = validate_metadata({"client_name": "Resource server", "grant_types": ["client_credentials"]})
        metadata.update(grant_types=[], response_types=[])
        with self.ctx.unit_of_work() as session:
            client, secret, _ = store_client(session, KIND_STATIC, metadata, with_secret=True, resource_server_for=resource)
        return client.client_id, secret

    def post_token(self, data: dict, **kwargs) -> httpx2.Response:
        return httpx2.post(f"{self.base_url}/token", data=data, **kwargs)

    def machine_token(self, resource: str, scope: str | None = None) -> tuple[str, str]:
        """A client-credentials access token for ``resource``, and the client_id it was issued to."""
        extra = {"scope": scope} if scope else {}
        client = self.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                               redirect_uris=None, **extra)
        response = self.post_token({"grant_type": "client_credentials", "resource": resource, **extra},
                                   auth=(client["client_id"], client["client_secret"]))
        assert response.status_code == 200, response.text
        return response.json()["access_token"], client["client_id"]


def make_settings(tmp_path: Path, store_url: str, port: int, **overrides) -> Settings:
    values = dict(
        data_dir=tmp_path / "data",
        database_url=store_url,
        host="127.0.0.1",
        port=port,
        cimd_allow_insecure_loopback=True,
        registration_rate_per_minute=1000,
        failed_client_auth_per_minute=1000,
        failed_login_per_minute=1000,
        failed_login_per_account=10_000,
        failed_login_per_address=10_000,
        token_rate_per_minute_per_client=100_000,
        token_rate_per_minute_per_address=100_000,
        cimd_fetches_per_minute_per_host=10_000,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def extra_socket():
    """A loopback socket bound before the AS starts, for a second server whose URL the AS must know."""
    sock = free_socket()
    yield sock
    sock.close()


@pytest.fixture
def extra_resource(extra_socket) -> str:
    """The MCP endpoint URL of the server that will listen on ``extra_socket``."""
    return f"http://127.0.0.1:{extra_socket.getsockname()[1]}/mcp"


@pytest.fixture
def as_overrides():
    """Settings a test module wants changed for its live AS (override this fixture)."""
    return {}


@pytest.fixture
def live_as(tmp_path, store_url, as_overrides):
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = make_settings(tmp_path, store_url, port, **as_overrides)
    ctx = build_context(settings)
    with ThreadedServer(create_embedded_app(ctx), sock):
        yield LiveAS(f"http://127.0.0.1:{port}", ctx, settings)
    ctx.engine.dispose()
    timeutil.reset()


@pytest.fixture
def loopback_server():
    """Serve any ASGI app on loopback: ``with loopback_server(app) as base_url: ...``."""
    from contextlib import contextmanager

    @contextmanager
    def serve(app):
        sock = free_socket()
        with ThreadedServer(app, sock):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"

    return serve


@pytest.fixture(autouse=True)
def credentials_in_files(monkeypatch):
    """Client credentials go to files, never to the developer's own OS keyring (the keyring
    backend's tests pick their own keyring)."""
    monkeypatch.setenv("GATEHOUSE_CREDENTIALS_BACKEND", "file")
