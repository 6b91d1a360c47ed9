"""Refuse webhook URLs that point inside our own network (SSRF), without DNS.

Only the URL's own text is judged here, at submit time: IP literals by their
address class, names by the suffixes reserved for private use. A public name that
resolves to a private address is caught again when the webhook is sent
(tower/webhooks/target.py). `check_url_shape` is the part that holds even when the
operator allows private targets (WEBHOOK_ALLOW_PRIVATE).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")

# Names that only ever resolve inside a host or a private network.
PRIVATE_NAMES = ("localhost", "localhost.localdomain")
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")

# Shapes that inet_aton (and so most HTTP clients) read as IPv4: 127.1, 0x7f.1, 2130706433.
_LOOSE_IPV4 = re.compile(r"^[0-9a-fx.]+$")

# Whitespace, control characters, backslashes anywhere, or two '@' in the authority.
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]|^[^/?#]*//[^/?#]*@[^/?#]*@")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_webhook_url(url: str) -> str:
    """Return `url` unchanged if it may receive webhooks; raise ValueError saying why not."""
    host = _host_of(check_url_shape(url))
    address = _address_of(host)
    if address is not None:
        check_address(address)
    else:
        _check_name(host)
    return url


def check_url_shape(url: str) -> str:
    """Return `url` if it is an unambiguous http(s) URL with a host, whatever the host."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    _host_of(url)
    return url


def _host_of(url: str) -> str:
    if _AMBIGUOUS.search(url):
        # Parsers disagree on these (which '@' ends the userinfo, is '\\' a '/'),
        # so the host we check might not be the host the sender connects to.
        raise ValueError("must not contain whitespace, control characters, '\\' or a second '@'")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as error:
        raise ValueError(f"is not a valid URL ({error})") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise ValueError("must use http or https")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("must name a host")
    return host


def _address_of(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LOOSE_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_address(address: Address) -> None:
    """Raise ValueError unless `address` is a public unicast address (whatever it embeds)."""
    for embedded in embedded_ipv4(address):
        check_address(embedded)
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        # fec0::/10: deprecated (RFC 3879) but still routed inside some sites; the
        # standard library counts it as global.
        raise ValueError(f"must not point to an internal address ({address})")
    if not address.is_global or address.is_multicast:
        raise ValueError(f"must not point to an internal address ({address})")


# IPv6 prefixes whose last 32 bits are an IPv4 address that the packet reaches, which
# the standard library does not unwrap: NAT64 (RFC 6052 well-known /96; RFC 8215
# local-use /48, read as if a /96 were carved from it, the common layout) and the
# deprecated IPv4-compatible form (RFC 4291).
_LAST_32_BITS_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
)


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and so reaches): IPv4-mapped,
    IPv4-compatible, NAT64, 6to4, Teredo. Empty for an IPv4 address or a plain IPv6 one."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        found.append(address.teredo[1])
    if any(address in network for network in _LAST_32_BITS_IPV4):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [item for item in found if item is not None]


def _check_name(host: str) -> None:
    if "." not in host:
        # A single label is a container, service or intranet name, never a public host.
        raise ValueError(f"must name a public host, not {host!r}")
    if host in PRIVATE_NAMES or host.endswith(PRIVATE_SUFFIXES):
        raise ValueError(f"must not point to an internal host ({host})")
