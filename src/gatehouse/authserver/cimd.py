"""Client ID Metadata Documents (AS-5; draft-ietf-oauth-client-id-metadata-document).

A ``client_id`` that is an https URL with a path names a JSON document describing the
client. It is fetched through :mod:`gatehouse.netguard` (no internal addresses, 5 KB cap,
short timeout), validated like a registration, and cached as HTTP caching allows. Errors
are never cached. The cache is per process, LRU-bounded, each entry living at most its TTL.
Fetches are rate-limited per host of the ``client_id`` (shared by every instance), so
the AS cannot be made to hammer a site by a flood of made-up client ids on it:
:class:`~gatehouse.authserver.ratelimit.RateLimited` is raised before the fetch.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from authlib.oauth2.rfc7591.errors import (
    InvalidClientMetadataError,
    InvalidRedirectURIError,
)

from gatehouse.authserver.clients import (
    KIND_METADATA_DOCUMENT,
    SECRET_AUTH_METHODS,
    OAuthClient,
    validate_metadata,
)
from gatehouse.authserver.ratelimit import Limiter
from gatehouse.netguard import FetchError, fetch_limited, is_loopback_host

DEFAULT_TTL = 300
MAX_TTL = 24 * 3600
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.I)
_SHARED_MAX_AGE = re.compile(r"(?:^|,)\s*s-maxage\s*=\s*\"?(\d+)", re.I)


class ClientMetadataDocumentError(Exception):
    """The document could not be fetched or is not acceptable; the message says why."""


def looks_like_metadata_url(client_id: str, allow_insecure_loopback: bool) -> bool:
    try:
        parts = urlsplit(client_id)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return parts.path not in ("", "/")
    return (
        allow_insecure_loopback
        and parts.scheme == "http"
        and is_loopback_host(parts.hostname)
        and parts.path not in ("", "/")
    )


def cache_lifetime(cache_control: str | None) -> int:
    """Seconds the document may be reused (RFC 9111 section 5.2.2), capped at a day."""
    if not cache_control:
        return DEFAULT_TTL
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    # a cache shared by every user of this AS: s-maxage wins over max-age (RFC 9111 section 5.2.2.10)
    match = _SHARED_MAX_AGE.search(lowered) or _MAX_AGE.search(lowered)
    return min(int(match.group(1)), MAX_TTL) if match else DEFAULT_TTL


def client_from_document(url: str, document: object) -> OAuthClient:
    if not isinstance(document, dict):
        raise ClientMetadataDocumentError("the client metadata document is not a JSON object")
    if document.get("client_id") != url:
        raise ClientMetadataDocumentError(
            f"the document's client_id ({document.get('client_id')!r}) is not the URL it was fetched from ({url})"
        )
    if not isinstance(document.get("client_name"), str) or not document["client_name"].strip():
        raise ClientMetadataDocumentError("the client metadata document has no client_name")
    if not document.get("redirect_uris"):
        raise ClientMetadataDocumentError("the client metadata document has no redirect_uris")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise ClientMetadataDocumentError("a client metadata document must not carry a client secret")
    method = document.get("token_endpoint_auth_method", "none")
    if method in SECRET_AUTH_METHODS:
        raise ClientMetadataDocumentError(
            f"token_endpoint_auth_method {method!r} is not allowed for metadata-document clients (use 'none' or 'private_key_jwt')"
        )
    fields = {k: v for k, v in document.items() if k != "client_id"}
    fields.setdefault("token_endpoint_auth_method", "none")
    try:
        metadata = validate_metadata(fields)
    except (InvalidClientMetadataError, InvalidRedirectURIError) as exc:
        raise ClientMetadataDocumentError(f"the client metadata document is invalid: {exc.description}") from exc
    return OAuthClient(client_id=url, kind=KIND_METADATA_DOCUMENT, metadata=metadata)


class ClientMetadataResolver:
    """Fetches and caches metadata documents (LRU, bounded, TTL from Cache-Control)."""

    def __init__(self, *, timeout: float, max_bytes: int, allow_insecure_loopback: bool, max_entries: int = 1000,
                 fetch_limit: Limiter | None = None):
        self.timeout = timeout
        self.fetch_limit = fetch_limit
        self.max_bytes = max_bytes
        self.allow_insecure_loopback = allow_insecure_loopback
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, OAuthClient]] = OrderedDict()
        self._lock = threading.Lock()

    def is_metadata_url(self, client_id: str) -> bool:
        return looks_like_metadata_url(client_id, self.allow_insecure_loopback)

    def resolve(self, url: str) -> OAuthClient:
        with self._lock:
            cached = self._cache.get(url)
            if cached and cached[0] > time.monotonic():
                self._cache.move_to_end(url)
                return cached[1]
        if self.fetch_limit is not None:
            self.fetch_limit.hit((urlsplit(url).hostname or "").lower())
        try:
            fetched = fetch_limited(
                url,
                max_bytes=self.max_bytes,
                timeout=self.timeout,
                allow_insecure_loopback=self.allow_insecure_loopback,
            )
        except FetchError as exc:
            raise ClientMetadataDocumentError(str(exc)) from exc
        if fetched.status != 200:
            raise ClientMetadataDocumentError(f"{url} answered HTTP {fetched.status}")
        try:
            document = fetched.json()
        except FetchError as exc:
            raise ClientMetadataDocumentError(str(exc)) from exc
        client = client_from_document(url, document)
        ttl = cache_lifetime(fetched.headers.get("cache-control"))
        if ttl > 0:
            with self._lock:
                self._cache[url] = (time.monotonic() + ttl, client)
                self._cache.move_to_end(url)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return client
