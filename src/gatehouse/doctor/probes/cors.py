"""CORS on the metadata endpoints, for browser-based MCP clients (the Fetch standard's CORS protocol).

A browser page can read a cross-origin answer only when it carries
``Access-Control-Allow-Origin`` (``*`` or the page's origin). The metadata a client uses is
fetched once more with an ``Origin`` header (the discovery requests carry none, so a server's
CORS policy cannot change what they find). Clients that add ``MCP-Protocol-Version`` make the
browser send a preflight (``OPTIONS``) first; when that is refused they retry without the
header (the TypeScript SDK does), so a refused preflight is reported but does not warn.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gatehouse.doctor.fetch import Exchange, Prober
from gatehouse.doctor.model import Check, Group, passed, skipped, warned
from gatehouse.doctor.probes.resource_metadata import METADATA_HEADERS

G = Group.CORS
ORIGIN = "https://gatehouse-doctor.example"
PREFLIGHT_HEADERS = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "mcp-protocol-version"}


@dataclass
class CrossOrigin:
    url: str
    read: Exchange
    """The GET a browser page would send (with ``Origin``)."""
    preflight: Exchange


async def probe(prober: Prober, urls: list[str]) -> dict[str, CrossOrigin]:
    async def one(url: str) -> CrossOrigin:
        read, preflight = await asyncio.gather(
            prober.request("GET", url, headers={**METADATA_HEADERS, "Origin": ORIGIN}),
            prober.request("OPTIONS", url, headers=PREFLIGHT_HEADERS),
        )
        return CrossOrigin(url, read, preflight)

    found = await asyncio.gather(*(one(url) for url in urls))
    return {item.url: item for item in found}


def _allows_origin(exchange: Exchange) -> bool:
    return exchange.header("access-control-allow-origin") in ("*", ORIGIN)


def _preflight_allows(exchange: Exchange) -> bool:
    if not exchange.ok or not _allows_origin(exchange):
        return False
    allowed = [h.strip().lower() for h in (exchange.header("access-control-allow-headers") or "").split(",")]
    return "*" in allowed or "mcp-protocol-version" in allowed


def check_location(check_id: str, what: str, found: CrossOrigin | None) -> Check:
    if found is None:
        return skipped(check_id, G, f"no {what} to check")
    if not _allows_origin(found.read):
        return warned(check_id, G, f"the {what} at {found.url} has no Access-Control-Allow-Origin: browser-based "
                      "clients cannot read it", found.read, found.preflight,
                      fix=f"answer GET {found.url} with Access-Control-Allow-Origin: * (public metadata holds no secrets)")
    if _preflight_allows(found.preflight):
        return passed(check_id, G, f"the {what} is readable from browsers, preflight included", found.read, found.preflight)
    return passed(check_id, G, f"the {what} is readable from browsers; its preflight for MCP-Protocol-Version is refused "
                  "(browser clients retry without the header)", found.read, found.preflight)


def checks(prm_url: str | None, server_url: str | None, found: dict[str, CrossOrigin]) -> list[Check]:
    return [
        check_location("cors.protected_resource_metadata", "protected resource metadata", found.get(prm_url or "")),
        check_location("cors.authorization_server_metadata", "authorization server metadata", found.get(server_url or "")),
    ]
