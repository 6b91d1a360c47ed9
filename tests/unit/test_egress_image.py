"""The egress proxy image's own code, run on the host: the config renderer (egress/render.py),
the helpers' parsing (egress/helper.py), and what a job is told of the proxy (its
environment, tower/execution/spec.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from tower.egress import tags
from tower.egress.policy import refusal
from tower.execution import protocol
from tower.execution.spec import proxy_environment
from tower.images.build import EGRESS_CONTEXT
from tower.webhooks.url import embedded_ipv4

TEMPLATE = EGRESS_CONTEXT / "squid.conf.template"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"egress_{name}", EGRESS_CONTEXT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _render(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EGRESS_CONTEXT / "render.py"), str(TEMPLATE)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_config_renders_with_every_placeholder_filled() -> None:
    done = _render({"EGRESS_AUTH_CACHE_SECONDS": "3", "EGRESS_MAX_BYTES": "1048576"})
    assert done.returncode == 0, done.stderr
    assert "@" not in re.sub(r"#.*", "", done.stdout)
    assert "auth_param basic credentialsttl 3 seconds" in done.stdout
    assert "reply_body_max_size 1048576 bytes" in done.stdout
    # What keeps a worker from using squid as a way into itself, and into the unlisted.
    for line in ("http_access deny to_localhost", "http_access deny !authed",
                 "http_access deny !egress", "http_port 127.0.0.1:3128"):  # fmt: skip
        assert line in done.stdout


def test_defaults_render_and_no_limit_is_none() -> None:
    done = _render({})
    assert done.returncode == 0, done.stderr
    assert "credentialsttl 1 seconds" in done.stdout
    assert "reply_body_max_size none" in done.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [("EGRESS_AUTH_CACHE_SECONDS", "61"), ("EGRESS_AUTH_CACHE_SECONDS", "1\nhttp_access allow all"),
     ("EGRESS_MAX_BYTES", "-1"), ("EGRESS_MAX_BYTES", "10 bytes\nacl x")],
)  # fmt: skip
def test_a_bad_value_stops_the_render_naming_the_variable(name: str, value: str) -> None:
    done = _render({name: value})
    assert done.returncode == 64
    assert name in done.stderr and "allow all" not in done.stdout


TAG = "17." + "0123456789abcdef" * 2  # tower's tag of a request it let go


def test_the_log_daemon_reports_only_what_tower_let_go_with_its_tag() -> None:
    helper = _module("helper")
    line = f"job-0123456789ab.2 CONNECT pypi.org 443 200 TCP_TUNNEL 52113 {TAG} -"
    assert helper.ended(line) == {
        "user": "job-0123456789ab.2",
        "host": "pypi.org",
        "port": 443,
        "method": "CONNECT",
        "status": 200,
        "bytes": 52113,
        "refused": False,
        "tag": TAG,
    }
    # Printed on the container's output without the tag, which only tower sees.
    assert helper.printable(line) == (
        "job-0123456789ab.2 CONNECT pypi.org 443 200 TCP_TUNNEL 52113 counted -"
    )
    # Allowed by tower, then refused by squid's own address rule (denied_destination).
    line = f"job-0123456789ab.2 CONNECT pypi.org 443 403 TCP_DENIED 3500 {TAG} ERR_EGRESS_ADDRESS"
    assert helper.ended(line)["refused"] is True
    # Refused (tower wrote those as they were decided), unauthenticated, or malformed.
    refused = "job-0123456789ab.2 GET evil.com 80 403 TCP_DENIED 3591 - ERR_EGRESS"
    assert helper.ended(refused) is None and helper.printable(refused) == refused
    assert helper.ended("- GET pypi.org 80 407 TCP_DENIED 3601 - ERR_CACHE_ACCESS_DENIED") is None
    assert helper.ended("job-0123456789ab.2 GET a.org 80 200 TCP_MISS 1 counted -") is None
    assert helper.ended("garbage") is None


def test_tower_s_tags_are_what_the_helpers_pass_on_and_each_request_is_asked_alone() -> None:
    helper = _module("helper")
    for serial in (1, tags.MAX_SERIAL):
        tag = tags.sign(b"key", "job-0123456789ab.2", "pypi.org", 443, serial)
        assert helper.TAG.fullmatch(tag), tag
        assert tags.serial_of(b"key", "job-0123456789ab.2", "pypi.org", 443, tag) == serial
        assert tags.serial_of(b"other", "job-0123456789ab.2", "pypi.org", 443, tag) is None
    # Squid would give two identical requests in flight one answer (one tag, one serial)
    # if its external ACL had a cache: it has none.
    done = _render({})
    (line,) = [line for line in done.stdout.splitlines() if "external_acl_type egress" in line]
    assert " cache=0 " in line and " ttl=0 " in line


# --- what squid refuses to connect to, whatever tower was told -----------------------------

# Squid's predefined to_localhost, which the config refuses before anything else.
TO_LOCALHOST = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "0.0.0.0/32", "::1/128")]
# Refused by squid whole, where tower looks inside (or lets a few through): stricter on
# purpose, as an ACL cannot unwrap an address (egress/render.py).
STRICTER = {
    False: ("192.0.0.0/24", "::/96", "2001::/23", "2002::/16", "64:ff9b:1::/48"),
    # 0.0.0.0: to_localhost's (connecting to it reaches the proxy's own host).
    True: ("2001::/32", "64:ff9b:1::/48", "0.0.0.0/32"),
}


def _squid_refuses(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: list) -> bool:
    # Squid holds an IPv4 address as IPv4-mapped IPv6: the IPv4 entries match both.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in [*networks, *TO_LOCALHOST])


def _tower_refuses(address: ipaddress.IPv4Address | ipaddress.IPv6Address, private: bool) -> bool:
    return refusal(["example.com"], "example.com", 443, [str(address)], None, private) is not None


def _edges() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address where tower's rules or squid's lists may change their answer: the
    ends of each network either names (the standard library's tables behind tower's
    is_global included), their neighbours, and the IPv6 forms carrying each IPv4 one."""
    render = _module("render")
    networks = [*render.denied_networks(False), *render.denied_networks(True), *TO_LOCALHOST]
    for constants in (ipaddress._IPv4Constants, ipaddress._IPv6Constants):  # type: ignore[attr-defined]
        networks += getattr(constants, "_private_networks", [])
        networks += getattr(constants, "_private_networks_exceptions", [])
    more = ("100.64.0.0/10", "224.0.0.0/4", "fec0::/10", "ff00::/8", "169.254.169.254/32")
    networks += map(ipaddress.ip_network, more)
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for network in networks:
        kind = ipaddress.IPv6Address if network.version == 6 else ipaddress.IPv4Address
        top = 2**network.max_prefixlen - 1
        for value in (int(network.network_address), int(network.broadcast_address)):
            found.update(kind(near) for near in (value - 1, value, value + 1) if 0 <= near <= top)
    for v4 in [a for a in found if a.version == 4]:
        value = int(v4)
        for prefix, shift in (("64:ff9b::", 0), ("::", 0), ("::ffff:0:0", 0), ("2002::", 80)):
            found.add(ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) | value << shift))
        # Teredo: the client's address, inverted, in the last 32 bits.
        teredo = int(ipaddress.IPv6Address("2001::")) | (value ^ 0xFFFFFFFF)
        found.add(ipaddress.IPv6Address(teredo))
    return sorted(found, key=lambda a: (a.version, int(a)))


@pytest.mark.parametrize("private", [False, True])
def test_squid_refuses_every_address_tower_refuses(private: bool) -> None:
    networks = _module("render").denied_networks(private)
    missed = [a for a in _edges() if _tower_refuses(a, private) and not _squid_refuses(a, networks)]
    assert missed == []


@pytest.mark.parametrize("private", [False, True])
def test_squid_refuses_nothing_tower_allows_but_its_stricter_ranges(private: bool) -> None:
    networks = _module("render").denied_networks(private)
    stricter = [ipaddress.ip_network(n) for n in STRICTER[private]]
    extra = [a for a in _edges() if _squid_refuses(a, networks) and not _tower_refuses(a, private)]
    # An IPv6 form of a stricter IPv4 range is stricter too.
    carried = {a: [a, *embedded_ipv4(a)] for a in extra}
    assert [a for a in extra if not any(b in n for b in carried[a] for n in stricter)] == []


def test_the_config_refuses_non_public_destinations_unless_private_ones_are_allowed() -> None:
    refusing = _render({"EGRESS_ALLOW_PRIVATE": "false"}).stdout
    allowing = _render({"EGRESS_ALLOW_PRIVATE": "true"}).stdout
    for config in (refusing, allowing):
        acl = [line for line in config.splitlines() if line.startswith("acl denied_destination")]
        assert "acl denied_destination dst 169.254.169.254/32" in acl or (
            "acl denied_destination dst 169.254.0.0/16" in acl
        )
        assert "acl denied_destination dst fd00:ec2::254/128" in acl or (
            "acl denied_destination dst fc00::/7" in acl
        )
        # Matched after tower's yes, and before the one allow: its own page, which the
        # log line names for tower (ERR_EGRESS_ADDRESS).
        rules = [line for line in config.splitlines() if line.startswith(("http_", "deny_info"))]
        assert rules[-3:] == [
            "http_access deny denied_destination",
            "deny_info ERR_EGRESS_ADDRESS denied_destination",
            "http_access allow all",
        ]
        assert rules.index("http_access deny !egress") < len(rules) - 3
        assert "%err_code" in config
    assert "acl denied_destination dst 10.0.0.0/8" in refusing
    assert "acl denied_destination dst 172.16.0.0/12" in refusing
    assert "acl denied_destination dst 100.64.0.0/10" in refusing
    assert "acl denied_destination dst fc00::/7" in refusing
    assert "10.0.0.0/8" not in allowing and "172.16.0.0/12" not in allowing
    assert _render({}).stdout == refusing  # off unless set
    bad = _render({"EGRESS_ALLOW_PRIVATE": "sure\nhttp_access allow all"})
    assert bad.returncode == 64 and "EGRESS_ALLOW_PRIVATE" in bad.stderr


def test_the_helpers_find_tower_s_slots_beside_its_socket_name() -> None:
    helper = _module("helper")
    assert helper.slot_path(3) == "/run/parpaing/egress-3.sock"
    assert helper.encoded("a b;c") == "a%20b%3Bc"


def test_over_tcp_the_helpers_ask_each_address_of_the_tower_s_name() -> None:
    """Compose: TOWER_URL names the towers' service; any replica answers."""
    helper = _module("helper")
    seen: list[str] = []

    class Tower(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    with serving(Tower) as port:
        helper.TOWER_URL = f"http://localhost:{port}"
        assert "127.0.0.1" in helper.tower_addresses(helper.TOWER_URL)[0]
        assert helper.probe(["3"]) == "OK"  # no slot over TCP: whichever replica answers
        assert seen == ["/egress/health"]
        helper.TOWER_URL = "http://nowhere.invalid:1"
        assert helper.probe(["0"]) == "ERR"


def test_a_check_names_the_proxy_instance_and_passes_tower_s_tag_to_squid() -> None:
    helper = _module("helper")
    questions: list[dict[str, object]] = []
    answers = [{"allowed": True, "tag": TAG}, {"allowed": True}]

    class Tower(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            questions.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            body = json.dumps(answers.pop(0)).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return None

    with serving(Tower) as port:
        helper.TOWER_URL = f"http://127.0.0.1:{port}"
        helper.INSTANCE = "0123456789ab@2026-12-08T12:00:00.000000000Z"
        question = ["job-0123456789ab.2", "localhost", "443", "CONNECT", "tok"]
        assert helper.check(question) == f"OK tag={TAG}"
        assert questions[0]["proxy"] == helper.INSTANCE and questions[0]["token"] == "tok"
        # A yes without a tag would leave the request's end unprovable: refused.
        assert helper.check(question).startswith("ERR message=")


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A stand-in for tower on a loopback port, served by a thread while the block runs."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_question_without_host_and_port_is_refused_without_asking() -> None:
    helper = _module("helper")
    assert helper.check(["job.1", "pypi.org"]).startswith("ERR message=")
    assert helper.check(["job.1", "pypi.org", "443", "CONNECT"]).startswith("ERR message=")
    assert helper.probe(["-"]) == "ERR" and helper.probe(["99"]) == "ERR"


def test_a_job_with_a_list_is_told_of_the_proxy_with_its_attempt_s_credentials() -> None:
    env = proxy_environment({"egress": {"allow": ["pypi.org"]}}, "a-0123456789ab", 3, "tok")
    proxy = f"http://a-0123456789ab.3:tok@127.0.0.1:{protocol.EGRESS_PORT}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == proxy
    assert env["NO_PROXY"] == env["no_proxy"] == "127.0.0.1,localhost"


@pytest.mark.parametrize("request_", [{}, {"egress": None}, {"egress": {"allow": []}}])
def test_a_job_without_a_list_is_told_nothing(request_: dict[str, object]) -> None:
    assert proxy_environment(request_, "a-0123456789ab", 1, "tok") == {}


def test_the_image_copies_what_its_entrypoint_and_squid_run() -> None:
    dockerfile = (EGRESS_CONTEXT / "Dockerfile").read_text()
    for name in ("squid.conf.template", "render.py", "helper.py", "log-daemon", "entrypoint",
                 "ERR_EGRESS", "ERR_EGRESS_ADDRESS"):  # fmt: skip
        assert name in dockerfile and (EGRESS_CONTEXT / name).is_file(), name
    # What squid and Docker run by its path; the Python files go through python3 (a wheel
    # installs .py files without their executable bit).
    for runnable in ("log-daemon", "entrypoint"):
        assert (EGRESS_CONTEXT / runnable).stat().st_mode & 0o111, runnable
    conf = TEMPLATE.read_text()
    assert conf.count("/usr/bin/python3 /opt/parpaing-egress/helper.py") == 3
    assert Path(protocol.EGRESS_SOCKET).parent == Path(protocol.EGRESS_SOCKET_DIR)
