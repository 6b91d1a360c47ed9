"""Allow-list entries (tower/configs/egress.py) and a job's list against its profile's and
the operator's ceiling, and each request against the list and the address rules
(tower/egress/policy.py)."""

from __future__ import annotations

import pytest

from tower.configs.egress import WEB_PORTS, allowed, parse_rule, parse_rules, uncovered
from tower.configs.parse import parse_profile
from tower.egress.policy import NotAllowed, ceiling, job_list, refusal
from tower.errors import Invalid

PUBLIC = "93.184.215.14"  # a global unicast address (no request is made)


@pytest.mark.parametrize(
    ("entry", "host", "ports", "wildcard", "address"),
    [
        ("pypi.org", "pypi.org", WEB_PORTS, False, False),
        ("PyPI.org.", "pypi.org", WEB_PORTS, False, False),
        ("api.example.com:8443", "api.example.com", {8443}, False, False),
        ("*.github.com", "github.com", WEB_PORTS, True, False),
        ("*.github.com:22", "github.com", {22}, True, False),
        ("10.0.0.5", "10.0.0.5", WEB_PORTS, False, True),
        ("10.0.0.5:8080", "10.0.0.5", {8080}, False, True),
        ("[fd00::1]:443", "fd00::1", {443}, False, True),
        ("fd00::1", "fd00::1", WEB_PORTS, False, True),
    ],
)
def test_entries_parse(
    entry: str, host: str, ports: set[int], wildcard: bool, address: bool
) -> None:
    rule = parse_rule(entry)
    assert (rule.host, set(rule.ports), rule.wildcard, rule.address) == (
        host,
        set(ports),
        wildcard,
        address,
    )


@pytest.mark.parametrize(
    "entry",
    ["", "bad host", "*", "*.", "a.*.com", "host:0", "host:65536", "host:http", "-a.com",
     "[fd00::1]x", "a" * 300, "http://pypi.org", "pypi.org/simple"],
)  # fmt: skip
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(entry)


def test_at_most_a_hundred_entries() -> None:
    with pytest.raises(ValueError, match="at most 100"):
        parse_rules([f"h{n}.example.com" for n in range(101)])


def test_what_a_list_allows() -> None:
    rules = parse_rules(["pypi.org", "*.github.com:443", "10.0.0.5:8080"])
    assert allowed(rules, "pypi.org", 443) and allowed(rules, "PYPI.ORG.", 80)
    assert not allowed(rules, "pypi.org", 8080)
    assert not allowed(rules, "evil-pypi.org", 443)
    assert allowed(rules, "api.github.com", 443) and allowed(rules, "a.b.github.com", 443)
    assert not allowed(rules, "github.com", 443)  # the suffix itself is not under it
    assert not allowed(rules, "api.github.com", 80)
    assert not allowed(rules, "notgithub.com", 443)
    assert allowed(rules, "10.0.0.5", 8080) and not allowed(rules, "10.0.0.6", 8080)


def test_what_covers_what() -> None:
    wide = parse_rules(["*.github.com", "pypi.org"])
    narrow = parse_rules(["api.github.com:443", "*.x.github.com", "pypi.org:80"])
    assert uncovered(narrow, wide) == []
    beyond = parse_rules(["github.com", "pypi.org:8080", "*.com"])
    assert [rule.host for rule in uncovered(beyond, wide)] == ["github.com", "pypi.org", "com"]


def test_a_profile_declares_its_list_and_a_bad_entry_is_named() -> None:
    profile = parse_profile("p", '[egress]\nallow = ["pypi.org", "*.npmjs.org:443"]\n')
    assert profile.egress.allow == ["pypi.org", "*.npmjs.org:443"]
    assert parse_profile("q", "").egress.allow == []
    with pytest.raises(Invalid, match=r"egress\.allow"):
        parse_profile("r", '[egress]\nallow = ["pypi.org/simple"]\n')


# --- a job's list ----------------------------------------------------------------------


def test_a_job_runs_with_its_profile_s_list_unless_it_sends_one() -> None:
    assert job_list(["pypi.org", "PyPI.org"], None, [], False) == ["pypi.org"]
    assert job_list(["*.github.com"], ["api.github.com:443"], [], False) == ["api.github.com:443"]
    assert job_list(["pypi.org"], [], [], False) == []


def test_a_job_widens_its_list_only_within_the_ceiling() -> None:
    limit = ceiling("*.example.com, registry.npmjs.org")
    assert job_list(["pypi.org"], ["pypi.org", "api.example.com"], limit, False) == [
        "pypi.org",
        "api.example.com",
    ]
    with pytest.raises(NotAllowed, match=r"evil\.com: neither within"):
        job_list(["pypi.org"], ["pypi.org", "evil.com"], limit, False)
    with pytest.raises(NotAllowed, match=r"pypi\.org:8080"):
        job_list(["pypi.org"], ["pypi.org:8080"], limit, False)


def test_address_entries_need_private_targets_allowed() -> None:
    with pytest.raises(NotAllowed, match="EGRESS_ALLOW_PRIVATE"):
        job_list(["10.0.0.5:8080"], None, [], False)
    assert job_list(["10.0.0.5:8080"], None, [], True) == ["10.0.0.5:8080"]


def test_a_bad_ceiling_names_the_setting() -> None:
    with pytest.raises(ValueError, match="EGRESS_ALLOW"):
        ceiling("pypi.org, bad host")


# --- each request -----------------------------------------------------------------------


def test_a_request_on_the_list_to_a_public_address_goes() -> None:
    assert refusal(["pypi.org"], "pypi.org", 443, [PUBLIC], None, False) is None


def test_a_request_off_the_list_is_refused_saying_so() -> None:
    reason = refusal(["pypi.org"], "evil.com", 443, [PUBLIC], None, False)
    assert reason == "evil.com:443 is not on this job's allow-list"


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.17.0.1", "192.168.0.1", "169.254.1.1", "100.64.0.1", "fd00::1",
     "::ffff:10.0.0.1", "fe80::1"],
)  # fmt: skip
def test_an_allowed_name_on_a_private_address_is_refused(address: str) -> None:
    reason = refusal(["pypi.org"], "pypi.org", 443, [PUBLIC, address], None, False)
    assert reason is not None and "EGRESS_ALLOW_PRIVATE" in reason, reason


def test_private_targets_when_allowed_but_never_metadata_nor_loopback() -> None:
    assert refusal(["pypi.org"], "pypi.org", 443, ["10.1.2.3"], None, True) is None
    metadata = refusal(["pypi.org"], "pypi.org", 443, ["169.254.169.254"], None, True)
    assert metadata is not None and "metadata" in metadata
    for loopback in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        reason = refusal(["pypi.org"], "pypi.org", 443, [loopback], None, True)
        assert reason is not None and "the proxy itself" in reason, loopback


def test_a_name_that_does_not_resolve_is_refused() -> None:
    reason = refusal(["pypi.org"], "pypi.org", 443, [], "Name or service not known", False)
    assert reason == "pypi.org does not resolve (Name or service not known)"
