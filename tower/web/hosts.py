"""Which Host header values a tower answers to (ALLOWED_HOSTS), and what counts as loopback.

DNS rebinding: a page on evil.example makes its own name resolve to 127.0.0.1, and the
browser then sends the page's requests to a tower on loopback as same-origin ones, with
`Host: evil.example`. A keyless tower would answer them all (submit a job, read results).
So a keyless tower answers only its loopback names unless ALLOWED_HOSTS says otherwise;
with a key, a rebound page has no key to send, and any Host is answered (unless listed).
"""

from __future__ import annotations

import ipaddress

from tower.settings import Settings

ANY = "*"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class HostRule:
    """ALLOWED_HOSTS read once: an entry without a port allows that name on any port."""

    def __init__(self, settings: Settings) -> None:
        entries = [_normal(entry) for entry in settings.allowed_hosts.split(",") if entry.strip()]
        if not entries:
            keyed = bool(settings.tower_api_key.get_secret_value())
            entries = [ANY] if keyed else list(LOOPBACK_NAMES)
        self.any = ANY in entries
        self.entries = frozenset(entries)

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False  # every browser sends one: nothing legitimate is refused
        host = host.strip().lower()
        return host in self.entries or _name(host) in self.entries


def is_loopback(address: str) -> bool:
    """Whether a listening address (TOWER_HOST, --host) is reachable from this host only."""
    name = address.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name, or 0.0.0.0's kin: it may be anyone's


def _normal(entry: str) -> str:
    """An ALLOWED_HOSTS entry as a Host header carries it (a bare IPv6 in brackets)."""
    entry = entry.strip().lower()
    try:
        if ipaddress.ip_address(entry).version == 6:
            return f"[{entry}]"
    except ValueError:
        pass
    return entry


def _name(host: str) -> str:
    """A Host header's name, without its port (an IPv6 literal keeps its brackets)."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host
