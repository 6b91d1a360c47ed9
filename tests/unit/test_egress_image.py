"""The egress proxy image's own code, run on the host: the config renderer (egress/render.py),
the helpers' parsing (egress/helper.py), and what a job is told of the proxy (its
environment, tower/execution/spec.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tower.execution import protocol
from tower.execution.spec import proxy_environment
from tower.images.build import EGRESS_CONTEXT

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


def test_the_log_daemon_reports_only_what_squid_counted() -> None:
    helper = _module("helper")
    counted = helper.ended("job-0123456789ab.2 CONNECT pypi.org 443 200 TCP_TUNNEL 52113 counted")
    assert counted == {
        "user": "job-0123456789ab.2",
        "host": "pypi.org",
        "port": 443,
        "method": "CONNECT",
        "status": 200,
        "bytes": 52113,
    }
    # Refused (tower wrote those as they were decided), unauthenticated, or malformed.
    assert helper.ended("job-0123456789ab.2 GET evil.com 80 403 TCP_DENIED 3591 -") is None
    assert helper.ended("- GET pypi.org 80 407 TCP_DENIED 3601 -") is None
    assert helper.ended("garbage") is None


def test_the_helpers_find_tower_s_slots_beside_its_socket_name() -> None:
    helper = _module("helper")
    assert helper.slot_path(3) == "/run/parpaing/egress-3.sock"
    assert helper.encoded("a b;c") == "a%20b%3Bc"


def test_a_question_without_host_and_port_is_refused_without_asking() -> None:
    helper = _module("helper")
    assert helper.check(["job.1", "pypi.org"]).startswith("ERR message=")
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
    for name in ("squid.conf.template", "render.py", "helper.py", "log-daemon", "entrypoint"):
        assert name in dockerfile and (EGRESS_CONTEXT / name).is_file(), name
    # What squid and Docker run by its path; the Python files go through python3 (a wheel
    # installs .py files without their executable bit).
    for runnable in ("log-daemon", "entrypoint"):
        assert (EGRESS_CONTEXT / runnable).stat().st_mode & 0o111, runnable
    conf = TEMPLATE.read_text()
    assert conf.count("/usr/bin/python3 /opt/parpaing-egress/helper.py") == 3
    assert Path(protocol.EGRESS_SOCKET).parent == Path(protocol.EGRESS_SOCKET_DIR)
