"""Send-time SSRF check: resolve, check every address, pin the request to it."""

from __future__ import annotations

import pytest

from tower.webhooks.target import Refused, resolve

PRIVATE = [
    "http://127.0.0.1:9/hook",
    "http://127.1/hook",  # inet_aton shorthand, resolved by the system like any name
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://[::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://localhost:8080/hook",  # a name, resolved now, to loopback
]
METADATA = ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/"]


@pytest.mark.parametrize("url", PRIVATE + METADATA)
async def test_private_targets_are_refused(url: str) -> None:
    with pytest.raises(Refused):
        await resolve(url, allow_private=False)


@pytest.mark.parametrize("url", METADATA)
async def test_metadata_is_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(Refused, match="metadata"):
        await resolve(url, allow_private=True)


async def test_a_name_is_pinned_to_its_checked_address() -> None:
    target = await resolve("http://user:pw@localhost:8080/hook?x=1", allow_private=True)
    assert target.url.host in ("127.0.0.1", "::1")
    assert target.url.port == 8080
    assert target.url.raw_path == b"/hook?x=1"
    assert target.url.userinfo == b"user:pw"
    assert target.host_header == "localhost:8080"
    assert target.server_name is None  # plain http: no TLS name


async def test_https_to_a_name_keeps_the_name_for_tls() -> None:
    target = await resolve("https://localhost/hook", allow_private=True)
    assert target.server_name == "localhost"
    assert target.url.host in ("127.0.0.1", "::1")


async def test_public_addresses_pass() -> None:
    target = await resolve("https://8.8.8.8/hook", allow_private=False)
    assert str(target.url) == "https://8.8.8.8/hook"
    assert target.server_name is None


async def test_a_malformed_url_is_refused() -> None:
    with pytest.raises(Refused, match="invalid URL"):
        await resolve("ftp://example.com/", allow_private=True)
