"""Where a webhook may be sent, decided at send time (SSRF), and pinned.

The URL's host is resolved now, every address it resolves to is checked, and the
request then goes to the checked address itself (with the original Host header and
TLS server name), so a DNS answer that changes between check and connect (rebinding)
cannot redirect it. Private, loopback, link-local, shared and other non-public
addresses are refused unless WEBHOOK_ALLOW_PRIVATE; cloud metadata endpoints are
refused even then: no webhook receiver lives there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from tower.webhooks.url import Address, check_address, check_url_shape, embedded_ipv4

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
DEFAULT_PORTS = {"http": 80, "https": 443}


class Refused(Exception):
    """The URL may not receive webhooks (the message says why); retrying will not help."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL  # the original URL with its host replaced by the checked address
    host_header: str
    server_name: str | None  # TLS SNI and certificate name, for https to a host name


async def resolve(
    url: str, *, allow_private: bool, setting: str = "WEBHOOK_ALLOW_PRIVATE"
) -> Target:
    """The URL pinned to a checked address of its host. `setting` is the operator's switch
    for private targets, named in a refusal (webhooks', or repositories')."""
    try:
        parsed = httpx.URL(check_url_shape(url))
    except (ValueError, httpx.InvalidURL) as error:
        raise Refused(f"invalid URL: {error}") from None
    host = parsed.host
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    addresses = await _addresses(host, port)
    for address in addresses:
        check_target(address, allow_private, setting)
    address = addresses[0]
    pinned = parsed.copy_with(host=str(address))
    netloc = parsed.netloc.decode("ascii")
    is_name = _literal(host) is None
    server_name = host if parsed.scheme == "https" and is_name else None
    return Target(pinned, netloc, server_name)


async def _addresses(host: str, port: int) -> list[Address]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ResolveFailed(f"cannot resolve {host}: {error.strerror}") from None
    found: list[Address] = []
    for info in infos:
        # Strip an IPv6 zone ("fe80::1%eth0"): the address class is what matters.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise ResolveFailed(f"cannot resolve {host}: no address")
    return found


class ResolveFailed(Exception):
    """DNS gave no answer now; it may later (a retryable failure)."""


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_target(address: Address, allow_private: bool, setting: str) -> None:
    """Raise Refused unless a request may go to `address`: never a metadata endpoint, and
    a private one only with `allow_private` (the operator's `setting`). Also the rule of
    repositories and of the egress proxy's targets (tower/egress)."""
    embedded = [address, *embedded_ipv4(address)]
    if any(item in METADATA_ADDRESSES for item in embedded):
        raise Refused(f"{address} is a cloud metadata address")
    if allow_private:
        return
    try:
        check_address(address)
    except ValueError as error:
        raise Refused(f"{error} (set {setting}=true to allow)") from None
