"""``gatehouse doctor``: checks any MCP server's authorization setup from outside and explains it.

It walks the flow an MCP client walks (MCP authorization, revision 2026-07-28; the requirement
IDs RS-*, AS-*, CL-* of ``spec/mcp-authorization.md``): the unauthenticated request and its
challenge (RFC 6750 section 3), Protected Resource Metadata (RFC 9728), authorization server
metadata (RFC 8414, OpenID Connect Discovery), client registration (CIMD, RFC 7591), CORS for
browser-based clients, and with ``--login`` a real sign-in through :mod:`gatehouse.client`
followed by checks on the tokens, refresh, revocation (RFC 7009) and audience validation
(RFC 8707).

Layout: ``model`` (checks and the report), ``fetch`` (the probing HTTP client and its limits),
``challenges`` (the ``WWW-Authenticate`` parser), ``probes/`` (one module per group of checks),
``runner`` (the order and concurrency of the probes), ``render`` (rich, Markdown, JSON) and
``command`` (the Typer command).
"""

__all__ = ["Check", "DoctorOptions", "Report", "Status", "diagnose"]
_HOMES = {"Check": "model", "Report": "model", "Status": "model", "DoctorOptions": "options", "diagnose": "runner"}


def __getattr__(name: str):
    """The public names, imported on first use: mounting the command in the CLI stays cheap."""
    if name not in _HOMES:
        raise AttributeError(f"module 'gatehouse.doctor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"gatehouse.doctor.{_HOMES[name]}"), name)
