"""The guard's JWKS cache (issue 7: per-process caches are bounded in size and in time): a key
the authorization server stops publishing stops being trusted once the cached set is
``max_age`` old; while the AS cannot be reached the last good set is kept."""

from __future__ import annotations

import asyncio

from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.guard import JWKSKeySource


def _public(kid: str) -> dict:
    return {**ECKey.generate_key("P-256").as_dict(private=False), "kid": kid, "alg": "ES256", "use": "sig"}


def jwks_server(published: dict):
    async def jwks(request):
        if published.get("down"):
            return JSONResponse({"error": "down"}, status_code=503)
        return JSONResponse({"keys": published["keys"]})

    return Starlette(routes=[Route("/jwks", jwks)])


async def test_a_withdrawn_key_stops_being_trusted_after_max_age(loopback_server):
    published = {"keys": [_public("old")]}
    with loopback_server(jwks_server(published)) as base_url:
        source = JWKSKeySource(f"{base_url}/jwks", max_age=0.5, refetch_cooldown=0.2)
        assert (await source.key("old")) is not None
        published["keys"] = [_public("new")]
        assert (await source.key("old")) is not None, "within max_age the cached set is used"
        await asyncio.sleep(0.6)
        assert (await source.key("old")) is None, "past max_age the set is fetched again: the withdrawn key is gone"
        assert (await source.key("new")) is not None


async def test_the_last_good_keys_are_kept_while_the_server_is_down(loopback_server):
    published = {"keys": [_public("current")]}
    with loopback_server(jwks_server(published)) as base_url:
        source = JWKSKeySource(f"{base_url}/jwks", max_age=0.3, refetch_cooldown=0.2)
        assert (await source.key("current")) is not None
        generation = source.generation
        published["down"] = True
        await asyncio.sleep(0.4)
        assert (await source.key("current")) is not None
        assert source.generation == generation
        published.update(down=False, keys=[_public("rotated")])
        await asyncio.sleep(0.3)
        assert (await source.key("rotated")) is not None
        assert (await source.key("current")) is None
        assert source.generation == generation + 1
