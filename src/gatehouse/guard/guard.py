"""ASGI guard in front of an MCP server's Streamable HTTP app.

- Protected Resource Metadata (RFC 9728) at the path-inserted and the root well-known URI
  (RS-1, RS-2);
- 401 with ``WWW-Authenticate: Bearer resource_metadata=…, scope=…`` without a valid token,
  ``error="invalid_token"`` when one was sent (RS-3, RFC 6750 section 3);
- 403 ``insufficient_scope`` naming every scope the request needs (RS-6);
- 400 for a malformed request or a token outside the Authorization header (RS-5, RS-7);
- DPoP (RFC 9449): tokens bound to a key (``cnf.jkt``) only with a proof of that key
  (:mod:`gatehouse.guard.dpop`), unbound tokens as Bearer tokens; both schemes are advertised in
  PRM and in every 401 (section 7.1);
- ``tools/list`` answers list only the tools the token may call;
- each MCP session is bound to the user who started it (:mod:`gatehouse.guard.sessions`);
- with ``upstream_tokens``, tool handlers get the caller's upstream tokens through
  :func:`~gatehouse.guard.upstream_tokens.upstream_token` (RFC 8693), never the caller's token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.guard import caller as caller_context
from gatehouse.guard.asgi import jsonrpc_error, read_body, send_bytes, send_json
from gatehouse.guard.caller import Caller
from gatehouse.guard.dpop import DPoPRejected, ResourceDPoP
from gatehouse.guard.jsonrpc import NotJSONRPC, parse_messages
from gatehouse.guard.policy import Policy
from gatehouse.guard.sessions import NOT_YOURS, REPEATED_SESSION, SESSION_HEADER, SessionBinding, with_session_id
from gatehouse.guard.upstream_tokens import UpstreamTokenClient, attach, detach
from gatehouse.guard.verifier import TokenRejected, TokenVerifier

PRM_PATH = "/.well-known/oauth-protected-resource"
MAX_BODY = 4 * 1024 * 1024
JSONRPC_MESSAGES_KEY = "gatehouse.jsonrpc_messages"  # the POST body's messages, parsed once, for the app behind; empty if let through unread
SCHEMES = ("bearer", "dpop")
_READ_HEADERS = frozenset({b"authorization", b"dpop", SESSION_HEADER})


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class Guard:
    def __init__(
        self,
        *,
        resource: str,
        authorization_servers: Iterable[str],
        verifier: TokenVerifier,
        policy: Policy | None = None,
        scopes_supported: Iterable[str] | None = None,
        resource_name: str | None = None,
        dpop: ResourceDPoP | None = None,
        upstream_tokens: UpstreamTokenClient | None = None,
        session_secret: bytes | None = None,
    ):
        self.resource = resource
        self.upstream_tokens = upstream_tokens
        self.dpop = dpop or ResourceDPoP()
        self.authorization_servers = list(authorization_servers)
        self.verifier = verifier
        self.policy = policy or Policy()
        self.session_binding = SessionBinding(session_secret)
        self.scopes_supported = [s for s in (scopes_supported or self.policy.every_scope) if s != "offline_access"]
        self.resource_name = resource_name
        parts = urlsplit(resource)
        self.resource_path = parts.path.rstrip("/")
        origin = f"{parts.scheme}://{parts.netloc}"
        self.origin = origin
        self.metadata_paths = [PRM_PATH + self.resource_path, PRM_PATH] if self.resource_path else [PRM_PATH]
        self.metadata_url = origin + self.metadata_paths[0]

    def metadata(self) -> dict:
        """RFC 9728 section 2."""
        document = {
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": list(self.dpop.algorithms),
            "dpop_bound_access_tokens_required": False,
        }
        if self.resource_name:
            document["resource_name"] = self.resource_name
        return document

    def protect(self, app: ASGIApp, *, refuse_ambiguous_json: bool = False) -> ASGIApp:
        """``app`` behind the guard, with the metadata routes in front of it.

        ``refuse_ambiguous_json`` refuses bodies that parsers could read differently (a member
        twice, members differing only in case): for an ``app`` that hands the body on to a server
        with another parser, as the gateway does. A Python app reads them as the guard does
        (:mod:`gatehouse.guard.jsonrpc`).
        """
        return GuardedApp(self, app, refuse_ambiguous_json=refuse_ambiguous_json)

    def challenge(self, scopes: list[str], error: str | None = None, description: str | None = None, scheme: str = "Bearer") -> str:
        parts = []
        if error:
            parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_quote(description)}"')
        parts.append(f'resource_metadata="{self.metadata_url}"')
        if scopes:
            parts.append(f'scope="{" ".join(scopes)}"')
        if scheme == "DPoP":
            parts.append(f'algs="{" ".join(self.dpop.algorithms)}"')
        return f"{scheme} " + ", ".join(parts)

    def challenges(
        self, scopes: list[str], error: str | None = None, description: str | None = None, scheme: str = "bearer"
    ) -> list[str]:
        """Both schemes (RFC 9449 section 7.1); the error goes in the challenge of the scheme the client used."""
        if scheme == "dpop":
            return [self.challenge(scopes, error, description, "DPoP"), self.challenge(scopes)]
        return [self.challenge(scopes, error, description), f'DPoP algs="{" ".join(self.dpop.algorithms)}"']


class GuardedApp:
    def __init__(self, guard: Guard, app: ASGIApp, *, refuse_ambiguous_json: bool = False):
        self.guard = guard
        self.app = app
        self.refuse_ambiguous_json = refuse_ambiguous_json
        self._metadata_body = json.dumps(guard.metadata()).encode()
        # a token verified before is found without a coroutine (JWTVerifier, IntrospectionVerifier)
        self._cached_caller = getattr(guard.verifier, "cached_caller", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # one coroutine for the whole per-request path: the MCP app suspends several times
        # per call, and every frame above it is resumed each time (bench/guard.py)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.guard.metadata_paths:
            await self._serve_metadata(scope, send)
            return
        guard = self.guard
        first: Message | None = None
        body = b""
        if scope["method"] == "POST":
            first, body, too_large = await read_body(receive, MAX_BODY)
            if too_large:
                await _json_error(send, 413, "invalid_request", f"the request body is larger than {MAX_BODY} bytes")
                return
        headers = _RequestHeaders(scope["headers"])
        scheme, token = _credentials(headers.authorization)
        caller = self._cached_caller(token) if token and self._cached_caller is not None else None
        if caller is not None and self._decided_without_the_body(scope, scheme, caller, body):
            messages: list[dict] = []
            methods: tuple = ()
        else:
            checked = await self._checked(scope, headers, body, scheme, token, caller, send)
            if checked is None:
                return
            caller, messages, methods = checked

        outgoing = send
        if headers.session_ids or "initialize" in methods:
            outgoing = await self._in_callers_session(headers, caller, send)
            if outgoing is None:
                return

        scope[caller_context.SCOPE_KEY] = caller
        scope[JSONRPC_MESSAGES_KEY] = messages
        # handlers learn who calls from the Caller, never the token itself (no passthrough, RS-8)
        scope["headers"] = headers.passed_on
        token_binding = caller_context.bind(caller)
        exchange_binding = attach(scope, guard.upstream_tokens, token) if guard.upstream_tokens is not None else None
        try:
            replay = _replay(first, receive) if first is not None else receive
            if "tools/list" in methods:
                outgoing = _ToolListFilter(outgoing, guard.policy, caller.scopes).send
            await self.app(scope, replay, outgoing)
        finally:
            if exchange_binding is not None:
                detach(exchange_binding)
            caller_context.unbind(token_binding)

    def _decided_without_the_body(self, scope: Scope, scheme: str, caller: Caller, body: bytes) -> bool:
        """Whether the guard may let the request through unread: a Bearer token verified before
        that holds every scope the policy names, so that no method or tool the body could name
        needs more (RS-6), and a body that cannot start a session, which the guard must bind to
        the caller. ``initialize`` could hide in a string only behind a ``\\u`` escape.

        Not for an app that hands the body on (``refuse_ambiguous_json``): the gateway reads every
        body, to refuse an ambiguous one and to answer each request's ``id`` when the upstream fails.
        """
        return (
            not self.refuse_ambiguous_json
            and scheme == "bearer"
            and b"initialize" not in body
            and b"\\u" not in body
            and b"access_token=" not in scope.get("query_string", b"")
            and "cnf" not in caller.claims
            and self.guard.policy.grants_everything(caller.scopes)
        )

    async def _checked(
        self, scope: Scope, headers: _RequestHeaders, body: bytes, scheme: str, token: str, caller: Caller | None, send: Send
    ) -> tuple[Caller, list[dict], tuple] | None:
        """The caller, the body's messages and their methods, once the body is read and every
        check passed (RFC 6750 section 3, RFC 9449, RS-6); otherwise the refusal is sent and None
        returned."""
        guard = self.guard
        messages: list[dict] = []
        if body:
            try:
                messages = parse_messages(body, refuse_ambiguous=self.refuse_ambiguous_json)
            except NotJSONRPC as exc:
                await send_json(send, 400, jsonrpc_error(-32700, f"Parse error: {exc}"))
                return None
        if len(messages) == 1:
            methods: tuple = (messages[0].get("method"),)
            required = guard.policy.required(methods[0], messages[0].get("params"))
        elif messages:
            methods = tuple(m.get("method") for m in messages)
            required = tuple(dict.fromkeys(s for m in messages for s in guard.policy.required(m.get("method"), m.get("params"))))
        else:
            methods = ()
            required = tuple(guard.policy.default)

        if b"access_token=" in scope.get("query_string", b""):
            await _json_error(send, 400, "invalid_request", "send the access token in the Authorization header, not the URL (RFC 6750 section 2)",
                              challenge=guard.challenge(required, "invalid_request"))
            return None
        if not headers.authorization:
            await _json_error(send, 401, "invalid_token", "this MCP server needs an OAuth access token",
                              challenges=guard.challenges(required))
            return None
        if not token:
            await _json_error(send, 400, "invalid_request", "the Authorization header must be 'Bearer <token>' or 'DPoP <token>'",
                              challenge=guard.challenge(required, "invalid_request"))
            return None
        if caller is None:
            try:
                caller = await guard.verifier.verify(token)
            except TokenRejected as exc:
                await _json_error(send, 401, "invalid_token", exc.description,
                                  challenges=guard.challenges(required, "invalid_token", exc.description, scheme))
                return None
        cnf = caller.claims.get("cnf")
        if cnf is not None or scheme == "dpop":
            try:
                guard.dpop.check(token=token, cnf=cnf, scheme=scheme, proofs=headers.dpop_proofs,
                                 method=scope["method"], url=guard.origin + scope["path"], body=body)
            except DPoPRejected as exc:
                nonce = [(b"dpop-nonce", exc.nonce.encode())] if exc.nonce else []
                await _json_error(send, 401, exc.error, exc.description,
                                  challenges=guard.challenges(required, exc.error, exc.description, scheme), headers=nonce)
                return None
        if guard.policy.missing(caller.scopes, required):
            await _json_error(
                send, 403, "insufficient_scope", f"this request needs the scope(s): {' '.join(required)}",
                challenges=guard.challenges(required, "insufficient_scope", scheme=scheme),
            )
            return None
        return caller, messages, methods

    async def _in_callers_session(self, headers: _RequestHeaders, caller, send: Send) -> Send | None:
        """For a request that names a session or initializes one: ``send``, binding any session
        the answer names to the caller, when the request's session (if any) is the caller's own;
        then the app gets the server's own session id. Otherwise the refusal is sent and None
        returned.

        A server names a new session only in its answer to ``initialize`` (MCP transports,
        "Session Management"), so other requests without a session go out unwrapped: an id a
        server named anyway reaches the client untagged, and the guard refuses it when it comes back.
        """
        binding = self.guard.session_binding
        ids = headers.session_ids
        if len(ids) > 1:
            await send_json(send, 400, jsonrpc_error(-32600, REPEATED_SESSION))
            return None
        if ids:
            server_id = binding.for_server(ids[0], caller)
            if server_id is None:
                await send_json(send, 404, jsonrpc_error(-32001, NOT_YOURS))
                return None
            headers.passed_on = with_session_id(headers.passed_on, server_id)
        return binding.binding_answers(send, caller)

    async def _serve_metadata(self, scope: Scope, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await send_bytes(send, 204, b"", [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"GET"),
                                              (b"access-control-allow-headers", b"mcp-protocol-version"), (b"access-control-max-age", b"86400")])
            return
        await send_bytes(
            send, 200, self._metadata_body,
            [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*"), (b"cache-control", b"public, max-age=300")],
        )


class _RequestHeaders:
    """The headers the guard reads, found in one pass, and those the app behind gets: all but
    ``Authorization`` and ``DPoP`` (RS-8)."""

    __slots__ = ("authorization", "dpop_proofs", "session_ids", "passed_on")

    def __init__(self, headers: list[tuple[bytes, bytes]]):
        self.authorization: list[bytes] = []
        self.dpop_proofs: list[bytes] = []
        self.session_ids: list[bytes] = []
        passed_on: list[tuple[bytes, bytes]] = []
        self.passed_on = passed_on
        for header in headers:
            name = header[0]
            if name in _READ_HEADERS:  # one set lookup for the usual header, not three comparisons
                if name == b"authorization":
                    self.authorization.append(header[1])
                    continue
                if name == b"dpop":
                    self.dpop_proofs.append(header[1])
                    continue
                self.session_ids.append(header[1])
            passed_on.append(header)


def _credentials(authorization: list[bytes]) -> tuple[str, str]:
    """The scheme (lower case) and the token of a lone, well-formed ``Authorization: Bearer``
    or ``DPoP`` header (RFC 6750 section 2.1, RFC 9449 section 7.1); no token otherwise."""
    if len(authorization) != 1:
        return "", ""
    kind, _, token = authorization[0].decode("latin-1").partition(" ")
    token = token.strip()
    scheme = kind.lower()
    if scheme not in SCHEMES or " " in token:
        return scheme, ""
    return scheme, token


def _replay(first: Message, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


async def _json_error(
    send: Send, status: int, error: str, description: str, challenge: str | None = None,
    challenges: Sequence[str] = (), headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """An OAuth error answer; each challenge is its own ``WWW-Authenticate`` field (RFC 9110 section 11.6.1)."""
    fields = [(b"cache-control", b"no-store"), *headers]
    for value in ([challenge] if challenge else challenges):
        fields.append((b"www-authenticate", value.encode()))
    await send_json(send, status, {"error": error, "error_description": description}, fields)


class _ToolListFilter:
    """Buffers a ``tools/list`` answer (JSON or a short SSE stream) and drops tools the caller may not call."""

    def __init__(self, send: Send, policy: Policy, scopes: frozenset[str]):
        self._send = send
        self._policy = policy
        self._scopes = scopes
        self._start: Message | None = None
        self._body = bytearray()

    def _filter_message(self, message: object) -> object:
        if isinstance(message, dict) and isinstance(message.get("result"), dict):
            tools = message["result"].get("tools")
            if isinstance(tools, list):
                message["result"]["tools"] = [
                    t for t in tools if not isinstance(t, dict) or self._policy.may_call(self._scopes, str(t.get("name")))
                ]
        return message

    def _rewrite(self, body: bytes, content_type: str) -> bytes:
        try:
            if content_type.startswith("application/json"):
                return json.dumps(self._filter_message(json.loads(body))).encode()
            if content_type.startswith("text/event-stream"):
                lines = []
                for line in body.decode().split("\n"):
                    if line.startswith("data:"):
                        payload = line[5:].strip()
                        try:
                            line = "data: " + json.dumps(self._filter_message(json.loads(payload)))
                        except ValueError:
                            pass
                    lines.append(line)
                return "\n".join(lines).encode()
        except (ValueError, UnicodeDecodeError):
            return body
        return body

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        headers = [(k, v) for k, v in self._start.get("headers", []) if k.lower() != b"content-length"]
        content_type = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), "")
        body = self._rewrite(bytes(self._body), content_type) if self._start["status"] == 200 else bytes(self._body)
        await self._send({**self._start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self._send({"type": "http.response.body", "body": body})
