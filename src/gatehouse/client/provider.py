"""Gatehouse's OAuth providers: the SDK's ``OAuthClientProvider`` family plus what MCP clients need.

The SDK's flow (``OAuthClientProvider._auth_flow``) already does, and is relied on for: PRM
discovery from the challenge then the path-inserted and root URIs (CL-1), the RFC 8414 / OIDC
discovery order (CL-3), the metadata ``issuer`` check (CL-4), PKCE S256 (CL-5, the sending half),
CIMD before DCR (CL-6), issuer-bound registrations (CL-7, SEP-2352), ``state`` generation and
the ``iss`` comparison (CL-9, CL-10), ``resource`` in authorization and token requests (CL-11),
the ``Authorization`` header (CL-12), refresh on expiry (CL-13) and step-up with the union of
scopes (CL-14).

``GatehouseFlow`` wraps that flow (it drives the SDK generator, seeing every request and
answer) and overrides a few small methods, adding:

- persistence through the credential store with absolute expiry, so a restarted client refreshes
  instead of logging in again (the SDK forgets expiry and metadata on restart);
- single-flight refresh: tasks, provider instances and processes that find the token stale take
  the entry's refresh lock, re-read the store, and only refresh if nobody else did meanwhile
  (issue 4 item 2; the SDK refreshes once per provider, with no store re-read);
- refusing an AS without ``code_challenge_methods_supported`` or with unsafe endpoints before
  anything is registered or opened (CL-5, CL-15), and a strict PRM ``resource`` check (CL-2);
- CL-8 scope selection (explicit scopes; no fallback to every scope the AS knows);
- a limit on step-ups per operation (CL-14), and a clear failure when a fresh token is refused;
- several authorization servers tried in order when one cannot be used;
- re-registration, once, when a registration expired or is answered with ``invalid_client``;
- one-line ``ClientError``s instead of the SDK's exceptions;
- DPoP (RFC 9449) on token and resource requests, from its base ``DPoPFlow`` (``dpop_flow.py``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import AsyncGenerator, Callable
from urllib.parse import urlsplit

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider, PrivateKeyJWTOAuthProvider
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    extract_field_from_www_auth,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
    issuers_match,
    should_use_client_metadata_url,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from pydantic import AnyUrl, ValidationError

from gatehouse.client.assertions import assertion_provider
from gatehouse.client.checks import (
    ServerRefused,
    check_authorization_server,
    check_can_identify,
    check_default_endpoints,
    check_resource_matches,
    origin_of,
)
from gatehouse.client.dpop_flow import DPoPFlow
from gatehouse.client.errors import AuthorizationFailed, ClientError
from gatehouse.client.login import BrowserLogin
from gatehouse.client.options import ClientOptions
from gatehouse.client.scopes import operation_of, select_scope
from gatehouse.client.token_storage import BoundTokenStorage
from gatehouse.netguard import is_loopback_host

REFRESH_MARGIN = 30.0
MAX_STEP_UPS_PER_OPERATION = 2
MAX_FLOW_ATTEMPTS = 6
PLACEHOLDER_REDIRECT_URI = "http://127.0.0.1/callback"


class _StartAgain(Exception):
    """The flow must run again from the start (a new registration, another AS)."""


async def oauth_error_of(response: httpx2.Response) -> tuple[str | None, str | None]:
    """``error`` and ``error_description`` of an OAuth error answer (RFC 6749 section 5.2), if any."""
    try:
        body = json.loads(await response.aread())
    except (ValueError, httpx2.HTTPError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    error, description = body.get("error"), body.get("error_description")
    return (error if isinstance(error, str) else None), (description[:200] if isinstance(description, str) else None)


def _words(status: int, error: str | None, description: str | None) -> str:
    what = error or f"HTTP {status}"
    return f"{what}: {description}" if description else what


def _explain(exc: Exception) -> AuthorizationFailed:
    """The SDK's exception as one line (its messages carry no tokens: only statuses, URLs, errors)."""
    message = (str(exc).splitlines() or [""])[0][:300]
    if isinstance(exc, (OAuthFlowError, OAuthTokenError, OAuthRegistrationError)):
        return AuthorizationFailed(message[:1].lower() + message[1:] if message else type(exc).__name__)
    return AuthorizationFailed(f"the OAuth flow failed ({type(exc).__name__}: {message})")


def _registration_expired(info: OAuthClientInformationFull | None) -> bool:
    """RFC 7591 section 3.2.1: ``client_secret_expires_at`` is 0 for never, else an epoch time."""
    expires = info.client_secret_expires_at if info is not None else None
    return bool(expires) and expires < time.time()


class GatehouseFlow(DPoPFlow):
    """The additions; mix in before an ``OAuthClientProvider`` class (see the module docstring)."""

    code_flow = True

    def _setup_gatehouse(
        self, storage: BoundTokenStorage, options: ClientOptions, status: Callable[[str], None],
        login: BrowserLogin | None = None, fixed_client: OAuthClientInformationFull | None = None,
    ) -> None:
        self._storage = storage
        storage.bind(self.context)
        self._options = options
        self._status = status
        self._login = login
        self._fixed_client = fixed_client
        self._failed_servers: set[str] = set()
        self._advertised: list[str] = []
        self._selected_server: str | None = None
        self._step_ups: dict[str, int] = {}
        self._challenge: httpx2.Response | None = None
        self._stepping_up = False
        self._authorizing = False
        self._token_request: httpx2.Request | None = None
        self._metadata_problem: str | None = None
        self._registered_again = False
        self._last_sent_url: str | None = None
        self._validate_resource_url_callback = self._validate_prm_resource

    # --- loading and storing -------------------------------------------------------------

    def _client_is_configured(self) -> bool:
        """Credentials the user gave (pre-registered, or a machine client's): never replaced."""
        return self._fixed_client is not None or hasattr(self, "_fixed_client_info")

    def _owns_client_info(self) -> bool:
        """Whether the registration came from this client's own DCR (so it may be replaced)."""
        info = self.context.client_info
        if self._client_is_configured() or info is None:
            return False
        return info.client_id != self.context.client_metadata_url

    async def _initialize(self) -> None:
        """The SDK loads tokens and registration; also restore expiry and metadata (a restart refreshes)."""
        await super()._initialize()
        context, entry = self.context, self._storage.entry
        if self._fixed_client is not None:
            context.client_info = self._fixed_client
        tokens = entry.tokens if entry is not None else None
        context.token_expiry_time = tokens.expires_at if tokens else None
        if tokens and context.client_info and tokens.client_id and tokens.client_id != context.client_info.client_id:
            context.clear_tokens()
        if entry is not None:
            try:
                if context.oauth_metadata is None and entry.authorization_server:
                    context.oauth_metadata = OAuthMetadata.model_validate(entry.authorization_server)
                if context.protected_resource_metadata is None and entry.protected_resource:
                    context.protected_resource_metadata = ProtectedResourceMetadata.model_validate(entry.protected_resource)
            except ValidationError:
                context.oauth_metadata = context.protected_resource_metadata = None
        if _registration_expired(context.client_info) and self._owns_client_info():
            self._status("The client registration has expired; it will be registered again.")
            context.client_info = None

    def _token_is_stale(self) -> bool:
        """CL-13: refresh shortly before expiry (a tenth of the lifetime, at most ``REFRESH_MARGIN``)."""
        tokens, expiry = self.context.current_tokens, self.context.token_expiry_time
        if tokens is None or expiry is None:
            return False
        margin = min(REFRESH_MARGIN, tokens.expires_in / 10) if tokens.expires_in else 0.0
        return time.time() >= expiry - margin

    def _adopt_stored_tokens(self) -> None:
        """Re-read the entry: another task or process may have refreshed (or logged out) meanwhile."""
        context = self.context
        entry = self._storage.load()
        if entry is None or entry.tokens is None:
            context.clear_tokens()
            return
        if not self._client_is_configured() and not _registration_expired(entry.client):
            context.client_info = entry.client
        stored = entry.tokens
        if context.client_info is not None and stored.client_id and stored.client_id != context.client_info.client_id:
            return
        if context.current_tokens is None or stored.access_token != context.current_tokens.access_token:
            context.current_tokens = stored.as_token()
            context.token_expiry_time = stored.expires_at

    async def _finish_refresh(self, response: httpx2.Response) -> None:
        """Store a refreshed token; on refusal keep what may still serve and drop what is dead."""
        if response.status_code == 200:
            if not await self._handle_refresh_response(response):
                self._storage.forget_tokens()
            return
        error, _ = await oauth_error_of(response)
        self.context.clear_tokens()
        if error == "invalid_client" and self._owns_client_info():
            self.context.client_info = None
            self._storage.forget_client()
            self._status("The authorization server no longer knows this client; registering again…")
        elif error == "invalid_grant":
            self._storage.forget_tokens()
            self._status("The stored login can no longer be refreshed; signing in again…")

    # --- choices the SDK delegates -------------------------------------------------------

    def _select_authorization_server(self, advertised: list[str]) -> str:
        """The first advertised AS not yet found unusable (the SDK always takes the first)."""
        self._advertised = list(advertised)
        candidates = [server for server in advertised if server not in self._failed_servers] or advertised
        if self._options.issuer:
            candidates = [s for s in candidates if issuers_match(s, self._options.issuer)] or candidates
        self._selected_server = super()._select_authorization_server(candidates)
        return self._selected_server

    def _is_legacy_server(self) -> bool:
        """A 2025-03-26 server: no protected resource metadata and no AS metadata document at its
        origin, so the MCP server is its own AS at the default endpoints ``/authorize``, ``/token``
        and ``/register`` of its origin (MCP 2025-03-26, "Fallbacks for Servers without Metadata
        Discovery"), which the SDK then uses. Metadata that exists but is invalid is still refused."""
        context = self.context
        return (
            context.oauth_metadata is None and context.protected_resource_metadata is None
            and context.auth_server_url is None and self._metadata_problem is None
        )

    def _vet_authorization_server(self) -> None:
        context = self.context
        if self._is_legacy_server():
            check_default_endpoints(context.server_url)
            return
        check_authorization_server(
            context.oauth_metadata, self._selected_server or context.auth_server_url,
            code_flow=self.code_flow, problem=self._metadata_problem,
        )
        issuer = str(context.oauth_metadata.issuer)
        if self._options.issuer and not issuers_match(issuer, self._options.issuer):
            raise ServerRefused(issuer, f"{context.server_url} uses {issuer}, not the configured issuer {self._options.issuer}; "
                                        "refusing to send it this client's credentials")
        check_can_identify(
            context.oauth_metadata, has_client=context.client_info is not None,
            uses_metadata_document=should_use_client_metadata_url(context.oauth_metadata, context.client_metadata_url),
        )

    async def _perform_authorization(self) -> httpx2.Request:
        """Vet the AS (CL-5, CL-15, CL-6) and choose scopes (CL-8) before the SDK builds the request."""
        self._authorizing = True
        self._vet_authorization_server()
        if not self._stepping_up:
            context = self.context
            challenged = extract_scope_from_www_auth(self._challenge) if self._challenge is not None else None
            context.client_metadata.scope = select_scope(
                challenged, context.protected_resource_metadata, context.oauth_metadata, self._options.scopes,
                wants_refresh_token=self.code_flow,
            )
        self._token_request = await super()._perform_authorization()
        return self._token_request

    def _preferred_port(self) -> int | None:
        info = self.context.client_info
        uris = info.redirect_uris if info and info.redirect_uris else []
        for uri in uris:
            parts = urlsplit(str(uri))
            if parts.scheme == "http" and is_loopback_host(parts.hostname) and parts.port:
                return parts.port
        return None

    # --- the flow ------------------------------------------------------------------------

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        async with self.context.lock:
            if not self._initialized:
                await self._initialize()
        if self._token_is_stale():
            self.context.protocol_version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER) or self.context.protocol_version
            async with self._storage.refresh_lock():
                self._adopt_stored_tokens()
                if self._token_is_stale() and self.context.can_refresh_token():
                    self._status("Refreshing the access token…")
                    refresh_request = await self._refresh_token()
                    response = yield refresh_request
                    await self._finish_refresh(response)

        for _ in range(MAX_FLOW_ATTEMPTS):
            self._begin_attempt()
            inner = super()._auth_flow(request)
            try:
                outgoing = await inner.__anext__()
                answers_to_request = 0
                while True:
                    if outgoing is not request:
                        self._before_sending(outgoing)
                    response = yield outgoing
                    if outgoing is request:
                        answers_to_request += 1
                        if not await self._on_resource_answer(request, response, first=answers_to_request == 1):
                            return
                    else:
                        await self._on_authorization_answer(outgoing, response)
                    outgoing = await inner.asend(response)
            except StopAsyncIteration:
                return
            except _StartAgain:
                continue
            except ServerRefused as refused:
                if not self._try_another_server():
                    raise
                self._status(f"{refused} — trying the next authorization server…")
            except ClientError:
                raise
            except Exception as exc:  # noqa: BLE001 - the SDK's exceptions become one line for the user
                if not self._authorizing and self._selected_server and self._try_another_server():
                    self._status(f"{_explain(exc)} — trying the next authorization server…")
                    continue
                raise _explain(exc) from None
            finally:
                await inner.aclose()
                if self._login is not None:
                    await self._login.close()
        raise AuthorizationFailed(f"gave up authorizing with {self.context.server_url} after {MAX_FLOW_ATTEMPTS} attempts")

    def _begin_attempt(self) -> None:
        self._selected_server = None
        self._challenge = None
        self._stepping_up = False
        self._authorizing = False
        self._token_request = None
        self._metadata_problem = None

    def _try_another_server(self) -> bool:
        if self._selected_server is None or len(self._advertised) < 2:
            return False
        self._failed_servers.add(self._selected_server)
        if all(server in self._failed_servers for server in self._advertised):
            return False
        self.context.oauth_metadata = None
        return True

    async def _validate_prm_resource(self, server_url: str, prm_resource: str | None) -> None:
        """CL-2, knowing where the metadata was just fetched from (the SDK's ``validate_resource_url`` hook):
        a URL the server's challenge named, or a well-known URI discovery built."""
        named = extract_resource_metadata_from_www_auth(self._challenge) if self._challenge is not None else None
        well_known = self._last_sent_url if self._last_sent_url != named else None
        check_resource_matches(server_url, prm_resource, well_known)

    def _before_sending(self, outgoing: httpx2.Request) -> None:
        """A registration is about to be sent: vet the AS first, so a refused AS learns nothing."""
        self._last_sent_url = str(outgoing.url)
        if outgoing.method != "GET" and outgoing is not self._token_request and self.context.client_info is None:
            self._vet_authorization_server()
            self._status(f"Registering this client with {self._issuer_name()}…")

    async def _on_resource_answer(self, request: httpx2.Request, response: httpx2.Response, *, first: bool) -> bool:
        """Prepare for an authorization the SDK is about to start; False hands the answer to the caller."""
        status = response.status_code
        step_up = status == 403 and extract_field_from_www_auth(response, "error") == "insufficient_scope"
        if not first:
            if status == 401:
                await response.aread()
                error = extract_field_from_www_auth(response, "error")
                raise AuthorizationFailed(
                    f"{self.context.server_url} refused the token just issued by {self._issuer_name()} "
                    f"({error or 'HTTP 401'}); the server and its authorization server disagree"
                )
            return True
        if status != 401 and not step_up:
            return True
        if step_up:
            operation = operation_of(request)
            attempts = self._step_ups.get(operation, 0)
            if attempts >= MAX_STEP_UPS_PER_OPERATION:
                return False
            self._step_ups[operation] = attempts + 1
        self._challenge, self._stepping_up = response, step_up
        if self._login is not None:
            redirect_uri = self._login.prepare(self._preferred_port())
            self.context.client_metadata.redirect_uris = [AnyUrl(redirect_uri)]
        return True

    async def _on_authorization_answer(self, outgoing: httpx2.Request, response: httpx2.Response) -> None:
        """Explain refusals at the metadata, registration and token endpoints in one line."""
        if outgoing.method == "GET":
            await self._note_metadata_problem(outgoing, response)
            return
        if outgoing is self._token_request:
            if response.status_code < 400:
                return
            error, description = await oauth_error_of(response)
            if error == "invalid_client" and self._owns_client_info() and not self._registered_again:
                self._registered_again = True
                self.context.client_info = None
                self.context.clear_tokens()
                self._storage.forget_client()
                self._status("The authorization server no longer knows this client; registering again…")
                raise _StartAgain()
            if error == "invalid_client" and not self.code_flow:
                raise AuthorizationFailed(
                    f"{self._issuer_name()} rejected the client credentials ({_words(response.status_code, error, description)}); "
                    "check the client id and its secret or key"
                )
            raise AuthorizationFailed(
                f"{self._issuer_name()} refused the token request ({_words(response.status_code, error, description)})"
            )
        if self.context.client_info is None and response.status_code not in (200, 201):
            error, description = await oauth_error_of(response)
            issuer = self._issuer_name()
            raise ServerRefused(
                issuer, f"{issuer} refused to register this client ({_words(response.status_code, error, description)})"
            )

    async def _note_metadata_problem(self, outgoing: httpx2.Request, response: httpx2.Response) -> None:
        """Remember why AS metadata was unusable: invalid, or a server error (then no 2025-03-26 fallback)."""
        candidates = build_oauth_authorization_server_metadata_discovery_urls(self.context.auth_server_url, self.context.server_url)
        if str(outgoing.url) not in candidates:
            return
        if response.status_code >= 500:
            self._metadata_problem = f"{outgoing.url} answered HTTP {response.status_code}"
            return
        if response.status_code != 200:
            return
        try:
            OAuthMetadata.model_validate_json(await response.aread())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "document"
            self._metadata_problem = f"{outgoing.url} is invalid: {where}: {first['msg']}"

    def _issuer_name(self) -> str:
        metadata = self.context.oauth_metadata
        if metadata is not None:
            return str(metadata.issuer)
        if self._is_legacy_server():
            return origin_of(self.context.server_url)
        return self._selected_server or "the authorization server"


def _metadata_document_url(url: str | None) -> tuple[str | None, str | None]:
    """Split a CIMD URL into (what the SDK accepts, what is set on its context afterwards).

    The SDK's constructor takes only https CIMD URLs; http is also allowed on loopback, for
    development, as the AS allows it there (AS-19, ``cimd_allow_insecure_loopback``).
    """
    if url is None:
        return None, None
    parts = urlsplit(url)
    if parts.path in ("", "/") or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"the client metadata URL {url} must be an https URL with a path")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ClientError(f"the client metadata URL {url} must use https (http only on loopback)")
    return (url, None) if parts.scheme == "https" else (None, url)


class InteractiveProvider(GatehouseFlow, OAuthClientProvider):
    """Authorization code + PKCE with a browser and a loopback listener, for people."""

    def __init__(self, server_url: str, options: ClientOptions, storage: BoundTokenStorage, status: Callable[[str], None]):
        login = BrowserLogin(options, status, lambda: self.context.oauth_metadata)
        for_sdk, loopback_document = _metadata_document_url(options.client_metadata_url)
        metadata = OAuthClientMetadata(
            redirect_uris=[AnyUrl(PLACEHOLDER_REDIRECT_URI)],
            client_name=options.client_name,
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
            application_type="native",
        )
        super().__init__(
            server_url, metadata, storage, login.redirect_handler, login.callback_handler,
            client_metadata_url=for_sdk,
        )
        if loopback_document:
            self.context.client_metadata_url = loopback_document
        fixed = None
        if options.client_id:
            fixed = OAuthClientInformationFull(
                client_id=options.client_id,
                client_secret=options.client_secret,
                token_endpoint_auth_method="client_secret_basic" if options.client_secret else "none",
                grant_types=["authorization_code", "refresh_token"],
            )
        self._setup_gatehouse(storage, options, status, login, fixed)


class SecretClientCredentialsProvider(GatehouseFlow, ClientCredentialsOAuthProvider):
    """The client credentials grant with a client secret (AS-17, ``client_secret_basic``)."""

    code_flow = False

    def __init__(self, server_url: str, options: ClientOptions, storage: BoundTokenStorage, status: Callable[[str], None]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            super().__init__(
                server_url, storage, options.client_id, options.client_secret, "client_secret_basic",
                scope=" ".join(options.scopes) or None, issuer=options.issuer,
            )
        self._setup_gatehouse(storage, options, status)


class PrivateKeyClientCredentialsProvider(GatehouseFlow, PrivateKeyJWTOAuthProvider):
    """The client credentials grant authenticated with ``private_key_jwt`` (RFC 7523 section 2.2)."""

    code_flow = False

    def __init__(self, server_url: str, options: ClientOptions, storage: BoundTokenStorage, status: Callable[[str], None]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            super().__init__(
                server_url, storage, options.client_id, assertion_provider(options.client_id, options.private_key_file),
                scope=" ".join(options.scopes) or None, issuer=options.issuer,
            )
        self._setup_gatehouse(storage, options, status)
