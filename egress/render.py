#!/usr/bin/python3
"""Print squid's config: the template given as argv[1] with its @NAME@ placeholders filled
from the environment. Each value is checked against a strict pattern first, so nothing
from the environment can add squid syntax; a bad value stops the container, naming the
variable. Standard library only (the image's python3); also run by the unit tests.

It also writes the destinations squid itself refuses (its `denied_destination` ACL), from
the address lists below: tower refuses a name whose addresses are not public when it
decides (tower/egress/policy.py, the webhooks' rules), but squid resolves the name again
to connect, and this ACL is matched against squid's own answer, the one it connects to.
tests/unit/test_egress_image.py holds these lists to tower's rules: every address tower
refuses is in them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys

MAX_CACHE_SECONDS = 60
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

# Cloud metadata endpoints: refused whatever EGRESS_ALLOW_PRIVATE says (tower's
# METADATA_ADDRESSES, tower/webhooks/target.py).
METADATA = ("169.254.169.254", "100.100.100.200", "fd00:ec2::254")
# IPv6 ranges whose addresses carry an IPv4 one that squid could not check as such, refused
# whatever EGRESS_ALLOW_PRIVATE says: Teredo (the client's address, inverted, in the last
# 32 bits) and the local-use NAT64 prefix (RFC 8215, its IPv4 in the last 32 bits). Tower
# unwraps them; an ACL can only refuse them whole. IPv4-mapped addresses need nothing:
# squid holds every IPv4 address in that form, so the IPv4 entries match them.
ALWAYS_V6 = ("2001::/32", "64:ff9b:1::/48")
# Not public (IANA's special-purpose registries: not globally reachable), multicast, the
# shared CGNAT range and the deprecated site-local one: refused unless EGRESS_ALLOW_PRIVATE.
INTERNAL_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
# ::/96 holds the unspecified and loopback addresses and the deprecated IPv4-compatible
# ones; 2002::/16 is 6to4 (deprecated, an IPv4 address in its bits 16-48): both whole.
INTERNAL_V6 = (
    "::/96", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16", "64:ff9b:1::/48",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)  # fmt: skip
# The well-known NAT64 prefix reaches the IPv4 address in its last 32 bits: refused when
# that address is (RFC 6052).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
COMPATIBLE = ipaddress.IPv6Network("::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """A setting that cannot be rendered; the message names it."""


def _integer(name: str, default: str, low: int, high: int) -> int:
    text = os.environ.get(name, "") or default
    if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise Refused(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _boolean(name: str) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if text not in TRUE + FALSE:
        raise Refused(f"{name} must be true or false")
    return text in TRUE


def _within(network: ipaddress.IPv4Network, prefix: ipaddress.IPv6Network) -> Network:
    """The IPv6 network of `prefix` whose embedded IPv4 address (at the prefix's end) is in
    `network`."""
    shift = 128 - prefix.prefixlen - 32
    start = int(prefix.network_address) | (int(network.network_address) << shift)
    return ipaddress.IPv6Network((start, prefix.prefixlen + network.prefixlen))


def _embedded(v4: list[ipaddress.IPv4Network]) -> list[Network]:
    """The IPv6 forms that reach these IPv4 networks: NAT64, IPv4-compatible, 6to4."""
    return [_within(net, prefix) for net in v4 for prefix in (NAT64, COMPATIBLE, SIX_TO_FOUR)]


def denied_networks(allow_private: bool) -> list[Network]:
    """What squid refuses to connect to: metadata endpoints always (loopback too, by its
    own to_localhost), everything not public unless `allow_private`. Collapsed: squid
    warns of entries inside others."""
    metadata = [ipaddress.ip_network(text) for text in METADATA]
    v4 = [net for net in metadata if isinstance(net, ipaddress.IPv4Network)]
    found: list[Network] = [*metadata, *_embedded(v4), *map(ipaddress.ip_network, ALWAYS_V6)]
    if not allow_private:
        internal = [ipaddress.IPv4Network(text) for text in INTERNAL_V4]
        found += [*internal, *_embedded(internal), *map(ipaddress.ip_network, INTERNAL_V6)]
    v4s = [net for net in found if isinstance(net, ipaddress.IPv4Network)]
    v6s = [net for net in found if isinstance(net, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4s), *ipaddress.collapse_addresses(v6s)]


def _acl_lines(name: str, networks: list[Network]) -> str:
    return "\n".join(f"acl {name} dst {network}" for network in networks)


def values() -> dict[str, str]:
    """Each placeholder's text, from the environment (defaults as tower's settings)."""
    cache = _integer("EGRESS_AUTH_CACHE_SECONDS", "1", 0, MAX_CACHE_SECONDS)
    limit = _integer("EGRESS_MAX_BYTES", "0", 0, 1 << 62)
    private = _boolean("EGRESS_ALLOW_PRIVATE")
    return {
        "AUTH_CACHE_SECONDS": str(cache),
        # 0: no limit of squid's own (tower still bounds each job's total).
        "MAX_BYTES": f"{limit} bytes" if limit else "none",
        "DENIED_DESTINATIONS": _acl_lines("denied_destination", denied_networks(private)),
    }


def render(template: str, found: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in found:
            raise Refused(f"the template names @{name}@, which has no value")
        return found[name]

    return re.sub(r"@([A-Z_]+)@", fill, template)


def main(argv: list[str]) -> int:
    try:
        with open(argv[1], encoding="utf-8") as source:
            sys.stdout.write(render(source.read(), values()))
    except Refused as problem:
        print(f"parpaing-egress: {problem}", file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
