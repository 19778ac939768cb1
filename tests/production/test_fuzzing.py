"""Fuzzing (issue 7 acceptance): hostile input never gets a 5xx or an unhandled exception.

Hypothesis sends malformed forms, query strings, JSON, headers, Basic credentials, JWTs and DPoP
proofs (:mod:`tests.production.hostile`) to ``/authorize`` (GET and POST), ``/token``,
``/register``, ``/revoke``, ``/introspect`` and the guarded demo MCP endpoint ``/mcp``, over real
HTTP (one keep-alive client) to one ``gatehouse serve`` process on PostgreSQL, the production
store and the stricter one (NUL characters, encodings). The properties: never a 5xx; every error
of an API endpoint is JSON with ``error``, every answer of ``/authorize`` an HTML page or a
redirect; and at the end the server is still up and its output holds no traceback.

Examples per endpoint: 2,000 with ``CI=true`` (derandomized, so a failure reproduces), 200 locally;
``GATEHOUSE_FUZZ_EXAMPLES`` overrides both. Rate limits stay on but are raised out of the way,
so the limiters see hostile keys without cutting the fuzzing short.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.production import hostile
from tests.production.conftest import create_postgres_database, drop_postgres_database
from tests.production.flows import REDIRECT, add_user
from tests.production.harness import RunningInstance, high_rate_limits_env, start_gatehouse
from tests.production.hostile import FUZZ
from tests.support.browser import Browser, authorize, parse_forms, pkce_pair

SCOPE = "notes:read notes:write"
USER = ("fuzz", "a long fuzzing password")
MCP_ACCEPT = "application/json, text/event-stream"
MCP_VERSION = "2025-11-25"


@dataclass
class Target:
    """The server under fuzz and the real values hostile input is made from."""

    instance: RunningInstance
    http: httpx2.Client
    public_client: str
    confidential_client: str
    client_secret: str
    consent_client: str  # a public client nobody approved yet: its authorization shows the consent page
    csrf_token: str  # of that consent page
    access_token: str
    refresh_token: str
    code: str  # unredeemed, with its PKCE verifier
    code_verifier: str
    machine_token: str  # the confidential client's own (client credentials)
    guard_token: str  # of a grant only the guard test uses
    session_cookie: str
    mcp_session: str
    seen: dict[str, set[int]] = field(default_factory=dict)  # statuses answered, per endpoint
    sent: Counter = field(default_factory=Counter)  # requests sent, per endpoint

    @property
    def resource(self) -> str:
        return f"{self.instance.url}/mcp"

    @property
    def basic(self) -> str:
        return hostile.encode_basic(self.confidential_client, self.client_secret)

    def send(self, endpoint: str, method: str, path: str, body: bytes = b"", headers: list[tuple[str, bytes]] = (),
             repeat: int | None = None) -> httpx2.Response:
        """One request; ``repeat``: the index of a header field to send twice."""
        headers = list(headers)
        if repeat is not None and repeat < len(headers):
            headers.append(headers[repeat])
        request = self.http.build_request(method, path, content=body or None, headers=headers)
        response = self.http.send(request, stream=True)
        try:
            if not (method == "GET" and response.headers.get("content-type", "").startswith("text/event-stream")):
                response.read()  # a GET's event stream stays open: its status and headers are the answer
        finally:
            response.close()
        self.seen.setdefault(endpoint, set()).add(response.status_code)
        self.sent[endpoint] += 1
        if response.status_code >= 500:
            response.extensions["server_log"] = self.instance.logs()[-6000:]
        return response


def _authorization_query(client_id: str, challenge: str, resource: str) -> list[tuple[str, str]]:
    return [("response_type", "code"), ("client_id", client_id), ("redirect_uri", REDIRECT), ("scope", SCOPE),
            ("state", "fuzz-state"), ("code_challenge", challenge), ("code_challenge_method", "S256"), ("resource", resource)]


def _code(browser: Browser, base: str, client_id: str) -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    result = authorize(browser, client_id=client_id, redirect_uri=REDIRECT, challenge=challenge, username=USER[0],
                       password=USER[1], scope=SCOPE, resource=f"{base}/mcp")
    assert result.code, result.response.text
    return result.code, verifier


def _redeem(base: str, client_id: str, code: str, verifier: str) -> dict:
    tokens = httpx2.post(f"{base}/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                                "redirect_uri": REDIRECT, "code_verifier": verifier}, timeout=60)
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


def _consent_csrf(browser: Browser, base: str, client_id: str) -> str:
    page = browser.get("/authorize?" + urlencode(_authorization_query(client_id, pkce_pair()[1], f"{base}/mcp")))
    assert page.status_code == 200 and 'name="decision"' in page.text, page.text[:500]
    return parse_forms(page.text)[0]["fields"]["csrf_token"]


def _mcp_session(http: httpx2.Client, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}", "Accept": MCP_ACCEPT}
    init = http.post("/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": MCP_VERSION, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}},
    })
    assert init.status_code == 200, init.text
    session = init.headers["mcp-session-id"]
    done = http.post("/mcp", headers={**headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": MCP_VERSION},
                     json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert done.status_code == 202, done.text
    return session


def _register(base: str, **metadata) -> dict:
    response = httpx2.post(f"{base}/register", json={"redirect_uris": [REDIRECT], **metadata})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    database_url = create_postgres_database()
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    instance = None
    try:
        instance = start_gatehouse(database_url, data_dir, None, extra_args=["--log-level", "warning"], env=high_rate_limits_env())
        add_user(database_url, data_dir, *USER)
        base = instance.url
        public = _register(base, client_name="Fuzz public", token_endpoint_auth_method="none")["client_id"]
        consent = _register(base, client_name="Fuzz consent", token_endpoint_auth_method="none")["client_id"]
        confidential = _register(base, client_name="Fuzz confidential", token_endpoint_auth_method="client_secret_basic",
                                 grant_types=["authorization_code", "refresh_token", "client_credentials"])
        machine = httpx2.post(f"{base}/token", data={"grant_type": "client_credentials", "resource": f"{base}/mcp"},
                              auth=(confidential["client_id"], confidential["client_secret"]))
        assert machine.status_code == 200, machine.text
        browser = Browser(base)
        tokens = _redeem(base, public, *_code(browser, base, public))
        guard_tokens = _redeem(base, public, *_code(browser, base, public))
        spare_code, spare_verifier = _code(browser, base, public)
        csrf = _consent_csrf(browser, base, consent)
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        browser.close()
        with httpx2.Client(base_url=base, timeout=60) as http:
            yield Target(
                instance, http, public, confidential["client_id"], confidential["client_secret"], consent, csrf,
                tokens["access_token"], tokens["refresh_token"], spare_code, spare_verifier, machine.json()["access_token"],
                guard_tokens["access_token"], cookie, _mcp_session(http, guard_tokens["access_token"]),
            )
    finally:
        if instance is not None:
            instance.stop()
        drop_postgres_database(database_url.rsplit("/", 1)[1])


# --------------------------------------------------------------------------------------------
# What every answer must look like
# --------------------------------------------------------------------------------------------


def _describe(response: httpx2.Response) -> str:
    request = response.request
    return (f"{request.method} {str(request.url)[:300]} -> {response.status_code} "
            f"{response.headers.get('content-type')}: {response.text[:300]!r}\n{response.extensions.get('server_log', '')}")


def _json(response: httpx2.Response) -> object:
    try:
        return response.json()
    except ValueError:
        pytest.fail(f"the answer is not JSON: {_describe(response)}")


def assert_api_answer(response: httpx2.Response) -> None:
    """No server error; an error is a JSON object with ``error`` (RFC 6749 section 5.2)."""
    assert response.status_code < 500, _describe(response)
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), _describe(response)
        body = _json(response)
        assert isinstance(body, dict) and body.get("error"), _describe(response)


def assert_page_answer(response: httpx2.Response) -> None:
    """No server error; a redirect names where to, anything else is an HTML page."""
    assert response.status_code < 500, _describe(response)
    if response.status_code in (302, 303):
        assert response.headers.get("location"), _describe(response)
    else:
        assert response.headers.get("content-type", "").startswith("text/html"), _describe(response)


_UNSENDABLE = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"


def _headers(*pairs: tuple[str, str | None]) -> list[tuple[str, bytes]]:
    """Header fields as bytes (UTF-8, obs-text included); the control characters HTTP/1.1 cannot
    carry in a field value become '?', and the white space around it goes (RFC 9110 section 5.5)."""
    table = bytes.maketrans(_UNSENDABLE, b"?" * len(_UNSENDABLE))
    return [(name, value.encode("utf-8", "surrogatepass").translate(table).strip(b" \t")) for name, value in pairs if value is not None]


# --------------------------------------------------------------------------------------------
# Strategies built from the target's real values
# --------------------------------------------------------------------------------------------


def authorize_fields(t: Target) -> dict:
    return {
        "response_type": hostile.values("code", "token", "code id_token"),
        "client_id": hostile.values(t.public_client, t.consent_client, t.confidential_client, "https://127.0.0.1:9/client.json"),
        "redirect_uri": hostile.values(REDIRECT, "http://127.0.0.1:1234/callback", "https://evil.example/cb"),
        "scope": hostile.values(SCOPE, "notes:read", "offline_access", "openid"),
        "state": hostile.values("fuzz-state"),
        "code_challenge": hostile.values(pkce_pair()[1]),
        "code_challenge_method": hostile.values("S256", "plain"),
        "resource": hostile.values(t.resource, t.instance.url, "https://other.example/mcp"),
        "prompt": hostile.values("none", "login", "consent", "none login"),
        "dpop_jkt": hostile.values("A" * 43),
        "csrf_token": hostile.values(t.csrf_token),
        "decision": hostile.values("approve", "deny"),
    }


def authorization_queries(t: Target) -> list[list[tuple[str, str]]]:
    challenge = pkce_pair()[1]
    return [_authorization_query(t.public_client, challenge, t.resource), _authorization_query(t.consent_client, challenge, t.resource)]


def token_fields(t: Target) -> dict:
    return {
        "grant_type": hostile.values("authorization_code", "refresh_token", "client_credentials",
                                     "urn:ietf:params:oauth:grant-type:jwt-bearer", "password", "implicit"),
        "code": hostile.values(t.code),
        "redirect_uri": hostile.values(REDIRECT),
        "code_verifier": hostile.values(t.code_verifier),
        "refresh_token": hostile.values(t.refresh_token),
        "client_id": hostile.values(t.public_client, t.confidential_client),
        "client_secret": hostile.values(t.client_secret),
        "scope": hostile.values(SCOPE, "notes:read", "notes:admin"),
        "resource": hostile.values(t.resource, "https://other.example/mcp", "relative/path"),
        "client_assertion_type": hostile.values("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        "client_assertion": hostile.jwts("JWT", ["iss", "sub", "aud", "exp", "iat", "jti"]),
        "assertion": hostile.jwts("oauth-id-jag+jwt", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "resource"]),
    }


def token_requests(t: Target) -> list[list[tuple[str, str]]]:
    return [
        [("grant_type", "client_credentials"), ("scope", "notes:read"), ("resource", t.resource)],
        [("grant_type", "refresh_token"), ("refresh_token", t.refresh_token), ("client_id", t.public_client)],
        [("grant_type", "authorization_code"), ("code", t.code), ("redirect_uri", REDIRECT), ("client_id", t.public_client),
         ("code_verifier", t.code_verifier)],
    ]


def token_operation_fields(t: Target) -> dict:
    return {
        "token": hostile.values(t.access_token, t.refresh_token, t.machine_token, t.code),
        "token_type_hint": hostile.values("access_token", "refresh_token", "id_token"),
        "client_id": hostile.values(t.public_client, t.confidential_client),
        "client_secret": hostile.values(t.client_secret),
        "client_assertion_type": hostile.values("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        "client_assertion": hostile.jwts("JWT", ["iss", "sub", "aud", "exp", "jti"]),
    }


def token_operations(t: Target) -> list[list[tuple[str, str]]]:
    return [
        [("token", t.machine_token), ("token_type_hint", "access_token")],
        [("token", t.access_token)],
        [("token", t.refresh_token), ("token_type_hint", "refresh_token"), ("client_id", t.public_client)],
    ]


CLIENT_METADATA = {
    "redirect_uris": st.lists(hostile.values(REDIRECT, "https://app.example/cb", "com.example.app:/cb"), max_size=3),
    "token_endpoint_auth_method": hostile.values("none", "client_secret_basic", "client_secret_post", "private_key_jwt"),
    "grant_types": st.lists(hostile.values("authorization_code", "refresh_token", "client_credentials"), max_size=3),
    "response_types": st.lists(hostile.values("code", "token"), max_size=2),
    "client_name": hostile.values("Fuzz app"),
    "client_uri": hostile.values("https://app.example"),
    "logo_uri": hostile.values("https://app.example/logo.png"),
    "scope": hostile.values(SCOPE),
    "contacts": st.lists(hostile.values("admin@app.example"), max_size=2),
    "jwks_uri": hostile.values("https://app.example/jwks"),
    "jwks": st.one_of(hostile.json_values(), st.just({"keys": [hostile.PUBLIC_JWK]}),
                      st.just({"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]})),
    "software_statement": hostile.jwts("JWT", ["iss", "redirect_uris"]),
    "application_type": hostile.values("web", "native"),
    "dpop_bound_access_tokens": st.one_of(st.booleans(), hostile.json_values()),
}
VALID_METADATA = [
    {"client_name": "Fuzz app", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"},
    {"redirect_uris": ["https://app.example/cb"], "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
     "token_endpoint_auth_method": "client_secret_basic", "scope": SCOPE, "client_uri": "https://app.example"},
    {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [hostile.PUBLIC_JWK]}, "grant_types": ["client_credentials"]},
]


def authorizations(t: Target) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.just(t.basic), hostile.basic_authorizations((t.confidential_client, t.client_secret),
                                                                                (t.public_client, "")), hostile.header_values())


def dpop_proofs() -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.none(), hostile.jwts("dpop+jwt", ["htm", "htu", "iat", "jti", "ath", "nonce"]))


#: the index of a header field sent twice, now and then
REPEATS = st.one_of(st.none(), st.none(), st.none(), st.integers(0, 5))


def real_or_hostile(real: str | None) -> st.SearchStrategy[str | None]:
    """A header value: mostly the real one, else missing or hostile."""
    return st.one_of(st.just(real), st.just(real), st.just(real), st.none(), hostile.header_values())


# --------------------------------------------------------------------------------------------
# The endpoints
# --------------------------------------------------------------------------------------------


def test_authorize_get_never_fails_with_a_server_error(target):
    """AS-8, S-A1, S-A9: any authorization request gets a page or a redirect, never a 5xx."""

    @FUZZ
    @given(query=hostile.query_strings(authorize_fields(target), *authorization_queries(target)),
           cookie=real_or_hostile(target.session_cookie), repeat=REPEATS)
    def check(query, cookie, repeat):
        response = target.send("GET /authorize", "GET", f"/authorize?{query}",
                               headers=_headers(("Accept", "text/html"), ("Cookie", cookie)), repeat=repeat)
        assert_page_answer(response)

    check()


def test_authorize_post_never_fails_with_a_server_error(target):
    """S-A8: the consent form's answer, forged or broken, gets a page or a redirect, never a 5xx."""
    fields = authorize_fields(target)
    answers = [[("csrf_token", target.csrf_token), ("decision", decision)] for decision in ("approve", "deny")]

    @FUZZ
    @given(query=hostile.query_strings(fields, authorization_queries(target)[1]), body=hostile.form_bodies(fields, *answers),
           content_type=hostile.content_types(hostile.FORM), cookie=real_or_hostile(target.session_cookie), repeat=REPEATS)
    def check(query, body, content_type, cookie, repeat):
        response = target.send("POST /authorize", "POST", f"/authorize?{query}", body, _headers(
            ("Accept", "text/html"), ("Content-Type", content_type), ("Cookie", cookie), ("Origin", target.instance.url)), repeat)
        assert_page_answer(response)

    check()


def test_token_endpoint_never_fails_with_a_server_error(target):
    """AS-4, AS-11, AS-13, S-R1..S-R3, RFC 9449: token requests of every shape, with broken client
    authentication and DPoP proofs."""

    @FUZZ
    @given(body=hostile.form_bodies(token_fields(target), *token_requests(target)),
           content_type=hostile.content_types(hostile.FORM), authorization=authorizations(target), dpop=dpop_proofs(),
           repeat=REPEATS)
    def check(body, content_type, authorization, dpop, repeat):
        response = target.send("POST /token", "POST", "/token", body, _headers(
            ("Content-Type", content_type), ("Authorization", authorization), ("DPoP", dpop)), repeat)
        assert_api_answer(response)

    check()


def test_registration_never_fails_with_a_server_error(target):
    """AS-6, S-C1, S-C2: client metadata of every shape gets 201 or a JSON error, never a 5xx."""

    @FUZZ
    @given(body=hostile.json_bodies(CLIENT_METADATA, *VALID_METADATA), content_type=hostile.content_types("application/json"),
           repeat=REPEATS)
    def check(body, content_type, repeat):
        response = target.send("POST /register", "POST", "/register", body, _headers(("Content-Type", content_type)), repeat)
        assert_api_answer(response)

    check()


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_introspection_and_revocation_never_fail_with_a_server_error(target, path):
    """AS-14 (RFC 7662, RFC 7009): any token, any client authentication."""

    @FUZZ
    @given(body=hostile.form_bodies(token_operation_fields(target), *token_operations(target)),
           content_type=hostile.content_types(hostile.FORM), authorization=authorizations(target), repeat=REPEATS)
    def check(body, content_type, authorization, repeat):
        response = target.send(f"POST {path}", "POST", path, body, _headers(
            ("Content-Type", content_type), ("Authorization", authorization)), repeat)
        assert_api_answer(response)

    check()


# The MCP SDK's transport security (mcp.server.transport_security) refuses these in plain text.
SDK_PLAIN_REFUSALS = {"Invalid Content-Type header", "Invalid Host header", "Invalid Origin header", "Request body too large"}
NOTE_TOOLS = ["list_notes", "read_note", "search_notes", "add_note", "update_note", "delete_note"]


def jsonrpc_bodies() -> st.SearchStrategy[bytes]:
    """JSON-RPC messages (tool calls with hostile arguments, other methods, batches), or junk."""
    arguments = st.dictionaries(hostile.values("title", "body", "note_id", "query"),
                                st.one_of(hostile.values("a note"), st.integers(), hostile.json_values()), max_size=4)
    tool_call = st.fixed_dictionaries({
        "jsonrpc": st.just("2.0"), "id": st.integers(1, 10**6), "method": st.just("tools/call"),
        "params": st.fixed_dictionaries({"name": hostile.values(*NOTE_TOOLS), "arguments": arguments}),
    })
    other = st.fixed_dictionaries(
        {"jsonrpc": st.one_of(st.just("2.0"), hostile.json_values())},
        optional={
            "id": st.one_of(st.integers(), st.text(max_size=8), hostile.json_values()),
            "method": hostile.values("tools/list", "initialize", "notifications/initialized", "ping", "resources/list"),
            "params": hostile.json_values(),
        },
    )
    message = st.one_of(tool_call, tool_call, other)
    dumped = st.one_of(message.map(json.dumps), message.map(json.dumps), st.lists(message, max_size=3).map(json.dumps)).map(str.encode)
    return st.one_of(dumped, dumped, dumped, hostile.json_bodies({}))


def test_guard_never_fails_with_a_server_error(target):
    """RS-3, RS-5, RS-7, RFC 9449: the guarded MCP endpoint with any Authorization header (real,
    forged, malformed, DPoP), any JSON-RPC body and any session header."""
    token = target.guard_token
    forged = hostile.jwts("at+jwt", ["iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "cnf"], token)
    authorization = st.one_of(
        real_or_hostile(f"Bearer {token}"),
        st.just(f"DPoP {token}"),
        forged.flatmap(lambda value: st.sampled_from([f"Bearer {value}", f"DPoP {value}", value, f"bearer  {value}"])),
    )

    @FUZZ
    @given(
        method=st.sampled_from(["POST", "POST", "POST", "POST", "GET", "DELETE"]),
        body=jsonrpc_bodies(),
        authorization=authorization,
        dpop=dpop_proofs(),
        session=real_or_hostile(target.mcp_session),
        accept=real_or_hostile(MCP_ACCEPT),
        content_type=hostile.content_types("application/json"),
        version=real_or_hostile(MCP_VERSION),
        repeat=REPEATS,
    )
    def check(method, body, authorization, dpop, session, accept, content_type, version, repeat):
        response = target.send("/mcp", method, "/mcp", body if method == "POST" else b"", _headers(
            ("Authorization", authorization), ("DPoP", dpop), ("Mcp-Session-Id", session), ("Accept", accept),
            ("Content-Type", content_type), ("MCP-Protocol-Version", version)), repeat)
        assert response.status_code < 500, _describe(response)
        if response.status_code in (405, 406) and not response.content:  # the SDK's HTTP-level refusals
            assert response.status_code == 406 or response.headers.get("allow"), _describe(response)
        elif response.status_code >= 400 and response.text not in SDK_PLAIN_REFUSALS:
            assert "error" in _json(response), _describe(response)

    check()


def test_a_body_cut_short_by_the_client_leaves_no_trace(target):
    """A client that hangs up in the middle of its body (Content-Length promises more) is not a
    server error: nothing is logged as one, and the server goes on."""
    for path in ("/token", "/register", "/authorize", "/revoke", "/introspect", "/mcp"):
        with socket.create_connection(("127.0.0.1", target.instance.port), timeout=30) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {hostile.FORM}\r\n"
                         "Content-Length: 1000\r\n\r\ngrant_type=refresh_tok".encode())
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
    assert target.http.get("/healthz").status_code == 200


def test_message_framing_the_parser_cannot_read_gets_a_400(target):
    """An invalid Content-Length is an unrecoverable framing error (RFC 9112 section 6.3): the
    answer is 400 before any endpoint runs, and the server goes on."""
    for method, path in (("GET", "/register/x"), ("DELETE", "/register/x"), ("POST", "/token")):
        with socket.create_connection(("127.0.0.1", target.instance.port), timeout=30) as sock:
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ^\r\n\r\n".encode())
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert target.http.get("/healthz").status_code == 200


def test_the_server_stayed_up_and_logged_no_traceback(target):
    """Runs last: after every hostile request above, the process is alive and its output holds
    no unhandled exception; and every endpoint got its examples."""
    print("requests sent:", dict(target.sent))
    fuzzed = ["GET /authorize", "POST /authorize", "POST /token", "POST /register", "POST /introspect", "POST /revoke", "/mcp"]
    assert all(target.sent[endpoint] >= FUZZ.max_examples for endpoint in fuzzed), target.sent
    assert target.instance.process.poll() is None, target.instance.logs()[-3000:]
    assert target.http.get("/healthz").status_code == 200
    logs = target.instance.logs()
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000:][:6000]
    print("statuses seen:", {endpoint: sorted(codes) for endpoint, codes in target.seen.items()})
