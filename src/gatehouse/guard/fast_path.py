"""The gateway's fast path: a plain JSON-RPC POST proxied from the event loop's callbacks.

With clients queueing on one core, every microsecond the gateway spends per request adds to
every client's wait (bench/guard.py). Through ASGI, a proxied request costs a task, a scope,
message dicts for each receive and send, and the coroutine chain of guard and proxy, about as
much as the forwarding itself. The fast path takes the common request, a POST of one JSON-RPC
message with a bearer token the verifier has already checked, and forwards it with no task and
no future: the request is written to a kept-alive upstream connection, and the response is
written back from the upstream connection's parser callbacks.

It never decides anything the guard would decide otherwise. It takes a request only when the
guard's own objects (the verifier's cache, the policy, the session binding) say the guard would
pass it unchanged; everything else goes the ASGI way: a token not checked yet or refused, DPoP,
batches, ``tools/list`` (whose answer the guard filters), GET streams, DELETE, a body the guard
would refuse, a repeated ``Authorization`` or ``Mcp-Session-Id`` header, no idle upstream
connection.
"""

from __future__ import annotations

import json
import logging

from gatehouse.guard.gateway import (
    HOLD_JSON_UP_TO,
    SET_BY_THE_GATEWAY,
    HTTPUpstream,
    gateway_error_body,
    gateway_error_status,
)
from gatehouse.guard.guard import MAX_BODY
from gatehouse.guard.jsonrpc import NotJSONRPC, parse_body
from gatehouse.guard.sessions import SESSION_HEADER, SessionBinding, with_session_id
from gatehouse.guard.sse import EventRelay, open_request_ids
from gatehouse.guard.upstream_client import UpstreamBroken, UpstreamError, UpstreamRefused, UpstreamResponse

log = logging.getLogger("gatehouse.gateway")

_JSON = [(b"content-type", b"application/json")]


class FastForwarder:
    """Decides whether a request may take the fast path, and starts it if so."""

    def __init__(self, guard, upstream: HTTPUpstream):
        self.guard = guard
        self.upstream = upstream
        self.cached_caller = getattr(guard.verifier, "cached_caller", None)

    def try_forward(self, front, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Forward the request and return True, or return False and leave it to the ASGI app."""
        if self.cached_caller is None or not body or len(body) > MAX_BODY:
            return False
        authorization = session_id = None
        for name, value in headers:
            if name == b"authorization":
                if authorization is not None:
                    return False
                authorization = value
            elif name == b"dpop":
                return False
            elif name == SESSION_HEADER:
                if session_id is not None:
                    return False
                session_id = value
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return False
        token = authorization[7:].strip()
        if not token or b" " in token:
            return False
        caller = self.cached_caller(token.decode("latin-1"))
        if caller is None or "cnf" in caller.claims:
            return False
        try:
            message = parse_body(body)
        except NotJSONRPC:
            return False
        if not isinstance(message, dict) or message.get("method") == "tools/list":
            return False
        policy = self.guard.policy
        if policy.missing(caller.scopes, policy.required(message.get("method"), message.get("params"))):
            return False
        upstream = self.upstream
        forwarded = upstream.forwarded_headers(headers, caller)
        if session_id is not None:
            server_id = self.guard.session_binding.for_server(session_id, caller)
            if server_id is None:
                return False
            forwarded = with_session_id(forwarded, server_id)
        connection = upstream.pool.idle_connection()
        if connection is None:
            return False
        head = upstream.pool.request_head("POST", upstream.path, forwarded, body)
        exchange = Exchange(front, upstream, connection, caller, open_request_ids([message]), self.guard.session_binding)
        front.exchange = exchange
        connection.start(head, body, exchange, upstream.read_timeout)
        return True


class Exchange:
    """One forwarded request: relays the upstream's response to the client as it arrives.

    Same rules as the ASGI proxy in gateway.py: a JSON answer is held until whole (up to
    1 MiB), so an upstream that breaks off before the end still becomes a 502; an SSE answer goes
    on event by event, and a break answers each open request with a JSON-RPC error.
    """

    def __init__(
        self, front, upstream: HTTPUpstream, connection, caller, open_ids: set, session_binding: SessionBinding
    ):
        self.front = front
        self.session_binding = session_binding
        self.upstream = upstream
        self.connection = connection
        self.caller = caller
        self.open_ids = open_ids
        self.response: UpstreamResponse | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.held: list[bytes] = []
        self.held_size = 0
        self.relay: EventRelay | None = None
        self.streaming = False
        self.refused = False  # the upstream answered 401: the client gets a 502 instead

    # upstream connection callbacks

    def on_head(self, response: UpstreamResponse) -> None:
        self.response = response
        if response.status == 401:
            self.refused = True
            return
        headers = [(k, v) for k, v in response.headers if k not in SET_BY_THE_GATEWAY]
        self.headers = self.session_binding.bound_headers(headers, self.caller)
        if (response.header(b"content-type") or b"").startswith(b"text/event-stream"):
            self.relay = EventRelay(self.open_ids)
            self.streaming = True
            self.front.fast_start(response.status, self.headers)

    @property
    def may_stay_silent(self) -> bool:
        return self.relay is not None

    def on_chunk(self, chunk: bytes) -> None:
        if self.refused:
            return
        if self.relay is not None:
            events = self.relay.whole_events(chunk)
            if events:
                self._write(events)
        elif self.streaming:
            self._write(chunk)
        else:
            self.held.append(chunk)
            self.held_size += len(chunk)
            if self.held_size > HOLD_JSON_UP_TO:
                self.streaming = True
                self.front.fast_start(self.response.status, self.headers)
                self._write(b"".join(self.held))
                self.held = []

    def on_end(self) -> None:
        if self.refused:
            self.on_error(UpstreamRefused())
            return
        if self.streaming:
            self.front.fast_end()
            return
        self.front.fast_whole(self.response.status, self.headers, b"".join(self.held))

    def on_error(self, error: UpstreamError) -> None:
        log.warning("upstream %s: %s", self.upstream.upstream, error)
        if not self.streaming:
            body = json.dumps(gateway_error_body(error, self.open_ids)).encode()
            self.front.fast_whole(gateway_error_status(error), _JSON, body)
            return
        if self.relay is not None and isinstance(error, UpstreamBroken):
            errors = self.relay.errors_for_open_requests(f"{error}; the request may not have been carried out, try again")
            if errors:
                self._write(errors)
        self.front.fast_end()

    # client side

    def client_left(self) -> None:
        self.connection.abandon()

    def client_drained(self) -> None:
        self.connection.resume()

    def _write(self, data: bytes) -> None:
        if self.front.fast_body(data):
            self.connection.pause()
