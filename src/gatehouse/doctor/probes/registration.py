"""How a client gets a client ID at this AS (CL-6; AS-5 CIMD, AS-6 DCR, AS-1 public clients).

From the AS metadata only: nothing is registered without ``--login`` (the sign-in then registers
one throwaway client through :mod:`gatehouse.client`).
"""

from __future__ import annotations

from gatehouse.doctor.model import Check, Group, passed, warned
from gatehouse.doctor.probes.server_metadata import ServerMetadata

G = Group.REGISTRATION


def check_cimd(found: ServerMetadata) -> Check:
    chosen = found.chosen
    if found.document.get("client_id_metadata_document_supported") is True:
        return passed("registration.cimd", G, "client ID metadata documents are supported", chosen.exchange, requirement="AS-5")
    return warned("registration.cimd", G, "client_id_metadata_document_supported is not true: clients fall back to dynamic "
                  "registration or a pre-registered client id", chosen.exchange, requirement="AS-5",
                  fix="support client ID metadata documents (MCP 2026-07-28 prefers them) and advertise "
                      "client_id_metadata_document_supported: true")


def check_dcr(found: ServerMetadata) -> Check:
    chosen = found.chosen
    endpoint = found.endpoint("registration_endpoint")
    cimd = found.document.get("client_id_metadata_document_supported") is True
    if endpoint:
        return passed("registration.dcr", G, f"dynamic client registration at {endpoint}", chosen.exchange, requirement="AS-6")
    if cimd:
        return passed("registration.dcr", G, "no dynamic client registration (deprecated); clients use metadata documents",
                      chosen.exchange, requirement="AS-6")
    return warned("registration.dcr", G, "neither dynamic registration nor metadata documents: every user must register "
                  "a client by hand and give its id to the MCP client", chosen.exchange, requirement="CL-6",
                  fix="offer client ID metadata documents, or a registration_endpoint (RFC 7591)")


def check_public_clients(found: ServerMetadata) -> Check:
    chosen = found.chosen
    methods = found.document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])  # RFC 8414 default
    if isinstance(methods, list) and "none" in methods:
        return passed("registration.public_clients", G, f"public clients (auth method none) are allowed; methods: "
                      f"{' '.join(methods)}", chosen.exchange, requirement="AS-1")
    return warned("registration.public_clients", G, f"token_endpoint_auth_methods_supported {methods!r} lacks none: "
                  "desktop and CLI MCP clients cannot keep a secret", chosen.exchange, requirement="AS-1",
                  fix='allow public clients with PKCE: add "none" to token_endpoint_auth_methods_supported')


def checks(found: ServerMetadata) -> list[Check]:
    if found.chosen is None:
        return []
    return [check_cimd(found), check_dcr(found), check_public_clients(found)]
