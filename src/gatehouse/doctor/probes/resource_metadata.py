"""Protected Resource Metadata (RFC 9728; RS-1, RS-2, CL-1, CL-2).

Fetched where clients look, in their order (CL-1): the challenge's ``resource_metadata``, the
path-inserted well-known URI (section 3.1), the root one. The first usable document is the one
a client goes on with; its ``resource`` must be this server's URL (section 3.3, CL-2), or the
origin when it was found at the root URI (built from the origin).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gatehouse.doctor.fetch import Exchange, Prober
from gatehouse.doctor.model import Check, Group, failed, passed, skipped, warned
from gatehouse.doctor.urls import absolute_http, canonical, origin, path_inserted_prm, root_prm, secure_enough

G = Group.RESOURCE_METADATA
METADATA_HEADERS = {"Accept": "application/json", "MCP-Protocol-Version": "2026-07-28"}
"""What the official SDK sends with metadata requests."""
CHALLENGE, PATH_INSERTED, ROOT = "the challenge's resource_metadata", "path-inserted", "root"


@dataclass
class Location:
    kind: str
    url: str
    exchange: Exchange

    @property
    def document(self) -> dict | None:
        """The metadata document when this location serves one (200, a JSON object naming a resource)."""
        body = self.exchange.json_object() if self.exchange.ok else None
        return body if body is not None and "resource" in body else None


@dataclass
class ResourceMetadata:
    server_url: str
    locations: list[Location] = field(default_factory=list)

    def at(self, kind: str) -> Location | None:
        return next((loc for loc in self.locations if loc.kind == kind), None)

    @property
    def chosen(self) -> Location | None:
        """The first usable document in the CL-1 order."""
        return next((loc for loc in self.locations if loc.document is not None), None)

    @property
    def document(self) -> dict:
        chosen = self.chosen
        return chosen.document if chosen else {}

    @property
    def published(self) -> bool:
        return self.chosen is not None

    @property
    def authorization_servers(self) -> list[str]:
        servers = self.document.get("authorization_servers")
        return [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []

    @property
    def scopes(self) -> list[str] | None:
        scopes = self.document.get("scopes_supported")
        return [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else None


async def fetch(prober: Prober, url: str) -> Exchange:
    return await prober.request("GET", url, headers=METADATA_HEADERS, follow_redirects=True)


async def prefetch(prober: Prober, server_url: str) -> dict[str, Exchange]:
    """The well-known locations, fetched while the challenge is still being asked for."""
    urls = [u for u in (path_inserted_prm(server_url), root_prm(server_url)) if u]
    answers = await asyncio.gather(*(fetch(prober, u) for u in urls))
    return dict(zip(urls, answers))


async def discover(prober: Prober, server_url: str, challenge_url: str | None, fetched: dict[str, Exchange]) -> ResourceMetadata:
    """Every location in the CL-1 order, fetching the challenge's URL if it is not a well-known one."""
    found = ResourceMetadata(server_url)
    if challenge_url:
        exchange = fetched.get(challenge_url) or await fetch(prober, challenge_url)
        found.locations.append(Location(CHALLENGE, challenge_url, exchange))
    path_url = path_inserted_prm(server_url)
    if path_url:
        found.locations.append(Location(PATH_INSERTED, path_url, fetched[path_url]))
    found.locations.append(Location(ROOT, root_prm(server_url), fetched[root_prm(server_url)]))
    return found


def _describe(location: Location) -> str:
    exchange = location.exchange
    if exchange.status is None:
        return f"{location.url} cannot be fetched ({exchange.error})"
    if not exchange.ok:
        return f"{location.url} answers {exchange.status}"
    if exchange.json_object() is None:
        return f"{location.url} answers {exchange.status} but not with a JSON object"
    return f"{location.url} serves JSON without a 'resource'"


def _served(check_id: str, location: Location, requirement: str) -> Check:
    if location.exchange.redirects:
        return warned(check_id, G, f"served at {location.url} only after a redirect from {location.exchange.redirects[0]}",
                      location.exchange, requirement=requirement,
                      fix="serve the document at the well-known URL itself: not every client follows redirects for metadata")
    return passed(check_id, G, f"served at {location.url}", location.exchange, requirement=requirement)


def check_challenge_location(found: ResourceMetadata) -> Check:
    location = found.at(CHALLENGE)
    if location is None:
        return skipped("prm.challenge_location", G, "the challenge names no resource_metadata URL", requirement="RS-3")
    if location.document is not None:
        return _served("prm.challenge_location", location, "RS-3")
    return failed("prm.challenge_location", G, f"the challenge's resource_metadata is broken: {_describe(location)}",
                  location.exchange, requirement="RS-3",
                  fix="point resource_metadata at the URL that serves the metadata (RFC 9728 section 5.1)")


def check_path_inserted(found: ResourceMetadata) -> Check | None:
    location = found.at(PATH_INSERTED)
    if location is None:
        return None
    if location.document is not None:
        return _served("prm.path_inserted", location, "RS-2")
    root = found.at(ROOT)
    if root is not None and root.document is not None:
        return failed(
            "prm.path_inserted", G, f"PRM is served only at the root ({root.url}); {_describe(location)}",
            location.exchange, root.exchange, requirement="RS-2", pitfall="PRM served only at the root",
            fix=f"serve the metadata at {location.url} too: for a resource with a path, that is the RFC 9728 "
                "section 3.1 location, and clients that follow the RFC look nowhere else",
        )
    return failed("prm.path_inserted", G, f"no metadata at the path-inserted URI: {_describe(location)}", location.exchange,
                  requirement="RS-2", fix=f"serve the protected resource metadata at {location.url} (RFC 9728 section 3.1)")


def check_root(found: ResourceMetadata) -> Check:
    location = found.at(ROOT)
    assert location is not None
    if location.document is not None:
        return _served("prm.root", location, "RS-2")
    if found.at(PATH_INSERTED) is None:
        return failed("prm.root", G, f"no protected resource metadata: {_describe(location)}", location.exchange,
                      requirement="RS-1", fix=f"serve the protected resource metadata at {location.url} (RFC 9728 section 3.1)")
    return warned("prm.root", G, f"nothing at the root URI: {_describe(location)}", location.exchange, requirement="RS-2",
                  fix=f"serve the metadata at {location.url} as well: clients that lost the path try the root last (CL-1)")


def check_document(found: ResourceMetadata) -> Check:
    chosen = found.chosen
    if chosen is None:
        return failed("prm.document", G, "no usable protected resource metadata anywhere clients look (CL-1)",
                      *[loc.exchange for loc in found.locations], requirement="RS-1",
                      fix="serve RFC 9728 metadata with resource and authorization_servers at the path-inserted URI")
    document, problems = chosen.document, []
    if not absolute_http(document.get("resource")):
        problems.append(f"resource {document.get('resource')!r} is not an absolute http(s) URL without a fragment")
    servers = document.get("authorization_servers")
    if not isinstance(servers, list) or not servers:
        problems.append("authorization_servers is missing or empty (MCP needs at least one)")
    methods = document.get("bearer_methods_supported")
    if isinstance(methods, list) and "header" not in methods:
        problems.append(f"bearer_methods_supported {methods} lacks 'header' (tokens travel in the Authorization header, RS-5)")
    if problems:
        return failed("prm.document", G, "; ".join(problems), chosen.exchange, requirement="RS-1",
                      fix="publish resource (this server's URL) and authorization_servers (at least one issuer); "
                          'bearer_methods_supported: ["header"]')
    if methods is None:
        return warned("prm.document", G, "the document lacks bearer_methods_supported", chosen.exchange, requirement="RS-1",
                      fix='add "bearer_methods_supported": ["header"] (RFC 9728 section 2)')
    return passed("prm.document", G, f"resource, authorization_servers and bearer_methods_supported are present ({chosen.url})",
                  chosen.exchange, requirement="RS-1")


def check_resource(found: ResourceMetadata) -> Check | None:
    """CL-2, as Gatehouse's client checks it (``gatehouse.client.checks.check_resource_matches``)."""
    chosen = found.chosen
    if chosen is None or not isinstance(chosen.document.get("resource"), str):
        return None
    resource, server = chosen.document["resource"], found.server_url
    accepted = {canonical(server)}
    if chosen.kind == ROOT or canonical(chosen.url) == canonical(root_prm(server)):
        accepted.add(canonical(origin(server)))
    if canonical(resource) in accepted:
        return passed("prm.resource", G, f"resource {resource} is this server", chosen.exchange, requirement="CL-2")
    same_origin = canonical(origin(resource)) == canonical(origin(server))
    if same_origin and canonical(server).startswith(canonical(resource) + "/"):
        return warned("prm.resource", G, f"resource {resource} is a parent of {server}: the official SDK accepts it, "
                      "stricter clients (Gatehouse's) refuse it", chosen.exchange, requirement="CL-2",
                      fix=f'set resource to "{server}" exactly (RFC 9728 section 3.3); tokens for a parent URL are valid '
                          "for every server under it")
    return failed("prm.resource", G, f"resource {resource} is not this server ({server}): clients refuse the metadata",
                  chosen.exchange, requirement="CL-2",
                  fix=f'set resource to "{server}", the URL clients connect to (RFC 9728 section 3.3); behind a proxy, '
                      "configure the public URL")


def check_authorization_servers(found: ResourceMetadata) -> Check | None:
    chosen, servers = found.chosen, found.authorization_servers
    if chosen is None or not servers:
        return None
    bad = [s for s in servers if not absolute_http(s) or "?" in s]
    if bad:
        return failed("prm.authorization_servers", G, f"not an issuer URL: {', '.join(map(repr, bad))}", chosen.exchange,
                      requirement="RS-1", fix="list issuer identifiers: https URLs without query or fragment (RFC 8414 section 2)")
    insecure = [s for s in servers if not secure_enough(s)]
    if insecure:
        return failed("prm.authorization_servers", G, f"plain http issuer off loopback: {', '.join(insecure)}", chosen.exchange,
                      requirement="AS-19", fix="serve the authorization server over https")
    return passed("prm.authorization_servers", G, f"authorization server(s): {', '.join(servers)}", chosen.exchange,
                  requirement="RS-1")


def check_scopes(found: ResourceMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    scopes = found.scopes
    if not scopes:
        return warned("prm.scopes_supported", G, "scopes_supported is missing or empty: clients without a challenge scope "
                      "request no scope (CL-8)", chosen.exchange, requirement="RS-1",
                      fix="list the scopes a client needs for basic use in scopes_supported (RFC 9728 section 2)")
    if "offline_access" in scopes:
        return warned("prm.scopes_supported", G, "scopes_supported lists offline_access", chosen.exchange, requirement="RS-3",
                      fix="leave offline_access out of PRM: refresh tokens are not a resource requirement")
    return passed("prm.scopes_supported", G, f"scopes_supported: {' '.join(scopes)}", chosen.exchange, requirement="RS-1")


def checks(found: ResourceMetadata) -> list[Check]:
    candidates = [
        check_challenge_location(found),
        check_path_inserted(found),
        check_root(found),
        check_document(found),
        check_resource(found),
        check_authorization_servers(found),
        check_scopes(found),
    ]
    return [c for c in candidates if c is not None]
