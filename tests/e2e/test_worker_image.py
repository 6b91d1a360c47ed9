"""The worker image, run the way tower runs it: every agent CLI answers, as uid 1000,
on a read-only root filesystem with no network."""

from __future__ import annotations

import re

import docker
import pytest
from docker.errors import ContainerError

from tower.execution.protocol import HOME_DIR, READY_LINE, WORKER_UID
from tower.images.build import apt_mirrors

VERSION = re.compile(r"\b\d+\.\d+\.\d+\b")
ENGINE_VERSION_COMMANDS = {
    "claude-code": ["claude", "--version"],
    "opencode": ["opencode", "--version"],
    "codex": ["codex", "--version"],
    "gemini": ["gemini", "--version"],
    "aider": ["aider", "--version"],
}
WORKER_HOME = HOME_DIR
SCRATCH = f"rw,nosuid,nodev,size=64m,uid={WORKER_UID},gid={WORKER_UID},mode=0700"


def run_hardened(
    client: docker.DockerClient, image: str, command: list[str], *, user: str | None = "1000"
) -> str:
    """Run `command` to completion in a locked-down container; its stdout and stderr."""
    try:
        output = client.containers.run(
            image,
            command,
            remove=True,
            user=user,
            read_only=True,
            tmpfs={"/tmp": SCRATCH, WORKER_HOME: SCRATCH},
            network_disabled=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=256,
            stdout=True,
            stderr=True,
        )
    except ContainerError as exc:
        pytest.fail(f"{command} exited {exc.exit_status}: {exc.stderr!r}")
    assert isinstance(output, bytes)
    return output.decode(errors="replace").strip()


@pytest.mark.parametrize("engine", sorted(ENGINE_VERSION_COMMANDS))
def test_engine_cli_reports_its_version(
    docker_client: docker.DockerClient, worker_image: str, engine: str
) -> None:
    output = run_hardened(docker_client, worker_image, ENGINE_VERSION_COMMANDS[engine])
    assert VERSION.search(output), f"{engine}: no version in {output!r}"


def test_image_runs_as_the_worker_user_by_default(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    # user=None: whatever the image itself declares, not what the test asks for.
    output = run_hardened(docker_client, worker_image, ["id", "-u", "-n"], user=None)
    assert output == "worker"
    assert run_hardened(docker_client, worker_image, ["id", "-u"], user=None) == str(WORKER_UID)


def test_workspace_is_the_working_directory_and_owned_by_the_worker(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    output = run_hardened(docker_client, worker_image, ["stat", "-c", "%u %n", "."], user=None)
    assert output == f"{WORKER_UID} ."
    assert run_hardened(docker_client, worker_image, ["pwd"]) == "/workspace"


def test_python3_is_present_for_the_runner(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    command = ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    assert run_hardened(docker_client, worker_image, command) == "3.11"


def test_build_only_inputs_leave_no_trace_in_the_image(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    # The CA bundle and its helper are mounted for single build steps, never copied.
    command = ["sh", "-c", "ls -A /run/secrets 2>/dev/null; ls /usr/local/bin"]
    names = run_hardened(docker_client, worker_image, command).split()
    assert "claude" in names, names  # the listing itself worked
    assert "ca" not in names
    assert "with-ca" not in names


def test_idle_worker_announces_itself_and_stops_on_sigterm(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    # stdin_open as tower sets it: the idle worker waits on its stdin for a bundle (with
    # stdin closed it would leave at once, having no job).
    container = docker_client.containers.run(
        worker_image,
        detach=True,
        stdin_open=True,
        read_only=True,
        network_disabled=True,
        cap_drop=["ALL"],
    )
    try:
        first_line = next(container.logs(stream=True, follow=True, stderr=False))
        assert READY_LINE in first_line
        # A generous grace period: 143 means our SIGTERM handler ran, 137 a forced kill.
        container.stop(timeout=60)
        assert container.wait()["StatusCode"] == 128 + 15
    finally:
        container.remove(force=True)


def test_base_image_fallback_reads_the_mirror_from_apt_sources() -> None:
    deb822 = (
        "Types: deb\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert apt_mirrors([deb822]) == {
        "bookworm": "http://mirror.example/debian",
        "bookworm-security": "http://mirror.example/debian-security",
    }


def test_one_line_apt_sources_and_a_security_mirror_guessed_from_the_main_one() -> None:
    one_line = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://local.example/debian bookworm main\n"
    )
    assert apt_mirrors([one_line]) == {
        "bookworm": "http://local.example/debian",
        "bookworm-security": "http://local.example/debian-security",
    }


def test_hosts_without_a_bookworm_mirror_leave_the_choice_to_debootstrap() -> None:
    ubuntu = "deb http://archive.example/ubuntu jammy main\n"
    assert apt_mirrors([ubuntu, "deb http://odd.example/repo bookworm main\n"]) == {
        "bookworm": "http://odd.example/repo"
    }
    assert apt_mirrors([ubuntu]) == {}
