"""The JSON-RPC messages of a POST body, read so that the server behind reads the same ones.

The policy decides on ``method`` and ``params.name``; the MCP server behind the gateway may be
written in another language, and parsers differ on a member that appears twice. Python's and
JavaScript's keep the last, others the first, and Go's ``encoding/json`` also matches members to
fields case-insensitively, so ``"name"`` and ``"Name"`` in one object are the same field to a Go
server. A body the two could read differently is refused: a member twice in any object (RFC 8259
section 4 leaves the meaning open; I-JSON, RFC 7493 section 2.3, forbids it), or two members of a
message or of its ``params`` that differ only in case.

The body is read with the MCP SDK's own parser (``pydantic_core.from_json``, which its Streamable
HTTP transport reads every POST with), so a guarded SDK or FastMCP server reads exactly what the
guard read. That parser keeps the last of two equal members and does not say so; a duplicate is
found by counting colons. Every member of every object has one ``:`` outside the strings, so a
member dropped as a duplicate takes one colon with it: the value written back as JSON has fewer
colons than the body exactly when a member repeated, as long as no string in the body is written
with a ``\\u`` escape, which could hide a colon. A body with such an escape, or with too few
colons, is read again pair by pair.

Why not only Python's ``json`` with an ``object_pairs_hook``, as before: beside the SDK's call,
whose code keeps the SDK's parser in the CPU's caches, a second parser cost about 8 us a request
(bench/guard_cost.py, 2026-11-27); counting the colons outside strings with a regular expression
instead of writing the value back cost 11 us more.

Both checks guard against a server that parses differently, so they are for the gateway, whose
upstream may be written in any language (``refuse_ambiguous=True``). An app the guard wraps in
its own process is Python: the MCP SDK and FastMCP read the body with this same parser, and
Python's ``json`` also keeps the last of two members and matches names exactly, so such an app
reads every body as the guard does, and the guard decides on what the app will run. The checks
are a quarter of the guard's work per request (about 21,000 of 85,000 instructions, cachegrind,
2026-11-27).
"""

from __future__ import annotations

import json

import pydantic_core


class NotJSONRPC(ValueError):
    """The body is not JSON-RPC messages that every server would read alike; the text says why."""


def parse_body(body: bytes, *, refuse_ambiguous: bool = True) -> dict | list[dict]:
    """One message, or the messages of a batch (JSON-RPC 2.0 section 6), as the body has them;
    with ``refuse_ambiguous``, none that parsers could read differently (RFC 7493 section 2.3)."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError:  # also for JSON nested deeper than the parser goes
        raise NotJSONRPC("the body is not JSON in UTF-8") from None
    if refuse_ambiguous and (b"\\u" in body or pydantic_core.to_json(data).count(b":") != body.count(b":")):
        _refuse_a_repeated_member(body)
    if isinstance(data, dict):
        if refuse_ambiguous:
            _no_case_twins_in(data)
        return data
    if not isinstance(data, list) or not data or not all(isinstance(item, dict) for item in data):
        raise NotJSONRPC("the body is not a JSON-RPC message (an object, or an array of objects)")
    if refuse_ambiguous:
        for item in data:
            _no_case_twins_in(item)
    return data


def parse_messages(body: bytes, *, refuse_ambiguous: bool = True) -> list[dict]:
    """The body's messages, a lone message as a list of one."""
    data = parse_body(body, refuse_ambiguous=refuse_ambiguous)
    return data if isinstance(data, list) else [data]


def _unique_members(pairs: list[tuple[str, object]]) -> dict:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise NotJSONRPC(f"the member {twice!r} appears twice in one object: send each member once")
    return members


def _refuse_a_repeated_member(body: bytes) -> None:
    """Read ``body`` pair by pair; NotJSONRPC names the first member that appears twice in one object."""
    try:
        json.loads(body, object_pairs_hook=_unique_members)
    except NotJSONRPC:
        raise
    except (ValueError, RecursionError):  # read by one parser and not the other
        raise NotJSONRPC("the body is not JSON that every parser reads alike") from None


# members of JSON-RPC messages and of common MCP params, no two of them equal ignoring case:
# a message whose names are all among them has no case twins, and that is the common message
USUAL_MEMBERS = frozenset({
    "jsonrpc", "id", "method", "params", "result", "error",
    "name", "arguments", "_meta", "cursor", "uri", "protocolVersion", "capabilities", "clientInfo",
    "progressToken", "progress", "total", "message", "requestId", "reason", "level", "ref", "argument",
})  # fmt: skip


def _no_case_twins_in(message: dict) -> None:
    params = message.get("params")
    if message.keys() <= USUAL_MEMBERS and (not isinstance(params, dict) or params.keys() <= USUAL_MEMBERS):
        return
    _no_case_twins(message)
    if isinstance(params, dict):
        _no_case_twins(params)


def _no_case_twins(members: dict) -> None:
    names = "".join(members)
    if names == names.lower():  # every name is its own lower case, so no two names share one
        return
    if len({name.lower() for name in members}) != len(members):
        seen: dict[str, str] = {}
        for name in members:
            if name.lower() in seen:
                raise NotJSONRPC(
                    f"the members {seen[name.lower()]!r} and {name!r} differ only in case, and some servers read them as one: send one"
                )
            seen[name.lower()] = name
