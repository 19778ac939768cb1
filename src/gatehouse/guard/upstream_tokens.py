"""``await upstream_token("google")``: a tool's way to the calling user's upstream access token (UP-3).

The MCP client's token never goes upstream and the upstream token never reaches the MCP client
(S-U4). A tool handler that must call the upstream API for the user asks for the upstream token;
this module exchanges the caller's access token for it at the authorization server's token
endpoint with OAuth 2.0 Token Exchange (RFC 8693 section 2.1), authenticated as this resource
server (a client registered with ``gatehouse clients add --resource-server``)::

    guard = Guard(..., upstream_tokens=UpstreamTokenClient(issuer=issuer, client_id=..., client_secret=...))

    @mcp.tool()
    async def upcoming_events(ctx: Context) -> str:
        try:
            token = await upstream_token("google", ctx)
        except UpstreamTokenError as exc:
            ...  # an MCP error result: str(exc) says what the user or operator must do

- The guard hands the caller's access token to this module only: tool handlers see a
  :class:`~gatehouse.guard.caller.Caller`, never the token (RS-8). Pass the handler's ``ctx``
  (the MCP SDK runs handlers outside the HTTP request's task, as for ``current_caller(ctx)``).
- Answers are cached per (BLAKE2b digest of the caller's token, provider) until ``refresh_margin``
  seconds before the upstream token expires, and at most ``cache_ttl`` seconds (so a link the
  user removes stops working here within that time); at most ``cache_size`` entries, least
  recently used first out. Concurrent requests for one entry share one exchange. Refusals are
  not cached.
- Errors are the typed errors of :mod:`gatehouse.upstream_errors`, raised from the ``error``
  the AS answers with (``UpstreamNotLinked``, ``UpstreamReauthorizationRequired``,
  ``UpstreamUnavailable``, also for an AS that cannot be reached); anything else the AS refuses
  (this server's credentials, the caller's token) is an ``UpstreamTokenError``. Details go to
  the log; no token ever does.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx2
from anyio import to_thread
from starlette.types import Scope

from gatehouse.guard.as_client import AnswerTooLarge, ConfidentialClient
from gatehouse.guard.caller import request_scope
from gatehouse.guard.discovery import discover_endpoint, json_object
from gatehouse.guard.shared_requests import SharedRequests
from gatehouse.guard.token_cache import TokenCache, token_key
from gatehouse.netguard import is_loopback_host
from gatehouse.upstream_errors import (
    ERRORS_BY_CODE,
    UpstreamNotLinked,
    UpstreamReauthorizationRequired,
    UpstreamTokenError,
    UpstreamUnavailable,
)

log = logging.getLogger("gatehouse.guard.upstream_tokens")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SCOPE_KEY = "gatehouse.upstream_exchange"

_current: contextvars.ContextVar[_CallerExchange | None] = contextvars.ContextVar("gatehouse_upstream_exchange", default=None)


class UpstreamTokenClient:
    """This resource server's client for RFC 8693 token exchange at the AS.

    ``token_endpoint`` or ``issuer`` (its ``token_endpoint`` is then found in its metadata,
    RFC 8414 section 3, on first use)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        auth_method: str = "client_secret_basic",
        cache_ttl: float = 300.0,
        cache_size: int = 1024,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        http_client: httpx2.AsyncClient | None = None,
    ):
        if not client_id or not client_secret:
            raise ValueError("token exchange needs this resource server's client_id and client_secret")
        if (token_endpoint is None) == (issuer is None):
            raise ValueError("pass either token_endpoint or issuer (whose metadata names the token endpoint)")
        if token_endpoint is not None and (problem := _endpoint_problem(token_endpoint)):
            raise ValueError(problem)
        self._as = ConfidentialClient(client_id=client_id, client_secret=client_secret, auth_method=auth_method,
                                      timeout=timeout, http_client=http_client)
        if cache_ttl < 0 or cache_size < 0 or refresh_margin < 0:
            raise ValueError("cache_ttl, cache_size and refresh_margin must not be negative")
        self.client_id = client_id
        self.issuer = issuer
        self.auth_method = auth_method
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.refresh_margin = refresh_margin
        self.timeout = timeout
        self._token_endpoint = token_endpoint
        self._cache: TokenCache[tuple[bytes, str], str] = TokenCache(cache_size, clock=time.monotonic)
        self._in_flight: SharedRequests[tuple[bytes, str], str] = SharedRequests()

    def __repr__(self) -> str:
        return f"UpstreamTokenClient(client_id={self.client_id!r}, token_endpoint={self._token_endpoint or self.issuer!r})"

    async def exchange(self, subject_token: str, provider: str) -> str:
        """The upstream access token of ``provider`` for the user of ``subject_token``."""
        key = (token_key(subject_token), provider)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        return await self._in_flight.run(key, lambda: self._exchange_uncached(subject_token, provider, key))

    async def _exchange_uncached(self, subject_token: str, provider: str, key: tuple[bytes, str]) -> str:
        answer = await self._request(subject_token, provider)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token or answer.get("issued_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            log.warning("token endpoint %s answered the exchange for %s without an access token", self._token_endpoint, provider)
            raise UpstreamUnavailable(provider, f"the authorization server gave no usable {provider} access token; try again later")
        lifetime = self.cache_ttl
        expires_in = answer.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            lifetime = min(lifetime, float(expires_in) - self.refresh_margin)
        if lifetime > 0 and self.cache_size > 0:
            self._cache.put(key, token, time.monotonic() + lifetime)
        return token

    async def _endpoint(self, provider: str) -> str:
        if self._token_endpoint is None:
            try:
                endpoint = await to_thread.run_sync(discover_endpoint, self.issuer, "token_endpoint", "token endpoint", self.timeout)
            except LookupError as exc:
                log.warning("%s", exc)
                raise UpstreamUnavailable(provider, f"the authorization server {self.issuer} could not be asked for the "
                                                    f"{provider} token (its metadata names no usable token endpoint); try again later") from None
            problem = _endpoint_problem(endpoint)
            if problem:
                log.error("configuration error: %s (from the metadata of %s)", problem, self.issuer)
                raise UpstreamTokenError(provider, f"the authorization server's token endpoint is not usable: {problem}")
            self._token_endpoint = endpoint
        return self._token_endpoint

    async def aclose(self) -> None:
        await self._as.aclose()

    async def _request(self, subject_token: str, provider: str) -> dict:
        """RFC 8693 section 2.1: the request; the parsed success answer (section 2.2.1), or a typed error."""
        endpoint = await self._endpoint(provider)
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "audience": provider,
        }
        try:
            status, body = await self._as.post_form(endpoint, form)
        except (httpx2.HTTPError, AnswerTooLarge) as exc:
            log.warning("token endpoint %s could not be used for the %s token: %s", endpoint, provider, type(exc).__name__)
            raise UpstreamUnavailable(provider, f"the authorization server could not be reached for the {provider} token; "
                                                "try again later") from None
        answer = json_object(body) or {}
        if status == 200 and answer:
            return answer
        raise _refusal(provider, endpoint, self.client_id, status, answer)

    def bind(self, subject_token: str) -> _CallerExchange:
        """An exchange for one caller's token, for the tool handlers of one request."""
        return _CallerExchange(self, subject_token)


class _CallerExchange:
    """The caller's token, usable only to ask for upstream tokens; it never shows the token."""

    __slots__ = ("_client", "_subject_token")

    def __init__(self, client: UpstreamTokenClient, subject_token: str):
        self._client = client
        self._subject_token = subject_token

    def __repr__(self) -> str:
        return "<upstream token exchange for the current caller>"

    async def __call__(self, provider: str) -> str:
        return await self._client.exchange(self._subject_token, provider)


def _refusal(provider: str, endpoint: str, client_id: str, status: int, answer: dict) -> UpstreamTokenError:
    """The typed error for an error answer (RFC 6749 section 5.2, RFC 8693 section 2.2.2)."""
    error = answer.get("error")
    description = answer.get("error_description")
    said = f": {description}" if isinstance(description, str) and description else ""
    cls = ERRORS_BY_CODE.get(error) if isinstance(error, str) else None
    if cls is not None and cls is not UpstreamTokenError:
        return cls(provider, description if said else _DEFAULT_ADVICE[cls].format(provider=provider))
    if status == 401 or error == "invalid_client":
        log.error("configuration error: the token endpoint %s refused the credentials of client %r (HTTP %d); "
                  "check the client id and secret this resource server uses", endpoint, client_id, status)
        return UpstreamTokenError(provider, "the authorization server refused this MCP server's credentials for the "
                                            f"{provider} token: the operator must check its client id and secret")
    if error == "unauthorized_client":
        log.error("configuration error: client %r is not a resource server at %s%s", client_id, endpoint, said)
        return UpstreamTokenError(provider, "this MCP server's client may not exchange tokens at the authorization server: "
                                            "the operator must register it with `gatehouse clients add --resource-server`")
    if error == "unsupported_grant_type":
        return UpstreamTokenError(provider, "the authorization server does not offer token exchange (RFC 8693): "
                                            "it has no upstream providers configured")
    if error in ("invalid_request", "invalid_target", "invalid_scope"):
        return UpstreamTokenError(provider, f"the authorization server refused to give the {provider} token{said}")
    log.warning("token endpoint %s answered the exchange for %s with HTTP %d %s", endpoint, provider, status, error or "")
    return UpstreamUnavailable(provider, f"the authorization server could not give the {provider} token (HTTP {status}); "
                                         "try again later")


_DEFAULT_ADVICE = {
    UpstreamNotLinked: "no {provider} account is linked to this user: sign in with {provider} at the authorization server",
    UpstreamReauthorizationRequired: "{provider} no longer accepts this user's authorization: sign in with {provider} again",
    UpstreamUnavailable: "{provider} could not be reached; try again later",
}


def _endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be the token endpoint client secrets go to: https only, plain http on loopback (AS-19)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        return f"the token endpoint must be an https URL without a fragment, got {url!r}"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"the token endpoint must use https (plain http only on loopback), got {url!r}"
    return None


# -- the guard's side: the caller's token, kept for this module ---------------------------------


def attach(scope: Scope, client: UpstreamTokenClient | None, subject_token: str) -> contextvars.Token | None:
    """Make the caller's exchange reachable by :func:`upstream_token` for this request."""
    if client is None:
        return None
    exchange = client.bind(subject_token)
    scope[SCOPE_KEY] = exchange
    return _current.set(exchange)


def detach(binding: contextvars.Token | None) -> None:
    if binding is not None:
        _current.reset(binding)


async def upstream_token(provider: str, context: Any = None) -> str:
    """The calling user's access token for the upstream ``provider`` (e.g. ``"google"``).

    Pass the handler's MCP ``Context``; without it, the request's context variable. Raises
    :class:`~gatehouse.upstream_errors.UpstreamTokenError` (a subclass says what to do)."""
    exchange = (request_scope(context) or {}).get(SCOPE_KEY)
    if exchange is None:
        exchange = _current.get()
    if exchange is None:
        raise RuntimeError(
            "upstream_token() needs a request of a guarded server whose Guard has upstream_tokens=UpstreamTokenClient(...); "
            "call it in a tool handler and pass the handler's ctx"
        )
    return await exchange(provider)
