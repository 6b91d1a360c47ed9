"""What a job may reach through the egress proxy, decided without I/O.

- At submit, the job's list: its own `egress.allow` when it sends one, each entry within
  its profile's list or the operator's ceiling (EGRESS_ALLOW), else its profile's list.
- Per request, whether the list allows the host and port, and whether every address the
  proxy resolved the host to may be reached: the webhooks' rules (no metadata endpoint,
  nothing private unless EGRESS_ALLOW_PRIVATE), plus loopback never (the proxy itself).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from tower.configs.egress import Rule, allowed, describe, parse_rules, uncovered
from tower.webhooks.target import Refused, check_target

PRIVATE_SETTING = "EGRESS_ALLOW_PRIVATE"
CEILING_SETTING = "EGRESS_ALLOW"


class NotAllowed(ValueError):
    """A job's list asks for more than it may; the message says what (a 422)."""


def ceiling(text: str) -> list[Rule]:
    """EGRESS_ALLOW's rules (comma-separated entries); ValueError naming the setting."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    try:
        return parse_rules(entries)
    except ValueError as error:
        raise ValueError(f"{CEILING_SETTING}: {error}") from None


def job_list(
    profile: Sequence[str],
    requested: Sequence[str] | None,
    limit: Sequence[Rule],
    allow_private: bool,
) -> list[str]:
    """The entries a job runs with, normalised; NotAllowed when it asks for more than its
    profile's list and the ceiling `limit` allow, or for addresses without allow_private."""
    try:
        wanted = parse_rules(profile if requested is None else requested)
    except ValueError as error:
        raise NotAllowed(str(error)) from None
    if requested is not None:
        beyond = uncovered(wanted, [*parse_rules(profile), *limit])
        if beyond:
            names = ", ".join(describe(rule) for rule in beyond)
            raise NotAllowed(
                f"{names}: neither within the profile's allow-list nor {CEILING_SETTING}"
            )
    addresses = [describe(rule) for rule in wanted if rule.address]
    if addresses and not allow_private:
        raise NotAllowed(f"{', '.join(addresses)}: IP address entries need {PRIVATE_SETTING}=true")
    return list(dict.fromkeys(describe(rule) for rule in wanted))


def refusal(
    entries: Sequence[str],
    host: str,
    port: int,
    addresses: Sequence[str],
    resolve_error: str | None,
    allow_private: bool,
) -> str | None:
    """Why a request for host:port is refused, or None when it may go. `addresses`: what
    the proxy resolved `host` to (its own resolver, the one it connects with)."""
    try:
        rules = parse_rules(entries)
    except ValueError:
        return "this job's allow-list does not parse"  # stored by submit: never
    if not allowed(rules, host, port):
        return f"{host}:{port} is not on this job's allow-list"
    if resolve_error is not None or not addresses:
        return f"{host} does not resolve ({resolve_error or 'no address'})"
    for text in addresses:
        reason = _address_refusal(text, allow_private)
        if reason is not None:
            return f"{host} resolves to {reason}"
    return None


def _address_refusal(text: str, allow_private: bool) -> str | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return f"{text!r}, not an address"
    if address.is_loopback or (
        isinstance(address, ipaddress.IPv6Address)
        and address.ipv4_mapped is not None
        and address.ipv4_mapped.is_loopback
    ):
        return f"{address}, a loopback address (the proxy itself)"
    try:
        check_target(address, allow_private, PRIVATE_SETTING)
    except Refused as refused:
        return str(refused)
    return None
