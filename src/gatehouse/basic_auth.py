"""HTTP Basic client authentication as OAuth defines it, for the roles that call an AS as a client."""

from __future__ import annotations

import base64
from urllib.parse import quote


def basic_authorization(client_id: str, client_secret: str) -> str:
    """RFC 6749 section 2.3.1: HTTP Basic with the id and secret form-urlencoded first."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")
