"""The resources the AS issues tokens for (RFC 8707), and scope rules for them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749.errors import InvalidScopeError, OAuth2Error

from gatehouse.config import ResourceConfig

#: Scopes the AS accepts but that do not go into access tokens.
PROTOCOL_SCOPES = {"offline_access"}


@dataclass(frozen=True)
class Resource:
    uri: str
    name: str
    scopes: tuple[str, ...]
    scope_descriptions: dict
    access_token_ttl: int

    def describe_scope(self, scope: str) -> str:
        return self.scope_descriptions.get(scope, scope)


class ResourceRegistry:
    def __init__(self, configs: list[ResourceConfig], default_ttl: int):
        self._by_uri = {
            c.uri: Resource(c.uri, c.name, tuple(c.scopes), dict(c.scope_descriptions), c.access_token_ttl or default_ttl)
            for c in configs
        }

    def __iter__(self):
        return iter(self._by_uri.values())

    @property
    def all_scopes(self) -> list[str]:
        seen: dict[str, None] = {}
        for resource in self._by_uri.values():
            seen.update(dict.fromkeys(resource.scopes))
        return list(seen)

    @property
    def max_token_ttl(self) -> int:
        return max((r.access_token_ttl for r in self._by_uri.values()), default=3600)

    def resolve(self, requested: list[str]) -> Resource:
        """The one resource named by the ``resource`` parameter(s) (RFC 8707 section 2).

        No ``resource``: the only configured resource, when there is exactly one.
        """
        if not requested:
            if len(self._by_uri) == 1:
                return next(iter(self._by_uri.values()))
            raise TargetError("the 'resource' parameter is required: this server protects several resources")
        if len(requested) > 1:
            raise TargetError("only one 'resource' may be requested at a time")
        uri = requested[0]
        parts = urlsplit(uri)
        if not parts.scheme or not parts.netloc:
            raise TargetError(f"'resource' must be an absolute URI, got {uri!r}")
        if parts.fragment or "#" in uri:
            raise TargetError("'resource' must not contain a fragment (RFC 8707 section 2)")
        resource = self._by_uri.get(uri) or self._by_uri.get(uri.rstrip("/"))
        if resource is None:
            raise TargetError(f"this authorization server issues no tokens for {uri}")
        return resource

    def granted_scopes(self, resource: Resource, requested: str | None) -> list[str]:
        """The scopes to grant: those requested (all must exist), or all of the resource's."""
        if not requested:
            return list(resource.scopes)
        wanted = [s for s in dict.fromkeys(requested.split()) if s not in PROTOCOL_SCOPES]
        unknown = [s for s in wanted if s not in resource.scopes]
        if unknown:
            raise InvalidScopeError(
                describable(f"unknown scope {' '.join(unknown)!r} for {resource.uri}; available: {' '.join(resource.scopes)}")
            )
        return wanted or list(resource.scopes)


def describable(text: str) -> str:
    """``text`` fit for ``error_description``: the characters RFC 6749 section 5.2 forbids there
    (Authlib raises ValueError on them, a server error) become '?'."""
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in text)


class TargetError(OAuth2Error):
    """An invalid ``resource`` parameter (RFC 8707 section 2): ``invalid_target``."""

    error = "invalid_target"

    def __init__(self, description: str, **kwargs):
        super().__init__(description=describable(description), **kwargs)
