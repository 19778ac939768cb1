"""One doctor run: the probes in the order a client meets them, independent ones concurrently.

Round trips, each a set of concurrent requests through one ``httpx2.AsyncClient``:

1. the challenge (no token, a made-up token) and the PRM well-known URIs;
2. the PRM at the challenge's ``resource_metadata``, when it is another URL;
3. every AS metadata discovery URL of the issuer (CL-3);
4. the advertised endpoints, and the chosen metadata again as a browser page asks for it (CORS);
5. with ``--login``: the sign-in and the token checks (``probes/login.py``), one step at a time.
"""

from __future__ import annotations

import asyncio
import time
from gatehouse.doctor.fetch import Prober, is_http_url
from gatehouse.doctor.model import Check, Report
from gatehouse.doctor.options import DoctorOptions
from gatehouse.doctor.probes import challenge, cors, registration, resource_metadata, server_metadata


class Unreachable(Exception):
    """The MCP server did not answer at all; the message is one line for the user."""


class BadTarget(ValueError):
    """The URL cannot be an MCP server's URL."""


def check_target(url: str) -> str:
    if not is_http_url(url):
        raise BadTarget(f"{url!r} is not an http:// or https:// URL (give the MCP endpoint, e.g. https://mcp.example.com/mcp)")
    if "#" in url:
        raise BadTarget(f"{url!r} has a fragment; an MCP server URL has none (RFC 8707 section 2)")
    return url


async def diagnose(url: str, options: DoctorOptions | None = None) -> Report:
    """Every check against the MCP server at ``url``; raises ``Unreachable`` when nothing answers there."""
    options = options or DoctorOptions()
    check_target(url)
    started = time.perf_counter()
    async with Prober(options.timeout) as prober:
        answers, well_known = await asyncio.gather(challenge.probe(prober, url), resource_metadata.prefetch(prober, url))
        if not answers.no_token.reached:
            raise Unreachable(f"cannot reach {url}: {answers.no_token.error}; check the URL and that the server is running")
        prm = await resource_metadata.discover(prober, url, answers.resource_metadata_url, well_known)
        issuer, from_prm = server_metadata.issuer_for(prm.authorization_servers, url)
        server = await server_metadata.discover(prober, issuer, from_prm=from_prm)
        cors_urls = [location.url for location in (prm.chosen, server.chosen) if location is not None]
        _, cross_origin = await asyncio.gather(server_metadata.probe_endpoints(prober, server), cors.probe(prober, cors_urls))

        checks: list[Check] = challenge.checks(answers, url, metadata_published=prm.published, prm_scopes=prm.scopes)
        checks += resource_metadata.checks(prm)
        if not prm.published and server.chosen is None:
            checks += server_metadata.unavailable(
                "no PRM names an authorization server, and the server's origin publishes no AS metadata either")
        else:
            checks += server_metadata.checks(server, prm.scopes)
            checks += registration.checks(server)
        checks += cors.checks(prm.chosen.url if prm.chosen else None, server.chosen.url if server.chosen else None, cross_origin)
        if options.login:
            from gatehouse.doctor.probes import login

            bearer = answers.bearer
            scope = (bearer.get("scope") if bearer else None) or " ".join(prm.scopes or []) or None
            checks += await login.checks(prober, url, prm, server, options, scope)
    return Report(url, checks, login=options.login, duration_ms=round((time.perf_counter() - started) * 1000))
