"""Reading a POST body's JSON-RPC messages so the server behind reads the same ones (guard/jsonrpc.py)."""

from __future__ import annotations

import pytest

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
