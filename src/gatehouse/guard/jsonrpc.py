"""The JSON-RPC messages of a POST body, read so that the server behind reads the same ones.

The policy decides on ``method`` and ``params.name`` as Python's parser reads them; the MCP
server behind the gateway may be written in another language, and parsers differ on a member
that appears twice. Python's and JavaScript's keep the last, others the first, and Go's
``encoding/json`` also matches members to fields case-insensitively, so ``"name"`` and ``"Name"``
in one object are the same field to a Go server. A body the two could read differently is
refused: a member twice in any object (RFC 8259 section 4 leaves the meaning open; I-JSON,
RFC 7493 section 2.3, forbids it), or two members of a message or of its ``params`` that differ
only in case.
"""

from __future__ import annotations

import json


class NotJSONRPC(ValueError):
    """The body is not JSON-RPC messages that every server would read alike; the text says why."""


def _unique_members(pairs: list[tuple[str, object]]) -> dict:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise NotJSONRPC(f"the member {twice!r} appears twice in one object: send each member once")
    return members


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members)


def parse_body(body: bytes) -> dict | list[dict]:
    """One message, or the messages of a batch (JSON-RPC 2.0 section 6), as the body has them."""
    try:
        data = _DECODER.decode(body.decode())
    except NotJSONRPC:
        raise
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        raise NotJSONRPC("the body is not JSON in UTF-8") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise NotJSONRPC("the body is not a JSON-RPC message (an object, or an array of objects)")
    for item in items:
        _no_case_twins(item)
        params = item.get("params")
        if isinstance(params, dict):
            _no_case_twins(params)
    return data


def parse_messages(body: bytes) -> list[dict]:
    """The body's messages, a lone message as a list of one."""
    data = parse_body(body)
    return data if isinstance(data, list) else [data]


def _no_case_twins(members: dict) -> None:
    if len({name.lower() for name in members}) != len(members):
        seen: dict[str, str] = {}
        for name in members:
            if name.lower() in seen:
                raise NotJSONRPC(
                    f"the members {seen[name.lower()]!r} and {name!r} differ only in case, and some servers read them as one: send one"
                )
            seen[name.lower()] = name
