"""The probing HTTP client's limits: capped bodies, only http(s) redirects, none with credentials, short timeouts."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gatehouse.doctor.fetch import Prober


async def big(request: Request) -> Response:
    return Response(b"x" * (2 * 1024 * 1024), media_type="application/json")


async def to_file(request: Request) -> Response:
    return RedirectResponse("file:///etc/passwd", status_code=302)


async def hop(request: Request) -> Response:
    return RedirectResponse("/target", status_code=302)


async def target(request: Request) -> Response:
    return JSONResponse({"seen_authorization": request.headers.get("authorization")})


async def slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return Response(b"late")


APP = Starlette(routes=[Route("/big", big), Route("/to-file", to_file), Route("/hop", hop, methods=["GET", "POST"]),
                        Route("/target", target, methods=["GET", "POST"]), Route("/slow", slow)])


@pytest.fixture
def base_url(loopback_server):
    with loopback_server(APP) as url:
        yield url


def probe(coroutine_of):
    async def run():
        async with Prober(timeout=0.5, max_bytes=64 * 1024) as prober:
            return await coroutine_of(prober)
    return asyncio.run(run())


def test_a_large_answer_is_cut_off(base_url):
    exchange = probe(lambda p: p.request("GET", f"{base_url}/big"))
    assert exchange.status == 200 and exchange.truncated and len(exchange.body) == 64 * 1024
    assert exchange.json() is None and "larger than 64 KiB" in exchange.error


def test_redirects_to_other_schemes_are_not_followed(base_url):
    exchange = probe(lambda p: p.request("GET", f"{base_url}/to-file", follow_redirects=True))
    assert exchange.status == 302 and "non-http(s) URL" in exchange.error and exchange.redirects == []


def test_metadata_redirects_are_followed_and_recorded(base_url):
    exchange = probe(lambda p: p.request("GET", f"{base_url}/hop", follow_redirects=True))
    assert exchange.status == 200 and exchange.url == f"{base_url}/target" and exchange.redirects == [f"{base_url}/hop"]


def test_a_request_with_a_credential_never_follows_a_redirect(base_url):
    with_token = probe(lambda p: p.request("GET", f"{base_url}/hop", headers={"Authorization": "Bearer secret"},
                                           follow_redirects=True))
    with_refresh_token = probe(lambda p: p.request("POST", f"{base_url}/hop", data={"refresh_token": "secret"},
                                                   follow_redirects=True))
    assert with_token.status == 302 and with_token.redirects == []
    assert with_refresh_token.status == 302 and with_refresh_token.redirects == []
    assert with_token.to_evidence()["request_headers"]["authorization"] == "Bearer <redacted>"
    assert with_refresh_token.to_evidence()["request_body"] == "refresh_token=<redacted>"


def test_timeouts_and_refused_connections_become_words(base_url):
    late = probe(lambda p: p.request("GET", f"{base_url}/slow"))
    assert late.status is None and late.error == "timed out waiting for the answer"
    refused = probe(lambda p: p.request("GET", "http://127.0.0.1:9/"))
    assert refused.status is None and refused.error.startswith("cannot connect")
    assert probe(lambda p: p.request("GET", "ftp://example.com/x")).error == "not an http(s) URL"
