"""A job's egress allow-list: what its entries look like, what they allow, and whether one
list stays within another (docs/egress.md).

An entry is one of:
  host             that name, on the web ports (80 and 443)
  host:port        that name, on that port only
  *.suffix[:port]  any name under suffix (not suffix itself), as above
  address[:port]   an IP address (IPv6 in brackets when a port follows): a request that
                   names it. Only usable where the operator allows private targets
                   (EGRESS_ALLOW_PRIVATE), which tower checks at submit.
Names are compared without case and without a trailing dot. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WEB_PORTS = frozenset({80, 443})
MAX_ENTRIES = 100
MAX_ENTRY_CHARS = 261  # a name of 253 characters, a colon and a port
LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
NAME = re.compile(rf"^{LABEL}(\.{LABEL})*$")


@dataclass(frozen=True)
class Rule:
    """One entry, parsed: `host` is a name, a suffix (with `wildcard`) or an address."""

    host: str
    ports: frozenset[int]
    wildcard: bool = False
    address: bool = False

    def allows(self, host: str, port: int) -> bool:
        if port not in self.ports:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def covers(self, other: Rule) -> bool:
        """Whether everything `other` allows, this allows too."""
        if not other.ports <= self.ports or other.address != self.address:
            return False
        if not self.wildcard:
            return not other.wildcard and other.host == self.host
        return other.host.endswith("." + self.host)


def normal_host(host: str) -> str:
    """A request's host as entries are compared with it: lower case, no trailing dot, no
    IPv6 brackets, an address in its canonical text."""
    bare = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


def parse_rule(entry: str) -> Rule:
    """The rule an entry states; ValueError saying what is wrong with it."""
    if not isinstance(entry, str) or not 0 < len(entry) <= MAX_ENTRY_CHARS:
        raise ValueError(f"an entry must be text of 1 to {MAX_ENTRY_CHARS} characters")
    host, ports = _split_port(entry.strip())
    address = _address(host)
    if address is not None:
        return Rule(address, ports, address=True)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    name = name.rstrip(".").lower()
    if len(name) > 253 or not NAME.match(name) or "*" in name:
        raise ValueError(
            f"{entry!r} is not a host name, *.suffix or IP address (with an optional :port)"
        )
    return Rule(name, ports, wildcard=wildcard)


def _split_port(entry: str) -> tuple[str, frozenset[int]]:
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{entry!r}: expected [address]:port")
        return host, _port(entry, rest[1:]) if rest else WEB_PORTS
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, _port(entry, port)
    return entry, WEB_PORTS  # a name, or a bare IPv6 address


def _port(entry: str, text: str) -> frozenset[int]:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return frozenset({int(text)})


def _address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def parse_rules(entries: Sequence[str]) -> list[Rule]:
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} entries")
    return [parse_rule(entry) for entry in entries]


def check_entries(entries: Sequence[str]) -> list[str]:
    """`entries` if each parses (pydantic validators); ValueError otherwise."""
    parse_rules(entries)
    return list(entries)


def allowed(rules: Iterable[Rule], host: str, port: int) -> bool:
    """Does any rule allow a request for host:port? `host` as the request names it."""
    bare = normal_host(host)
    return any(rule.allows(bare, port) for rule in rules)


def uncovered(wanted: Iterable[Rule], ceilings: Iterable[Rule]) -> list[Rule]:
    """The rules of `wanted` that no rule of `ceilings` covers."""
    limits = list(ceilings)
    return [rule for rule in wanted if not any(limit.covers(rule) for limit in limits)]


def describe(rule: Rule) -> str:
    """An entry's text again, in its normal form."""
    host = f"*.{rule.host}" if rule.wildcard else rule.host
    if rule.address and ":" in host:
        host = f"[{host}]"
    if rule.ports == WEB_PORTS:
        return host
    return f"{host}:{min(rule.ports)}"
