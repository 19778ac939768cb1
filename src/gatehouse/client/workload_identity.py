"""Workload identity federation (SEP-1933): a workload presents its platform's JWT as the grant.

The JWT (a Kubernetes service account token, a SPIFFE JWT-SVID, a cloud workload token) is the
assertion of the jwt-bearer grant (RFC 7523 section 2.1, ``jwt_bearer.py``); the AS trusts its
issuer. No client secret and no registration: ``client_id`` is sent only when configured. The
token comes from ``ClientOptions.workload_token``, or from ``workload_token_file``, read again
for every token request since platforms rotate it in place. It is never logged or stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gatehouse.client.errors import ClientError
from gatehouse.client.jwt_bearer import AssertionSource, JwtBearerProvider, configured_client
from gatehouse.client.options import ClientOptions
from gatehouse.client.token_storage import BoundTokenStorage

UNNAMED_WORKLOAD = "workload-identity"
"""The name stored credentials carry when the workload has no client id."""


def read_workload_token(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ClientError(f"cannot read the workload identity token file {path} ({reason})") from None
    if token.count(".") != 2:
        raise ClientError(f"{path} does not hold a JWT; point --workload-token-file at the token the platform provides")
    return token


def workload_token_source(options: ClientOptions) -> AssertionSource:
    async def current_token(audience: str, resource: str) -> str:
        if options.workload_token:
            return options.workload_token
        return read_workload_token(options.workload_token_file)

    return current_token


def create_workload_provider(server_url: str, options: ClientOptions, storage: BoundTokenStorage,
                             status: Callable[[str], None]) -> JwtBearerProvider:
    client = configured_client(options.client_id or UNNAMED_WORKLOAD, options.client_secret)
    return JwtBearerProvider(
        server_url, options, storage, status, client, workload_token_source(options),
        send_client_id=options.client_id is not None and not options.client_secret,
    )
