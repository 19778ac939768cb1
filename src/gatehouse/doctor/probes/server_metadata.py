"""Authorization server metadata (RFC 8414, OpenID Connect Discovery 1.0; AS-1..AS-3, AS-12, AS-19, CL-3..CL-5).

Every discovery URL of the issuer (CL-3 order) is fetched at once; the first that serves a JSON
object is the document a client uses, unless an earlier one answered a server error, where the
official SDK stops looking. Then: the ``issuer`` must be byte-identical to the issuer the URL was
built from (RFC 8414 section 3.3, CL-4), PKCE S256 advertised (CL-5), and the endpoints present,
reachable and https (AS-19).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gatehouse.doctor.fetch import Exchange, Prober
from gatehouse.doctor.model import Check, Group, failed, passed, skipped, warned
from gatehouse.doctor.probes.resource_metadata import METADATA_HEADERS, Location
from gatehouse.doctor.urls import absolute_http, origin, secure_enough, server_metadata_urls

G = Group.SERVER_METADATA
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint",
             "introspection_endpoint", "jwks_uri")


@dataclass
class ServerMetadata:
    issuer: str
    from_prm: bool
    locations: list[Location] = field(default_factory=list)
    endpoint_answers: dict[str, Exchange] = field(default_factory=dict)
    """What each advertised endpoint answered to a harmless request (``probe_endpoints``)."""

    @property
    def chosen(self) -> Location | None:
        for location in self.locations:
            exchange = location.exchange
            if exchange.ok and exchange.json_object() is not None:
                return location
            if exchange.status is not None and exchange.status >= 500:
                return None
        return None

    @property
    def document(self) -> dict:
        chosen = self.chosen
        return chosen.exchange.json_object() if chosen else {}

    def endpoint(self, name: str) -> str | None:
        value = self.document.get(name)
        return value if absolute_http(value) else None


async def discover(prober: Prober, issuer: str, *, from_prm: bool) -> ServerMetadata:
    found = ServerMetadata(issuer, from_prm)
    urls = server_metadata_urls(issuer)
    answers = await asyncio.gather(*(prober.request("GET", url, headers=METADATA_HEADERS, follow_redirects=True)
                                     for _, url in urls))
    found.locations = [Location(kind, url, exchange) for (kind, url), exchange in zip(urls, answers)]
    return found


async def probe_endpoints(prober: Prober, found: ServerMetadata) -> None:
    """Harmless requests that show each endpoint answers: GETs, and POSTs without parameters (an OAuth error)."""
    requests = {
        "authorization_endpoint": ("GET", None),
        "token_endpoint": ("POST", {"grant_type": "authorization_code"}),
        "registration_endpoint": ("GET", None),
        "revocation_endpoint": ("POST", {}),
        "jwks_uri": ("GET", None),
    }
    names = [name for name in requests if found.endpoint(name)]

    async def one(name: str) -> Exchange:
        method, form = requests[name]
        return await prober.request(method, found.endpoint(name), data=form)

    answers = await asyncio.gather(*(one(name) for name in names))
    found.endpoint_answers = dict(zip(names, answers))


def _where(found: ServerMetadata) -> str:
    return "from PRM authorization_servers" if found.from_prm else "the server's origin (no PRM: the 2025-03-26 fallback)"


def check_discovery(found: ServerMetadata) -> Check:
    every = [loc.exchange for loc in found.locations]
    tried = "; ".join(f"{loc.kind} {loc.url} → {loc.exchange.status or loc.exchange.error}" for loc in found.locations)
    chosen = found.chosen
    if chosen is None:
        stopped = next((loc for loc in found.locations if (loc.exchange.status or 0) >= 500), None)
        if stopped is not None:
            return failed("as.discovery", G, f"{stopped.url} answers {stopped.exchange.status}; clients stop at a server error "
                          f"(issuer {found.issuer}, {_where(found)}). Tried: {tried}", *every, requirement="AS-2",
                          fix=f"make {stopped.url} answer 404 (or the metadata) instead of a server error")
        first = found.locations[0].url
        return failed("as.discovery", G, f"no authorization server metadata for {found.issuer} ({_where(found)}). Tried: {tried}",
                      *every, requirement="AS-2",
                      fix=f"serve RFC 8414 metadata at {first} (and OpenID Connect discovery if you can), or correct "
                          "authorization_servers in the PRM")
    if chosen.exchange.redirects:
        return warned("as.discovery", G, f"metadata at {chosen.url} only after a redirect from {chosen.exchange.redirects[0]}",
                      *every, requirement="AS-2", fix="serve the metadata at the well-known URL itself; not every client follows redirects")
    others = [loc for loc in found.locations if loc is not chosen and loc.exchange.ok]
    also = f"; also at {', '.join(loc.url for loc in others)}" if others else ""
    return passed("as.discovery", G, f"metadata for {found.issuer} ({_where(found)}) at {chosen.url} ({chosen.kind}){also}",
                  *every, requirement="AS-2")


def check_issuer(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    stated = found.document.get("issuer")
    expected = found.issuer
    if stated == expected:
        return passed("as.issuer", G, f"issuer {stated!r} is identical to the issuer the URL was built from", chosen.exchange,
                      requirement="CL-4")
    if isinstance(stated, str) and stated.rstrip("/") == expected.rstrip("/"):
        source = "PRM authorization_servers" if found.from_prm else "the server origin"
        return failed(
            "as.issuer", G, f"trailing-slash issuer mismatch: {source} says {expected!r}, the metadata says {stated!r}; "
            "clients compare them byte for byte and refuse the AS", chosen.exchange, requirement="CL-4",
            pitfall="trailing-slash issuer mismatch",
            fix=f"spell the issuer one way everywhere: list {stated!r} in the PRM's authorization_servers (or change the "
                "AS's issuer); watch for URL types that add a '/' when serialised (pydantic AnyHttpUrl does)",
        )
    return failed("as.issuer", G, f"issuer mismatch: expected {expected!r}, the metadata says {stated!r}", chosen.exchange,
                  requirement="CL-4", fix="the metadata's issuer must be exactly the issuer in the PRM (RFC 8414 section 3.3); "
                                          "behind a proxy, configure the AS's public URL")


def check_pkce(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    methods = found.document.get("code_challenge_methods_supported")
    if not methods:
        return failed("as.pkce", G, "the metadata lacks code_challenge_methods_supported: MCP clients refuse this AS",
                      chosen.exchange, requirement="CL-5", pitfall="AS lacks code_challenge_methods_supported",
                      fix='advertise "code_challenge_methods_supported": ["S256"] (and enforce PKCE, AS-4); clients cannot '
                          "tell PKCE is enforced otherwise")
    if not isinstance(methods, list) or "S256" not in methods:
        return failed("as.pkce", G, f"code_challenge_methods_supported {methods!r} lacks S256", chosen.exchange,
                      requirement="AS-3", fix='support and advertise S256: "code_challenge_methods_supported": ["S256"]')
    if "plain" in methods:
        return warned("as.pkce", G, "PKCE S256 is advertised, and so is plain", chosen.exchange, requirement="AS-4",
                      fix="drop plain: OAuth 2.1 allows only S256 for clients that can do it, and all MCP clients can")
    return passed("as.pkce", G, "PKCE S256 is advertised", chosen.exchange, requirement="AS-3")


def check_iss_parameter(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    if found.document.get("authorization_response_iss_parameter_supported") is True:
        return passed("as.iss_parameter", G, "authorization responses carry iss (RFC 9207)", chosen.exchange, requirement="AS-9")
    return warned("as.iss_parameter", G, "authorization_response_iss_parameter_supported is not true: clients cannot detect "
                  "mix-up attacks (RFC 9207)", chosen.exchange, requirement="AS-9",
                  fix="add iss to every authorization response and advertise authorization_response_iss_parameter_supported: true")


def check_grants(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    document = found.document
    response_types = document.get("response_types_supported")
    grants = document.get("grant_types_supported", ["authorization_code", "implicit"])  # RFC 8414 section 2 default
    if not isinstance(response_types, list) or "code" not in response_types:
        return failed("as.grant_types", G, f"response_types_supported {response_types!r} lacks code", chosen.exchange,
                      requirement="AS-1", fix='advertise "response_types_supported": ["code"] (required by RFC 8414 section 2)')
    if not isinstance(grants, list) or "authorization_code" not in grants:
        return failed("as.grant_types", G, f"grant_types_supported {grants!r} lacks authorization_code", chosen.exchange,
                      requirement="AS-1", fix='support the authorization code grant and list it in grant_types_supported')
    refresh = "refresh tokens offered" if "refresh_token" in grants else "no refresh_token grant advertised"
    return passed("as.grant_types", G, f"response type code, authorization_code grant; {refresh}", chosen.exchange,
                  requirement="AS-1")


def check_endpoints(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    missing = [name for name in ("authorization_endpoint", "token_endpoint") if not found.endpoint(name)]
    if missing:
        return failed("as.endpoints", G, f"the metadata lacks {' and '.join(missing)}", chosen.exchange, requirement="AS-3",
                      fix="publish authorization_endpoint and token_endpoint as absolute URLs (RFC 8414 section 2)")
    answers = found.endpoint_answers
    unreachable = {name: ex for name, ex in answers.items() if ex.status is None}
    if unreachable:
        listed = "; ".join(f"{name} {ex.url}: {ex.error}" for name, ex in unreachable.items())
        return failed("as.endpoints", G, f"unreachable: {listed}", *unreachable.values(), requirement="AS-3",
                      fix="publish endpoint URLs that clients can reach (the public host name, not an internal one)")
    broken = {name: ex for name, ex in answers.items() if ex.status >= 500}
    if broken:
        listed = "; ".join(f"{name} answers {ex.status}" for name, ex in broken.items())
        return warned("as.endpoints", G, listed, *broken.values(), requirement="AS-3",
                      fix="a request without parameters should get an OAuth error (400), not a server error")
    token = answers.get("token_endpoint")
    if token is not None and (token.json_object() or {}).get("error") is None:
        return warned("as.endpoints", G, f"the token endpoint answers an empty request with {token.status} but no JSON "
                      "error (RFC 6749 section 5.2)", token, requirement="AS-3",
                      fix='answer token errors as JSON: {"error": "invalid_request", ...} with status 400')
    listed = ", ".join(f"{name} ({ex.status})" for name, ex in answers.items())
    return passed("as.endpoints", G, f"endpoints answer: {listed}", *answers.values(), requirement="AS-3")


def check_https(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    urls = {"issuer": found.issuer, **{name: found.endpoint(name) for name in ENDPOINTS if found.endpoint(name)}}
    insecure = {name: url for name, url in urls.items() if not secure_enough(url)}
    if insecure:
        listed = ", ".join(f"{name} {url}" for name, url in insecure.items())
        return failed("as.https", G, f"plain http off loopback: {listed}", chosen.exchange, requirement="AS-19",
                      fix="serve every authorization server endpoint over https (plain http only on loopback, for development)")
    if any(url.startswith("http:") for url in urls.values()):
        return passed("as.https", G, "issuer and endpoints are https, or plain http on loopback (development only)",
                      chosen.exchange, requirement="AS-19")
    return passed("as.https", G, "issuer and endpoints are https", chosen.exchange, requirement="AS-19")


def check_jwks(found: ServerMetadata) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    answer = found.endpoint_answers.get("jwks_uri")
    if answer is None:
        return warned("as.jwks", G, "no jwks_uri: resource servers cannot verify JWT access tokens locally", chosen.exchange,
                      requirement="AS-12", fix="publish the token signing keys at a jwks_uri (RFC 8414 section 2), "
                                               "or make sure resource servers introspect (RFC 7662)")
    keys = (answer.json_object() or {}).get("keys")
    if not answer.ok or not isinstance(keys, list) or not keys:
        return failed("as.jwks", G, f"jwks_uri {answer.url} serves no keys ({answer.status or answer.error})", answer,
                      requirement="AS-12", fix='serve {"keys": [...]} with the public signing keys at jwks_uri')
    without_kid = [k for k in keys if isinstance(k, dict) and not k.get("kid")]
    if without_kid:
        return warned("as.jwks", G, f"{len(without_kid)} of {len(keys)} keys have no kid", answer, requirement="AS-12",
                      fix="give every key a kid, so verifiers pick the right one during key rotation")
    return passed("as.jwks", G, f"jwks_uri serves {len(keys)} key(s) with kid", answer, requirement="AS-12")


def check_scopes(found: ServerMetadata, prm_scopes: list[str] | None) -> Check | None:
    chosen = found.chosen
    if chosen is None:
        return None
    scopes = found.document.get("scopes_supported")
    if not isinstance(scopes, list) or not scopes:
        return warned("as.scopes_supported", G, "the metadata lists no scopes_supported", chosen.exchange, requirement="AS-3",
                      fix="list the scopes the AS issues in scopes_supported (RFC 8414 section 2)")
    unknown = [s for s in prm_scopes or [] if s not in scopes]
    if unknown:
        return warned("as.scopes_supported", G, f"PRM names scopes the AS does not list: {' '.join(unknown)}", chosen.exchange,
                      requirement="AS-3", fix="make the AS issue (and list) every scope the resource server asks for")
    return passed("as.scopes_supported", G, f"scopes_supported: {' '.join(map(str, scopes))}", chosen.exchange, requirement="AS-3")


def checks(found: ServerMetadata, prm_scopes: list[str] | None) -> list[Check]:
    candidates = [
        check_discovery(found),
        check_issuer(found),
        check_pkce(found),
        check_iss_parameter(found),
        check_grants(found),
        check_endpoints(found),
        check_https(found),
        check_jwks(found),
        check_scopes(found, prm_scopes),
    ]
    return [c for c in candidates if c is not None]


def unavailable(reason: str) -> list[Check]:
    return [skipped("as.discovery", G, reason, requirement="AS-2")]


def issuer_for(prm_servers: list[str], server_url: str) -> tuple[str, bool]:
    """The issuer a client uses: the PRM's first authorization server, else the server's origin (2025-03-26)."""
    if prm_servers:
        return prm_servers[0], True
    return origin(server_url), False
