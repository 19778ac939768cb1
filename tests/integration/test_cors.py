"""Browser-based MCP clients read the metadata cross-origin, MCP-Protocol-Version header included (CORS preflight)."""

from __future__ import annotations

import httpx2

PREFLIGHT = {"Origin": "https://inspector.example", "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "mcp-protocol-version"}


def test_metadata_preflights_admit_the_protocol_version_header(live_as):
    urls = [f"{live_as.base_url}/.well-known/oauth-authorization-server",
            f"{live_as.base_url}/.well-known/oauth-protected-resource/mcp"]
    for url in urls:
        answer = httpx2.options(url, headers=PREFLIGHT)
        assert answer.status_code == 204, url
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "mcp-protocol-version" in answer.headers["access-control-allow-headers"].lower(), url
        assert httpx2.get(url, headers={"Origin": "https://inspector.example"}).headers["access-control-allow-origin"] == "*"
