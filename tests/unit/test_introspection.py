"""IntrospectionVerifier (RFC 7662) against a loopback stand-in for an AS that issues opaque tokens."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gatehouse.guard import IntrospectionVerifier, TokenRejected
from gatehouse.guard.introspection import CREDENTIALS_REFUSED, UNREACHABLE
from tests.conftest import free_socket

ISSUER = "https://as.example"
AUDIENCE = "https://mcp.example/mcp"
CLIENT_ID = "gateway:one"
CLIENT_SECRET = "s3cret with spaces & %"


class OpaqueTokenAS:
    """Answers introspection requests for the tokens in ``answers``; counts and records requests."""

    def __init__(self):
        self.answers: dict[str, dict] = {}
        self.calls = 0
        self.seen: list[dict] = []
        self.delay = 0.0
        self.override: Response | None = None
        self.app = Starlette(routes=[Route("/introspect", self.introspect, methods=["POST"])])

    def issue(self, token: str, **claims) -> str:
        now = int(time.time())
        self.answers[token] = {"active": True, "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "client_id": "app",
                               "scope": "notes:read notes:write", "exp": now + 300, "iat": now, **claims}
        return token

    def credentials(self, request: Request, form) -> tuple[str | None, str | None]:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
            return unquote(client_id), unquote(secret)
        return form.get("client_id"), form.get("client_secret")

    async def introspect(self, request: Request) -> Response:
        self.calls += 1
        form = await request.form()
        self.seen.append({"form": dict(form), "authorization": request.headers.get("authorization")})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.override is not None:
            return self.override
        if self.credentials(request, form) != (CLIENT_ID, CLIENT_SECRET):
            return JSONResponse({"error": "invalid_client"}, status_code=401, headers={"WWW-Authenticate": "Basic"})
        return JSONResponse(self.answers.get(form["token"], {"active": False}))


@pytest.fixture
def opaque_as(loopback_server):
    server = OpaqueTokenAS()
    with loopback_server(server.app) as base_url:
        server.endpoint = f"{base_url}/introspect"
        yield server


@pytest.fixture
async def make_verifier(opaque_as):
    made: list[IntrospectionVerifier] = []

    def make(**options) -> IntrospectionVerifier:
        values = dict(endpoint=opaque_as.endpoint, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                      issuers=[ISSUER], audience=AUDIENCE, timeout=2.0)
        values.update(options)
        verifier = IntrospectionVerifier(**values)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


async def test_an_active_token_for_this_resource_is_accepted(opaque_as, make_verifier):
    token = opaque_as.issue("opaque-1")
    caller = await make_verifier().verify(token)
    assert (caller.subject, caller.client_id, caller.issuer) == ("alice", "app", ISSUER)
    assert caller.scopes == {"notes:read", "notes:write"}
    request = opaque_as.seen[0]
    assert request["form"] == {"token": token, "token_type_hint": "access_token"}, "RFC 7662 section 2.1"
    encoded = base64.b64encode(b"gateway%3Aone:s3cret%20with%20spaces%20%26%20%25").decode()
    assert request["authorization"] == f"Basic {encoded}", "RFC 6749 section 2.3.1: form-urlencoded, then Base64"


async def test_client_secret_post_sends_the_credentials_in_the_form(opaque_as, make_verifier):
    token = opaque_as.issue("opaque-2")
    caller = await make_verifier(auth_method="client_secret_post").verify(token)
    assert caller.subject == "alice"
    request = opaque_as.seen[0]
    assert request["authorization"] is None
    assert request["form"]["client_id"] == CLIENT_ID and request["form"]["client_secret"] == CLIENT_SECRET


@dataclass(frozen=True)
class Seconds:
    """A time claim relative to when the test runs (parameters are made at collection, maybe minutes earlier)."""

    offset: int


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"active": False}, "not active"),
        ({"active": "true"}, "not active"),
        ({"aud": "https://other.example/mcp"}, "another resource"),
        ({"aud": ["https://other.example/mcp", "https://third.example"]}, "another resource"),
        ({"aud": None}, "names no audience"),
        ({"aud": 7}, "'aud' is neither"),
        ({"iss": "https://evil.example"}, "issuer is not trusted"),
        ({"exp": Seconds(-120)}, "expired"),
        ({"exp": "soon"}, "'exp' is not a number"),
        ({"nbf": Seconds(600)}, "not valid yet"),
        ({"token_type": "refresh_token"}, "refresh token"),
        ({"sub": None, "client_id": None}, "names no subject"),
        ({"scope": 42}, "'scope' is neither"),
    ],
)
async def test_answers_that_do_not_hold_are_refused(opaque_as, make_verifier, claims, problem):
    token = opaque_as.issue("opaque-bad")
    now = int(time.time())
    opaque_as.answers[token].update({k: now + v.offset if isinstance(v, Seconds) else v for k, v in claims.items()})
    opaque_as.answers[token] = {k: v for k, v in opaque_as.answers[token].items() if v is not None}
    with pytest.raises(TokenRejected) as rejected:
        await make_verifier().verify(token)
    assert problem in rejected.value.description


async def test_lenient_but_safe_variants_are_accepted(opaque_as, make_verifier):
    listed = opaque_as.issue("listed", aud=["https://other.example", AUDIENCE], token_type="Bearer")
    assert (await make_verifier().verify(listed)).subject == "alice"
    machine = opaque_as.issue("machine", client_id="build-bot")
    del opaque_as.answers[machine]["sub"]
    caller = await make_verifier().verify(machine)
    assert caller.subject == "build-bot", "without 'sub', a machine token's subject is its client"
    no_aud = opaque_as.issue("no-aud")
    del opaque_as.answers[no_aud]["aud"]
    del opaque_as.answers[no_aud]["iss"]
    caller = await make_verifier(require_audience=False).verify(no_aud)
    assert caller.issuer == ISSUER, "an answer without 'iss' comes from the configured issuer"


async def test_one_token_costs_one_introspection_until_the_cache_ttl(opaque_as, make_verifier):
    token = opaque_as.issue("cached")
    verifier = make_verifier(cache_ttl=0.3)
    for _ in range(5):
        await verifier.verify(token)
    assert opaque_as.calls == 1
    opaque_as.answers[token] = {"active": False}
    await asyncio.sleep(0.35)
    with pytest.raises(TokenRejected):
        await verifier.verify(token)
    assert opaque_as.calls == 2, "a revoked token is refused once the cache TTL has passed"


async def test_the_cache_ends_when_the_token_expires(opaque_as, make_verifier):
    token = opaque_as.issue("short", exp=time.time() + 0.3)
    verifier = make_verifier(cache_ttl=60, leeway=0)
    await verifier.verify(token)
    await asyncio.sleep(0.35)
    with pytest.raises(TokenRejected, match="expired"):
        await verifier.verify(token)
    assert opaque_as.calls == 2


async def test_cache_ttl_zero_introspects_every_time(opaque_as, make_verifier):
    token = opaque_as.issue("uncached")
    verifier = make_verifier(cache_ttl=0)
    for _ in range(3):
        await verifier.verify(token)
    assert opaque_as.calls == 3


async def test_the_cache_is_bounded(opaque_as, make_verifier):
    verifier = make_verifier(cache_size=2)
    first, second, third = (opaque_as.issue(f"lru-{i}") for i in range(3))
    for token in (first, second, third, third, second):
        await verifier.verify(token)
    assert opaque_as.calls == 3
    await verifier.verify(first)
    assert opaque_as.calls == 4, "the least recently used token left the cache"


async def test_concurrent_checks_of_one_token_share_one_request(opaque_as, make_verifier):
    token = opaque_as.issue("popular")
    opaque_as.delay = 0.2
    verifier = make_verifier()
    callers = await asyncio.gather(*(verifier.verify(token) for _ in range(10)))
    assert {c.subject for c in callers} == {"alice"}
    assert opaque_as.calls == 1
    refused = opaque_as.issue("refused", active=False)
    results = await asyncio.gather(*(verifier.verify(refused) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) for r in results) and opaque_as.calls == 2


async def test_a_waiter_that_gives_up_does_not_cancel_the_others(opaque_as, make_verifier):
    token = opaque_as.issue("patient")
    opaque_as.delay = 0.3
    verifier = make_verifier()
    impatient = asyncio.ensure_future(verifier.verify(token))
    patient = asyncio.ensure_future(verifier.verify(token))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert (await patient).subject == "alice"
    assert opaque_as.calls == 1


@pytest.mark.parametrize(
    "answer",
    [
        Response("<html>oops</html>", status_code=500, media_type="text/html"),
        Response("<html>fine</html>", media_type="text/html"),
        JSONResponse(["active", True]),
        JSONResponse({"error": "invalid_request"}, status_code=400),
        RedirectResponse("https://elsewhere.example/introspect", status_code=302),
        Response(b'{"active": true, "pad": "' + b"x" * 70_000 + b'"}', media_type="application/json"),
    ],
    ids=["500", "html", "json-array", "400", "redirect", "oversized"],
)
async def test_an_unusable_endpoint_refuses_the_token_clearly(opaque_as, make_verifier, caplog, answer):
    opaque_as.override = answer
    with caplog.at_level(logging.WARNING, logger="gatehouse.introspection"), pytest.raises(TokenRejected) as rejected:
        await make_verifier().verify("opaque-secret-token")
    assert rejected.value.description == UNREACHABLE
    assert caplog.records and "opaque-secret-token" not in caplog.text


async def test_an_endpoint_that_is_down_or_slow_refuses_the_token(opaque_as, make_verifier):
    dead = free_socket()
    dead_endpoint = f"http://127.0.0.1:{dead.getsockname()[1]}/introspect"
    dead.close()
    with pytest.raises(TokenRejected) as down:
        await make_verifier(endpoint=dead_endpoint).verify("any")
    opaque_as.delay = 1.0
    with pytest.raises(TokenRejected) as slow:
        await make_verifier(timeout=0.2).verify(opaque_as.issue("slow"))
    assert down.value.description == slow.value.description == UNREACHABLE


async def test_wrong_client_credentials_are_a_logged_configuration_error(opaque_as, make_verifier, caplog):
    token = opaque_as.issue("valid-but-unchecked")
    with caplog.at_level(logging.ERROR, logger="gatehouse.introspection"), pytest.raises(TokenRejected) as rejected:
        await make_verifier(client_secret="wrong").verify(token)
    assert rejected.value.description == CREDENTIALS_REFUSED
    assert "configuration error" in caplog.text and CLIENT_ID in caplog.text
    assert token not in caplog.text and "wrong" not in caplog.text


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"endpoint": "http://as.example/introspect"}, "must use https"),
        ({"endpoint": "ftp://127.0.0.1/introspect"}, "must be an https URL"),
        ({"auth_method": "private_key_jwt"}, "auth_method must be one of"),
        ({"client_secret": ""}, "client_secret"),
        ({"issuers": []}, "trusted issuer"),
        ({"cache_ttl": -1}, "cache_ttl"),
    ],
)
def test_bad_configuration_is_explained(options, problem):
    values = dict(endpoint="https://as.example/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                  issuers=[ISSUER], audience=AUDIENCE)
    values.update(options)
    with pytest.raises(ValueError, match=problem):
        IntrospectionVerifier(**values)
