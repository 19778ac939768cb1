"""``--login``: real sign-ins through Gatehouse's client library, then what the tokens show.

Each sign-in is :func:`gatehouse.client.auth.create_auth` with a throwaway registration (a
fresh credential store in a temporary directory, removed afterwards), in a browser or
``--headless``. Up to three sign-ins:

1. for this server: the flow itself, the token (format, audience, lifetime, scope), the server
   accepting it (``login.call``), then refresh and reuse (``grants.check_refresh``);
2. for another resource (``--other-resource``, default a made-up URL on this server's origin):
   the AS must put that resource in ``aud`` or refuse it with ``invalid_target`` (RFC 8707), and
   this server must refuse the token with 401 (RS-4: no token for another audience);
3. only when the second left no refresh token: one more for this server, to revoke (RFC 7009).

The access token of the second sign-in goes to this server: that is the test. By default its
resource is on this server's origin, so no credential reaches another host; a real
``--other-resource`` is the user's choice, and its grant is revoked at the end (best effort).
The SDK takes the ``resource`` it sends from ``OAuthContext.get_resource_url``; the second
sign-in replaces that method on its own provider's context.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx2

from gatehouse.doctor.fetch import Exchange, Prober, describe_error
from gatehouse.doctor.model import Check, Group, failed, passed, skipped, warned
from gatehouse.doctor.options import DoctorOptions
from gatehouse.doctor.probes import authorization_request, grants, token_claims
from gatehouse.doctor.probes.challenge import INITIALIZE, MCP_HEADERS, call
from gatehouse.doctor.probes.resource_metadata import ResourceMetadata
from gatehouse.doctor.probes.server_metadata import ServerMetadata
from gatehouse.doctor.urls import origin

G = Group.LOGIN
OTHER_RESOURCE_PATH = "/gatehouse-doctor/another-resource"
CLIENT_NAME = "Gatehouse doctor (throwaway registration)"


@dataclass
class SignIn:
    """The outcome of one sign-in: a grant, or why there is none (both when the server refused the new token)."""

    resource: str
    grant: grants.Grant | None
    error: str | None
    scope: str | None = None
    expires_in: int | None = None
    registered_as: str | None = None
    refused: bool = False
    """The AS refused to issue a token for ``resource`` (invalid_target)."""
    authorization_endpoint: str | None = None
    redirect_uri: str | None = None


async def sign_in(server_url: str, resource: str, storage: Path, options: DoctorOptions, *, for_other: bool = False,
                  scope: str | None = None) -> SignIn:
    """One authorization through the client library; ``for_other`` asks for ``resource`` (and ``scope``)
    instead of this server (and the scopes the library would choose, CL-8)."""
    from gatehouse.client.auth import create_auth
    from gatehouse.client.errors import ClientError
    from gatehouse.client.options import ClientOptions
    from gatehouse.client.storage import CredentialStore

    client_options = ClientOptions(storage_dir=storage, headless=options.headless, login_timeout=options.login_timeout,
                                   client_name=CLIENT_NAME, fresh_login=True, dpop=False,
                                   scopes=tuple(scope.split()) if scope else ())
    error = None
    try:
        auth = create_auth(server_url, client_options, status=options.status)
        if for_other:
            auth.context.get_resource_url = lambda: resource  # RFC 8707: the token is requested for that resource
        async with httpx2.AsyncClient(auth=auth, timeout=options.timeout, trust_env=False) as http:
            async with http.stream("POST", server_url, json=INITIALIZE, headers=MCP_HEADERS):
                pass
    except ClientError as exc:
        error = str(exc)
    except httpx2.HTTPError as exc:
        error = describe_error(exc)
    entries = CredentialStore(storage).find(server_url)
    entry = entries[0] if entries else None
    tokens = entry.tokens if entry else None
    if tokens is None:
        return SignIn(resource, None, error or "the sign-in ended without a token")
    metadata, client = entry.authorization_server or {}, entry.client
    grant = grants.Grant(
        access_token=tokens.access_token, refresh_token=tokens.refresh_token,
        client_id=tokens.client_id or (client.client_id if client else ""),
        client_secret=client.client_secret if client else None,
        auth_method=(client.token_endpoint_auth_method if client else None) or "none",
        token_endpoint=str(metadata.get("token_endpoint", "")), revocation_endpoint=metadata.get("revocation_endpoint"),
        resource=resource,
    )
    how = "a client ID metadata document" if grant.client_id.startswith("https://") else f"registered client {grant.client_id}"
    redirect_uris = [str(uri) for uri in (client.redirect_uris or [])] if client else []
    return SignIn(resource, grant, error, scope=tokens.scope, expires_in=tokens.expires_in, registered_as=how,
                  authorization_endpoint=metadata.get("authorization_endpoint"),
                  redirect_uri=redirect_uris[0] if redirect_uris else None)


def _token_evidence(signed_in: SignIn, view: token_claims.TokenView) -> Exchange:
    """The token as evidence: header and claims (never the token itself), as the token response gave them."""
    body = {"token_header": view.header, "token_claims": view.claims, "expires_in": signed_in.expires_in, "scope": signed_in.scope}
    return Exchange("POST", signed_in.grant.token_endpoint, request_body="(the token request of gatehouse.client)", status=200,
                    headers=httpx2.Headers({"content-type": "application/json"}), body=json.dumps(body).encode())


def check_authorization(signed_in: SignIn) -> Check:
    if signed_in.grant is None:
        return failed("login.authorization", G, f"the sign-in failed: {signed_in.error}", requirement="CL-6",
                      fix="fix the failures reported for the server and its AS first: a client stops at the first of them")
    return passed("login.authorization", G, f"signed in with {signed_in.registered_as} (PKCE S256, resource "
                  f"{signed_in.resource})", requirement="CL-11")


def check_call(answer: Exchange) -> Check:
    if answer.ok:
        return passed("login.call", G, f"the server accepts the token ({answer.status})", answer, requirement="RS-4")
    return failed("login.call", G, f"the server refuses a token its own AS just issued for it ({answer.status or answer.error})",
                  answer, requirement="RS-4",
                  fix="configure the server's token check with the AS's issuer, its jwks_uri and this server's URL as the "
                      "expected audience")


def check_other_token(other: SignIn, view: token_claims.TokenView | None, asked: list[Exchange]) -> Check:
    """The AS's side of RFC 8707: a token for another resource carries that resource, or is refused."""
    if other.grant is None:
        if other.refused:
            return passed("login.other_resource", G, f"the AS refuses to issue a token for {other.resource}: {other.error}",
                          *asked, requirement="AS-10")
        return skipped("login.other_resource", G, f"no token for {other.resource}: {other.error}", *asked, requirement="AS-10")
    if view is None or not view.is_jwt:
        return skipped("login.other_resource", G, f"the token for {other.resource} is opaque; its audience cannot be read",
                       requirement="AS-10")
    if any(token_claims.same_resource(a, other.resource) for a in view.audiences):
        return passed("login.other_resource", G, f"a token requested for {other.resource} has that aud", requirement="AS-10")
    return failed("login.other_resource", G, f"a token requested for {other.resource} has aud {', '.join(view.audiences) or 'none'}: "
                  "the AS ignores the resource parameter", _token_evidence(other, view), requirement="AS-10",
                  pitfall="AS ignores resource",
                  fix="put the requested resource in aud (RFC 8707 section 2), or refuse unknown resources with invalid_target")


def check_audience_validation(other: SignIn, answer: Exchange | None) -> Check:
    """The server's side: a token issued for another resource must get 401 (RS-4, MCP "Token Handling")."""
    if other.grant is None or answer is None:
        why = "the AS refuses other resources" if other.refused else other.error
        return skipped("login.audience_validation", G, f"no token for another resource to try ({why}); to test the server, "
                       "give --other-resource with another resource of this AS", requirement="RS-4")
    if answer.ok:
        return failed("login.audience_validation", G, f"the server accepts a token issued for {other.resource} ({answer.status})",
                      answer, requirement="RS-4", pitfall="resource server accepts tokens for any audience",
                      fix="check the token's aud against this server's own URL and refuse anything else with 401 "
                          "(RFC 8707; the MCP spec forbids token passthrough)")
    if answer.status == 401:
        return passed("login.audience_validation", G, f"a token for {other.resource} gets 401", answer, requirement="RS-4")
    return warned("login.audience_validation", G, f"a token for {other.resource} gets {answer.status or answer.error}, not 401",
                  answer, requirement="RS-3", fix='refuse a token for another audience with 401 and error="invalid_token"')


def _view(server: ServerMetadata, signed_in: SignIn) -> token_claims.TokenView:
    jwks = server.endpoint_answers.get("jwks_uri")
    return token_claims.read_token(signed_in.grant.access_token, jwks.json_object() if jwks else None)


async def _spare_grant(url: str, resource: str, main: SignIn, other: SignIn, storage: Path,
                       options: DoctorOptions) -> tuple[grants.Grant | None, str | None]:
    """A grant to revoke, leaving the main one for the refresh checks: the other resource's, else a new sign-in."""
    if other.grant is not None and other.grant.refresh_token:
        return other.grant, None
    if main.grant.revocation_endpoint is None:
        return main.grant, None  # nothing is sent: check_revocation reports the missing endpoint
    spare = await sign_in(url, resource, storage / "spare", options)
    return spare.grant, spare.error


async def checks(prober: Prober, url: str, prm: ResourceMetadata, server: ServerMetadata, options: DoctorOptions,
                 scope: str | None) -> list[Check]:
    """``scope``: what a client requests for this server (CL-8: the challenge's, else PRM scopes_supported)."""
    if server.chosen is None:
        return [skipped("login.authorization", G, "no authorization server metadata to sign in with", requirement="CL-3")]
    resource = prm.document.get("resource") if isinstance(prm.document.get("resource"), str) else url
    other_resource = options.other_resource or origin(url) + OTHER_RESOURCE_PATH
    with tempfile.TemporaryDirectory(prefix="gatehouse-doctor-") as folder:
        storage = Path(folder)
        main = await sign_in(url, resource, storage / "main", options)
        results = [check_authorization(main)]
        if main.grant is None:
            return results
        view = _view(server, main)
        evidence = _token_evidence(main, view)
        results += [
            token_claims.check_format(view, evidence),
            token_claims.check_audience(view, resource, evidence),
            token_claims.check_lifetime(view, main.expires_in, evidence),
            token_claims.check_scope(view, main.scope, evidence),
            check_call(await call(prober, url, main.grant.access_token, read_body=False)),
        ]
        refusal, other_scope, asked = await authorization_request.acceptable_scope(
            prober, main.authorization_endpoint, main.grant.client_id, main.redirect_uri, other_resource, scope)
        if refusal is not None:
            other = SignIn(other_resource, None, refusal, refused="invalid_target" in refusal)
        else:
            other = await sign_in(url, other_resource, storage / "other", options, for_other=True, scope=other_scope)
            other.refused = "invalid_target" in (other.error or "")
        other_view = _view(server, other) if other.grant else None
        results.append(check_other_token(other, other_view, asked))
        answer = await call(prober, url, other.grant.access_token, read_body=False) if other.grant else None
        results.append(check_audience_validation(other, answer))
        spare, spare_error = await _spare_grant(url, resource, main, other, storage, options)
        results.append(await grants.check_revocation(prober, spare, spare_error))
        results += await grants.check_refresh(prober, main.grant)
        if other.grant is not None and other.grant is not spare:
            await grants.revoke_quietly(prober, other.grant)
    return results
