"""Outbound HTTP that cannot be aimed at internal addresses (SSRF defence, AS-5, S-C4, CL-17).

Every TCP connection, including each hop of a redirect, resolves the host name once and
refuses it when any address is loopback, private, link-local (cloud metadata), multicast,
reserved or unspecified; then it connects to the checked address, so a second DNS answer
cannot swap it (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpcore2
import httpx2
from httpcore2._backends.sync import SyncBackend, SyncStream

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


class BlockedAddressError(httpcore2.ConnectError):
    """The destination resolves to an address outbound requests must not reach."""


class FetchError(Exception):
    """A guarded fetch failed; the message says why in words fit for an error page."""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to: mapped, 6to4, NAT64 or IPv4-compatible."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_forbidden_address(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if ip.is_loopback:
        return not allow_loopback
    return not ip.is_global or ip.is_multicast


class GuardedBackend(SyncBackend):
    """An httpcore network backend that checks every address before it connects."""

    def __init__(self, allow_loopback: bool):
        self.allow_loopback = allow_loopback

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [info[4][0] for info in infos]
        blocked = [a for a in addresses if is_forbidden_address(a, self.allow_loopback)]
        if blocked:
            raise BlockedAddressError(f"{host} resolves to a non-public address ({blocked[0]})")
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            raise httpcore2.ConnectError(str(exc)) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or []:
            sock.setsockopt(*option)
        return SyncStream(sock)


def guarded_client(timeout: float, allow_loopback: bool) -> httpx2.Client:
    """A client with no proxies from the environment, no automatic redirects, and guarded sockets."""
    transport = httpx2.HTTPTransport(trust_env=False)
    # httpx has no public hook for the network backend; the pool keeps it in this attribute.
    transport._pool._network_backend = GuardedBackend(allow_loopback)
    return httpx2.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


@dataclass
class FetchedDocument:
    url: str
    status: int
    headers: httpx2.Headers
    body: bytes

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FetchError(f"{self.url} did not return JSON ({exc.__class__.__name__})") from exc


def check_fetchable_url(url: str, allow_insecure_loopback: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and allow_insecure_loopback and is_loopback_host(parts.hostname):
        return
    raise FetchError(f"{url} is not an https URL")


def fetch_limited(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_insecure_loopback: bool = False,
    max_redirects: int = 3,
    accept: str = "application/json",
    extra_headers: Iterable[tuple[str, str]] = (),
) -> FetchedDocument:
    """GET ``url`` through guarded sockets, following at most ``max_redirects`` redirects
    (each one re-checked), and reading at most ``max_bytes`` of the body."""
    with guarded_client(timeout, allow_insecure_loopback) as client:
        current = url
        for _ in range(max_redirects + 1):
            check_fetchable_url(current, allow_insecure_loopback)
            try:
                # identity: the body is read raw (iter_raw), so a compressed answer would be
                # unreadable, and the size cap must bound what is decoded (no gzip bombs)
                headers = [("Accept", accept), ("Accept-Encoding", "identity"), *extra_headers]
                with client.stream("GET", current, headers=headers) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError(f"{current} redirected without a Location")
                        current = urljoin(current, location)
                        continue
                    body = bytearray()
                    for chunk in response.iter_raw():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            raise FetchError(f"{current} returned more than {max_bytes} bytes")
                    return FetchedDocument(current, response.status_code, response.headers, bytes(body))
            except BlockedAddressError as exc:
                raise FetchError(f"refused to fetch {current}: {exc}") from exc
            except httpx2.TimeoutException as exc:
                raise FetchError(f"{current} did not answer within {timeout:g} s") from exc
            except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
                raise FetchError(f"could not fetch {current}: {exc}") from exc
        raise FetchError(f"{url} redirected more than {max_redirects} times")
