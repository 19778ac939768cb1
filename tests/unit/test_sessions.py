"""Session ids bound to their caller (MCP security best practices, "Session Hijacking")."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier
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


# --- through the guard: a server that names sessions out of turn ---------------------------------

SERVER_MADE = "server-made-7"


class SessionNamingServer:
    """An MCP server that names a session in every answer, asked or not, and records the session
    id each request reached it with."""

    def __init__(self):
        self.seen: list[str | None] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        self.seen.append(next((v.decode() for k, v in scope["headers"] if k == b"mcp-session-id"), None))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"mcp-session-id", SERVER_MADE.encode())]})
        await send({"type": "http.response.body", "body": b'{"jsonrpc": "2.0", "id": 1, "result": {}}'})


@pytest.fixture
def guarded_server(loopback_server):
    """``(base_url, token, server)``: a SessionNamingServer behind a Guard trusting a key served as a JWKS on loopback."""
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = Starlette(routes=[Route("/jwks", lambda request: JSONResponse({"keys": [key.as_dict(private=False)]}))])
    server = SessionNamingServer()
    with loopback_server(jwks) as issuer:
        resource = "http://127.0.0.1:9/mcp"
        guard = Guard(resource=resource, authorization_servers=[issuer],
                      verifier=JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(f"{issuer}/jwks")))
        now = int(time.time())
        claims = {"iss": issuer, "sub": "alice", "aud": resource, "client_id": "c", "iat": now, "exp": now + 600}
        token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims, key)
        with loopback_server(guard.protect(server)) as base_url:
            yield base_url, token, server


def _post(base_url: str, token: str, method: str, session_id: str | None = None):
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    return httpx2.post(f"{base_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method}, headers=headers, timeout=10)


def test_a_session_named_in_answer_to_initialize_is_bound_to_the_caller(guarded_server):
    base_url, token, server = guarded_server
    given = _post(base_url, token, "initialize").headers["mcp-session-id"]
    assert given.startswith(SERVER_MADE + ".")
    assert _post(base_url, token, "ping", given).status_code == 200
    assert server.seen == [None, SERVER_MADE], "the server gets its own id back"


def test_a_session_named_out_of_turn_is_refused_when_it_comes_back(guarded_server):
    """Only ``initialize`` starts a session (MCP transports, "Session Management"), so the guard
    leaves other answers as they are; an id named there reaches the client untagged, and the guard
    refuses it as it refuses any id it did not give: it never reaches the server."""
    base_url, token, server = guarded_server
    named = _post(base_url, token, "ping").headers["mcp-session-id"]
    assert named == SERVER_MADE
    refused = _post(base_url, token, "ping", named)
    assert refused.status_code == 404 and "start a new MCP session" in refused.text
    assert server.seen == [None]
