"""Reading a POST body's JSON-RPC messages so the server behind reads the same ones (guard/jsonrpc.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.guard.jsonrpc import NotJSONRPC, parse_body, parse_messages

CALL = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}'


def test_a_message_and_a_batch_are_read_as_sent():
    assert parse_body(CALL)["params"]["name"] == "echo"
    assert isinstance(parse_body(b"[" + CALL + b"]"), list)
    assert parse_messages(CALL) == parse_messages(b"[" + CALL + b"]")


def test_tool_arguments_may_have_members_that_differ_only_in_case():
    """Only the envelope and ``params`` decide the policy; a tool's own arguments are its business."""
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {"id": 1, "ID": 2}}}'
    assert parse_body(body)["params"]["arguments"] == {"id": 1, "ID": 2}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"method": "tools/call", "params": {"name": "echo", "name": "delete_all"}}', "'name' appears twice"),
        (b'{"method": "tools/list", "method": "tools/call", "params": {"name": "x"}}', "'method' appears twice"),
        (b'{"method": "tools/call", "params": {"name": "x", "arguments": {"a": 1, "a": 2}}}', "'a' appears twice"),
        (b'{"method": "tools/call", "params": {"name": "echo", "Name": "delete_all"}}', "'name' and 'Name' differ only in case"),
        (b'{"method": "ping", "METHOD": "tools/call"}', "'method' and 'METHOD' differ only in case"),
        (b'[{"method": "ping"}, {"method": "tools/call", "params": {"name": "a", "NAME": "b"}}]', "differ only in case"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "not a JSON-RPC message"),
        (b'"tools/call"', "not a JSON-RPC message"),
        (b'[{"method": "ping"}, 1]', "not a JSON-RPC message"),
    ],
)
def test_a_body_servers_could_read_differently_is_refused_with_the_reason(body, reason):
    with pytest.raises(NotJSONRPC, match=reason):
        parse_body(body)


@pytest.mark.parametrize("body", [
    b'{"method": "tools/call", "params": {"name": "echo", "arguments": {"url": "https://a:1/b", "t": "12:00"}}}',
    b'{"method": "tools/call", "params": {"name": "echo", "arguments": {"q": "say \\":\\" and \\\\", "k:": ":"}}}',
    b'{"method": "x", "params": {"name": "echo", "arguments": [{"a": 1}, {"a": 2}, [], {}]}}',
], ids=["colons-in-strings", "escaped-quotes", "objects-in-arrays"])
def test_colons_and_equal_names_in_different_objects_are_not_duplicates(body):
    assert parse_body(body)["method"]


@pytest.mark.parametrize("body", [
    b'{"method": "tools/call", "params": {"name": "echo", "\\u006eame": "delete_all"}}',
    b'{"method": "x", "params": {"arguments": [{"a": 1}, {"b": ":", "b": 2}]}}',
    b'{"method": "x", "params": {"arguments": {"a\\"": 1, "a\\"": 2}}}',
    b'{"method": "x", "params": {"arguments": {"a": 1, "a": 2, "b": "\\u003a"}}}',  # as many colons written back as sent
], ids=["escaped-name", "in-an-array", "escaped-quote-in-name", "colon-as-escape"])
def test_a_duplicate_is_found_however_it_is_written(body):
    with pytest.raises(NotJSONRPC, match="appears twice"):
        parse_body(body)


_SCALARS = st.none() | st.booleans() | st.integers() | st.text(alphabet=':"\\abué', max_size=4)
_NAMES = st.text(alphabet=':"\\abué', max_size=3)


@st.composite
def _json_text(draw, depth=0) -> str:
    """JSON text whose objects may repeat a member: what a parser that keeps pairs sees."""
    if depth >= 3 or draw(st.booleans()):
        return json.dumps(draw(_SCALARS))
    if draw(st.booleans()):
        return "[" + ", ".join(draw(st.lists(_json_text(depth + 1), max_size=3))) + "]"
    names = draw(st.lists(_NAMES, max_size=4))
    return "{" + ", ".join(f"{json.dumps(n)}: {draw(_json_text(depth + 1))}" for n in names) + "}"


def _repeats_a_member(text: str) -> bool:
    def pairs(items):
        if len({name for name, _ in items}) != len(items):
            raise KeyError
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except KeyError:
        return True
    return False


@given(_json_text())
@settings(max_examples=500, deadline=None)
def test_a_body_is_refused_for_a_duplicate_exactly_when_one_object_repeats_a_member(text):
    """The member count against the colons outside strings agrees with reading every object's pairs."""
    body = ('{"jsonrpc": "2.0", "method": "x", "params": {"arguments": ' + text + "}}").encode()
    try:
        parse_body(body)
        refused = False
    except NotJSONRPC as exc:
        assert "twice" in str(exc), exc
        refused = True
    assert refused == _repeats_a_member(text)


AMBIGUOUS_TOOL_NAMES = {
    "twice": b'{"method": "tools/call", "params": {"name": "echo", "name": "delete_all"}}',
    "case": b'{"method": "tools/call", "params": {"name": "echo", "Name": "delete_all"}}',
    "escaped": b'{"method": "tools/call", "params": {"name": "echo", "\\u006eame": "delete_all"}}',
}


@pytest.mark.parametrize("body", AMBIGUOUS_TOOL_NAMES.values(), ids=AMBIGUOUS_TOOL_NAMES.keys())
def test_without_refusing_ambiguity_a_body_reads_as_the_mcp_sdk_reads_it(body):
    """For an app in the guard's own process: the SDK's parser, the last of two members, names exact."""
    import pydantic_core

    assert parse_body(body, refuse_ambiguous=False) == pydantic_core.from_json(body) == json.loads(body)


def test_the_usual_member_names_have_no_case_twins():
    """The fast path of the case check trusts that no two usual names differ only in case."""
    from gatehouse.guard.jsonrpc import USUAL_MEMBERS

    assert len({name.lower() for name in USUAL_MEMBERS}) == len(USUAL_MEMBERS)
