"""netguard: the SSRF defence under CIMD and jwks_uri fetches (AS-5, S-C4).

No test here sends a packet beyond loopback: ``socket.socket.connect`` is replaced by a guard
that records every attempt and fails on any non-loopback address, and DNS answers for the
names below are faked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpcore2
import pytest
from starlette.applications import Starlette
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from gatehouse import netguard
from gatehouse.netguard import (
    BlockedAddressError,
    FetchError,
    GuardedBackend,
    check_fetchable_url,
    fetch_limited,
    is_forbidden_address,
    is_loopback_host,
)

FAKE_DNS = {
    "public.example.com": ["93.184.216.34"],
    "private.example.com": ["10.0.0.7"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": ["93.184.216.34", "10.0.0.7"],
    "v6private.example.com": ["fd12:3456::1"],
    "mapped.example.com": ["::ffff:192.168.0.1"],
    "loopback.example.com": ["127.0.0.1"],
}


class Outbound:
    def __init__(self):
        self.attempts: list[tuple] = []
        self.lookups: list[str] = []


@pytest.fixture
def outbound(monkeypatch) -> Outbound:
    """Record connects (loopback ones pass through, others fail the test) and fake DNS."""
    record = Outbound()
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock, address):
        record.attempts.append(address)
        if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            raise AssertionError(f"a connection to {address} was attempted")
        return real_connect(sock, address)

    def getaddrinfo(host, port, *args, **kwargs):
        record.lookups.append(host)
        if host in FAKE_DNS:
            answers = []
            for address in FAKE_DNS[host]:
                if ":" in address:
                    answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
                else:
                    answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
            return answers
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return record


# -- is_forbidden_address ----------------------------------------------------------------------

FORBIDDEN_ALWAYS = [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.1.1",
    "169.254.169.254", "169.254.0.1", "100.64.0.1", "0.0.0.0", "255.255.255.255",
    "224.0.0.1", "239.255.255.250", "192.0.2.1", "198.18.0.1",
    "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "ff02::1", "ff0e::1", "2001:db8::1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
]
LOOPBACK = ["127.0.0.1", "127.0.0.53", "127.255.255.254", "::1", "::ffff:127.0.0.1"]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", FORBIDDEN_ALWAYS)
@pytest.mark.parametrize("allow_loopback", [False, True])
def test_S_C4_private_link_local_and_special_addresses_are_forbidden(address, allow_loopback):
    assert is_forbidden_address(address, allow_loopback) is True


@pytest.mark.parametrize("address", LOOPBACK)
def test_S_C4_loopback_is_forbidden_unless_allowed(address):
    assert is_forbidden_address(address, allow_loopback=False) is True
    assert is_forbidden_address(address, allow_loopback=True) is False


@pytest.mark.parametrize("address", PUBLIC)
@pytest.mark.parametrize("allow_loopback", [False, True])
def test_public_addresses_are_allowed(address, allow_loopback):
    assert is_forbidden_address(address, allow_loopback) is False


@pytest.mark.parametrize(
    ("host", "expected"),
    [("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.1.2.3", True), ("[::1]", True), ("::1", True),
     ("localhost.attacker.example", False), ("127.0.0.1.nip.io", False), ("10.0.0.1", False), ("", False), (None, False)],
)
def test_is_loopback_host(host, expected):
    assert is_loopback_host(host) is expected


@pytest.mark.parametrize(
    ("url", "allow", "ok"),
    [
        ("https://client.example/c.json", False, True),
        ("http://client.example/c.json", False, False),
        ("http://client.example/c.json", True, False),
        ("http://127.0.0.1:8000/c.json", False, False),
        ("http://127.0.0.1:8000/c.json", True, True),
        ("http://localhost/c.json", True, True),
        ("http://169.254.169.254/latest/meta-data/", True, False),
        ("ftp://client.example/c.json", True, False),
        ("file:///etc/passwd", True, False),
        ("https:///c.json", False, False),
    ],
)
def test_check_fetchable_url(url, allow, ok):
    if ok:
        check_fetchable_url(url, allow)
    else:
        with pytest.raises(FetchError):
            check_fetchable_url(url, allow)


# -- GuardedBackend.connect_tcp: the check is on resolved addresses, before connect ----------------


@pytest.mark.parametrize(
    "host",
    ["private.example.com", "metadata.example.com", "mixed.example.com", "v6private.example.com", "mapped.example.com",
     "loopback.example.com", "10.0.0.1", "169.254.169.254", "127.0.0.1", "::1", "localhost"],
)
def test_S_C4_connect_tcp_refuses_internal_addresses_after_dns_before_connecting(outbound, host):
    backend = GuardedBackend(allow_loopback=False)
    with pytest.raises(BlockedAddressError):
        backend.connect_tcp(host, 443, timeout=1)
    assert outbound.attempts == []
    assert outbound.lookups == [host]


@pytest.mark.parametrize("host", ["private.example.com", "metadata.example.com", "mixed.example.com"])
def test_S_C4_allowing_loopback_does_not_allow_private_addresses(outbound, host):
    with pytest.raises(BlockedAddressError):
        GuardedBackend(allow_loopback=True).connect_tcp(host, 443, timeout=1)
    assert outbound.attempts == []


def test_connect_tcp_connects_to_the_checked_address_once(outbound, monkeypatch):
    """The name is resolved once and the connection goes to that checked address (no second
    lookup that a rebinding DNS server could answer differently)."""
    connected = []

    def fake_connect(sock, address):
        connected.append(address)
        raise ConnectionRefusedError("not really connecting")

    monkeypatch.setattr(socket.socket, "connect", fake_connect)
    with pytest.raises(httpcore2.ConnectError) as caught:
        GuardedBackend(allow_loopback=False).connect_tcp("public.example.com", 443, timeout=1)
    assert not isinstance(caught.value, BlockedAddressError)
    assert connected == [("93.184.216.34", 443)]
    assert outbound.lookups == ["public.example.com"]


def test_unresolvable_host_is_a_connect_error(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(httpcore2.ConnectError) as caught:
        GuardedBackend(allow_loopback=False).connect_tcp("nowhere.invalid", 443, timeout=1)
    assert not isinstance(caught.value, BlockedAddressError)


def test_loopback_allowed_backend_really_connects_to_loopback(outbound, loopback_server):
    async def ok(request):
        return JSONResponse({})

    with loopback_server(Starlette(routes=[Route("/", ok)])) as base:
        port = int(base.rsplit(":", 1)[1])
        stream = GuardedBackend(allow_loopback=True).connect_tcp("127.0.0.1", port, timeout=5)
        stream.close()
    assert outbound.attempts == [("127.0.0.1", port)]


# -- fetch_limited: redirects, size cap, timeout ------------------------------------------------


def serve(routes: dict) -> Starlette:
    def endpoint(factory):
        async def handler(request):
            value = factory(request)
            if asyncio.iscoroutine(value):
                value = await value
            return value

        return handler

    return Starlette(routes=[Route(path, endpoint(factory)) for path, factory in routes.items()])


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/client.json",
        "https://[fd00:ec2::254]/client.json",
        "https://metadata.example.com/client.json",
        "https://private.example.com/client.json",
        "http://localhost.example.com/client.json",
    ],
)
def test_S_C4_redirect_to_internal_address_is_refused_before_connecting(outbound, loopback_server, target):
    with loopback_server(serve({"/start": lambda r: RedirectResponse(target, status_code=302)})) as base:
        port = int(base.rsplit(":", 1)[1])
        with pytest.raises(FetchError):
            fetch_limited(f"{base}/start", max_bytes=5120, timeout=2, allow_insecure_loopback=True)
    assert outbound.attempts and all(a[:2] == ("127.0.0.1", port) for a in outbound.attempts), outbound.attempts


def test_S_C4_loopback_is_refused_when_not_allowed(outbound, loopback_server):
    """Production setting: a live loopback server is reached neither over http, nor over https
    by address, nor through a name that resolves to loopback."""
    with loopback_server(serve({"/doc": lambda r: JSONResponse({"secret": "internal"})})) as base:
        port = int(base.rsplit(":", 1)[1])
        for target in (f"{base}/doc", f"https://127.0.0.1:{port}/doc", f"https://loopback.example.com:{port}/doc"):
            with pytest.raises(FetchError):
                fetch_limited(target, max_bytes=5120, timeout=2, allow_insecure_loopback=False)
    assert outbound.attempts == []


def test_redirect_within_loopback_is_followed_in_development(outbound, loopback_server):
    routes = {"/start": lambda r: RedirectResponse("/doc", status_code=302), "/doc": lambda r: JSONResponse({"ok": True})}
    with loopback_server(serve(routes)) as base:
        fetched = fetch_limited(f"{base}/start", max_bytes=5120, timeout=2, allow_insecure_loopback=True)
    assert fetched.status == 200 and fetched.json() == {"ok": True} and fetched.url == f"{base}/doc"


def test_too_many_redirects_is_a_fetch_error(loopback_server):
    routes = {"/loop": lambda r: RedirectResponse("/loop", status_code=302)}
    with loopback_server(serve(routes)) as base:
        with pytest.raises(FetchError, match="redirected more than"):
            fetch_limited(f"{base}/loop", max_bytes=5120, timeout=2, allow_insecure_loopback=True, max_redirects=3)


def test_redirect_without_location_is_a_fetch_error(loopback_server):
    with loopback_server(serve({"/r": lambda r: Response(status_code=302)})) as base:
        with pytest.raises(FetchError):
            fetch_limited(f"{base}/r", max_bytes=5120, timeout=2, allow_insecure_loopback=True)


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_cap_is_a_fetch_error(loopback_server, chunked):
    def big(request):
        if chunked:
            async def body():
                for _ in range(100):
                    yield b"a" * 100

            return StreamingResponse(body(), media_type="application/json")
        return Response(b"a" * 6000, media_type="application/json")

    with loopback_server(serve({"/big": big})) as base:
        with pytest.raises(FetchError, match="more than 5120 bytes"):
            fetch_limited(f"{base}/big", max_bytes=5120, timeout=2, allow_insecure_loopback=True)


def test_body_at_the_cap_is_read(loopback_server):
    with loopback_server(serve({"/ok": lambda r: Response(b"a" * 5120)})) as base:
        assert len(fetch_limited(f"{base}/ok", max_bytes=5120, timeout=2, allow_insecure_loopback=True).body) == 5120


def test_compressed_answers_are_not_requested(loopback_server):
    seen = {}

    def record(request):
        seen["accept-encoding"] = request.headers.get("accept-encoding")
        return JSONResponse({"client_name": "x" * 1000})

    with loopback_server(serve({"/doc": record})) as base:
        fetched = fetch_limited(f"{base}/doc", max_bytes=5120, timeout=2, allow_insecure_loopback=True)
    assert seen["accept-encoding"] == "identity"
    assert fetched.json() == {"client_name": "x" * 1000}


def test_slow_answer_is_a_fetch_error(loopback_server):
    async def slow(request):
        await asyncio.sleep(3)
        return JSONResponse({})

    with loopback_server(serve({"/slow": slow})) as base:
        with pytest.raises(FetchError, match="did not answer"):
            fetch_limited(f"{base}/slow", max_bytes=5120, timeout=0.5, allow_insecure_loopback=True)


def test_not_json_is_a_fetch_error(loopback_server):
    with loopback_server(serve({"/html": lambda r: Response("<html></html>", media_type="text/html")})) as base:
        fetched = fetch_limited(f"{base}/html", max_bytes=5120, timeout=2, allow_insecure_loopback=True)
        with pytest.raises(FetchError, match="did not return JSON"):
            fetched.json()


def test_environment_proxies_are_ignored(outbound, loopback_server, monkeypatch):
    """A proxy from the environment would connect on the guard's behalf: it is not used."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with pytest.raises(FetchError):
        fetch_limited("https://private.example.com/c.json", max_bytes=5120, timeout=2)
    assert outbound.attempts == []
    with loopback_server(serve({"/doc": lambda r: JSONResponse({"ok": 1})})) as base:
        assert fetch_limited(f"{base}/doc", max_bytes=5120, timeout=2, allow_insecure_loopback=True).json() == {"ok": 1}


def test_netguard_resolves_through_the_socket_module():
    """The monkeypatching above relies on this: netguard looks names up via socket.getaddrinfo."""
    assert netguard.socket is socket


@pytest.mark.parametrize(
    "address, forbidden",
    [
        ("64:ff9b::a00:1", True),  # NAT64 to 10.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 to 169.254.169.254
        ("2002:a00:1::1", True),  # 6to4 from 10.0.0.1
        ("::10.0.0.1", True),  # IPv4-compatible
        ("64:ff9b::808:808", False),  # NAT64 to a public address
    ],
)
def test_ipv6_forms_that_lead_to_ipv4_are_judged_by_their_ipv4(address, forbidden):
    assert is_forbidden_address(address, allow_loopback=False) is forbidden
