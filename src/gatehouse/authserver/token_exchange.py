"""OAuth 2.0 Token Exchange (RFC 8693) at the token endpoint: how a resource server gets a user's
upstream access token out of the vault (UP-3). It is the only way an upstream token leaves the AS.

The request (section 2.1), ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``:

- the client is a confidential resource-server client (``gatehouse clients add --resource-server
  URI``, column ``resource_server_for``), authenticated with ``client_secret_basic``,
  ``client_secret_post`` or ``private_key_jwt``; any other client gets ``unauthorized_client``;
- ``subject_token`` is the user's MCP access token the resource server received, with
  ``subject_token_type=urn:ietf:params:oauth:token-type:access_token``: a valid, unexpired,
  unrevoked access token of this AS, issued on behalf of a user, whose ``aud`` is exactly the
  resource the client is registered for (a resource server exchanges tokens of its own resource
  only); anything else is ``invalid_request`` (section 2.2.2);
- ``audience`` names the upstream provider, as configured (``[[upstream]] name``, e.g.
  ``google``); an unknown one is ``invalid_target``. ``resource`` is not used (the upstream API
  is not a resource of this AS) and is refused; ``actor_token`` (delegation) is not supported;
  ``requested_token_type``, when sent, must be ``...:token-type:access_token``. A ``scope``, when
  sent, must be held by the upstream token (``invalid_scope`` otherwise). A DPoP proof is refused:
  the provider's token cannot be bound to the resource server's key (RFC 9449 section 5). A
  DPoP-bound subject token is accepted as it is: the resource server checked its proof.

The answer (section 2.2.1) is the vault's fresh upstream access token (refreshed upstream when
needed): ``access_token``, ``issued_token_type``, ``token_type: Bearer``, ``expires_in``,
``scope``, with ``Cache-Control: no-store``; never a refresh or ID token. When the vault cannot
give one the answer is an error whose ``error`` is the code of
:mod:`gatehouse.upstream_errors`: ``upstream_not_linked`` and
``upstream_reauthorization_required`` with HTTP 400, ``upstream_unavailable`` with HTTP 503
(the provider is down: retrying later may work); ``error_description`` says what to do.

The request is checked in the token endpoint's store transaction; the vault is asked after that
transaction ends (:func:`complete_exchange`), because it may call the provider over the network
and writes refreshed tokens in transactions of its own. Audit events name the resource server,
the user, the grant of the subject token and the provider, never a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from authlib.oauth2.rfc6749.errors import (
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from starlette.concurrency import run_in_threadpool

from gatehouse.authserver import audit
from gatehouse.authserver.grants import _GatehouseGrant
from gatehouse.authserver.resources import TargetError, describable
from gatehouse.authserver.tokens import user_of
from gatehouse.store.models import Grant
from gatehouse.timeutil import utcnow
from gatehouse.upstream_errors import UpstreamTokenError, UpstreamUnavailable

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

TOKEN_EXCHANGED = "token.exchanged"
TOKEN_EXCHANGE_REFUSED = "token.exchange_refused"


@dataclass(frozen=True)
class PendingExchange:
    """A checked exchange request, waiting for the vault (the body of the grant's answer)."""

    client_id: str
    user_id: int
    grant_id: str
    provider: str
    resource: str
    scope: tuple[str, ...]


class UpstreamTokenRefused(OAuth2Error):
    """The vault's typed error as a token endpoint error answer (RFC 6749 section 5.2)."""

    def __init__(self, exc: UpstreamTokenError):
        status = 503 if isinstance(exc, UpstreamUnavailable) else 400
        super().__init__(description=describable(str(exc)), status_code=status, error=exc.error)


class TokenExchangeGrant(_GatehouseGrant, BaseGrant, TokenEndpointMixin):
    """RFC 8693 section 2: a resource server's user access token for that user's upstream token."""

    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.resource_server_for:
            raise UnauthorizedClientError(
                "only a resource server registered with `gatehouse clients add --resource-server URI` may exchange tokens"
            )
        self.request.client = client
        data = self.request.payload.data
        self._check_parameters(data)
        provider = self._provider(self.request.payload.datalist.get("audience", []))
        grant_row = self._subject_grant(data["subject_token"], client.resource_server_for)
        scope = tuple(dict.fromkeys((self.request.payload.scope or "").split()))
        self.request.pending_exchange = PendingExchange(
            client.client_id, grant_row.user_id, grant_row.id, provider, client.resource_server_for, scope
        )

    def create_token_response(self):
        return 200, self.request.pending_exchange, []

    def _check_parameters(self, data: dict) -> None:
        """Section 2.1: the parameters this server takes, and the ones it refuses."""
        if not data.get("subject_token"):
            raise InvalidRequestError("'subject_token' is required: the user's access token this resource server received")
        if data.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(f"'subject_token_type' must be {ACCESS_TOKEN_TYPE}")
        if "actor_token" in data or "actor_token_type" in data:
            raise InvalidRequestError("'actor_token' (delegation, RFC 8693 section 1.1) is not supported here")
        requested = data.get("requested_token_type")
        if requested is not None and requested != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(f"'requested_token_type' must be {ACCESS_TOKEN_TYPE}: only upstream access tokens are issued")
        if self.request.payload.datalist.get("resource"):
            raise TargetError("name the upstream provider with 'audience' (e.g. audience=google); 'resource' is not used here")
        if self.request.dpop is not None:
            raise InvalidRequestError("an upstream token cannot be bound to a DPoP key (RFC 9449): send the exchange without a DPoP proof")

    def _provider(self, audiences: list[str]) -> str:
        names = [upstream.name for upstream in self.ctx.settings.upstream]
        known = ", ".join(names) or "none"
        if len(audiences) != 1 or not audiences[0]:
            raise TargetError(f"name exactly one upstream provider with 'audience'; configured providers: {known}")
        if audiences[0] not in names:
            raise TargetError(f"no upstream provider is named {audiences[0]!r} here; configured providers: {known}")
        return audiences[0]

    def _subject_grant(self, subject_token: str, resource: str) -> Grant:
        """The grant behind a live user access token for ``resource`` (section 2.1, ``subject_token``)."""
        verified = self.ctx.tokens.verify_access_token(self.db, subject_token, leeway=0)
        if verified is None:
            self._refuse("subject token not valid")
            raise InvalidRequestError("the subject_token is not a valid access token of this server (unknown, malformed or expired)")
        if verified.revoked:
            self._refuse("subject token revoked", verified.claims)
            raise InvalidRequestError("the subject_token was revoked: the user must authorize the MCP client again")
        if verified.claims.get("aud") != resource:
            self._refuse("subject token for another resource", verified.claims)
            raise InvalidRequestError(describable(
                f"the subject_token was issued for {verified.claims.get('aud')}, not for {resource}, "
                "the resource this resource server is registered for"
            ))
        grant_row = self.db.get(Grant, verified.record.grant_id)
        if grant_row.user_id is None or user_of(self.db, grant_row.user_id) is None:
            self._refuse("subject token of no active user", verified.claims)
            raise InvalidRequestError("the subject_token was not issued on behalf of an active user, who alone has upstream tokens")
        return grant_row

    def _refuse(self, reason: str, claims: dict | None = None) -> None:
        client_id = self.request.client.client_id
        jti = (claims or {}).get("jti")

        def record(session):
            audit.record(session, TOKEN_EXCHANGE_REFUSED, client_id=client_id, reason=reason, subject_jti=jti)

        self.request.error_effects.append(record)


async def complete_exchange(ctx, server, response):
    """Answer a checked exchange (``response.body`` is a :class:`PendingExchange`) with the vault's token.

    Runs after the token endpoint's transaction has ended: the vault may refresh the token at
    the provider, and writes in transactions of its own."""
    pending: PendingExchange = response.body
    try:
        upstream = await ctx.upstream_vault.fresh_access_token(pending.user_id, pending.provider)
        body = _token_response(upstream, pending)
    except UpstreamTokenError as exc:
        await run_in_threadpool(_record, ctx, TOKEN_EXCHANGE_REFUSED, pending, reason=exc.error)
        return server.handle_response(*UpstreamTokenRefused(exc)())
    except InvalidScopeError as exc:
        await run_in_threadpool(_record, ctx, TOKEN_EXCHANGE_REFUSED, pending, reason=exc.error)
        return server.handle_response(*exc())
    await run_in_threadpool(_record, ctx, TOKEN_EXCHANGED, pending)
    return server.handle_response(200, body, [])


def _token_response(upstream, pending: PendingExchange) -> dict:
    """Section 2.2.1: the upstream access token, and what is known of it (an empty ``scope`` is unknown)."""
    granted = upstream.scope.split() if upstream.scope else None
    if pending.scope and granted is not None:
        missing = [s for s in pending.scope if s not in granted]
        if missing:
            raise InvalidScopeError(describable(
                f"the user's {pending.provider} token does not hold {' '.join(missing)}; "
                f"it holds: {' '.join(granted)}"
            ))
    body = {"access_token": upstream.access_token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer"}
    if upstream.expires_at is not None:
        body["expires_in"] = max(0, int((_naive(upstream.expires_at) - utcnow()).total_seconds()))
    if granted is not None:
        body["scope"] = upstream.scope
    return body


def _naive(moment: datetime) -> datetime:
    """Naive UTC, as the store keeps time."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _record(ctx, event: str, pending: PendingExchange, **details) -> None:
    with ctx.unit_of_work() as session:
        audit.record(session, event, client_id=pending.client_id, user_id=pending.user_id, grant_id=pending.grant_id,
                     provider=pending.provider, resource=pending.resource, **details)
