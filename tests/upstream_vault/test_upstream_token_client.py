"""The guard's side of the vault channel (UP-3): ``UpstreamTokenClient`` against a token endpoint
stand-in on loopback, for what the real AS cannot be made to answer at will (every error shape,
slow answers, an endpoint that is down). The real AS is in test_token_exchange.py and
test_calendar_flow.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gatehouse.guard import (
    UpstreamNotLinked,
    UpstreamReauthorizationRequired,
    UpstreamTokenClient,
    UpstreamTokenError,
    UpstreamUnavailable,
    upstream_token,
)
from gatehouse.guard.upstream_tokens import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.conftest import free_socket

SUBJECT = "the-callers-mcp-access-token"
SECRET = "rs-secret/with:odd=chars"


class TokenEndpointStandIn:
    """Answers token-exchange requests with whatever the test queued (default: a fresh token)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[tuple[int, object]] = []
        self.delay = 0.0
        self.issued = 0

    async def token(self, request: Request) -> Response:
        form = dict(await request.form())
        self.requests.append({"form": form, "authorization": request.headers.get("authorization")})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answers:
            status, body = self.answers.pop(0)
            if isinstance(body, str):
                return Response(body, status_code=status, media_type="text/html")
            return JSONResponse(body, status_code=status)
        self.issued += 1
        return JSONResponse({"access_token": f"upstream-{form.get('audience')}-{self.issued}", "issued_token_type": ACCESS_TOKEN_TYPE,
                             "token_type": "Bearer", "expires_in": 3600, "scope": "calendar.read"})

    async def metadata(self, request: Request) -> Response:
        base = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse({"issuer": base, "token_endpoint": f"{base}/token"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/token", self.token, methods=["POST"]),
                                 Route("/.well-known/oauth-authorization-server", self.metadata)])


@pytest.fixture
def standin(loopback_server):
    endpoint = TokenEndpointStandIn()
    with loopback_server(endpoint.app()) as base_url:
        endpoint.base_url = base_url
        yield endpoint


def client_for(standin, **options) -> UpstreamTokenClient:
    values = dict(token_endpoint=f"{standin.base_url}/token", client_id="calendar-rs", client_secret=SECRET)
    values.update(options)
    return UpstreamTokenClient(**values)


async def test_the_exchange_is_an_authenticated_rfc8693_request(standin):
    client = client_for(standin)
    token = await client.exchange(SUBJECT, "google")
    await client.aclose()
    assert token == "upstream-google-1"
    [request] = standin.requests
    assert request["form"] == {
        "grant_type": TOKEN_EXCHANGE, "subject_token": SUBJECT, "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE, "audience": "google",
    }
    scheme, _, value = request["authorization"].partition(" ")
    client_id, _, secret = base64.b64decode(value).decode().partition(":")
    assert scheme == "Basic" and (unquote(client_id), unquote(secret)) == ("calendar-rs", SECRET)


async def test_client_secret_post_sends_the_credentials_in_the_form(standin):
    client = client_for(standin, auth_method="client_secret_post")
    await client.exchange(SUBJECT, "google")
    await client.aclose()
    [request] = standin.requests
    assert request["authorization"] is None
    assert (request["form"]["client_id"], request["form"]["client_secret"]) == ("calendar-rs", SECRET)


async def test_the_token_endpoint_is_found_in_the_issuer_metadata(standin):
    client = client_for(standin, token_endpoint=None, issuer=standin.base_url)
    assert await client.exchange(SUBJECT, "google") == "upstream-google-1"
    await client.aclose()


async def test_answers_are_cached_per_caller_token_and_provider(standin):
    client = client_for(standin)
    first = await client.exchange(SUBJECT, "google")
    assert await client.exchange(SUBJECT, "google") == first
    other_provider = await client.exchange(SUBJECT, "github")
    other_caller = await client.exchange("another-callers-token", "google")
    await client.aclose()
    assert len(standin.requests) == 3 and len({first, other_provider, other_caller}) == 3


async def test_a_cached_token_is_dropped_shortly_before_it_expires(standin):
    standin.answers.append((200, {"access_token": "short-lived", "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                                  "expires_in": 1}))
    client = client_for(standin, refresh_margin=0.6)
    assert await client.exchange(SUBJECT, "google") == "short-lived"
    assert await client.exchange(SUBJECT, "google") == "short-lived"
    time.sleep(0.5)
    assert await client.exchange(SUBJECT, "google") == "upstream-google-1"
    await client.aclose()
    assert len(standin.requests) == 2


async def test_a_token_that_expires_within_the_margin_is_not_cached(standin):
    standin.answers.append((200, {"access_token": "nearly-expired", "issued_token_type": ACCESS_TOKEN_TYPE, "expires_in": 10}))
    client = client_for(standin, refresh_margin=30)
    assert await client.exchange(SUBJECT, "google") == "nearly-expired"
    assert await client.exchange(SUBJECT, "google") == "upstream-google-1"
    await client.aclose()


async def test_the_cache_is_bounded_least_recently_used_first_out(standin):
    client = client_for(standin, cache_size=2)
    for subject in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        await client.exchange(subject, "google")
    assert len(standin.requests) == 3
    await client.exchange("a", "google")
    assert len(standin.requests) == 3
    await client.exchange("b", "google")
    await client.aclose()
    assert len(standin.requests) == 4


async def test_concurrent_tool_calls_share_one_exchange(standin):
    standin.delay = 0.3
    client = client_for(standin)
    tokens = await asyncio.gather(*[client.exchange(SUBJECT, "google") for _ in range(5)])
    await client.aclose()
    assert set(tokens) == {"upstream-google-1"} and len(standin.requests) == 1


@pytest.mark.parametrize(("status", "error", "cls"), [
    (400, "upstream_not_linked", UpstreamNotLinked),
    (400, "upstream_reauthorization_required", UpstreamReauthorizationRequired),
    (503, "upstream_unavailable", UpstreamUnavailable),
])
async def test_the_vault_errors_come_back_typed_with_the_servers_words(standin, status, error, cls):
    description = f"what to do about {error}"
    standin.answers += [(status, {"error": error, "error_description": description})] * 2
    client = client_for(standin)
    for _ in range(2):  # refusals are not cached: each call asks again
        with pytest.raises(cls) as raised:
            await client.exchange(SUBJECT, "google")
        assert str(raised.value) == description and raised.value.provider == "google" and raised.value.error == error
    await client.aclose()
    assert len(standin.requests) == 2


async def test_a_vault_error_without_a_description_still_says_what_to_do(standin):
    standin.answers.append((400, {"error": "upstream_not_linked"}))
    client = client_for(standin)
    with pytest.raises(UpstreamNotLinked, match="no google account is linked to this user: sign in with google"):
        await client.exchange(SUBJECT, "google")
    await client.aclose()


@pytest.mark.parametrize(("status", "body", "words"), [
    (401, {"error": "invalid_client", "error_description": "bad secret"}, "refused this MCP server's credentials"),
    (400, {"error": "unauthorized_client", "error_description": "x"}, "register it with `gatehouse clients add --resource-server`"),
    (400, {"error": "unsupported_grant_type"}, "does not offer token exchange"),
    (400, {"error": "invalid_request", "error_description": "the subject_token was revoked"},
     "refused to give the google token: the subject_token was revoked"),
])
async def test_refusals_of_this_server_or_of_the_caller_are_plain_upstream_token_errors(standin, caplog, status, body, words):
    standin.answers.append((status, body))
    client = client_for(standin)
    with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamTokenError) as raised:
        await client.exchange(SUBJECT, "google")
    await client.aclose()
    assert type(raised.value) is UpstreamTokenError and words in str(raised.value)
    assert SUBJECT not in caplog.text and SECRET not in caplog.text


async def test_an_authorization_server_in_trouble_is_unavailable_not_a_crash(standin):
    standin.answers += [(502, "<html>Bad gateway</html>"), (200, "<html>not json</html>"), (200, {"token_type": "Bearer"})]
    client = client_for(standin)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable, match="try again later"):
            await client.exchange(SUBJECT, "google")
    await client.aclose()


async def test_an_unreachable_authorization_server_is_unavailable(caplog):
    closed = free_socket()  # bound, never listening: connections are refused
    try:
        client = UpstreamTokenClient(token_endpoint=f"http://127.0.0.1:{closed.getsockname()[1]}/token",
                                     client_id="calendar-rs", client_secret=SECRET)
        with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamUnavailable, match="could not be reached for the google token"):
            await client.exchange(SUBJECT, "google")
        await client.aclose()
    finally:
        closed.close()
    assert SUBJECT not in caplog.text and SECRET not in caplog.text


def test_the_configuration_is_checked_up_front():
    endpoint = "http://127.0.0.1:9/token"
    with pytest.raises(ValueError, match="plain http only on loopback"):
        UpstreamTokenClient(token_endpoint="http://auth.example.com/token", client_id="a", client_secret="b")
    with pytest.raises(ValueError, match="client_id and client_secret"):
        UpstreamTokenClient(token_endpoint=endpoint, client_id="a", client_secret="")
    with pytest.raises(ValueError, match="either token_endpoint or issuer"):
        UpstreamTokenClient(client_id="a", client_secret="b")
    with pytest.raises(ValueError, match="auth_method"):
        UpstreamTokenClient(token_endpoint=endpoint, client_id="a", client_secret="b", auth_method="none")
    assert SECRET not in repr(UpstreamTokenClient(token_endpoint=endpoint, client_id="a", client_secret=SECRET))


async def test_the_caller_exchange_never_shows_the_token():
    exchange = UpstreamTokenClient(token_endpoint="http://127.0.0.1:9/token", client_id="a", client_secret="b").bind(SUBJECT)
    assert SUBJECT not in repr(exchange) and SUBJECT not in str(exchange) and not hasattr(exchange, "__dict__")


async def test_upstream_token_outside_a_guarded_request_says_how_to_set_it_up():
    with pytest.raises(RuntimeError, match=r"upstream_tokens=UpstreamTokenClient\(...\)"):
        await upstream_token("google")
