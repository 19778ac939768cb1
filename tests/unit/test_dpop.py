"""The DPoP building blocks (RFC 9449) the AS and the guard share: URL comparison, nonces, replay cache."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from gatehouse.dpop import Nonces, ProofError, ReplayCache, check_proof, normalize_uri


@pytest.mark.parametrize(("a", "b"), [
    ("HTTPS://MCP.Example.com/mcp", "https://mcp.example.com/mcp"),
    ("https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"),
    ("http://mcp.example.com:80", "http://mcp.example.com/"),
    ("https://mcp.example.com/mcp?session=1#x", "https://mcp.example.com/mcp"),
])
def test_htu_is_compared_after_syntax_based_normalisation(a, b):
    assert normalize_uri(a) == normalize_uri(b)


@pytest.mark.parametrize(("a", "b"), [
    ("https://mcp.example.com/mcp", "https://mcp.example.com/MCP"),
    ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp/"),
    ("https://mcp.example.com/mcp", "http://mcp.example.com/mcp"),
    ("https://mcp.example.com/mcp", "https://mcp.example.com:8443/mcp"),
])
def test_different_resources_stay_different(a, b):
    assert normalize_uri(a) != normalize_uri(b)


@pytest.mark.parametrize("uri", ["ftp://x/y", "https://user@mcp.example.com/mcp", "not a url", "https://h:99999/"])
def test_unusable_htu_values_match_nothing(uri):
    assert normalize_uri(uri) is None


def test_nonces_live_one_to_two_lifetimes_and_are_bound_to_the_secret():
    nonces = Nonces(b"k" * 32, lifetime=60)
    issued = nonces.current(1000.0)
    assert nonces.valid(issued, 1000.0) and nonces.valid(issued, 1079.0)
    assert not nonces.valid(issued, 1140.0)
    assert not Nonces(b"x" * 32, lifetime=60).valid(issued, 1000.0)
    assert not nonces.valid(42, 1000.0)


def test_the_replay_cache_forgets_expired_values_and_stays_bounded():
    cache = ReplayCache(max_entries=3)
    assert cache.first_use(("k", "1"), expires=10, now=0)
    assert not cache.first_use(("k", "1"), expires=10, now=5)
    assert cache.first_use(("k", "1"), expires=20, now=11)
    for jti in "234567":
        cache.first_use(("k", jti), expires=30, now=12)
    assert len(cache) <= 3


def test_ath_binds_the_proof_to_the_token():
    """RFC 9449 section 7.1's example token and its ``ath``."""
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    key = ECKey.generate_key("P-256")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    claims = {"jti": "1", "htm": "GET", "htu": "https://rs.example/mcp", "iat": int(time.time()),
              "ath": "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"}
    proof = jwt.encode(header, claims, key, algorithms=["ES256"])
    checked = check_proof(proof, method="GET", url="https://rs.example/mcp", now=time.time(), access_token=token)
    assert checked.jkt == key.thumbprint()
    with pytest.raises(ProofError, match="ath"):
        check_proof(proof, method="GET", url="https://rs.example/mcp", now=time.time(), access_token="another-token")
