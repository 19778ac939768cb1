"""Registration (DCR, AS-6) and client metadata documents (CIMD, AS-5): S-C1..S-C4, on a real AS
per store backend. CIMD documents are served by a loopback server; SSRF cases never let a
connection leave loopback (every ``socket.connect`` in the process is watched)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlencode, urlsplit

import httpx2
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from gatehouse.store.models import Client
from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"
MAX_BODY = 2048


@pytest.fixture
def as_overrides():
    return {"max_body_bytes": MAX_BODY}


def client_count(live_as) -> int:
    with live_as.ctx.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Client))


def post_register(live_as, body: dict) -> httpx2.Response:
    return httpx2.post(f"{live_as.base_url}/register", json=body)


def valid_registration(**changes) -> dict:
    body = {"client_name": "Test client", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


# -- S-C1: redirect URIs and metadata at registration ---------------------------------------------

BAD_REDIRECTS = {
    "javascript": ["javascript:alert(document.cookie)"],
    "javascript-upper": ["JavaScript://example.com/%0Aalert(1)"],
    "data": ["data:text/html,<script>alert(1)</script>"],
    "file": ["file:///etc/passwd"],
    "vbscript": ["vbscript:msgbox(1)"],
    "http-non-loopback": ["http://app.example.com/callback"],
    "http-loopback-lookalike": ["http://127.0.0.1.nip.io/callback"],
    "http-localhost-lookalike": ["http://localhost.attacker.example/callback"],
    "fragment": ["https://app.example.com/callback#frag"],
    "empty-fragment": ["https://app.example.com/callback#"],
    "userinfo": ["https://user:pass@app.example.com/callback"],
    "userinfo-host-confusion": ["https://app.example.com@attacker.example/callback"],
    "relative": ["/callback"],
    "no-host": ["https:///callback"],
    "whitespace": [" https://app.example.com/callback"],
    "one-bad-among-good": ["https://app.example.com/callback", "javascript:alert(1)"],
    "empty-list": [],
    "not-a-list": "https://app.example.com/callback",
    "not-strings": [42],
    "null": None,
    "missing": ...,
}


@pytest.mark.parametrize("redirect_uris", list(BAD_REDIRECTS.values()), ids=list(BAD_REDIRECTS))
def test_S_C1_bad_redirect_uris_are_rejected_and_nothing_is_stored(live_as, redirect_uris):
    before = client_count(live_as)
    response = post_register(live_as, valid_registration(redirect_uris=redirect_uris))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_redirect_uri"
    assert "client_id" not in response.json()
    assert client_count(live_as) == before


@pytest.mark.parametrize("grant_types", [None, ["authorization_code"], ["authorization_code", "refresh_token"]])
def test_S_C1_authorization_code_clients_need_redirect_uris(live_as, grant_types):
    body = valid_registration(redirect_uris=...)
    if grant_types is not None:
        body["grant_types"] = grant_types
    response = post_register(live_as, body)
    assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri"
    assert client_count(live_as) == 0


@pytest.mark.parametrize(
    "redirect_uris",
    [
        ["https://app.example.com/callback"],
        ["http://127.0.0.1:8765/callback", "http://[::1]/callback", "http://localhost/callback"],
        ["com.example.app:/oauth2redirect"],
    ],
)
def test_S_C1_safe_redirect_uris_are_accepted(live_as, redirect_uris):
    response = post_register(live_as, valid_registration(redirect_uris=redirect_uris))
    assert response.status_code == 201, response.text
    assert response.json()["redirect_uris"] == redirect_uris
    assert client_count(live_as) == 1


def test_S_C1_client_cannot_choose_its_client_id_or_secret(live_as):
    chosen_id, chosen_secret = "my-own-client-id", "my-own-secret-value"
    response = post_register(
        live_as,
        valid_registration(client_id=chosen_id, client_secret=chosen_secret, token_endpoint_auth_method="client_secret_basic"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_id"] != chosen_id and len(body["client_id"]) >= 16
    assert body["client_secret"] != chosen_secret
    with live_as.ctx.unit_of_work() as session:
        assert session.get(Client, chosen_id) is None
        stored = session.get(Client, body["client_id"])
        assert stored is not None and "client_id" not in stored.client_metadata
        assert chosen_secret not in str(stored.client_metadata) and stored.client_secret_hash != chosen_secret
    # the chosen secret does not authenticate; the issued one does
    wrong = httpx2.post(f"{live_as.base_url}/introspect", data={"token": "x"}, auth=(body["client_id"], chosen_secret))
    assert wrong.status_code == 401
    right = httpx2.post(f"{live_as.base_url}/introspect", data={"token": "x"}, auth=(body["client_id"], body["client_secret"]))
    assert right.status_code == 200


@pytest.mark.parametrize("application_type", ["browser", "service", "", 1, ["web"]])
def test_S_C1_unknown_application_type_is_invalid_client_metadata(live_as, application_type):
    response = post_register(live_as, valid_registration(application_type=application_type))
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"
    assert client_count(live_as) == 0


@pytest.mark.parametrize("application_type", ["web", "native"])
def test_S_C1_web_and_native_application_types_are_accepted(live_as, application_type):
    response = post_register(live_as, valid_registration(application_type=application_type))
    assert response.status_code == 201, response.text
    assert response.json()["application_type"] == application_type


@pytest.mark.parametrize(
    "metadata",
    [
        {"token_endpoint_auth_method": "client_secret_jwt"},
        {"grant_types": ["implicit"]},
        {"grant_types": ["password"]},
        {"response_types": ["token"]},
        {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none", "redirect_uris": ...},
        {"token_endpoint_auth_method": "private_key_jwt"},
    ],
    ids=["auth-method", "implicit", "password", "response-type-token", "cc-without-auth", "pkjwt-without-keys"],
)
def test_S_C1_unsupported_metadata_is_rejected(live_as, metadata):
    response = post_register(live_as, valid_registration(**metadata))
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
    assert client_count(live_as) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"client_name=x&redirect_uris=https://app.example.com/cb", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b'["https://app.example.com/cb"]', "application/json"),
        (b'"just a string"', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"client_name": "x", "redirect_uris": ["https://app.example.com/cb"]}', "text/plain"),
        (b"", "application/json"),
    ],
    ids=["form", "broken-json", "array", "string", "not-utf8", "text-plain", "empty"],
)
def test_S_C1_non_json_body_is_400(live_as, content, content_type):
    response = httpx2.post(f"{live_as.base_url}/register", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("invalid_client_metadata", "invalid_request")
    assert client_count(live_as) == 0


# -- S-C2: body size and registration rate ----------------------------------------------------


def test_S_C2_oversized_registration_body_is_413(live_as):
    body = valid_registration(client_uri="https://app.example.com/" + "a" * (MAX_BODY * 2))
    response = post_register(live_as, body)
    assert response.status_code == 413, response.text
    assert client_count(live_as) == 0


def test_S_C2_oversized_chunked_body_without_length_is_413(live_as):
    """A body streamed without Content-Length is cut off at the limit as well."""

    def chunks():
        yield b'{"client_name": "x", "redirect_uris": ["http://127.0.0.1:9/callback"], "pad": "'
        for _ in range(64):
            yield b"a" * 256
        yield b'"}'

    response = httpx2.post(f"{live_as.base_url}/register", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert client_count(live_as) == 0


def test_S_C2_body_just_under_the_limit_is_accepted(live_as):
    body = valid_registration(client_uri="https://app.example.com/" + "a" * 1500)
    assert len(httpx2.Request("POST", "http://x", json=body).content) < MAX_BODY
    assert post_register(live_as, body).status_code == 201


def _away_from_window_edge(window: float = 60.0, margin: float = 5.0) -> None:
    """Keep the flood inside one of the limiter's windows, so Retry-After is predictable."""
    remaining = window - time.time() % window
    if remaining < margin:
        time.sleep(remaining + 0.2)


@pytest.mark.parametrize("as_overrides", [{"registration_rate_per_minute": 3}])
def test_S_C2_registration_flood_is_429_with_retry_after(live_as):
    _away_from_window_edge()
    statuses = []
    for _ in range(6):
        response = post_register(live_as, valid_registration())
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after = response.headers.get("retry-after")
            # a sliding minute at its limit n clears within 60 * (1 + 1/n) s
            assert retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= 80
            assert response.json()["error"]
    assert statuses == [201, 201, 201, 429, 429, 429]
    assert client_count(live_as) == 3


# -- S-C3: client metadata documents that must be refused --------------------------------------


def good_document(url: str, **changes) -> dict:
    document = {
        "client_id": url,
        "client_name": "Notes Web",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not ...}


class DocumentHost:
    """A loopback server for one metadata document; ``serve`` decides the answer per request."""

    def __init__(self):
        self.hits = 0
        self.url = ""
        self.serve = lambda url: JSONResponse(good_document(url))

    def app(self, middleware=None) -> Starlette:
        async def document(request):
            self.hits += 1
            return await _maybe_await(self.serve(self.url))

        async def elsewhere(request):
            return JSONResponse(good_document(self.url))

        return Starlette(
            routes=[Route("/client.json", document), Route("/elsewhere.json", elsewhere)], middleware=middleware or []
        )


async def _maybe_await(value):
    if asyncio.iscoroutine(value):
        return await value
    return value


@pytest.fixture
def document_host(loopback_server):
    host = DocumentHost()
    with loopback_server(host.app()) as base:
        host.url = f"{base}/client.json"
        yield host


def authorization_request(live_as, client_id: str, redirect_uri: str = REDIRECT) -> httpx2.Response:
    _, challenge = pkce_pair()
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                       "code_challenge": challenge, "code_challenge_method": "S256", "state": "s1"})
    return httpx2.get(f"{live_as.base_url}/authorize?{query}", headers={"Accept": "text/html"}, follow_redirects=False)


def assert_refused(response: httpx2.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.headers, response.text[:500])
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "code=" not in response.text


def authorization_works(live_as, client_id: str, user) -> bool:
    _, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client_id, redirect_uri=REDIRECT, challenge=challenge,
                       username=user[0], password=user[1])
    return bool(result.code) and result.response.headers["location"].startswith(REDIRECT + "?")


CACHE_ME = {"Cache-Control": "public, max-age=3600"}


def _oversized_stream(url):
    async def body():
        yield b'{"client_id": "' + url.encode() + b'", "client_name": "x", "redirect_uris": ["' + REDIRECT.encode() + b'"], "pad": "'
        for _ in range(40):
            yield b"a" * 256
        yield b'"}'

    return StreamingResponse(body(), media_type="application/json", headers=CACHE_ME)


BAD_DOCUMENTS = {
    "client-id-differs": lambda url: JSONResponse(good_document(url, client_id="https://client.example/client.json"), headers=CACHE_ME),
    "client-id-differs-slash": lambda url: JSONResponse(good_document(url, client_id=url + "/"), headers=CACHE_ME),
    "client-id-missing": lambda url: JSONResponse(good_document(url, client_id=...), headers=CACHE_ME),
    "not-json": lambda url: Response("<html><body>hello</body></html>", media_type="text/html", headers=CACHE_ME),
    "json-array": lambda url: JSONResponse([good_document(url)], headers=CACHE_ME),
    "missing-client-name": lambda url: JSONResponse(good_document(url, client_name=...), headers=CACHE_ME),
    "blank-client-name": lambda url: JSONResponse(good_document(url, client_name="  "), headers=CACHE_ME),
    "missing-redirect-uris": lambda url: JSONResponse(good_document(url, redirect_uris=...), headers=CACHE_ME),
    "empty-redirect-uris": lambda url: JSONResponse(good_document(url, redirect_uris=[]), headers=CACHE_ME),
    "javascript-redirect-uri": lambda url: JSONResponse(
        good_document(url, redirect_uris=[REDIRECT, "javascript:alert(1)"]), headers=CACHE_ME
    ),
    "client-secret-basic": lambda url: JSONResponse(good_document(url, token_endpoint_auth_method="client_secret_basic"), headers=CACHE_ME),
    "client-secret-post": lambda url: JSONResponse(good_document(url, token_endpoint_auth_method="client_secret_post"), headers=CACHE_ME),
    "carries-client-secret": lambda url: JSONResponse(good_document(url, client_secret="s3cr3t"), headers=CACHE_ME),
    "over-5kb": lambda url: JSONResponse(good_document(url, client_uri="https://client.example/" + "a" * 5200), headers=CACHE_ME),
    "over-5kb-chunked": _oversized_stream,
    "http-404": lambda url: JSONResponse(good_document(url), status_code=404, headers=CACHE_ME),
    "http-500": lambda url: JSONResponse(good_document(url), status_code=500, headers=CACHE_ME),
    "http-204": lambda url: Response(status_code=204, headers=CACHE_ME),
}


@pytest.mark.parametrize("bad", list(BAD_DOCUMENTS.values()), ids=list(BAD_DOCUMENTS))
def test_S_C3_bad_metadata_document_refuses_authorization_and_is_not_cached(live_as, document_host, bad):
    user = live_as.add_user()
    document_host.serve = bad
    refused = authorization_request(live_as, document_host.url)
    assert_refused(refused)
    assert document_host.hits == 1
    # a second attempt fetches again (the error was not cached) and is refused again
    assert_refused(authorization_request(live_as, document_host.url))
    assert document_host.hits == 2

    # the same URL now serves a good document: the authorization goes through
    document_host.serve = lambda url: JSONResponse(good_document(url))
    assert authorization_works(live_as, document_host.url, user)
    assert document_host.hits >= 3


def test_S_C3_document_just_under_5kb_is_accepted(live_as, document_host):
    user = live_as.add_user()
    padding = 5000 - len(JSONResponse(good_document(document_host.url, client_uri="https://client.example/")).body)
    document = good_document(document_host.url, client_uri="https://client.example/" + "a" * padding)
    assert 4900 < len(JSONResponse(document).body) <= 5 * 1024
    document_host.serve = lambda url: JSONResponse(document)
    assert authorization_works(live_as, document_host.url, user)


def test_S_C3_redirect_uri_not_in_document_is_refused(live_as, document_host):
    response = authorization_request(live_as, document_host.url, redirect_uri="http://127.0.0.1:9/elsewhere")
    assert_refused(response)


@pytest.mark.parametrize("as_overrides", [{"cimd_fetch_timeout": 0.5}])
def test_S_C3_slow_document_is_refused_after_the_timeout(live_as, document_host):
    async def slow(url):
        await asyncio.sleep(3)
        return JSONResponse(good_document(url))

    document_host.serve = slow
    started = time.monotonic()
    assert_refused(authorization_request(live_as, document_host.url))
    assert time.monotonic() - started < 2.5


def test_AS5_document_cache_follows_cache_control(live_as, document_host):
    user = live_as.add_user()
    document_host.serve = lambda url: JSONResponse(good_document(url), headers={"Cache-Control": "max-age=600"})
    assert authorization_works(live_as, document_host.url, user)
    fetched = document_host.hits
    assert_refused(authorization_request(live_as, document_host.url, redirect_uri="http://127.0.0.1:9/unknown"))
    assert document_host.hits == fetched  # served from the cache


def test_AS5_no_store_document_is_fetched_every_time(live_as, document_host):
    document_host.serve = lambda url: JSONResponse(good_document(url), headers={"Cache-Control": "no-store"})
    for expected in (1, 2, 3):
        response = authorization_request(live_as, document_host.url)
        assert response.status_code == 303 and "/login" in response.headers["location"]
        assert document_host.hits == expected


def test_AS5_document_from_a_compressing_host_is_accepted(live_as, loopback_server):
    """Hosts (CDNs, nginx) compress JSON when the client allows it; the fetch must still read it
    (and its 5 KB cap must apply to what is read, not to a decompression bomb)."""
    user = live_as.add_user()
    host = DocumentHost()
    host.serve = lambda url: JSONResponse(good_document(url, client_uri="https://client.example/" + "a" * 800))
    with loopback_server(host.app(middleware=[Middleware(GZipMiddleware, minimum_size=100)])) as base:
        host.url = f"{base}/client.json"
        assert authorization_works(live_as, host.url, user)


# -- S-C4: SSRF: CIMD URLs and jwks_uri must not reach internal addresses ------------------------

FAKE_DNS = {
    "metadata.attacker.example": "169.254.169.254",
    "intranet.attacker.example": "10.1.2.3",
    "loopback.attacker.example": "127.0.0.1",
    "mapped.attacker.example": "::ffff:10.0.0.1",
}


@pytest.fixture
def outbound(monkeypatch, live_as):
    """Watch every outbound connection in this process: record all but the test's own requests
    to the AS, and fail any that would leave loopback. Fake DNS answers for FAKE_DNS names."""
    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo
    as_port = urlsplit(live_as.base_url).port

    def connect(sock, address):
        host, port = address[0], address[1]
        if not (port == as_port and ipaddress.ip_address(host.split("%")[0]).is_loopback):
            attempts.append((host, port))
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise AssertionError(f"a connection to {address} was attempted")
        return real_connect(sock, address)

    def getaddrinfo(host, port, *args, **kwargs):
        if host in FAKE_DNS:
            address = FAKE_DNS[host]
            if ":" in address:
                return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port or 443, 0, 0))]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 443))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


SSRF_URLS = [
    "https://127.0.0.1/client.json",
    "https://127.0.0.1:8443/client.json",
    "https://localhost/client.json",
    "https://[::1]/client.json",
    "https://10.0.0.1/client.json",
    "https://192.168.1.10/client.json",
    "https://169.254.169.254/latest/meta-data/client.json",
    "https://[fd00:ec2::254]/client.json",
    "https://[::ffff:169.254.169.254]/client.json",
    "https://0.0.0.0/client.json",
    "https://metadata.attacker.example/client.json",
    "https://intranet.attacker.example/client.json",
    "https://loopback.attacker.example/client.json",
    "https://mapped.attacker.example/client.json",
]


@pytest.mark.parametrize("as_overrides", [{"cimd_allow_insecure_loopback": False}])
@pytest.mark.parametrize("url", SSRF_URLS)
def test_S_C4_cimd_url_to_internal_address_is_refused_without_connecting(live_as, outbound, url):
    started = time.monotonic()
    response = authorization_request(live_as, url)
    assert_refused(response)
    assert time.monotonic() - started < 2
    assert outbound == []


@pytest.mark.parametrize("as_overrides", [{"cimd_allow_insecure_loopback": False}])
def test_S_C4_loopback_document_is_not_fetched_without_the_dev_setting(live_as, outbound, document_host):
    """A perfectly valid document on loopback: with the development setting off, it is neither
    fetched over http nor over https."""
    http_url = document_host.url
    https_url = http_url.replace("http://", "https://", 1)
    assert_refused(authorization_request(live_as, http_url))
    assert_refused(authorization_request(live_as, https_url))
    assert document_host.hits == 0
    assert outbound == []


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/client.json",
        "https://metadata.attacker.example/client.json",
        "https://intranet.attacker.example/client.json",
    ],
)
def test_S_C4_cimd_redirect_to_internal_address_is_refused(live_as, loopback_server, outbound, target):
    """Development mode allows a loopback document host; a redirect from it to an internal
    address is still refused, before any connection to that address."""
    hits = []

    async def bounce(request):
        hits.append(request.url.path)
        return RedirectResponse(target, status_code=302)

    with loopback_server(Starlette(routes=[Route("/client.json", bounce)])) as base:
        url = f"{base}/client.json"
        assert_refused(authorization_request(live_as, url))
        assert hits == ["/client.json"]
        port = urlsplit(base).port
        assert all(p == port for _, p in outbound), outbound


@pytest.mark.parametrize(
    "jwks_uri",
    ["https://169.254.169.254/jwks.json", "https://metadata.attacker.example/jwks.json", "https://127.0.0.1/jwks.json"],
)
@pytest.mark.parametrize("as_overrides", [{"cimd_allow_insecure_loopback": False}])
def test_S_C4_jwks_uri_to_internal_address_is_refused(live_as, outbound, jwks_uri):
    from joserfc import jwt
    from joserfc.jwk import ECKey

    registered = post_register(
        live_as,
        valid_registration(grant_types=["client_credentials"], token_endpoint_auth_method="private_key_jwt",
                           redirect_uris=..., jwks_uri=jwks_uri),
    )
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": "ES256", "kid": "k1"},
        {"iss": client_id, "sub": client_id, "aud": f"{live_as.base_url}/token", "iat": now, "exp": now + 60, "jti": str(now)},
        key,
    )
    started = time.monotonic()
    response = live_as.post_token(
        {"grant_type": "client_credentials", "client_assertion": assertion,
         "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    )
    assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()
    assert time.monotonic() - started < 2
    assert outbound == []
