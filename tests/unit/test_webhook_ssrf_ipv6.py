"""IPv6 addresses that carry an IPv4 address are judged by that IPv4 address too.

NAT64 (64:ff9b::/96), IPv4-compatible (::/96), IPv4-mapped (::ffff:0:0/96), 6to4
(2002::/16) and Teredo reach the IPv4 address they embed, so a URL or a DNS answer in
one of these forms must pass the same checks as the plain IPv4 address, at submit
(`check_webhook_url`, no DNS) and at send (`resolve`); site-local fec0::/10 is private.
"""

from __future__ import annotations

import ipaddress

import pytest

from tower.webhooks.target import Refused, resolve
from tower.webhooks.url import check_webhook_url, embedded_ipv4

# Cloud metadata endpoints (169.254.169.254, 100.100.100.200) wrapped in IPv6: refused
# always, WEBHOOK_ALLOW_PRIVATE or not.
METADATA = [
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix
    "64:ff9b::169.254.169.254",
    "64:ff9b::6464:64c8",  # NAT64 of 100.100.100.200
    "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use prefix
    "::a9fe:a9fe",  # IPv4-compatible
    "::169.254.169.254",
    "::ffff:a9fe:a9fe",  # IPv4-mapped
    "2002:a9fe:a9fe::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
]

# Loopback, private and site-local forms: refused unless WEBHOOK_ALLOW_PRIVATE.
PRIVATE = [
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::a00:1",
    "::ffff:7f00:1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "fec0::1",  # site-local
    "fec0:0:0:1::1",
    "feff:ffff::1",  # the top of fec0::/10
]

# Ordinary global IPv6, and wrapping forms around a public IPv4 address.
PUBLIC = [
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


def url(address: str) -> str:
    return f"http://[{address}]:8080/hook"


@pytest.mark.parametrize("address", METADATA + PRIVATE)
def test_embedding_forms_are_refused_at_submit(address: str) -> None:
    with pytest.raises(ValueError, match="internal address"):
        check_webhook_url(url(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_ipv6_is_accepted_at_submit(address: str) -> None:
    assert check_webhook_url(url(address)) == url(address)


@pytest.mark.parametrize("address", METADATA + PRIVATE)
async def test_embedding_forms_are_refused_at_send(address: str) -> None:
    with pytest.raises(Refused):
        await resolve(url(address), allow_private=False)


@pytest.mark.parametrize("address", METADATA)
async def test_embedded_metadata_is_refused_even_when_private_is_allowed(address: str) -> None:
    with pytest.raises(Refused, match="metadata"):
        await resolve(url(address), allow_private=True)


@pytest.mark.parametrize("address", PRIVATE)
async def test_embedded_private_passes_when_private_is_allowed(address: str) -> None:
    target = await resolve(url(address), allow_private=True)
    assert target.url.host == str(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
async def test_public_ipv6_passes_at_send(address: str) -> None:
    target = await resolve(url(address), allow_private=False)
    assert target.url.port == 8080


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("::7f00:1", "127.0.0.1"),
        ("::ffff:a00:1", "10.0.0.1"),
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),
    ],
)
def test_embedded_ipv4_is_read_out(address: str, embedded: str) -> None:
    assert ipaddress.ip_address(embedded) in embedded_ipv4(ipaddress.ip_address(address))


def test_plain_addresses_embed_nothing() -> None:
    assert embedded_ipv4(ipaddress.ip_address("8.8.8.8")) == []
    assert embedded_ipv4(ipaddress.ip_address("2001:4860:4860::8888")) == []
