"""Upstream identity providers and APIs for the upstream-login tests (issue 6), as pytest fixtures.

Registered in tests/conftest.py (``pytest_plugins``), so every test can use them:

- ``upstream_oidc(redirect_uris, **options)``: the certified oidc-provider (Node) as "Google"
- ``calendar_api(op)``: a Google-Calendar-shaped API that checks upstream tokens at ``op``
- ``github_standin``: GitHub's OAuth app web flow and ``/user``, ``/user/emails``
- ``tampering_op``: a deliberately misbehaving OpenID Provider for S-U3

See tests/upstream/README.md.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from tests.conformance.harness import find_node
from tests.conftest import ThreadedServer, free_socket
from tests.upstream.calendar_api import CalendarAPI
from tests.upstream.github_standin import GitHubStandIn
from tests.upstream.tampering_op import TamperingOP
from tests.upstream.upstream_oidc import UpstreamOIDC, check_installed


def _serve(stack: ExitStack, app) -> str:
    sock = free_socket()
    stack.enter_context(ThreadedServer(app, sock))
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def upstream_oidc(tmp_path_factory):
    """Start the upstream OpenID Provider: ``op = upstream_oidc([redirect_uri], **options)``.

    Options: ``accounts``, ``client_id``, ``token_endpoint_auth_method`` (client_secret_basic or
    client_secret_post), ``access_token_ttl``, ``refresh_token_ttl``, ``api_scopes``.
    Each provider started is stopped (by PID) at teardown.
    """
    started: list[UpstreamOIDC] = []

    def start(redirect_uris: list[str], **options) -> UpstreamOIDC:
        node = find_node()
        check_installed()
        op = UpstreamOIDC(node, tmp_path_factory.mktemp("upstream-oidc"), redirect_uris, **options)
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def calendar_api():
    """Serve the calendar API for an upstream provider: ``api = calendar_api(op)``."""
    with ExitStack() as stack:

        def serve(op: UpstreamOIDC, required_scope: str = "calendar.read") -> CalendarAPI:
            api = CalendarAPI(op, required_scope)
            api.base_url = _serve(stack, api.app)
            return api

        yield serve


@pytest.fixture
def github_standin():
    """The GitHub stand-in on loopback; set ``.callback_url`` to register the app's callback."""
    standin = GitHubStandIn()
    with ExitStack() as stack:
        standin.base_url = _serve(stack, standin.app())
        yield standin


@pytest.fixture
def tampering_op():
    """The misbehaving OpenID Provider on loopback; set ``.defect`` (see tampering_op.DEFECTS)."""
    op = TamperingOP()
    with ExitStack() as stack:
        op.issuer = _serve(stack, op.app())
        yield op
