"""Session ids bound to their caller (MCP security best practices, "Session Hijacking")."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gatehouse.guard.sessions import SessionBinding, with_session_id


@dataclass
class Caller:
    issuer: str
    subject: str


ALICE = Caller("https://as.example", "alice")
BOB = Caller("https://as.example", "bob")
SERVER_ID = b"4f1c2a9e0b7d4e56a1b2c3d4e5f60718"


def test_the_server_gets_its_own_id_back_from_the_caller_it_was_given_to():
    binding = SessionBinding()
    given = binding.for_client(SERVER_ID, ALICE)
    assert given != SERVER_ID and given.startswith(SERVER_ID + b".")
    assert binding.for_server(given, ALICE) == SERVER_ID
    assert binding.for_client(SERVER_ID, ALICE) == given, "the same session keeps one id for its caller"


@pytest.mark.parametrize("other", [
    BOB,
    Caller("https://other-as.example", "alice"),  # the same subject at another issuer is another user
    Caller("https://as.example/alice", ""),  # the parts cannot be shifted from one field into the next
    None,
], ids=["other-subject", "other-issuer", "shifted", "no-caller"])
def test_another_caller_gets_nothing(other):
    binding = SessionBinding()
    assert binding.for_server(binding.for_client(SERVER_ID, ALICE), other) is None


@pytest.mark.parametrize("forged", [
    SERVER_ID,  # the server's own id, untagged
    SERVER_ID + b".",
    SERVER_ID + b".AAAAAAAAAAAAAAAAAAAAAA",
    b"",
    b".",
], ids=["untagged", "empty-tag", "made-up-tag", "empty", "dot"])
def test_an_id_the_guard_did_not_give_is_unknown(forged):
    assert SessionBinding().for_server(forged, ALICE) is None


def test_an_altered_server_id_loses_its_tag():
    binding = SessionBinding()
    server_id, _, tag = binding.for_client(SERVER_ID, ALICE).rpartition(b".")
    assert binding.for_server(server_id[:-1] + b"0" + b"." + tag, ALICE) is None


def test_a_server_id_with_dots_comes_back_whole():
    binding = SessionBinding()
    dotted = b"node-1.session.42"
    assert binding.for_server(binding.for_client(dotted, ALICE), ALICE) == dotted


def test_guards_sharing_a_secret_accept_each_others_ids_and_others_do_not():
    secret = b"s" * 32
    given = SessionBinding(secret).for_client(SERVER_ID, ALICE)
    assert SessionBinding(secret).for_server(given, ALICE) == SERVER_ID
    assert SessionBinding(b"t" * 32).for_server(given, ALICE) is None
    assert SessionBinding().for_server(given, ALICE) is None


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        SessionBinding(b"short")


def test_only_the_session_header_is_rewritten():
    binding = SessionBinding()
    headers = [(b"content-type", b"application/json"), (b"Mcp-Session-Id", SERVER_ID), (b"x-other", SERVER_ID)]
    bound = binding.bound_headers(headers, ALICE)
    assert bound[0] == headers[0] and bound[2] == headers[2]
    assert bound[1] == (b"Mcp-Session-Id", binding.for_client(SERVER_ID, ALICE))
    assert with_session_id([(b"mcp-session-id", b"x"), (b"accept", b"*/*")], b"y") == [(b"mcp-session-id", b"y"), (b"accept", b"*/*")]
