"""What the guard adds to each ``tools/call`` of the SDK server, measured in one process.

The load test's ratio for the guard carries a few percent of noise on this machine (two processes
of the same program differ by that much), which is as large as what the guard costs. Here the
benchmark's SDK server (``apps/guard_sdk.py``) is called directly as ASGI, bare and behind the
guard, in alternating batches in this one process: no HTTP, no second process, no drift between
the two. The figures:

* the guard around an app that answers at once: the guard's own work (verified-token cache,
  policy, caller context);
* the guard around the SDK server, against the same server bare: what a call really costs more,
  the guard's work plus what it does to the server's (caches shared with more code). The
  benchmark's token holds the one scope the policy names, so the guard lets the call through
  without reading its body (no tool could need more);
* the same with a policy that also names a scope the token lacks (``notes:write`` for another
  tool): the guard reads the body, with the SDK's own parser, to find the tool;
* a do-nothing ASGI layer around the same server, against it bare: the control. What it adds is
  the harness's own error; the guard's figure means something only well above it.

Bare and guarded are one server instance, called with and without the guard in front, so no
difference between two instances (where their objects lie in memory, say) enters the figure:
on 2026-11-28, with two instances, two bare servers differed by up to 42 us a call, and the
do-nothing layer came out anywhere from -85 to +102 us with batches of 250 calls.

The second and the third are what count, and they are not the first: beside the SDK's long call, whatever code
the guard runs that the SDK does not (another JSON parser, OpenSSL's digest, a regular
expression) falls out of the CPU's caches between calls and costs several microseconds a
request, however little it costs in a tight loop.
"""

from __future__ import annotations

import asyncio
import statistics
import time

CALLS = 40  # per batch: batches of well under a tenth of a second, so the machine's drift falls on both alike
BATCHES = 256  # 2026-11-28: the do-nothing layer's figure held within -2 to +10 us in three runs (a 1,100 to 1,800 us call)


async def _answer_at_once(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
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


async def _started(app) -> asyncio.Task:
    """Run ``app``'s lifespan (the SDK's session manager) until startup completes."""
    events: asyncio.Queue = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})
    ready = asyncio.Event()

    async def send(message):
        if message["type"].startswith("lifespan.startup."):
            ready.set()

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, events.get, send))
    await ready.wait()
    return task


def _do_nothing_around(app):
    async def layer(scope, receive, send) -> None:
        await app(scope, receive, send)

    return layer


async def _added(bare, guarded, headers, body: bytes) -> tuple[float, float]:
    """Median per-call time of ``bare`` and median time ``guarded`` adds, over alternating batches."""
    for app in (bare, guarded):
        status = await _call(app, headers, body)
        if status != 200:
            raise RuntimeError(f"the benchmark's call got {status} in-process")
    bare_us, added_us = [], []
    for batch in range(BATCHES):
        pair = (bare, guarded) if batch % 2 else (guarded, bare)
        times = {id(app): await _microseconds_per_call(app, headers, body) for app in pair}
        bare_us.append(times[id(bare)])
        added_us.append(times[id(guarded)] - times[id(bare)])
    return statistics.median(bare_us), statistics.median(added_us)


async def _measure(mint, issuer: str, scope: str, body: bytes) -> dict[str, float]:
    from apps.guard_sdk import _sdk_app, _server
    from joserfc.jwk import ECKey

    from gatehouse.guard import Guard, JWTVerifier, Policy

    resource = "http://127.0.0.1:9/mcp"
    public_key = _PublicKey(ECKey.import_key(mint.key.as_dict(private=False)))

    def guard(**tools: list[str]):
        verifier = JWTVerifier(issuers=[issuer], audience=resource, keys=public_key)
        policy = Policy(tools={"echo": [scope], **tools})
        return Guard(resource=resource, authorization_servers=[issuer], verifier=verifier, policy=policy)

    headers = [
        (b"host", b"127.0.0.1:9"), (b"accept", b"application/json, text/event-stream"), (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + mint.token(resource).encode()), (b"mcp-protocol-version", b"2025-06-18"),
        (b"content-length", str(len(body)).encode()),
    ]  # fmt: skip
    _, own = await _added(_answer_at_once, guard().protect(_answer_at_once), headers, body)
    sdk = _sdk_app(_server())
    lifespan = await _started(sdk)
    try:
        _, control_us = await _added(sdk, _do_nothing_around(sdk), headers, body)
        sdk_us, added_us = await _added(sdk, guard().protect(sdk), headers, body)
        _, reading_us = await _added(sdk, guard(write=["notes:write"]).protect(sdk), headers, body)
    finally:
        lifespan.cancel()
    return {
        "guard_own_us": own, "sdk_us": sdk_us, "added_to_sdk_us": added_us, "ratio": sdk_us / (sdk_us + added_us),
        "added_reading_the_body_us": reading_us, "ratio_reading_the_body": sdk_us / (sdk_us + reading_us),
        "control_added_us": control_us,
    }  # fmt: skip


def guard_cost(mint, issuer: str, scope: str, body: bytes) -> dict[str, float]:
    """The guard's own microseconds per call, the SDK server's, what the guard adds to it and the
    ratio that leaves (without and with reading the body), and what a do-nothing layer adds (the
    harness's error)."""
    return asyncio.run(_measure(mint, issuer, scope, body))
