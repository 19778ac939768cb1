"""The guard's own CPU per ``tools/call``, measured in-process: no HTTP, no server, no other tenant.

The load test's ratio carries a few percent of noise on this machine (two processes of the same
program differ by that much), which is as large as what the guard costs. Here the guard runs
around an app that answers at once, called directly as ASGI, against the same app unwrapped:
the difference is what the guard adds to every call (the verified-token cache lookup, the JSON-RPC
parse with its duplicate-member checks, the policy, the session binding, the caller context).
Compared with the unguarded server's CPU per call from the load test, it gives the ratio the
guard would keep with no noise at all.
"""

from __future__ import annotations

import asyncio
import statistics
import time

CALLS = 20_000
BATCHES = 5


async def _answer_at_once(scope, receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'})


class _PublicKey:
    generation = 0

    def __init__(self, key):
        self._key = key

    async def key(self, kid: str):
        return self._key


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "",
        "headers": list(headers), "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 9), "client": ("127.0.0.1", 1),
    }  # fmt: skip


async def _call(app, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    delivered = False
    status = 0

    async def receive():
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(headers), receive, send)
    return status


async def _microseconds_per_call(app, headers, body: bytes) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        await _call(app, headers, body)
    return (time.perf_counter() - started) / CALLS * 1e6


async def _measure(mint, issuer: str, scope: str, body: bytes) -> float:
    from joserfc.jwk import ECKey

    from gatehouse.guard import Guard, JWTVerifier, Policy

    resource = "http://127.0.0.1:9/mcp"
    verifier = JWTVerifier(issuers=[issuer], audience=resource, keys=_PublicKey(ECKey.import_key(mint.key.as_dict(private=False))))
    guarded = Guard(resource=resource, authorization_servers=[issuer], verifier=verifier,
                    policy=Policy(tools={"echo": [scope]})).protect(_answer_at_once)
    headers = [
        (b"host", b"127.0.0.1:9"), (b"accept", b"application/json, text/event-stream"), (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + mint.token(resource).encode()), (b"mcp-protocol-version", b"2025-06-18"),
        (b"content-length", str(len(body)).encode()),
    ]  # fmt: skip
    status = await _call(guarded, headers, body)
    if status != 200:
        raise RuntimeError(f"the guard answered {status} to the benchmark's call in-process")
    added = []
    for _ in range(BATCHES):
        bare = await _microseconds_per_call(_answer_at_once, headers, body)
        added.append(await _microseconds_per_call(guarded, headers, body) - bare)
    return statistics.median(added)


def guard_cpu_per_call_us(mint, issuer: str, scope: str, body: bytes) -> float:
    """Microseconds of CPU the guard adds to one ``tools/call`` with a token it has seen (median of batches)."""
    return asyncio.run(_measure(mint, issuer, scope, body))


def expected_ratio(added_us: float, unguarded_requests_per_cpu_second: float) -> float:
    """The share of unguarded throughput left when every call costs ``added_us`` more CPU."""
    per_call_us = 1e6 / unguarded_requests_per_cpu_second
    return per_call_us / (per_call_us + added_us)
