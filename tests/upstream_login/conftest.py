"""A real Gatehouse AS on loopback with ``[[upstream]]`` providers from tests/upstream (once per store).

The AS's socket is bound before the providers start, since a provider must know Gatehouse's
callback (``<issuer>/login/upstream/<name>/callback``) when it registers the client.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from gatehouse import timeutil
from gatehouse.authserver.context import build_context
from gatehouse.serve import create_embedded_app
from tests.conftest import LiveAS, ThreadedServer, free_socket, make_settings

GOOGLE_SCOPES = ["openid", "email", "profile", "offline_access", "calendar.read"]


class Pending:
    """A Gatehouse that will listen on ``base_url`` once ``start`` is called."""

    def __init__(self, tmp_path, store_url, stack: ExitStack):
        self.sock = free_socket()
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._tmp_path = tmp_path
        self._store_url = store_url
        self._stack = stack

    def callback(self, name: str) -> str:
        return f"{self.base_url}/login/upstream/{name}/callback"

    def start(self, upstream: list[dict], **overrides) -> LiveAS:
        port = self.sock.getsockname()[1]
        settings = make_settings(self._tmp_path, self._store_url, port, upstream=upstream, **overrides)
        ctx = build_context(settings)
        self._stack.callback(ctx.engine.dispose)
        self._stack.enter_context(ThreadedServer(create_embedded_app(ctx), self.sock))
        return LiveAS(self.base_url, ctx, settings)


@pytest.fixture
def gatehouse(tmp_path, store_url):
    """``gatehouse.callback(name)`` before the providers start, then ``gatehouse.start(upstream=[...])``."""
    with ExitStack() as stack:
        yield Pending(tmp_path, store_url, stack)
    timeutil.reset()


def google_config(op, **overrides) -> dict:
    """``[[upstream]]`` for the oidc-provider fixture playing Google."""
    return {
        "name": "google", "kind": "oidc", "display_name": "Google", "issuer": op.issuer, "client_id": op.client_id,
        "client_secret": op.client_secret, "scopes": GOOGLE_SCOPES, **overrides,
    }


def github_config(standin, **overrides) -> dict:
    return {
        "name": "github", "kind": "github", "client_id": standin.client_id, "client_secret": standin.client_secret,
        "authorize_url": standin.authorize_url, "token_url": standin.token_url, "api_base": standin.api_base,
        "scopes": ["read:user"], **overrides,
    }


@pytest.fixture
def google(gatehouse, upstream_oidc):
    """The upstream "Google" (oidc-provider), registered with Gatehouse's callback."""
    return upstream_oidc([gatehouse.callback("google")])


@pytest.fixture
def federated(gatehouse, google) -> LiveAS:
    """Gatehouse with "Google" as its one upstream (and no local accounts)."""
    return gatehouse.start([google_config(google)])
