"""Which scopes an MCP request needs (RS-6): per JSON-RPC method and per tool, with implication.

A policy file (TOML)::

    default = ["notes:read"]               # every request
    implies = { "notes:write" = ["notes:read"] }

    [tools]
    add_note = ["notes:write"]
    "*" = ["notes:read"]                    # any tool not named

    [methods]
    "resources/read" = ["notes:read"]
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_MEMO_LIMIT = 4096


class PolicyError(ValueError):
    """A policy file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Policy:
    tools: dict[str, list[str]] = field(default_factory=dict)
    methods: dict[str, list[str]] = field(default_factory=dict)
    default: list[str] = field(default_factory=list)
    implies: dict[str, list[str]] = field(default_factory=dict)
    every_scope: tuple[str, ...] = field(init=False, repr=False, compare=False)  # each scope the policy names, once

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"cannot read the policy file {path}: {exc}") from exc
        unknown = set(data) - {"tools", "methods", "default", "implies"}
        if unknown:
            raise PolicyError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; use tools, methods, default, implies")
        try:
            return cls(
                tools=_scope_map(data.get("tools", {}), "tools"),
                methods=_scope_map(data.get("methods", {}), "methods"),
                default=_scope_list(data.get("default", []), "default"),
                implies=_scope_map(data.get("implies", {}), "implies"),
            )
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    def __post_init__(self):
        # memos for the per-request path: the answers depend only on these immutable inputs
        object.__setattr__(self, "_required_memo", {})
        object.__setattr__(self, "_missing_memo", {})
        named = [*self.default, *(s for group in (self.tools, self.methods) for scopes in group.values() for s in scopes)]
        object.__setattr__(self, "every_scope", tuple(dict.fromkeys(named)))

    def expand(self, granted: Iterable[str]) -> set[str]:
        """The granted scopes with every scope they imply, transitively."""
        result: set[str] = set()
        pending = list(granted)
        while pending:
            scope = pending.pop()
            if scope not in result:
                result.add(scope)
                pending.extend(self.implies.get(scope, []))
        return result

    def tool_scopes(self, tool: str | None) -> list[str]:
        if tool is not None and tool in self.tools:
            return self.tools[tool]
        return self.tools.get("*", [])

    def required(self, method: str | None, params: object = None) -> tuple[str, ...]:
        """Every scope one JSON-RPC request needs."""
        tool = None
        if method == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
            tool = params["name"]
        key = (method if isinstance(method, str) else None, tool)
        memo = self._required_memo
        found = memo.get(key)
        if found is None:
            needed = list(self.default)
            if key[0]:
                needed += self.methods.get(key[0], [])
            if key[0] == "tools/call":
                needed += self.tool_scopes(tool)
            found = tuple(dict.fromkeys(needed))
            if len(memo) < _MEMO_LIMIT:
                memo[key] = found
        return found

    def missing(self, granted: Iterable[str], required: Iterable[str]) -> list[str]:
        granted, required = frozenset(granted), tuple(required)
        memo = self._missing_memo
        found = memo.get((granted, required))
        if found is None:
            have = self.expand(granted)
            found = [scope for scope in required if scope not in have]
            if len(memo) < _MEMO_LIMIT:
                memo[(granted, required)] = found
        return list(found)

    def grants_everything(self, granted: frozenset[str]) -> bool:
        """Whether ``granted`` covers every scope the policy names, so that no request, whatever
        its method and tool, needs more."""
        return not self.missing(granted, self.every_scope)

    def may_call(self, granted: Iterable[str], tool: str) -> bool:
        return not self.missing(granted, [*self.default, *self.tool_scopes(tool)])


def _scope_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s and " " not in s for s in value):
        raise PolicyError(f"{where} must be a list of scope names without spaces")
    return list(value)


def _scope_map(value: object, where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise PolicyError(f"[{where}] must be a table of name = [scopes]")
    return {str(k): _scope_list(v, f"{where}.{k}") for k, v in value.items()}
