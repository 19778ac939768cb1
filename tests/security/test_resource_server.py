"""Resource-server security cases S-RS1..S-RS6 (RS-1..RS-6), against three deployments.

- ``embedded``: the demo notes server inside ``gatehouse serve`` (guard with ``KeyRingSource``);
- ``standalone``: a small official-SDK ``MCPServer`` behind a ``Guard`` whose verifier fetches the
  AS's keys over HTTP (``JWKSKeySource(<AS>/jwks)``), served by its own uvicorn thread;
- ``gateway``: ``gatehouse gateway`` (the same guard) in front of the same tools served with no
  guard at all, on a third and fourth socket.

How both get tokens from the one real AS: the AS must know both resource URIs (RFC 8707) before
it starts, and neither port is known before its socket is bound. This module therefore overrides
``live_as``: it pre-binds both sockets with ``tests.conftest.free_socket()``, computes both
URIs, and starts the AS with ``resources=[<AS>/mcp, <standalone>/mcp]`` (the same helpers as
the shared fixture: ``make_settings``, ``build_context``, ``ThreadedServer``, parametrized
over the store backends). The standalone server is started on its pre-bound socket with
``ThreadedServer`` (``loopback_server`` binds its own socket, so its port would be unknown to
the AS). Every case runs against both deployments, for both store backends.

Valid tokens always come from the real AS (authorization code + PKCE). Attack tokens (expired,
``alg: none``, HS256 with the public key as secret, wrong ``typ``/``iss``/``kid``) are built in
the test, signed with the AS's own current key where a signature is needed, and every such case
has a control: the same builder with nothing wrong is accepted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse import timeutil
from gatehouse.authserver.context import build_context
from gatehouse.config import ResourceConfig
from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy, current_caller
from gatehouse.guard.gateway import HTTPUpstream, create_gateway_app
from gatehouse.guard.guard import GuardedApp
from gatehouse.serve import create_embedded_app
from tests.conftest import LiveAS, ThreadedServer, free_socket, make_settings
from tests.support.browser import Browser, authorize, pkce_pair
from tests.support.mcp_client import with_session

REDIRECT = "http://127.0.0.1:9/callback"
SCOPES = ["notes:read", "notes:write"]
JWKS_COOLDOWN = 0.5
ACCEPT = {"Accept": "application/json, text/event-stream"}


class Counting:
    """ASGI wrapper counting the HTTP requests that reach ``app`` (optionally only one path)."""

    def __init__(self, app, path: str | None = None):
        self.app = app
        self.path = path
        self.calls = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (self.path is None or scope["path"] == self.path):
            self.calls += 1
        await self.app(scope, receive, send)


@dataclass
class Deployment:
    name: str
    base_url: str
    upstream: Counting
    read_tool: str
    write_tool: str
    write_challenge: str  # every scope the write tool needs, as the 403 must name them
    leeway: int

    @property
    def resource(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource/mcp"


@dataclass
class Env:
    live_as: LiveAS
    jwks_requests: Counting
    deployments: dict[str, Deployment]
    users: set = field(default_factory=set)


def tools_server() -> MCPServer:
    """The standalone deployments' MCP server (echo, write, whoami), unguarded."""
    mcp = MCPServer(name="standalone-test")

    @mcp.tool()
    async def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @mcp.tool()
    async def write(text: str) -> str:
        """Pretend to write."""
        return f"wrote {text}"

    @mcp.tool()
    async def whoami(ctx: Context) -> dict:
        """Everything this handler can learn about its caller and its request."""
        caller = current_caller(ctx)
        request = ctx.request_context.request
        return {
            "subject": caller.subject if caller else None,
            "client_id": caller.client_id if caller else None,
            "caller": repr(caller),
            "claims": dict(caller.claims) if caller else {},
            "headers": dict(request.headers) if request is not None else {},
            "query": str(request.url.query) if request is not None else "",
        }

    return mcp


def resource_guard(resource: str, issuer: str) -> Guard:
    return Guard(
        resource=resource,
        authorization_servers=[issuer],
        verifier=JWTVerifier(
            issuers=[issuer], audience=resource,
            keys=JWKSKeySource(f"{issuer}/jwks", refetch_cooldown=JWKS_COOLDOWN), algorithms=("ES256",), leeway=30,
        ),
        policy=Policy(tools={"echo": ["notes:read"], "write": ["notes:write"], "whoami": ["notes:read"]},
                      default=["notes:read"], implies={"notes:write": ["notes:read"]}),
        scopes_supported=SCOPES,
    )


def served(mcp: MCPServer, wrap) -> tuple[Starlette, Counting]:
    """``mcp``'s Streamable HTTP app, counted, then passed through ``wrap``, with its lifespan run."""
    upstream = Counting(mcp.streamable_http_app(
        streamable_http_path="/mcp", transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    ))
    routes = wrap(upstream)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with mcp.session_manager.run():
            yield

    return Starlette(routes=routes, lifespan=lifespan), upstream


def standalone_app(base_url: str, issuer: str) -> tuple[Starlette, Counting]:
    guard = resource_guard(f"{base_url}/mcp", issuer)
    return served(tools_server(), lambda upstream: [Route(p, guard.protect(upstream)) for p in [*guard.metadata_paths, "/mcp"]])


def gateway_apps(gateway_base: str, upstream_base: str, issuer: str) -> tuple[Starlette, Starlette, Counting]:
    """``gatehouse gateway`` in front of the same tools served with no guard at all."""
    upstream_app, upstream = served(tools_server(), lambda app: [Route("/mcp", app)])
    gateway = create_gateway_app(resource_guard(f"{gateway_base}/mcp", issuer), HTTPUpstream(f"{upstream_base}/mcp"), "/mcp")
    return gateway, upstream_app, upstream


@pytest.fixture
def env(tmp_path, store_url):
    as_sock, rs_sock, gw_sock, up_sock = free_socket(), free_socket(), free_socket(), free_socket()
    as_base, rs_base, gw_base, up_base = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in (as_sock, rs_sock, gw_sock, up_sock))
    as_port = as_sock.getsockname()[1]
    settings = make_settings(tmp_path, store_url, as_port, resources=[
        ResourceConfig(uri=f"{as_base}/mcp", name="Demo notes", scopes=SCOPES),
        ResourceConfig(uri=f"{rs_base}/mcp", name="Standalone", scopes=SCOPES),
        ResourceConfig(uri=f"{gw_base}/mcp", name="Gateway", scopes=SCOPES),
    ])
    ctx = build_context(settings)
    embedded = create_embedded_app(ctx)
    guarded = next(r.endpoint for r in embedded.routes if isinstance(getattr(r, "endpoint", None), GuardedApp))
    embedded_upstream = guarded.app = Counting(guarded.app)
    jwks_requests = Counting(embedded, "/jwks")
    rs_app, rs_upstream = standalone_app(rs_base, as_base)
    gw_app, up_app, gw_upstream = gateway_apps(gw_base, up_base, as_base)
    try:
        with (
            ThreadedServer(jwks_requests, as_sock),
            ThreadedServer(rs_app, rs_sock),
            ThreadedServer(up_app, up_sock),
            ThreadedServer(gw_app, gw_sock),
        ):
            yield Env(
                LiveAS(as_base, ctx, settings),
                jwks_requests,
                {
                    "embedded": Deployment("embedded", as_base, embedded_upstream, "list_notes", "add_note", "notes:write",
                                           settings.clock_leeway),
                    "standalone": Deployment("standalone", rs_base, rs_upstream, "echo", "write", "notes:read notes:write", 30),
                    "gateway": Deployment("gateway", gw_base, gw_upstream, "echo", "write", "notes:read notes:write", 30),
                },
            )
    finally:
        ctx.engine.dispose()
        timeutil.reset()


@pytest.fixture(params=["embedded", "standalone", "gateway"])
def dep(request, env) -> Deployment:
    return env.deployments[request.param]


def issue(env: Env, scope: str, resource: str, username: str = "alice") -> str:
    """An access token from the real AS (authorization code + PKCE + resource indicator)."""
    live = env.live_as
    if username not in env.users:
        live.add_user(username)
        env.users.add(username)
    client = live.register(redirect_uris=[REDIRECT])
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live.base_url), client_id=client["client_id"], redirect_uri=REDIRECT, challenge=challenge,
                       username=username, password="correct horse battery", scope=scope, resource=resource)
    assert result.code, result.response.text
    response = live.post_token({"grant_type": "authorization_code", "code": result.code, "client_id": client["client_id"],
                                "redirect_uri": REDIRECT, "code_verifier": verifier, "resource": resource})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(env: Env, dep: Deployment, *, header: dict | None = None, key=None, alg: str = "ES256", **claims) -> str:
    """A token built here; by default everything about it is right (signed with the AS's current key)."""
    signing = env.live_as.ctx.keyring.signing_key()
    now = int(time.time())
    body = {"iss": env.live_as.base_url, "sub": "mallory", "aud": dep.resource, "client_id": "forged-client",
            "scope": "notes:read notes:write", "iat": now, "exp": now + 300, "jti": secrets.token_hex(8)}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"alg": alg, "typ": "at+jwt", "kid": signing.kid}
    head.update(header or {})
    head = {k: v for k, v in head.items() if v is not None}
    if alg == "none":
        return f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(body).encode())}."
    return jwt.encode(head, body, key if key is not None else signing.private, algorithms=[alg])


def rpc(method: str, params: dict | None = None) -> dict:
    message = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize() -> dict:
    return rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "security-test", "version": "0"}})


def post(dep: Deployment, body: dict, token: str | None = None, url: str | None = None) -> httpx2.Response:
    headers = dict(ACCEPT)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.post(url or dep.resource, json=body, headers=headers, timeout=30)


def call_tool(dep: Deployment, tool: str, token: str | None = None) -> httpx2.Response:
    return post(dep, rpc("tools/call", {"name": tool, "arguments": {}}), token)


def parse_challenge(value: str) -> dict[str, str]:
    assert value.startswith("Bearer "), value
    fields = {}
    rest = value[len("Bearer "):]
    while rest:
        name, _, rest = rest.partition('="')
        raw, _, rest = rest.partition('"')
        fields[name.strip(" ,")] = raw
        rest = rest.lstrip(", ")
    return fields


def assert_rejected(dep: Deployment, response: httpx2.Response, status: int, error: str | None, scope: str | None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    challenge = parse_challenge(response.headers["www-authenticate"])
    assert challenge.get("error") == error, challenge
    assert challenge.get("scope") == scope, challenge
    assert challenge["resource_metadata"] == dep.metadata_url
    assert "offline_access" not in response.headers["www-authenticate"]
    assert response.headers.get("cache-control") == "no-store"
    return challenge


def assert_accepted(dep: Deployment, token: str) -> None:
    before = dep.upstream.calls
    response = post(dep, initialize(), token)
    assert response.status_code == 200, response.text
    assert dep.upstream.calls == before + 1


# --- S-RS1 -----------------------------------------------------------------------------------


def test_S_RS1_no_token_gets_401_with_resource_metadata(env, dep):
    response = call_tool(dep, dep.read_tool)
    challenge = assert_rejected(dep, response, 401, None, "notes:read")
    assert response.json()["error"] == "invalid_token"

    # RS-1/RS-2: PRM at the path-inserted and the root well-known URI, naming the URL the client used
    path_inserted = httpx2.get(challenge["resource_metadata"])
    root = httpx2.get(f"{dep.base_url}/.well-known/oauth-protected-resource")
    assert path_inserted.status_code == root.status_code == 200
    metadata = path_inserted.json()
    assert metadata["resource"] == dep.resource
    assert metadata["authorization_servers"] == [env.live_as.base_url]
    assert metadata["bearer_methods_supported"] == ["header"]
    assert set(metadata["scopes_supported"]) == set(SCOPES) and "offline_access" not in metadata["scopes_supported"]
    assert root.json() == metadata
    assert dep.upstream.calls == 0


def test_S_RS1_sdk_client_without_token_is_refused(env, dep):
    async def attempt():
        async with (
            httpx2.AsyncClient(timeout=30) as http,
            streamable_http_client(dep.resource, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

    import anyio

    with pytest.raises(BaseException):  # noqa: B017 - the SDK wraps the 401 in its own exception group
        anyio.run(lambda: _with_timeout(attempt()))
    assert dep.upstream.calls == 0


async def _with_timeout(coro):
    import anyio

    with anyio.fail_after(20):
        return await coro


# --- S-RS2 -----------------------------------------------------------------------------------


def test_S_RS2_token_for_another_resource_is_rejected(env, dep):
    other = next(d for d in env.deployments.values() if d is not dep)
    token = issue(env, "notes:read notes:write", other.resource)
    assert_accepted(other, token)  # a good token, just not for this server
    response = call_tool(dep, dep.read_tool, token)
    assert_rejected(dep, response, 401, "invalid_token", "notes:read")
    assert "another resource" in response.json()["error_description"]
    assert dep.upstream.calls == 0


# --- S-RS3 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["expired", "not_yet_valid"])
def test_S_RS3_expired_or_not_yet_valid_is_rejected(env, dep, case):
    now = int(time.time())
    assert_accepted(dep, forge(env, dep, exp=now + 300, nbf=now))  # control
    before = dep.upstream.calls
    if case == "expired":
        token = forge(env, dep, iat=now - 3600, exp=now - dep.leeway - 60)
    else:
        token = forge(env, dep, nbf=now + dep.leeway + 120, exp=now + 3600)
    response = call_tool(dep, dep.read_tool, token)
    assert_rejected(dep, response, 401, "invalid_token", "notes:read")
    assert dep.upstream.calls == before


# --- S-RS4 -----------------------------------------------------------------------------------


def _public_key_bytes(env) -> bytes:
    public = ECKey.import_key(env.live_as.ctx.keyring.signing_key().public_jwk)
    return public.as_pem(private=False)


def _hs256_with_public_key(env, dep) -> str:
    """The classic key-confusion token: HMAC-SHA256 keyed with the AS's public key (PEM and JWK forms)."""
    unsigned = forge(env, dep, alg="none")[:-1]
    head, body = unsigned.split(".")
    head = _b64(json.dumps({**json.loads(base64.urlsafe_b64decode(head + "==")), "alg": "HS256"}).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{_b64(hmac.new(_public_key_bytes(env), signing_input, hashlib.sha256).digest())}"


ATTACKS = {
    "alg_none": lambda env, dep: forge(env, dep, alg="none"),
    "hs256_with_public_key": lambda env, dep: _hs256_with_public_key(env, dep),
    "typ_jwt": lambda env, dep: forge(env, dep, header={"typ": "JWT"}),
    "no_typ": lambda env, dep: forge(env, dep, header={"typ": None}),
    "wrong_iss": lambda env, dep: forge(env, dep, iss="https://evil.example"),
    "unknown_kid": lambda env, dep: forge(env, dep, header={"kid": "not-a-known-kid"}),
    "bad_signature": lambda env, dep: forge(env, dep)[:-8] + ("A" * 8),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_S_RS4_jwt_attacks_are_rejected(env, dep, attack):
    assert_accepted(dep, forge(env, dep))  # control: the same builder, nothing wrong
    before = dep.upstream.calls
    response = call_tool(dep, dep.read_tool, ATTACKS[attack](env, dep))
    assert_rejected(dep, response, 401, "invalid_token", "notes:read")
    assert dep.upstream.calls == before


def test_S_RS4_id_token_shaped_token_is_rejected(env, dep):
    """An OIDC ID token (typ JWT, aud = a client id) never passes as an access token."""
    token = forge(env, dep, header={"typ": "JWT"}, aud="some-client-id", nonce="n")
    assert_rejected(dep, call_tool(dep, dep.read_tool, token), 401, "invalid_token", "notes:read")
    assert dep.upstream.calls == 0


def test_S_RS4_unknown_kid_refetches_jwks_once(env):
    dep = env.deployments["standalone"]
    assert_accepted(dep, forge(env, dep))  # loads the JWKS
    fetched = env.jwks_requests.calls
    assert fetched >= 1
    time.sleep(JWKS_COOLDOWN + 0.2)
    unknown = forge(env, dep, header={"kid": "rotated-away"})
    for _ in range(3):
        assert_rejected(dep, call_tool(dep, dep.read_tool, unknown), 401, "invalid_token", "notes:read")
    assert env.jwks_requests.calls == fetched + 1


# --- S-RS5 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "query_and_header", "form_body"])
def test_S_RS5_token_in_query_string_is_not_accepted(env, dep, where):
    token = issue(env, "notes:read notes:write", dep.resource)
    assert_accepted(dep, token)
    before = dep.upstream.calls
    if where == "query":
        response = httpx2.post(f"{dep.resource}?access_token={token}", json=initialize(), headers=ACCEPT)
    elif where == "query_and_header":
        response = httpx2.post(f"{dep.resource}?access_token={token}", json=initialize(),
                               headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    else:
        response = httpx2.post(dep.resource, content=f"access_token={token}".encode(),
                               headers={**ACCEPT, "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code in (400, 401), response.text
    assert dep.upstream.calls == before
    if where != "form_body":
        assert response.json()["error"] == "invalid_request"
        assert token not in response.text


# --- S-RS6 -----------------------------------------------------------------------------------


def test_S_RS6_missing_scope_gets_403_with_full_challenge(env, dep):
    token = issue(env, "notes:read", dep.resource)
    read = call_tool(dep, dep.read_tool, token)
    assert read.status_code != 403  # the read tool is allowed (the SDK may want a session: 400)
    before = dep.upstream.calls
    response = call_tool(dep, dep.write_tool, token)
    assert_rejected(dep, response, 403, "insufficient_scope", dep.write_challenge)
    assert response.json()["error"] == "insufficient_scope"
    assert dep.upstream.calls == before


def test_S_RS6_batch_names_every_scope(env, dep):
    token = issue(env, "notes:read", dep.resource)
    batch = [rpc("tools/call", {"name": dep.read_tool, "arguments": {}}),
             {**rpc("tools/call", {"name": dep.write_tool, "arguments": {}}), "id": 2}]
    response = post(dep, batch, token)  # type: ignore[arg-type]
    # one challenge naming every scope the whole batch needs (read tool + write tool)
    assert_rejected(dep, response, 403, "insufficient_scope", "notes:read notes:write")
    assert dep.upstream.calls == 0


# --- acceptance table ------------------------------------------------------------------------


def _other_resource(env, dep):
    other = next(d for d in env.deployments.values() if d is not dep)
    return issue(env, "notes:read notes:write", other.resource), dep.read_tool


TABLE = {
    "other_resource": (_other_resource, 401, "invalid_token", "read"),
    "expired": (lambda env, dep: (forge(env, dep, exp=int(time.time()) - 3600), dep.read_tool), 401, "invalid_token", "read"),
    "unknown_issuer": (lambda env, dep: (forge(env, dep, iss="https://unknown.example"), dep.read_tool), 401, "invalid_token", "read"),
    "missing_scope": (lambda env, dep: (issue(env, "notes:read", dep.resource), dep.write_tool), 403, "insufficient_scope", "write"),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_rejections_table(env, dep, case):
    build, status, error, needs = TABLE[case]
    token, tool = build(env, dep)
    response = call_tool(dep, tool, token)
    expected_scope = "notes:read" if needs == "read" else dep.write_challenge
    assert_rejected(dep, response, status, error, expected_scope)
    assert response.json()["error"] == error
    assert dep.upstream.calls == 0


# --- what passes through to the MCP server --------------------------------------------------


async def _session(dep: Deployment, token: str, action):
    return await with_session(dep.resource, token, action)


async def test_valid_token_reaches_the_tool_with_its_caller_and_not_the_token(env):
    dep = env.deployments["standalone"]
    token = issue(env, "notes:read", dep.resource, "carol")
    result = await _session(dep, token, lambda s: s.call_tool("whoami", {}))
    assert not result.is_error, result
    seen = result.structured_content or json.loads(result.content[0].text)
    seen = seen.get("result", seen)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert seen["subject"] == claims["sub"] and seen["client_id"] == claims["client_id"]
    assert seen["subject"] and seen["client_id"]
    text = json.dumps(seen)
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature
    assert dep.upstream.calls >= 2


async def test_embedded_tools_see_the_caller(env):
    dep = env.deployments["embedded"]
    token = issue(env, "notes:read notes:write", dep.resource, "dave")

    async def work(session):
        await session.call_tool("add_note", {"title": "mine", "body": "x"})
        return await session.call_tool("list_notes", {})

    listed = await _session(dep, token, work)
    assert not listed.is_error and "mine" in str(listed.content)


async def test_tools_list_is_filtered_by_scope(env, dep):
    token = issue(env, "notes:read", dep.resource)

    async def work(session):
        return {t.name for t in (await session.list_tools()).tools}

    names = await _session(dep, token, work)
    assert dep.read_tool in names and dep.write_tool not in names


# --- sessions ---------------------------------------------------------------------------------


def _in_session(dep: Deployment, method: str, token: str, session_ids: list[str], body: dict | None = None) -> httpx2.Response:
    headers = [*ACCEPT.items(), ("Authorization", f"Bearer {token}"), *(("Mcp-Session-Id", s) for s in session_ids)]
    return httpx2.request(method, dep.resource, json=body, headers=headers, timeout=10)


def test_a_session_id_lets_no_other_user_in(env, dep):
    """MCP security best practices, "Session Hijacking": a session is bound to the user who started
    it. Another user's valid token with that session id gets 404 for a POST, the GET stream (where
    the server's requests to the owner would arrive) and DELETE, and nothing reaches the server."""
    alice = issue(env, "notes:read", dep.resource, "alice")
    alice_again = issue(env, "notes:read", dep.resource, "alice")
    bob = issue(env, "notes:read", dep.resource, "bob")
    session = post(dep, initialize(), alice).headers["mcp-session-id"]
    before = dep.upstream.calls
    hijacks = [
        _in_session(dep, "POST", bob, [session], rpc("tools/list")),
        _in_session(dep, "GET", bob, [session]),
        _in_session(dep, "DELETE", bob, [session]),
    ]
    assert [r.status_code for r in hijacks] == [404, 404, 404], [r.text for r in hijacks]
    assert dep.upstream.calls == before, "a refused request never reaches the MCP server"
    owners = _in_session(dep, "POST", alice_again, [session], rpc("tools/list"))
    assert owners.status_code == 200 and dep.read_tool in owners.text, "the same user with another token keeps the session"


@pytest.mark.parametrize("spelling", ["initialize", "\\u0069nitialize"])
def test_a_session_started_with_every_scope_is_bound_too(env, dep, spelling):
    """A token verified before that holds every scope the policy names passes the guard without
    its body being read (no method or tool could need more), except a body that could start a
    session: the new session must still be bound to its user, also when ``initialize`` is
    written with a JSON escape."""
    alice = issue(env, " ".join(SCOPES), dep.resource, "alice")
    bob = issue(env, " ".join(SCOPES), dep.resource, "bob")
    for token in (alice, bob):
        post(dep, rpc("tools/list"), token)  # verified once: now in the guard's cache
    body = json.dumps(initialize()).replace('"initialize"', f'"{spelling}"')
    started = httpx2.post(dep.resource, content=body, timeout=30, headers={
        **ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {alice}",
    })
    assert started.status_code == 200, started.text
    session = started.headers["mcp-session-id"]
    owners = _in_session(dep, "POST", alice, [session], rpc("tools/list"))
    assert owners.status_code == 200 and dep.write_tool in owners.text, "every tool, for a token with every scope"
    hijack = _in_session(dep, "POST", bob, [session], rpc("tools/list"))
    assert hijack.status_code == 404, hijack.text


def test_two_session_ids_in_one_request_are_refused(env, dep):
    """Which of two ``Mcp-Session-Id`` headers a server acts on is its own choice; the one checked
    against the caller could be the other one, so such a request is refused."""
    alice = issue(env, "notes:read", dep.resource, "alice")
    first = post(dep, initialize(), alice).headers["mcp-session-id"]
    second = post(dep, initialize(), alice).headers["mcp-session-id"]
    before = dep.upstream.calls
    doubled = _in_session(dep, "POST", alice, [first, second], rpc("tools/list"))
    assert doubled.status_code == 400 and "Mcp-Session-Id" in doubled.text, doubled.text
    assert dep.upstream.calls == before


# --- bodies the guard and the server could read differently ------------------------------------


AMBIGUOUS_TOOL_NAMES = {
    "twice": '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "name": "write", "arguments": {"text": "x"}}}',
    "case": '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "Name": "write", "arguments": {"text": "x"}}}',
}


def _post_ambiguous(env: Env, dep: Deployment, kind: str) -> httpx2.Response:
    """The body, in a session of a token the policy allows the read tool and not the write tool."""
    token = issue(env, "notes:read", dep.resource)
    session = post(dep, initialize(), token).headers["mcp-session-id"]
    body = AMBIGUOUS_TOOL_NAMES[kind].replace("echo", dep.read_tool).replace('"write"', f'"{dep.write_tool}"')
    return httpx2.post(dep.resource, content=body, timeout=30, headers={
        **ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {token}", "Mcp-Session-Id": session,
    })


@pytest.mark.parametrize("kind", AMBIGUOUS_TOOL_NAMES)
def test_the_gateway_refuses_a_tool_name_servers_could_read_differently(env, kind):
    """An upstream that reads the other ``name`` (the first of two, or Go's case-insensitive
    match) would run the write tool. Such a body is refused as a parse error and reaches nothing."""
    dep = env.deployments["gateway"]
    response = _post_ambiguous(env, dep, kind)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32700 and ("twice" in error["message"] or "differ only in case" in error["message"])
    assert dep.upstream.calls == 1  # the initialize


@pytest.mark.parametrize("deployment", ["embedded", "standalone"])
def test_a_guarded_python_app_runs_the_tool_the_guard_decided_on(env, deployment):
    """In-process, the app parses the body as the guard does (the last of two members, names
    matched exactly), so the guard's decision is about the tool the app would run: the write
    tool named last is refused; a ``Name`` beside ``name`` is no tool name at all."""
    dep = env.deployments[deployment]
    refused = _post_ambiguous(env, dep, "twice")
    assert_rejected(dep, refused, 403, "insufficient_scope", dep.write_challenge)
    before = dep.upstream.calls
    response = _post_ambiguous(env, dep, "case")
    assert response.status_code == 200, response.text
    assert dep.upstream.calls == before + 2  # initialize, then the call
    assert '"isError":false' in response.text and "wrote" not in response.text, response.text
