"""The gateway's fast path (gatehouse.guard.fast_path): same answers as the ASGI way, same refusals.

A plain JSON-RPC POST whose token the verifier already checked goes straight to a kept-alive
upstream connection. These tests make sure that it did take the fast path (a counter on the
forwarder), and that what the client sees is what the ASGI path gives: the upstream's answer,
the client's token never forwarded (RS-8), 502/504 naming the request, an SSE break answered with
a JSON-RPC error, responses in request order on one connection.
"""

from __future__ import annotations

import contextlib
import json
import socket

import httpx2
import pytest

from gatehouse.config import ResourceConfig
from tests.integration.test_gateway import IDENTITY_HEADER, running_gateway, upstream_app
from tests.support.scripted_upstream import CUT_JSON, CUT_SSE, SILENT, UNAUTHORIZED, scripted_upstream


@pytest.fixture
def store_url(tmp_path):
    """The fast path never touches the AS's store: one backend is enough."""
    return f"sqlite:///{tmp_path / 'gatehouse.db'}"


@pytest.fixture
def as_overrides(extra_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="Upstream tools", scopes=["tools:read", "tools:write"])]}


@contextlib.contextmanager
def gateway(live_as, sock, resource, upstream_url, read_timeout=30.0):
    """Yields the list of the fast path's decisions (True: forwarded), one per POST it was offered."""
    decisions: list[bool] = []
    with running_gateway(live_as, sock, resource, upstream_url, read_timeout=read_timeout) as app:
        forwarder = app.http_protocol.forwarder
        offer = forwarder.try_forward

        def counted(front, headers, body):
            decisions.append(offer(front, headers, body))
            return decisions[-1]

        forwarder.try_forward = counted
        yield decisions


def call(request_id: int, name: str = "whoami") -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": {}}}


async def test_a_session_with_the_sdk_upstream_goes_the_fast_way_after_the_first_check(
    live_as, loopback_server, extra_socket, extra_resource
):
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    token, client_id = live_as.machine_token(extra_resource, "tools:read")
    with loopback_server(upstream_app()) as upstream, gateway(live_as, extra_socket, extra_resource, f"{upstream}/mcp") as decisions:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", IDENTITY_HEADER: "forged"}, timeout=30) as http:
            async with streamable_http_client(extra_resource, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    results = [await session.call_tool("whoami", {}) for _ in range(4)]
                    with pytest.raises(MCPError) as denied:
                        await session.call_tool("shout", {"text": "hi"})
    # a call can find every upstream connection still finishing the previous SSE answer: then it goes the ASGI way
    assert decisions.count(True) >= 1, f"calls after the first check take the fast path: {decisions}"
    for result in results:
        seen = json.loads(result.content[0].text)
        assert seen["authorization"] is None, "the client's token never reaches the upstream (RS-8)"
        assert seen["subject"] == client_id, "the caller's identity replaces the forged header"
    assert denied.value is not None and decisions[-1] is False, "a call outside the token's scopes is left to the guard, which refuses it"


def test_a_missing_scope_is_left_to_the_guard(live_as, extra_socket, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            assert http.post(extra_resource, json=call(1)).status_code == 200
            refused = http.post(extra_resource, json=call(2, "shout"))
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert decisions[-1] is False
    assert [r["id"] for r in upstream.requests] == [1], "the refused call never reached the upstream"


def test_pipelined_requests_are_answered_in_order(live_as, extra_socket, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            http.post(extra_resource, json=call(1))  # verifies and caches the token, opens an upstream connection
        host, port = extra_socket.getsockname()
        requests = b""
        for request_id in (2, 3, 4):
            body = json.dumps(call(request_id)).encode()
            requests += (
                b"POST /mcp HTTP/1.1\r\nhost: %s:%d\r\nauthorization: Bearer %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (host.encode(), port, token.encode(), len(body), body)
            )
        with socket.create_connection((host, port), timeout=10) as raw:
            raw.sendall(requests)
            answers = _read_responses(raw, 3)
    assert [json.loads(body)["id"] for _, body in answers] == [2, 3, 4]
    assert all(status == 200 for status, _ in answers)
    assert True in decisions


@pytest.mark.parametrize("fault, status", [(CUT_JSON, 502), (SILENT, 504)])
def test_an_upstream_failure_on_the_fast_path_names_the_request(live_as, extra_socket, extra_resource, fault, status):
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url, read_timeout=1.0) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            http.post(extra_resource, json=call(1))
            upstream.script.append(fault)
            failed = http.post(extra_resource, json=call(2))
            after = http.post(extra_resource, json=call(3))
    assert decisions[1] is True, "the failing request was on the fast path"
    assert failed.status_code == status
    assert failed.json()["id"] == 2 and "try again" in failed.json()["error"]["message"]
    assert after.status_code == 200 and after.json()["id"] == 3, "the gateway goes on serving"


def test_an_sse_answer_cut_short_on_the_fast_path_ends_with_an_error_for_the_request(live_as, extra_socket, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            http.post(extra_resource, json=call(1))
            upstream.script.append(CUT_SSE)
            cut = http.post(extra_resource, json=call(7))
    assert decisions[1] is True
    assert cut.status_code == 200 and cut.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in cut.text.splitlines() if line.startswith("data:")]
    assert events[0]["method"] == "notifications/progress", "what arrived before the break is relayed"
    assert events[-1]["id"] == 7 and events[-1]["error"]["code"] == -32603


def test_a_client_that_leaves_closes_its_upstream_connection(live_as, extra_socket, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            http.post(extra_resource, json=call(1))
        upstream.script.append(SILENT)
        body = json.dumps(call(2)).encode()
        host, port = extra_socket.getsockname()
        with socket.create_connection((host, port), timeout=10) as raw:
            raw.sendall(b"POST /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                        % (token.encode(), len(body), body))
            _wait_for(lambda: len(upstream.requests) == 2)
        _wait_for(lambda: upstream.closed_connections >= 1)
    assert decisions[-1] is True


def _wait_for(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP/1.1 responses with Content-Length bodies, read off one connection."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        answers.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_a_request_with_two_session_ids_is_refused_on_both_paths(live_as, loopback_server, extra_socket, extra_resource):
    """MCP security best practices, "Session Hijacking": the session the gateway checks the caller
    against must be the one the upstream acts on. With two ``Mcp-Session-Id`` headers the gateway
    and the upstream could each take a different one (Starlette takes the first), so such a
    request is refused, whether the fast path or the ASGI way is offered it first."""
    owner, owner_id = live_as.machine_token(extra_resource, "tools:read")
    intruder, _ = live_as.machine_token(extra_resource, "tools:read")
    cold_intruder, _ = live_as.machine_token(extra_resource, "tools:read")
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    accept = ("Accept", "application/json, text/event-stream")

    def post(token: str, message: dict, *session_ids: str) -> httpx2.Response:
        headers = [accept, ("Authorization", f"Bearer {token}"), *(("Mcp-Session-Id", s) for s in session_ids)]
        return httpx2.post(extra_resource, json=message, headers=headers, timeout=30)

    with loopback_server(upstream_app()) as upstream, gateway(live_as, extra_socket, extra_resource, f"{upstream}/mcp") as decisions:
        victim_session = post(owner, initialize).headers["mcp-session-id"]
        own_session = post(intruder, initialize).headers["mcp-session-id"]  # the intruder's token is now verified and cached
        offered_before = len(decisions)
        warm = [post(intruder, call(2), victim_session, own_session), post(intruder, call(3), own_session, victim_session)]
        fast_path_decisions = decisions[offered_before:]
        cold = post(cold_intruder, call(4), victim_session, own_session)
        owners_call = post(owner, call(5), victim_session)
    assert fast_path_decisions == [False, False], "the fast path leaves a repeated session header to the ASGI way"
    for refused in [*warm, cold]:
        assert refused.status_code == 400
        assert "Mcp-Session-Id" in refused.json()["error"]["message"]
    assert owners_call.status_code == 200, "the owner's session was left intact"
    (data,) = [line[len("data: "):] for line in owners_call.text.splitlines() if line.startswith("data: ")]
    assert json.loads(json.loads(data)["result"]["content"][0]["text"])["subject"] == owner_id


def test_a_body_with_a_member_twice_is_left_to_the_guard(live_as, extra_socket, extra_resource):
    """The fast path reads bodies as the guard does: one the upstream could read differently
    (here ``name`` twice) is left to the guard, which refuses it."""
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    doubled = b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "name": "shout", "arguments": {}}}'
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, timeout=30) as http:
            assert http.post(extra_resource, json=call(1)).status_code == 200
            refused = http.post(extra_resource, content=doubled)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32700
    assert decisions[-1] is False
    assert [r["id"] for r in upstream.requests] == [1], "the refused call never reached the upstream"


def test_headers_that_could_pass_for_the_gateways_own_are_not_forwarded(live_as, extra_socket, extra_resource):
    """Servers that read headers CGI-style (``HTTP_X_GATEHOUSE_SUBJECT``) take ``_`` for ``-``:
    a client's ``X_Gatehouse_Subject`` must not reach the upstream beside the gateway's
    ``X-Gatehouse-Subject``, nor ``Proxy`` (httpoxy, CVE-2016-5385), on either path."""
    token, client_id = live_as.machine_token(extra_resource, "tools:read")
    forged = {"X_Gatehouse_Subject": "admin", "x_gatehouse-subject": "admin", "Proxy": "http://127.0.0.1:9"}
    with scripted_upstream([]) as upstream, gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}", **forged}, timeout=30) as http:
            assert http.post(extra_resource, json=call(1)).status_code == 200  # the ASGI way: the token is new
            assert http.post(extra_resource, json=call(2)).status_code == 200  # the fast path
    assert decisions[-1] is True
    for headers in upstream.request_headers:
        cgi_names = [name.upper().replace("-", "_") for name, _ in headers]
        assert cgi_names.count(IDENTITY_HEADER.upper().replace("-", "_")) == 1, headers
        assert (IDENTITY_HEADER, client_id) in headers or (IDENTITY_HEADER.lower(), client_id) in headers
        assert "PROXY" not in cgi_names


def test_an_upstream_401_is_the_gateways_problem_not_the_clients(live_as, extra_socket, extra_resource):
    """An upstream that wants other credentials from the gateway answers 401 with its own
    challenge. Passed on, it would send the client to re-authorize at an authorization server that
    is not the gateway's, again and again; the client gets a 502 that says whose credentials are
    wrong, and no challenge but the gateway's own. On both paths."""
    token, _ = live_as.machine_token(extra_resource, "tools:read")
    with scripted_upstream([UNAUTHORIZED, None, UNAUTHORIZED]) as upstream, \
            gateway(live_as, extra_socket, extra_resource, upstream.url) as decisions:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            answers = [http.post(extra_resource, json=call(n)) for n in (1, 2, 3)]  # the ASGI way, then the fast path
    assert decisions[-1] is True
    for refused, request_id in ((answers[0], 1), (answers[2], 3)):
        assert refused.status_code == 502
        assert "www-authenticate" not in refused.headers
        error = refused.json()
        assert error["id"] == request_id and "--upstream-headers-file" in error["error"]["message"]
    assert answers[1].status_code == 200
