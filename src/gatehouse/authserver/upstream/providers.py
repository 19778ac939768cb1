"""The configured upstream identity providers (``[[upstream]]``), on Authlib's Starlette OAuth client.

OpenID providers (``oidc``, ``google``, ``entra``) are found by discovery (OIDC Discovery 1.0
section 4; the document's ``issuer`` must equal the configured one, section 4.3). Their ID token is
validated as OIDC Core section 3.1.3.7 asks (UP-1, S-U3): signature with the provider's JWKS (an
asymmetric ``alg`` only), ``iss``, ``aud`` holding our client id (``azp`` when there are more),
``exp``, ``iat``, ``nonce`` and ``at_hash``. GitHub speaks plain OAuth 2.0: the user is whoever
``GET /user`` names, subject its numeric id, issuer GitHub's base URL.

Every step's failure becomes an :class:`UpstreamLoginError` that says what happened and what to do;
no message carries a token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.httpx_client.utils import HTTPX_CLIENT_KWARGS
from authlib.integrations.starlette_client import OAuth
from joserfc.errors import JoseError

from gatehouse.authserver.upstream.state import UpstreamLeg
from gatehouse.config import UpstreamConfig

log = logging.getLogger("gatehouse.upstream")

#: ID token algorithms we accept: asymmetric only, so neither ``none`` nor a MAC keyed with the
#: client secret can stand in for the provider's signature
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519")
ENTRA_TENANT_TEMPLATE = "{tenantid}"
MAX_CLAIM_LENGTH = 200


class UpstreamLoginError(Exception):
    """A step of the upstream sign-in failed. ``title``/``str(exc)``/``advice`` make the page the
    user sees; ``oauth_error`` is what the MCP client is told (RFC 6749 section 4.1.2.1)."""

    def __init__(self, title: str, message: str, *, advice: str, error_code: str, oauth_error: str = "server_error",
                 status_code: int = 502):
        super().__init__(message)
        self.title = title
        self.advice = advice
        self.error_code = error_code
        self.oauth_error = oauth_error
        self.status_code = status_code


@dataclass(frozen=True)
class UpstreamUser:
    """Who the provider says signed in."""

    issuer: str
    subject: str
    username: str
    email: str | None
    name: str | None


def _text_claim(value: object) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text or len(text) > MAX_CLAIM_LENGTH or not text.isprintable():
        return None
    return text


class UpstreamProvider:
    """One ``[[upstream]]`` entry: authorization URL, code exchange, refresh, revocation."""

    def __init__(self, config: UpstreamConfig, oauth: OAuth, *, timeout: float, leeway: int):
        self.config = config
        self.timeout = timeout
        self.leeway = leeway
        self.app = oauth.register(
            config.name,
            client_id=config.client_id,
            client_secret=config.client_secret,
            authorize_params=dict(config.authorization_params) or None,
            client_kwargs={
                "scope": " ".join(config.scopes or ()),
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": config.token_endpoint_auth_method,
                "timeout": timeout,
                "trust_env": False,
                "follow_redirects": False,
            },
            **self._endpoints(config),
        )

    @staticmethod
    def _endpoints(config: UpstreamConfig) -> dict:
        return {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def issuer(self) -> str:
        """The issuer identities of this provider are linked under."""
        return self.config.issuer

    def _failure(self, exc: Exception, step: str) -> UpstreamLoginError:
        """The error page for ``exc`` raised while ``step`` ("reach", "sign-in", ...)."""
        label = self.label
        if isinstance(exc, UpstreamLoginError):
            return exc
        if isinstance(exc, httpx2.TransportError):
            log.warning("upstream %s unreachable during %s: %s", self.name, step, type(exc).__name__)
            return UpstreamLoginError(
                f"{label} cannot be reached",
                f"Gatehouse could not connect to {label} to {step}.",
                advice=f"{label} may be down or unreachable from this server. Try again in a few minutes; "
                "if it keeps happening, tell the administrator.",
                error_code="upstream_unreachable", oauth_error="temporarily_unavailable",
            )
        if isinstance(exc, httpx2.HTTPStatusError):
            status = exc.response.status_code
            log.warning("upstream %s answered HTTP %s during %s", self.name, status, step)
            return UpstreamLoginError(
                f"{label} is not answering properly",
                f"{label} answered with an error (HTTP {status}) when Gatehouse tried to {step}.",
                advice="Try again in a few minutes; if it keeps happening, tell the administrator.",
                error_code="upstream_unavailable",
                oauth_error="temporarily_unavailable" if status >= 500 else "server_error",
            )
        if isinstance(exc, OAuthError):
            log.warning("upstream %s refused to %s: %s", self.name, step, exc.error)
            return UpstreamLoginError(
                f"{label} refused the sign-in",
                f"{label} refused to {step} ({exc.error}).",
                advice="Go back to the app and sign in again. If it keeps happening, the administrator should "
                f"check this server's registration at {label} (client id, secret and redirect URI).",
                error_code="upstream_refused",
            )
        if isinstance(exc, JoseError):
            log.warning("upstream %s sent an ID token that fails validation: %s", self.name, exc.error)
            return UpstreamLoginError(
                "The sign-in could not be verified",
                f"{label} sent proof of your identity (an ID token) that failed validation ({_jose_problem(exc)}), "
                "so Gatehouse did not sign you in.",
                advice="Go back to the app and try again. If it keeps happening, tell the administrator.",
                error_code="invalid_id_token",
            )
        log.warning("upstream %s failed during %s: %s", self.name, step, type(exc).__name__)
        detail = f": {exc}" if isinstance(exc, RuntimeError | ValueError) else f" ({type(exc).__name__})"
        return UpstreamLoginError(
            f"Signing in with {label} failed",
            f"Gatehouse could not {step} with {label}{detail}.",
            advice="Tell the administrator; the upstream provider's configuration needs checking.",
            error_code="upstream_misconfigured",
        )

    async def metadata(self) -> dict:
        return {}

    def _redirect_kwargs(self, leg: UpstreamLeg) -> dict:
        return {"state": leg.state, "code_verifier": leg.code_verifier}

    async def authorization_url(self, redirect_uri: str, leg: UpstreamLeg) -> str:
        """The provider's authorization request (RFC 6749 section 4.1.1, PKCE S256 per RFC 7636 section 4.3)."""
        try:
            await self.metadata()
            created = await self.app.create_authorization_url(redirect_uri, **self._redirect_kwargs(leg))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a page, never a 500
            raise self._failure(exc, "start the sign-in") from None
        return created["url"]

    async def exchange_code(self, redirect_uri: str, code: str, leg: UpstreamLeg) -> dict:
        """RFC 6749 section 4.1.3 with the PKCE verifier (RFC 7636 section 4.5)."""
        try:
            await self.metadata()
            token = await self.app.fetch_access_token(redirect_uri=redirect_uri, code=code, code_verifier=leg.code_verifier)
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "finish the sign-in") from None
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise UpstreamLoginError(
                f"{self.label} sent no access token", f"{self.label}'s token response has no access token.",
                advice="Tell the administrator.", error_code="upstream_refused",
            )
        return dict(token)

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207 section 2.4: an ``iss`` in the authorization response must be the provider's."""

    async def identify(self, token: dict, leg: UpstreamLeg) -> UpstreamUser:
        raise NotImplementedError

    def _username(self, claims: dict, fallback: str) -> str:
        wanted = [self.config.username_claim] if self.config.username_claim else list(self.DEFAULT_USERNAME_CLAIMS)
        for claim in wanted:
            value = _text_claim(claims.get(claim))
            if value:
                return f"{self.name}:{value}"
        return f"{self.name}:{fallback}"

    DEFAULT_USERNAME_CLAIMS: tuple[str, ...] = ("email", "sub")

    async def token_endpoint(self) -> str:
        metadata = await self.metadata()
        url = self.app.access_token_url or metadata.get("token_endpoint")
        if not url:
            raise RuntimeError(f"{self.label} publishes no token endpoint")
        return url

    def oauth_client(self) -> AsyncOAuth2Client:
        """A fresh Authlib client for a back-channel call (refresh, revocation)."""
        return AsyncOAuth2Client(
            client_id=self.config.client_id, client_secret=self.config.client_secret,
            token_endpoint_auth_method=self.config.token_endpoint_auth_method,
            revocation_endpoint_auth_method=self.config.token_endpoint_auth_method,
            timeout=self.timeout, trust_env=False, follow_redirects=False,
        )

    async def refresh(self, refresh_token: str) -> dict:
        """RFC 6749 section 6. Raises Authlib's ``OAuthError`` for an error answer, ``httpx2`` errors
        when the provider cannot be reached or answers 5xx."""
        url = await self.token_endpoint()
        async with self.oauth_client() as client:
            token = await client.refresh_token(url, refresh_token=refresh_token)
        return dict(token)

    async def revoke(self, tokens: dict) -> None:
        """RFC 7009 at the provider's ``revocation_endpoint``, if it has one (best effort)."""
        url = (await self.metadata()).get("revocation_endpoint")
        if not url:
            return
        async with self.oauth_client() as client:
            for hint in ("refresh_token", "access_token"):
                if tokens.get(hint):
                    response = await client.revoke_token(url, token=tokens[hint], token_type_hint=hint)
                    if response.status_code == 200:
                        return


class OIDCProvider(UpstreamProvider):
    """An OpenID provider: ``oidc``, and the ``google`` and ``entra`` presets."""

    @staticmethod
    def _endpoints(config: UpstreamConfig) -> dict:
        return {"server_metadata_url": config.issuer.rstrip("/") + "/.well-known/openid-configuration"}

    @property
    def multi_tenant(self) -> bool:
        return self.config.kind == "entra" and ENTRA_TENANT_TEMPLATE in self.app.server_metadata.get("issuer", "")

    async def metadata(self) -> dict:
        """Discovery, once; the document must name the configured issuer (OIDC Discovery section 4.3).

        Keys that Authlib would pass on to the HTTP client (``verify``, ``proxy``, ...) are dropped,
        and the ID token algorithms narrowed to :data:`ID_TOKEN_ALGORITHMS`."""
        metadata = self.app.server_metadata
        if "_loaded_at" in metadata:
            return metadata
        metadata = await self.app.load_server_metadata()
        for key in HTTPX_CLIENT_KWARGS:
            metadata.pop(key, None)
        issuer = metadata.get("issuer")
        expected = self.config.issuer
        entra_template = self.config.kind == "entra" and isinstance(issuer, str) and ENTRA_TENANT_TEMPLATE in issuer
        if issuer != expected and not entra_template:
            self.app.server_metadata = {}
            raise UpstreamLoginError(
                f"{self.label} is not set up correctly",
                f"The discovery document at {self.app._server_metadata_url} names the issuer {issuer!r}, "
                f"not the configured {expected!r}.",
                advice="Tell the administrator: the issuer in gatehouse.toml must be exactly the provider's issuer.",
                error_code="upstream_misconfigured",
            )
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        metadata["id_token_signing_alg_values_supported"] = [a for a in offered if a in ID_TOKEN_ALGORITHMS] or ["RS256"]
        return metadata

    def _redirect_kwargs(self, leg: UpstreamLeg) -> dict:
        return {**super()._redirect_kwargs(leg), "nonce": leg.nonce}

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207 section 2.4 (mix-up defence): the answer names this provider as its issuer, and
        does name one when the provider says it always does."""
        try:
            metadata = await self.metadata()
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "check the sign-in answer") from None
        expected = metadata.get("issuer")
        required = metadata.get("authorization_response_iss_parameter_supported") is True
        if (iss is None and not required) or (iss is not None and (iss == expected or self.multi_tenant)):
            return
        raise UpstreamLoginError(
            "The sign-in could not be verified",
            f"The answer did not come from {self.label}: it names {'no issuer' if iss is None else 'another issuer'} (RFC 9207).",
            advice="Go back to the app and sign in again.", error_code="upstream_issuer_mismatch",
        )

    def _claims_options(self, metadata: dict) -> dict:
        issuer = metadata["issuer"]
        if ENTRA_TENANT_TEMPLATE in issuer:
            def tenant_issuer(claims, value):
                tid = claims.get("tid")
                return isinstance(tid, str) and bool(tid) and value == issuer.replace(ENTRA_TENANT_TEMPLATE, tid)

            iss = {"essential": True, "validate": tenant_issuer}
        else:
            iss = {"essential": True, "value": issuer}
        return {
            "iss": iss,
            "aud": {"essential": True, "values": [self.config.client_id]},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }

    async def identify(self, token: dict, leg: UpstreamLeg) -> UpstreamUser:
        """OIDC Core section 3.1.3.7 (ID token) and, for claims the ID token lacks, section 5.3 (UserInfo)."""
        if not isinstance(token.get("id_token"), str):
            raise UpstreamLoginError(
                "The sign-in could not be verified", f"{self.label} sent no ID token, so Gatehouse cannot tell who signed in.",
                advice="Tell the administrator: the upstream scopes must include openid.", error_code="invalid_id_token",
            )
        try:
            metadata = await self.metadata()
            claims = await self.app.parse_id_token(
                token, nonce=leg.nonce, claims_options=self._claims_options(metadata), leeway=self.leeway
            )
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "check who signed in") from None
        subject = _text_claim(claims.get("sub"))
        if subject is None:
            raise UpstreamLoginError(
                "The sign-in could not be verified", f"{self.label}'s ID token has no usable subject.",
                advice="Tell the administrator.", error_code="invalid_id_token",
            )
        claims = dict(claims)
        wanted = self.config.username_claim or "email"
        if wanted not in claims and metadata.get("userinfo_endpoint"):
            claims = {**await self._userinfo(token, subject), **claims}
        issuer = claims["iss"] if self.multi_tenant else self.issuer
        return UpstreamUser(
            issuer=issuer, subject=subject, username=self._username(claims, subject),
            email=_text_claim(claims.get("email")), name=_text_claim(claims.get("name")),
        )

    async def _userinfo(self, token: dict, subject: str) -> dict:
        """UserInfo claims, used only when its ``sub`` is the ID token's (OIDC Core section 5.3.4)."""
        try:
            info = await self.app.userinfo(token=token)
        except Exception as exc:  # noqa: BLE001 - missing profile claims are not fatal
            log.info("upstream %s userinfo unavailable: %s", self.name, type(exc).__name__)
            return {}
        return dict(info) if info.get("sub") == subject else {}


class GitHubProvider(UpstreamProvider):
    """GitHub's OAuth (not OIDC): https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps"""

    DEFAULT_USERNAME_CLAIMS = ("login", "id")

    @staticmethod
    def _endpoints(config: UpstreamConfig) -> dict:
        return {"authorize_url": config.authorize_url, "access_token_url": config.token_url, "api_base_url": config.api_base}

    def _api(self, path: str) -> str:
        return self.config.api_base.rstrip("/") + path

    async def exchange_code(self, redirect_uri: str, code: str, leg: UpstreamLeg) -> dict:
        """GitHub answers errors with HTTP 200 (Authlib raises them as usual) and lists scopes with
        commas; they are kept space-separated, as RFC 6749 section 3.3 has them."""
        token = await super().exchange_code(redirect_uri, code, leg)
        if isinstance(token.get("scope"), str):
            token["scope"] = " ".join(s for s in token["scope"].replace(",", " ").split() if s)
        return token

    async def identify(self, token: dict, leg: UpstreamLeg) -> UpstreamUser:
        """``GET /user`` with the new token: the numeric ``id`` is the subject (logins can be renamed)."""
        try:
            response = await self.app.get(
                self._api("/user"), token=token,
                headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            )
            response.raise_for_status()
            profile = response.json()
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "read your GitHub profile") from None
        user_id = profile.get("id") if isinstance(profile, dict) else None
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise UpstreamLoginError(
                "The sign-in could not be verified", f"{self.label}'s profile answer has no numeric user id.",
                advice="Tell the administrator.", error_code="upstream_refused",
            )
        subject = str(user_id)
        return UpstreamUser(
            issuer=self.issuer, subject=subject, username=self._username(profile, subject),
            email=_text_claim(profile.get("email")), name=_text_claim(profile.get("name")),
        )

    async def revoke(self, tokens: dict) -> None:
        """GitHub's ``DELETE /applications/{client_id}/token`` (its stand-in for RFC 7009)."""
        if not tokens.get("access_token"):
            return
        async with httpx2.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            await client.request(
                "DELETE", self._api(f"/applications/{self.config.client_id}/token"),
                auth=(self.config.client_id, self.config.client_secret),
                json={"access_token": tokens["access_token"]},
                headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            )


def _jose_problem(exc: JoseError) -> str:
    claim = getattr(exc, "claim", None)
    if exc.error == "expired_token":
        return "it has expired"
    if exc.error == "bad_signature":
        return "its signature does not verify with the provider's keys"
    if claim:
        return f"its {claim!r} claim is {'missing' if exc.error == 'missing_claim' else 'wrong'}"
    return exc.description or exc.error


class UpstreamProviders:
    """The providers by name, in configuration order (the login page's button order)."""

    def __init__(self, configs: list[UpstreamConfig], *, timeout: float = 10.0, leeway: int = 30):
        oauth = OAuth()
        self._providers: dict[str, UpstreamProvider] = {}
        for config in configs:
            cls = GitHubProvider if config.kind == "github" else OIDCProvider
            self._providers[config.name] = cls(config, oauth, timeout=timeout, leeway=leeway)

    def get(self, name: str) -> UpstreamProvider | None:
        return self._providers.get(name)

    def __iter__(self):
        return iter(self._providers.values())

    def __len__(self) -> int:
        return len(self._providers)
