"""Webhook URL safety: public http(s) hosts only, judged without DNS."""

from __future__ import annotations

import pytest

from tower.webhooks.url import MAX_URL_LENGTH, check_webhook_url

ACCEPTED = [
    "https://example.com/hook",
    "http://hooks.example.org:8443/a/b?c=d&e=f@g",
    "https://user:pass@example.com/with-credentials",
    "https://8.8.8.8/public-ip",
    "https://[2001:4860:4860::8888]/public-ipv6",
    "HTTPS://EXAMPLE.COM./trailing-dot",
]

REFUSED = [
    # not http(s), or not a URL with a host
    "ftp://example.com/file",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "example.com/no-scheme",
    "https:///no-host",
    "http://example.com:99999/bad-port",
    # loopback, private, link-local (cloud metadata), shared, unspecified, multicast
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://[::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
    # IPv4 spelled the ways inet_aton reads it
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0/",
    # names reserved for hosts and private networks
    "http://localhost/",
    "http://LOCALHOST:8080/",
    "http://api.localhost/",
    "http://printer.local/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://router.home.arpa/",
    "http://db/",
    "http://parpaing-gateway:8080/",
    # ambiguous between parsers
    "http://user@127.0.0.1@example.com/",
    "http://example.com\\@127.0.0.1/",
    "http://exa mple.com/",
    "http://example.com/\nHost: 127.0.0.1",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_urls_are_accepted_unchanged(url: str) -> None:
    assert check_webhook_url(url) == url


@pytest.mark.parametrize("url", REFUSED)
def test_internal_or_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        check_webhook_url(url)


def test_length_limit() -> None:
    base = "https://example.com/"
    assert check_webhook_url(base + "a" * (MAX_URL_LENGTH - len(base)))
    with pytest.raises(ValueError, match=str(MAX_URL_LENGTH)):
        check_webhook_url(base + "a" * (MAX_URL_LENGTH - len(base) + 1))


def test_message_says_why() -> None:
    with pytest.raises(ValueError, match="internal address"):
        check_webhook_url("http://169.254.169.254/")
    with pytest.raises(ValueError, match="http or https"):
        check_webhook_url("gopher://example.com/")
