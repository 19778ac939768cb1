"""The client library's entry point: an ``httpx2.Auth`` that gets and keeps tokens for one MCP server.

Usage::

    auth = create_auth("https://mcp.example.com/mcp", ClientOptions(), status=print)
    async with httpx2.AsyncClient(auth=auth) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            ...

The first request that answers 401 starts the flow: discovery, registration, the browser (or
client credentials for machine clients), tokens; later requests and later processes reuse the
stored tokens and refresh them. Every failure raised from the flow is a
``gatehouse.client.errors.ClientError`` whose message is one line for the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx2

from gatehouse.client.enterprise import create_enterprise_provider
from gatehouse.client.errors import ClientError
from gatehouse.client.options import ClientOptions
from gatehouse.client.provider import (
    InteractiveProvider,
    PrivateKeyClientCredentialsProvider,
    SecretClientCredentialsProvider,
)
from gatehouse.client.storage import default_store
from gatehouse.client.token_storage import BoundTokenStorage
from gatehouse.client.workload_identity import create_workload_provider

SDK_FLOW_LOGGER = "mcp.client.auth.oauth2"


class _ExplainedFlowErrorsToDebug(logging.Filter):
    """The SDK logs every flow failure with a traceback at ERROR ("OAuth flow error"); Gatehouse
    raises it as one line for the user, so the record is kept, at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "OAuth flow error" and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _quiet_sdk_flow_errors() -> None:
    logger = logging.getLogger(SDK_FLOW_LOGGER)
    if not any(isinstance(f, _ExplainedFlowErrorsToDebug) for f in logger.filters):
        logger.addFilter(_ExplainedFlowErrorsToDebug())


def _check_arguments(server_url: str, options: ClientOptions) -> None:
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"{server_url!r} is not an http:// or https:// URL")
    if options.client_credentials:
        if not options.client_id:
            raise ClientError("client credentials need a client id (--client-id)")
        if not options.client_secret and options.private_key_file is None:
            raise ClientError("client credentials need a client secret or a private key file (private_key_jwt)")
    elif options.client_secret and not options.client_id:
        raise ClientError("a client secret needs its client id (--client-id)")
    grants = [options.client_credentials, bool(options.workload_token or options.workload_token_file), bool(options.enterprise_idp)]
    if sum(grants) > 1:
        raise ClientError("choose one of client credentials, a workload identity token and an enterprise IdP")
    if options.enterprise_idp and not (options.client_id and options.client_secret):
        raise ClientError("enterprise-managed authorization needs the client id and secret registered with the MCP authorization server")


def create_auth(server_url: str, options: ClientOptions, *, status: Callable[[str], None] | None = None) -> httpx2.Auth:
    """An ``httpx2.Auth`` for ``server_url``: interactive (browser) by default, client credentials when
    ``options.client_credentials`` (a secret, or ``private_key_jwt`` with ``options.private_key_file``),
    the jwt-bearer grant with a workload identity token (``options.workload_token[_file]``) or with an
    ID-JAG from an enterprise IdP (``options.enterprise_idp``); DPoP as ``options.dpop`` says.

    ``status`` receives progress lines for people: "Opening the browser…", "Refreshing the access
    token…", and while waiting for the browser, once a second, "Waiting for the login (4:59 left)…"
    (each replaces the previous one on a live display). The authorization URL itself is printed to
    stderr, so a user can always open it by hand.
    """
    _check_arguments(server_url, options)
    _quiet_sdk_flow_errors()
    say = status or (lambda line: None)
    storage = BoundTokenStorage(default_store(options), server_url, fresh=options.fresh_login)
    if options.enterprise_idp is not None:
        return create_enterprise_provider(server_url, options, storage, say)
    if options.workload_token or options.workload_token_file:
        return create_workload_provider(server_url, options, storage, say)
    if options.client_credentials and options.private_key_file is not None:
        return PrivateKeyClientCredentialsProvider(server_url, options, storage, say)
    if options.client_credentials:
        return SecretClientCredentialsProvider(server_url, options, storage, say)
    return InteractiveProvider(server_url, options, storage, say)
