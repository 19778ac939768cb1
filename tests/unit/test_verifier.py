"""JWTVerifier + JWKSKeySource (RS-4) against a loopback JWKS server this test controls."""

from __future__ import annotations

import asyncio
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.guard import JWKSKeySource, JWTVerifier, TokenRejected

ISSUER = "https://as.example"
AUDIENCE = "https://mcp.example/mcp"


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


class JWKSServer:
    def __init__(self):
        self.keys: list[ECKey] = []
        self.requests = 0
        self.status = 200
        self.app = Starlette(routes=[Route("/jwks", self.jwks)])

    async def jwks(self, request: Request) -> JSONResponse:
        self.requests += 1
        if self.status != 200:
            return JSONResponse({"error": "down"}, status_code=self.status)
        return JSONResponse({"keys": [k.as_dict(private=False) for k in self.keys]})


class SpySource(JWKSKeySource):
    """Counts how often the verifier asks for a key."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookups = 0

    async def key(self, kid: str):
        self.lookups += 1
        return await super().key(kid)


@pytest.fixture
def jwks(loopback_server):
    server = JWKSServer()
    server.keys.append(new_key("k1"))
    with loopback_server(server.app) as base_url:
        server.uri = f"{base_url}/jwks"
        yield server


def make_verifier(jwks: JWKSServer, *, cooldown: float = 30.0, leeway: int = 30) -> tuple[JWTVerifier, SpySource]:
    source = SpySource(jwks.uri, refetch_cooldown=cooldown)
    return JWTVerifier(issuers=[ISSUER], audience=AUDIENCE, keys=source, leeway=leeway), source


def token(key: ECKey, *, header: dict | None = None, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "client_id": "c1", "scope": "notes:read notes:write",
            "iat": now, "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **(header or {})}
    return jwt.encode(head, body, key, algorithms=["ES256"])


async def test_valid_token_gives_the_caller(jwks):
    verifier, _ = make_verifier(jwks)
    caller = await verifier.verify(token(jwks.keys[0]))
    assert caller.subject == "alice" and caller.client_id == "c1" and caller.issuer == ISSUER
    assert caller.scopes == frozenset({"notes:read", "notes:write"})
    assert caller.claims["aud"] == AUDIENCE
    with pytest.raises(TypeError):
        caller.claims["sub"] = "mallory"  # read-only view


async def test_second_verify_is_served_from_the_cache(jwks):
    verifier, source = make_verifier(jwks)
    good = token(jwks.keys[0])
    first = await verifier.verify(good)
    assert source.lookups == 1 and jwks.requests == 1
    second = await verifier.verify(good)
    assert second is first
    assert source.lookups == 1 and jwks.requests == 1  # no key lookup, no fetch
    await verifier.verify(token(jwks.keys[0], sub="bob"))  # another token: checked, with the cached JWKS
    assert source.lookups == 2 and jwks.requests == 1


async def test_rejections_are_not_cached(jwks):
    verifier, source = make_verifier(jwks)
    bad = token(jwks.keys[0], aud="https://other.example/mcp")
    for expected in (1, 2):
        with pytest.raises(TokenRejected, match="another resource"):
            await verifier.verify(bad)
        assert source.lookups == expected


async def test_cached_token_stops_working_when_it_expires(jwks):
    verifier, _ = make_verifier(jwks, leeway=0)
    short = token(jwks.keys[0], exp=int(time.time()) + 1)
    await verifier.verify(short)
    await asyncio.sleep(2.1)
    with pytest.raises(TokenRejected, match="expired"):
        await verifier.verify(short)


async def test_unknown_kid_refetches_once_then_respects_the_cooldown(jwks):
    verifier, source = make_verifier(jwks, cooldown=0.5)
    await verifier.verify(token(jwks.keys[0]))
    assert jwks.requests == 1
    stranger = new_key("k-unknown")
    with pytest.raises(TokenRejected, match="unknown key"):
        await verifier.verify(token(stranger))
    assert jwks.requests == 1  # fetched less than a cooldown ago: no refetch
    await asyncio.sleep(0.6)
    for _ in range(3):
        with pytest.raises(TokenRejected, match="unknown key"):
            await verifier.verify(token(stranger))
    assert jwks.requests == 2  # exactly one refetch for three attempts
    await asyncio.sleep(0.6)
    with pytest.raises(TokenRejected):
        await verifier.verify(token(stranger))
    assert jwks.requests == 3
    assert source.generation == 1  # the same JWKS content every time


async def test_unknown_kid_found_after_refetch(jwks):
    verifier, source = make_verifier(jwks, cooldown=0.0)
    await verifier.verify(token(jwks.keys[0]))
    jwks.keys.append(new_key("k2"))  # the AS publishes a new key (AS-12)
    caller = await verifier.verify(token(jwks.keys[1], sub="bob"))
    assert caller.subject == "bob" and jwks.requests == 2 and source.generation == 2


async def test_key_rotation_drops_the_cache(jwks):
    verifier, source = make_verifier(jwks, cooldown=0.0)
    old_key = jwks.keys[0]
    old = token(old_key)
    await verifier.verify(old)
    await verifier.verify(old)
    assert source.lookups == 1 and source.generation == 1

    new = new_key("k2")
    jwks.keys = [new]  # k1 retired: only k2 is published
    await verifier.verify(token(new))
    assert source.generation == 2 and jwks.requests == 2
    lookups = source.lookups
    with pytest.raises(TokenRejected, match="unknown key"):
        await verifier.verify(old)  # no longer served from the cache
    assert source.lookups == lookups + 1


async def test_same_jwks_content_keeps_the_generation(jwks):
    verifier, source = make_verifier(jwks, cooldown=0.0)
    await verifier.verify(token(jwks.keys[0]))
    with pytest.raises(TokenRejected):
        await verifier.verify(token(new_key("k-none")))
    assert jwks.requests == 2 and source.generation == 1


async def test_jwks_fetch_failure_is_a_rejection(jwks):
    jwks.status = 503
    verifier, _ = make_verifier(jwks)
    with pytest.raises(TokenRejected, match="could not be fetched"):
        await verifier.verify(token(jwks.keys[0]))
    with pytest.raises(TokenRejected):
        await verifier.verify(token(jwks.keys[0]))
    assert jwks.requests == 1  # a failure also starts the cooldown: no hammering of the AS


@pytest.mark.parametrize(
    ("offsets", "ok"),
    [
        ({"exp": -10}, True),  # expired 10 s ago, leeway 30
        ({"exp": -29}, True),
        ({"exp": -45}, False),
        ({"exp": -3600}, False),
        ({"nbf": 10}, True),  # valid in 10 s, leeway 30
        ({"nbf": 45}, False),
        ({"nbf": 3600}, False),
    ],
)
async def test_leeway_for_exp_and_nbf(jwks, offsets, ok):
    verifier, _ = make_verifier(jwks, leeway=30)
    now = int(time.time())
    claims = {name: now + delta for name, delta in offsets.items()}
    if "nbf" in claims:
        claims["exp"] = now + 3600
    candidate = token(jwks.keys[0], **claims)
    if ok:
        await verifier.verify(candidate)
    else:
        with pytest.raises(TokenRejected, match="expired" if "exp" in offsets else "not valid yet"):
            await verifier.verify(candidate)


async def test_zero_leeway_is_strict(jwks):
    verifier, _ = make_verifier(jwks, leeway=0)
    now = int(time.time())
    with pytest.raises(TokenRejected, match="expired"):
        await verifier.verify(token(jwks.keys[0], exp=now - 2))
    with pytest.raises(TokenRejected, match="not valid yet"):
        await verifier.verify(token(jwks.keys[0], nbf=now + 5))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"header": {"typ": "JWT"}}, "not an access token"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "https://other.example/mcp"}, "another resource"),
        ({"exp": None}, "lacks the required 'exp' claim"),
        ({"sub": None}, "lacks the required 'sub' claim"),
    ],
)
async def test_claim_and_header_checks(jwks, change, message):
    verifier, _ = make_verifier(jwks)
    with pytest.raises(TokenRejected, match=message):
        await verifier.verify(token(jwks.keys[0], **change))


async def test_not_a_jwt(jwks):
    verifier, _ = make_verifier(jwks)
    for garbage in ("abc", "a.b.c", ""):
        with pytest.raises(TokenRejected):
            await verifier.verify(garbage)
    assert jwks.requests == 0
