"""The SDK's ``TokenStorage`` protocol on top of the credential store, for one MCP server.

The protocol has no keys, and the issuer half of the store's (issuer, resource) key (CL-7) is
only known after discovery. So the adapter is bound to the provider's ``OAuthContext``: it reads
the issuer the SDK discovered at the moment it writes (``oauth_metadata.issuer``), and before any
discovery (a restarted client) it loads the most recently used entry for the server URL. When
the AS behind a server changes, the SDK drops the old registration (SEP-2352) and the next
write lands in the new issuer's entry; the old entry is never used for the new AS.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from urllib.parse import urlsplit

from mcp.client.auth.oauth2 import OAuthContext
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from gatehouse.client.storage import CredentialStore, StoredEntry, StoredTokens, canonical_resource


class BoundTokenStorage:
    """``TokenStorage`` for the entry of (the discovered AS issuer, this server URL).

    ``fresh`` (an explicit new login) ignores what is stored, and sets an unreadable entry aside
    as ``*.corrupt`` on the first write instead of failing.
    """

    def __init__(self, store: CredentialStore, server_url: str, *, fresh: bool = False):
        self.store = store
        self.resource = canonical_resource(server_url)
        self.fresh = fresh
        self.context: OAuthContext | None = None
        self.issuer: str | None = None
        self.entry: StoredEntry | None = None

    def bind(self, context: OAuthContext) -> None:
        self.context = context

    def discovered_issuer(self) -> str | None:
        context = self.context
        if context is not None and context.oauth_metadata is not None:
            return str(context.oauth_metadata.issuer)
        return None

    def load(self) -> StoredEntry | None:
        """Read the entry again: the bound issuer's, or before discovery the latest for this server."""
        if self.fresh:
            return None
        issuer = self.discovered_issuer() or self.issuer
        entry = self.store.load(issuer, self.resource) if issuer else self.store.latest_for(self.resource)
        self.entry = entry
        if entry is not None:
            self.issuer = entry.issuer
        return entry

    async def get_tokens(self) -> OAuthToken | None:
        entry = self.load()
        return entry.tokens.as_token() if entry and entry.tokens else None

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        entry = self.entry if self.entry is not None else self.load()
        return entry.client if entry else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        context = self.context
        client_id = context.client_info.client_id if context and context.client_info else None
        stored = StoredTokens.from_token(tokens, client_id)
        self._write(lambda entry: self._with_metadata(replace(entry, tokens=stored)))

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        def change(entry: StoredEntry) -> StoredEntry:
            tokens = entry.tokens if entry.tokens and entry.tokens.client_id == client_info.client_id else None
            return self._with_metadata(replace(entry, client=client_info, tokens=tokens))

        self._write(change)

    def forget_tokens(self) -> None:
        """The tokens are dead (refresh refused): keep the registration, drop the tokens."""
        if self.issuer or self.discovered_issuer():
            self._write(lambda entry: replace(entry, tokens=None))

    def forget_client(self) -> None:
        """The registration is dead (expired or ``invalid_client``): drop it and its tokens."""
        if self.issuer or self.discovered_issuer():
            self._write(lambda entry: replace(entry, client=None, tokens=None))

    def refresh_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.store.refresh_lock(self._issuer_for_writing(), self.resource)

    def _issuer_for_writing(self) -> str:
        issuer = self.discovered_issuer() or self.issuer
        if issuer is None:
            parts = urlsplit(self.resource)
            issuer = f"{parts.scheme}://{parts.netloc}"
        return issuer

    def _with_metadata(self, entry: StoredEntry) -> StoredEntry:
        context = self.context
        if context is None:
            return entry
        if context.oauth_metadata is not None:
            entry = replace(entry, authorization_server=context.oauth_metadata.model_dump(mode="json", exclude_none=True))
        if context.protected_resource_metadata is not None:
            entry = replace(
                entry, protected_resource=context.protected_resource_metadata.model_dump(mode="json", exclude_none=True)
            )
        return entry

    def _write(self, change) -> None:
        issuer = self._issuer_for_writing()
        if self.fresh:
            self.store.set_aside_unreadable(self.resource)
        self.entry = self.store.update(issuer, self.resource, change, set_aside_unreadable=self.fresh)
        self.issuer = issuer
        self.fresh = False
