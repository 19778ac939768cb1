"""Who is calling: what tool handlers may know of the token, never the token itself."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SCOPE_KEY = "gatehouse.caller"

_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("gatehouse_caller", default=None)


@dataclass(frozen=True)
class Caller:
    subject: str
    client_id: str
    scopes: frozenset[str]
    issuer: str
    claims: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def current_caller(context: Any = None) -> Caller | None:
    """The caller of the current request.

    Pass the MCP SDK's ``Context`` (tool handlers receive it) where the SDK runs handlers
    outside the HTTP request's task; without it, the context variable set by the guard.
    """
    scope = request_scope(context)
    if scope is not None and SCOPE_KEY in scope:
        return scope[SCOPE_KEY]
    return _current.get()


def request_scope(context: Any) -> dict | None:
    """The ASGI scope of the HTTP request behind an MCP SDK ``Context``, if it has one."""
    request = getattr(getattr(context, "request_context", None), "request", None)
    return getattr(request, "scope", None)


def bind(caller: Caller) -> contextvars.Token:
    return _current.set(caller)


def unbind(token: contextvars.Token) -> None:
    _current.reset(token)
