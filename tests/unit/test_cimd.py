"""Client ID Metadata Documents (AS-5, S-C3): cache lifetimes, document rules, and the
resolver's cache (errors never cached), with the network replaced by a stub."""

from __future__ import annotations

import httpx2
import pytest

from gatehouse.authserver import cimd
from gatehouse.authserver.cimd import (
    DEFAULT_TTL,
    MAX_TTL,
    ClientMetadataDocumentError,
    ClientMetadataResolver,
    cache_lifetime,
    client_from_document,
    looks_like_metadata_url,
)
from gatehouse.authserver.clients import KIND_METADATA_DOCUMENT
from gatehouse.netguard import FetchedDocument, FetchError

URL = "https://client.example/oauth/client.json"
REDIRECT = "http://127.0.0.1:9/callback"


# -- cache_lifetime (RFC 9111 section 5.2.2) -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, DEFAULT_TTL),
        ("", DEFAULT_TTL),
        ("public", DEFAULT_TTL),
        ("max-age=60", 60),
        ("public, max-age=120", 120),
        ("max-age=120, must-revalidate", 120),
        ("MAX-AGE=45", 45),
        ('max-age="30"', 30),
        ("max-age = 15", 15),
        ("s-maxage=90", 90),
        ("public,s-maxage=90", 90),
        ("max-age=0", 0),
        ("no-store", 0),
        ("no-cache", 0),
        ("public, max-age=600, no-store", 0),
        ("No-Cache, max-age=600", 0),
        ("max-age=86400", MAX_TTL),
        ("max-age=86401", MAX_TTL),
        ("max-age=999999999999", MAX_TTL),
        ("max-age=abc", DEFAULT_TTL),
        ("max-age=-5", DEFAULT_TTL),
        ("x-max-age=9999", DEFAULT_TTL),
        ("stale-while-revalidate=9999", DEFAULT_TTL),
    ],
)
def test_cache_lifetime(header, seconds):
    assert cache_lifetime(header) == seconds


def test_cache_lifetime_is_never_negative_nor_above_a_day():
    for header in ("max-age=1", "max-age=3600", "max-age=100000", "private", "no-store"):
        assert 0 <= cache_lifetime(header) <= MAX_TTL


# -- looks_like_metadata_url -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "allow_loopback", "expected"),
    [
        ("https://client.example/client.json", False, True),
        ("https://client.example/a/b", False, True),
        ("https://client.example", False, False),
        ("https://client.example/", False, False),
        ("http://client.example/client.json", False, False),
        ("http://client.example/client.json", True, False),
        ("http://127.0.0.1:8000/client.json", False, False),
        ("http://127.0.0.1:8000/client.json", True, True),
        ("http://localhost/client.json", True, True),
        ("http://127.0.0.1:8000/", True, False),
        ("k2J7Wm1pX0", False, False),
        ("urn:example:client", False, False),
        ("https://[::1/client.json", True, False),
    ],
)
def test_looks_like_metadata_url(client_id, allow_loopback, expected):
    assert looks_like_metadata_url(client_id, allow_loopback) is expected


# -- client_from_document ----------------------------------------------------------------------


def document(**changes) -> dict:
    doc = {"client_id": URL, "client_name": "Notes Web", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def test_good_document_gives_a_public_client():
    client = client_from_document(URL, document())
    assert client.client_id == URL and client.kind == KIND_METADATA_DOCUMENT
    assert client.client_name == "Notes Web" and client.redirect_uris == [REDIRECT]
    assert client.token_endpoint_auth_method == "none" and client.is_public
    assert client.secret_hash is None


def test_auth_method_defaults_to_none():
    assert client_from_document(URL, document(token_endpoint_auth_method=...)).token_endpoint_auth_method == "none"


def test_private_key_jwt_is_allowed_with_keys():
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                      "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}]}
    client = client_from_document(URL, document(token_endpoint_auth_method="private_key_jwt", jwks=jwks))
    assert client.token_endpoint_auth_method == "private_key_jwt"


BAD = {
    "not-an-object": ["a", "list"],
    "string": "client",
    "null": None,
    "client-id-differs": document(client_id="https://other.example/oauth/client.json"),
    "client-id-trailing-slash": document(client_id=URL + "/"),
    "client-id-case": document(client_id=URL.replace("client.example", "CLIENT.example")),
    "client-id-missing": document(client_id=...),
    "client-name-missing": document(client_name=...),
    "client-name-blank": document(client_name="   "),
    "client-name-not-string": document(client_name=["Notes"]),
    "redirect-uris-missing": document(redirect_uris=...),
    "redirect-uris-empty": document(redirect_uris=[]),
    "redirect-uri-javascript": document(redirect_uris=["javascript:alert(1)"]),
    "redirect-uri-http-public": document(redirect_uris=["http://client.example/cb"]),
    "redirect-uri-fragment": document(redirect_uris=["https://client.example/cb#x"]),
    "client-secret-basic": document(token_endpoint_auth_method="client_secret_basic"),
    "client-secret-post": document(token_endpoint_auth_method="client_secret_post"),
    "client-secret": document(client_secret="s3cr3t"),
    "client-secret-expires-at": document(client_secret_expires_at=0),
    "unknown-auth-method": document(token_endpoint_auth_method="tls_client_auth"),
    "private-key-jwt-without-keys": document(token_endpoint_auth_method="private_key_jwt"),
    "implicit": document(grant_types=["implicit"]),
    "bad-application-type": document(application_type="browser"),
}


@pytest.mark.parametrize("doc", list(BAD.values()), ids=list(BAD))
def test_S_C3_unacceptable_documents_are_refused(doc):
    with pytest.raises(ClientMetadataDocumentError):
        client_from_document(URL, doc)


# -- ClientMetadataResolver: caching, and errors never cached -----------------------------------


class StubNetwork:
    """Stands in for netguard.fetch_limited: answers from ``self.answer``, counts calls."""

    def __init__(self):
        self.calls: list[dict] = []
        self.answer = self.ok()

    @staticmethod
    def ok(cache_control: str | None = "max-age=60", status: int = 200, body: bytes | None = None):
        import json

        headers = httpx2.Headers({"cache-control": cache_control} if cache_control is not None else {})
        return FetchedDocument(URL, status, headers, body if body is not None else json.dumps(document()).encode())

    def __call__(self, url, **kwargs):
        self.calls.append({"url": url, **kwargs})
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def network(monkeypatch) -> StubNetwork:
    stub = StubNetwork()
    monkeypatch.setattr(cimd, "fetch_limited", stub)
    return stub


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(cimd.time, "monotonic", lambda: now[0])
    return now


def resolver(**kwargs) -> ClientMetadataResolver:
    options = {"timeout": 5.0, "max_bytes": 5 * 1024, "allow_insecure_loopback": False, **kwargs}
    return ClientMetadataResolver(**options)


def test_fetch_uses_the_size_cap_timeout_and_loopback_setting(network):
    resolver(timeout=2.5, max_bytes=5120, allow_insecure_loopback=False).resolve(URL)
    assert network.calls == [{"url": URL, "max_bytes": 5120, "timeout": 2.5, "allow_insecure_loopback": False}]


def test_good_document_is_cached_for_its_max_age(network, clock):
    r = resolver()
    first = r.resolve(URL)
    clock[0] += 59
    assert r.resolve(URL) is first
    assert len(network.calls) == 1
    clock[0] += 2
    r.resolve(URL)
    assert len(network.calls) == 2


@pytest.mark.parametrize("cache_control", ["no-store", "no-cache", "max-age=0"])
def test_uncacheable_document_is_fetched_every_time(network, cache_control):
    network.answer = network.ok(cache_control)
    r = resolver()
    r.resolve(URL)
    r.resolve(URL)
    assert len(network.calls) == 2


BAD_ANSWERS = {
    "fetch-error": FetchError("refused to fetch: 10.0.0.1 is not public"),
    "http-404": StubNetwork.ok(status=404),
    "http-500": StubNetwork.ok(status=500),
    "not-json": StubNetwork.ok(body=b"<html></html>"),
    "wrong-client-id": StubNetwork.ok(body=b'{"client_id": "https://x.example/c", "client_name": "x", "redirect_uris": ["https://x.example/cb"]}'),
    "secret-method": StubNetwork.ok(
        body=('{"client_id": "%s", "client_name": "x", "redirect_uris": ["https://x.example/cb"], '
              '"token_endpoint_auth_method": "client_secret_basic"}' % URL).encode()
    ),
}


@pytest.mark.parametrize("answer", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
def test_S_C3_errors_are_never_cached(network, answer):
    r = resolver()
    network.answer = answer
    for _ in range(2):
        with pytest.raises(ClientMetadataDocumentError):
            r.resolve(URL)
    assert len(network.calls) == 2
    network.answer = network.ok()
    assert r.resolve(URL).client_name == "Notes Web"
    assert len(network.calls) == 3


def test_an_error_after_expiry_is_not_masked_by_the_expired_entry(network, clock):
    r = resolver()
    r.resolve(URL)
    clock[0] += 61
    network.answer = network.ok(status=404)
    with pytest.raises(ClientMetadataDocumentError):
        r.resolve(URL)


def test_cache_is_bounded(network, clock):
    r = resolver(max_entries=3)
    urls = [f"https://client.example/c{i}.json" for i in range(5)]
    for url in urls:
        network.answer = FetchedDocument(
            url, 200, httpx2.Headers({"cache-control": "max-age=600"}),
            ('{"client_id": "%s", "client_name": "c", "redirect_uris": ["https://client.example/cb"]}' % url).encode(),
        )
        r.resolve(url)
    assert len(r._cache) == 3 and list(r._cache) == urls[2:]


def test_is_metadata_url_follows_the_loopback_setting():
    assert resolver(allow_insecure_loopback=False).is_metadata_url("http://127.0.0.1:8000/c.json") is False
    assert resolver(allow_insecure_loopback=True).is_metadata_url("http://127.0.0.1:8000/c.json") is True


def test_shared_max_age_wins_for_a_shared_cache():
    assert cache_lifetime("max-age=10, s-maxage=20") == 20
    assert cache_lifetime("s-maxage=20, max-age=10") == 20
