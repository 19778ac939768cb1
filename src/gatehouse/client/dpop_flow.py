"""DPoP in the client's OAuth flow (RFC 9449): proofs, nonces and bound tokens.

``DPoPFlow`` is the base of ``GatehouseFlow``, so every Gatehouse provider speaks DPoP. It wraps
the whole auth flow (``async_auth_flow``) and so sees each request as it leaves and each answer:

- a token request (a POST to the AS's token endpoint: code exchange, refresh, client
  credentials, jwt-bearer) gets a fresh proof while DPoP is in use (section 5);
- the request being authorized, when its access token is DPoP-bound, goes out as
  ``Authorization: DPoP <token>`` with a proof carrying ``ath`` (section 7.1);
- a ``use_dpop_nonce`` answer, 400 from the AS (section 8) or 401 with a DPoP challenge from the
  resource server (section 9), is sent again once with a new proof carrying the nonce supplied;
  the latest nonce of each origin goes into every later proof to it;
- token responses are read with ``token_type: DPoP`` allowed (the SDK's ``OAuthToken`` knows only
  Bearer). Section 5 lets an AS issue a Bearer token to a request with a proof, and lets a client
  that expects a bound token discard it: Gatehouse discards it when bound tokens are required
  (``ClientOptions.dpop=True``, or the resource's ``dpop_bound_access_tokens_required``), else
  uses it as a Bearer token (still sending proofs to the token endpoint, which may have bound the
  refresh token). A DPoP token answering a request without a proof is refused.

DPoP is in use (see ``ClientOptions.dpop``) when it is required, when the AS's metadata lists
ES256 in ``dpop_signing_alg_values_supported``, or when this entry already has a DPoP key (its
tokens may be bound to it). The key is created on first use and stored with the tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any, Literal

import httpx2
from joserfc.jwk import ECKey
from mcp.shared.auth import OAuthToken
from pydantic import ValidationError, field_validator

from gatehouse.client.dpop import (
    PROOF_ALGORITHM,
    USE_NONCE_ERROR,
    NonceBook,
    generate_key,
    key_for_storage,
    key_from_stored,
    make_proof,
    target_uri,
)
from gatehouse.client.errors import AuthorizationFailed

PROOF_HEADER = "DPoP"
DPOP_CHALLENGE = re.compile(r"(?:^|,)\s*DPoP\b", re.IGNORECASE)
NONCE_ERROR = re.compile(rf'error\s*=\s*"?{USE_NONCE_ERROR}\b')


class TokenResponse(OAuthToken):
    """An access token response (RFC 6749 section 5.1) whose ``token_type`` may also be ``DPoP``."""

    token_type: Literal["Bearer", "DPoP"] = "Bearer"

    @field_validator("token_type", mode="before")
    @classmethod
    def normalize_token_type(cls, value: Any) -> Any:
        """Token types compare case-insensitively (RFC 6749 section 5.1)."""
        if isinstance(value, str):
            return {"bearer": "Bearer", "dpop": "DPoP"}.get(value.lower(), value)
        return value


async def _json_object(response: httpx2.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(await response.aread())
    except (ValueError, httpx2.HTTPError):
        return None
    return body if isinstance(body, dict) else None


class DPoPFlow:
    """The DPoP half of a Gatehouse provider (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proof_key: ECKey | None = None
        self._nonces = NonceBook()
        self._advertised_proof_algorithms: dict[str, list[str]] = {}

    # --- when DPoP is in use ------------------------------------------------------------

    def _dpop_required(self) -> bool:
        resource = self.context.protected_resource_metadata
        return self._options.dpop is True or bool(resource and resource.dpop_bound_access_tokens_required)

    def _proof_algorithms_of_server(self) -> list[str] | None:
        metadata = self.context.oauth_metadata
        return self._advertised_proof_algorithms.get(str(metadata.issuer)) if metadata is not None else None

    def _uses_dpop(self) -> bool:
        if self._options.dpop is False:
            return False
        entry = self._storage.entry
        if self._dpop_required() or self._proof_key is not None or (entry is not None and entry.dpop_key):
            return True
        return PROOF_ALGORITHM in (self._proof_algorithms_of_server() or [])

    def _check_server_accepts_proofs(self) -> None:
        algorithms = self._proof_algorithms_of_server()
        if algorithms and PROOF_ALGORITHM not in algorithms:
            issuer = self.context.oauth_metadata.issuer
            raise AuthorizationFailed(
                f"{issuer} accepts DPoP proofs signed with {', '.join(algorithms)} only, and this client signs them "
                f"with {PROOF_ALGORITHM}; bound tokens cannot be obtained there (RFC 9449 section 5.1)"
            )

    # --- the key ------------------------------------------------------------------------

    def _key(self) -> ECKey:
        if self._proof_key is None:
            entry = self._storage.entry
            self._proof_key = key_from_stored(entry.dpop_key) if entry is not None and entry.dpop_key else self._new_stored_key()
        return self._proof_key

    def _new_stored_key(self) -> ECKey:
        """A new key, stored in this entry, unless another process stored one first (then that one)."""
        key = generate_key()
        already: list[dict[str, Any]] = []
        fresh = self._storage.fresh

        def keep_first(entry):
            if entry.dpop_key and not fresh:
                already.append(entry.dpop_key)
                return entry
            return replace(entry, dpop_key=key_for_storage(key))

        self._update_entry(keep_first)
        return key_from_stored(already[0]) if already else key

    def _store_key_with_bound_tokens(self) -> None:
        """The entry that now holds bound tokens must hold their key (another AS's entry may not yet)."""
        entry, key = self._storage.entry, self._proof_key
        if key is None or entry is None or (entry.dpop_key and key_from_stored(entry.dpop_key).thumbprint() == key.thumbprint()):
            return
        self._update_entry(lambda current: replace(current, dpop_key=key_for_storage(key)))

    def _update_entry(self, change) -> None:
        storage = self._storage
        issuer = storage.discovered_issuer() or storage.issuer
        if issuer is not None:
            storage.store.update(issuer, storage.resource, change, set_aside_unreadable=storage.fresh)

    # --- requests as they leave, answers as they come -----------------------------------

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow = super().async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield self._with_proof(outgoing, request)
                if await self._nonce_was_asked_for(outgoing, response, request):
                    response = yield self._with_proof(outgoing, request)
                    self._nonces.note(response)
                if outgoing is not request:
                    await self._note_server_metadata(outgoing, response)
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()

    def _is_token_request(self, outgoing: httpx2.Request) -> bool:
        return outgoing.method == "POST" and target_uri(outgoing.url) == target_uri(self._get_token_endpoint())

    def _with_proof(self, outgoing: httpx2.Request, request: httpx2.Request) -> httpx2.Request:
        if outgoing is request:
            self._present_token(request)
        elif self._is_token_request(outgoing) and self._uses_dpop():
            self._check_server_accepts_proofs()
            nonce = self._nonces.for_url(outgoing.url)
            outgoing.headers[PROOF_HEADER] = make_proof(self._key(), outgoing.method, outgoing.url, nonce=nonce)
        return outgoing

    def _present_token(self, request: httpx2.Request) -> None:
        """Section 7.1: a bound token goes with the DPoP scheme and a proof of its key."""
        if PROOF_HEADER in request.headers:
            del request.headers[PROOF_HEADER]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "dpop") or not token or not self._is_bound(token):
            return
        request.headers["Authorization"] = f"DPoP {token}"
        nonce = self._nonces.for_url(request.url)
        request.headers[PROOF_HEADER] = make_proof(self._key(), request.method, request.url, access_token=token, nonce=nonce)

    def _is_bound(self, access_token: str) -> bool:
        current = self.context.current_tokens
        if current is not None and current.access_token == access_token and current.token_type == "DPoP":
            return True
        entry = self._storage.entry
        stored = entry.tokens if entry is not None else None
        return stored is not None and stored.access_token == access_token and stored.token_type == "DPoP"

    async def _nonce_was_asked_for(self, outgoing: httpx2.Request, response: httpx2.Response, request: httpx2.Request) -> bool:
        """Sections 8 and 9: a ``use_dpop_nonce`` answer carrying a nonce this client did not use yet."""
        new_nonce = self._nonces.note(response)
        if PROOF_HEADER not in outgoing.headers or not new_nonce:
            return False
        if outgoing is request:
            challenges = response.headers.get("WWW-Authenticate", "")
            return response.status_code == 401 and bool(DPOP_CHALLENGE.search(challenges) and NONCE_ERROR.search(challenges))
        body = await _json_object(response) if response.status_code == 400 else None
        return body is not None and body.get("error") == USE_NONCE_ERROR

    async def _note_server_metadata(self, outgoing: httpx2.Request, response: httpx2.Response) -> None:
        """Keep ``dpop_signing_alg_values_supported`` (RFC 9449 section 5.1), which the SDK's model drops."""
        if outgoing.method != "GET" or response.status_code != 200:
            return
        document = await _json_object(response)
        if document is None or not isinstance(document.get("issuer"), str) or "token_endpoint" not in document:
            return
        algorithms = document.get("dpop_signing_alg_values_supported")
        if isinstance(algorithms, list):
            self._advertised_proof_algorithms[document["issuer"]] = [a for a in algorithms if isinstance(a, str)]

    # --- token responses ----------------------------------------------------------------

    async def _read_token_response(self, response: httpx2.Response) -> TokenResponse:
        """Parse a token response and apply section 5's rules on its ``token_type``."""
        issuer = self.context.oauth_metadata.issuer if self.context.oauth_metadata else "the authorization server"
        body = await _json_object(response) or {}
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() not in ("bearer", "dpop"):
            raise AuthorizationFailed(f"{issuer} answered the token request with token_type {token_type!r}, which this client cannot use")
        try:
            token = TokenResponse.model_validate(body)
        except ValidationError as exc:
            raise AuthorizationFailed(f"{issuer} sent an invalid token response ({exc.errors()[0]['msg']})") from None
        proof_sent = PROOF_HEADER in response.request.headers
        if token.token_type == "DPoP" and not proof_sent:
            raise AuthorizationFailed(f"{issuer} issued a DPoP-bound token to a request without a DPoP proof; refusing it (RFC 9449 section 5)")
        if token.token_type != "DPoP" and proof_sent and self._dpop_required():
            raise AuthorizationFailed(
                f"{issuer} issued a {token.token_type} token where a DPoP-bound one is required; refusing it (RFC 9449 section 5)"
            )
        return token

    async def _keep_tokens(self, token: TokenResponse) -> None:
        self.context.current_tokens = token
        self.context.update_token_expiry(token)
        await self.context.storage.set_tokens(token)
        if token.token_type == "DPoP":
            self._store_key_with_bound_tokens()

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        """The SDK's handling, with ``_read_token_response`` as the parser."""
        if response.status_code not in (200, 201):
            await super()._handle_token_response(response)
            return
        token = await self._read_token_response(response)
        if token.scope is None:
            token.scope = self.context.client_metadata.scope
        await self._keep_tokens(token)

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        """The SDK's handling (RFC 6749 section 6: scope and refresh token carried forward), with
        ``_read_token_response`` as the parser."""
        if response.status_code != 200:
            return await super()._handle_refresh_response(response)
        token = await self._read_token_response(response)
        prior = self.context.current_tokens
        if prior is not None:
            token.scope = token.scope if token.scope is not None else prior.scope
            token.refresh_token = token.refresh_token or prior.refresh_token
        await self._keep_tokens(token)
        return True
