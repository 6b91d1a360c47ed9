"""Worker containers on a real Docker daemon: hardening really applied, the bundle round
trip, the isolated network, the runtime pass-through, and nothing left behind.

The round trip uses a stand-in worker (a few lines of Python on top of the worker image)
so these tests exercise containers.py alone; the real worker is covered by the runner's
tests. Every object made here carries the label TEST_LABEL and is removed by it.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support import workers
from tower.execution import protocol
from tower.execution.docker import containers, hardening
from tower.execution.docker.network import (
    OLD_BRIDGE_OPTION,
    SOCKET_VOLUME_OPTIONS,
    ensure_socket_volume,
    retire_worker_network,
)
from tower.execution.slots import ContainerShape
from tower.settings import Settings

TEST_LABEL = "parpaing.test"
ROOT = Path(__file__).resolve().parents[2]
RUN = uuid.uuid4().hex[:8]
LABELS = {TEST_LABEL: f"containers-{RUN}"}
STAND_IN_IMAGE = f"parpaing-test-standin:{RUN}"
NO_PYTHON_IMAGE = f"parpaing-test-nopython:{RUN}"

# Says ready, reads the framed bundle on stdin and unpacks it into /bundle, copies the
# delivered spec to /bundle/out and exits, or never ends when the spec asks it to hang.
STAND_IN = """
import io, json, os, shutil, signal, sys, tarfile
print('parpaing-worker ready', flush=True)
mark, size = sys.stdin.buffer.readline().split()
assert mark == b'parpaing-bundle', mark
tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read(int(size)))).extractall('/bundle')
spec = json.load(open('/bundle/job/spec.json'))
os.makedirs('/bundle/out', exist_ok=True)
shutil.copy('/bundle/job/spec.json', '/bundle/out/echo.json')
with open('/bundle/out/result.json', 'w') as out:
    json.dump({'version': 1, 'exit_code': 0, 'uid': os.getuid()}, out)
if spec.get('hang'):
    signal.pause()
"""


def build_image(tag: str, context: Path, dockerfile: str) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)], check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def stand_in_image(
    docker_client: docker.DockerClient, worker_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The worker image with the stand-in in the real worker's place."""
    context = tmp_path_factory.mktemp("stand-in")
    (context / "worker.py").write_text(STAND_IN)
    build_image(
        STAND_IN_IMAGE, context, f"FROM {worker_image}\nCOPY worker.py /opt/parpaing/worker.py\n"
    )
    yield containers.image_id(docker_client, STAND_IN_IMAGE)
    docker_client.images.remove(STAND_IN_IMAGE, force=True)


@pytest.fixture(scope="module")
def no_python_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The bare Debian base with the worker's entry script: it starts, but has no python3."""
    context = tmp_path_factory.mktemp("no-python")
    (context / "entrypoint.sh").write_bytes((ROOT / "worker" / "entrypoint.sh").read_bytes())
    dockerfile = f"FROM debian:bookworm-slim\nCOPY entrypoint.sh {protocol.ENTRYPOINT_PATH}\n"
    build_image(NO_PYTHON_IMAGE, context, dockerfile)
    yield NO_PYTHON_IMAGE
    docker_client.images.remove(NO_PYTHON_IMAGE, force=True)


@pytest.fixture(scope="module")
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    """This module's WORKER_NET (a name: workers have no network) and its socket volume."""
    name = f"parpaing-test-net-{RUN}"
    ensure_socket_volume(docker_client, _socket_volume(name))
    yield name
    _remove_labelled(docker_client)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        docker_client.api.remove_volume(_socket_volume(name), force=True)


def _socket_volume(network: str) -> str:
    return f"{network}-socket"


def _remove_labelled(client: docker.DockerClient) -> None:
    selector = {"label": f"{TEST_LABEL}={LABELS[TEST_LABEL]}"}
    for container in client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for volume in client.volumes.list(filters=selector):
        volume.remove(force=True)
    for net in client.networks.list(filters=selector):
        net.remove()


def _settings(network: str, **overrides: Any) -> Settings:
    return Settings(
        worker_net=network,
        gateway_socket_volume=_socket_volume(network),
        worker_mem_limit="256m",
        worker_cpu_limit=0.5,
        **overrides,
    )


def _shape(settings: Settings, image: str) -> ContainerShape:
    return hardening.shape_from_settings(settings, image)


def _slot() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _attached_worker(client: docker.DockerClient, image: str, network: str) -> tuple[str, str, Any]:
    """A fresh worker with its stdin and output attached: (container id, slot, feed)."""
    settings = _settings(network)
    slot = _slot()
    container_id = containers.create_worker(client, _shape(settings, image), settings, slot, LABELS)
    return container_id, slot, containers.attach(client, container_id)


def _bundle(spec: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = json.dumps(spec).encode()
        info = tarfile.TarInfo("job/spec.json")
        info.size, info.uid, info.gid = len(data), 1000, 1000
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _members(tar_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _exec(
    client: docker.DockerClient, container_id: str, script: str, shell: str = "sh"
) -> tuple[int, str]:
    argv = ["sh", "-c", script] if shell == "sh" else ["python3", "-c", script]
    result = client.containers.get(container_id).exec_run(argv)
    return result.exit_code, result.output.decode(errors="replace")


def _leftovers(client: docker.DockerClient, slot_id: str) -> list[str]:
    selector = {"label": f"{hardening.SLOT_LABEL}={slot_id}"}
    found = [c.name for c in client.containers.list(all=True, filters=selector)]
    return found + [v.name for v in client.volumes.list(filters=selector)]


# --- creation and hardening -------------------------------------------------------------


def test_worker_comes_up_ready_with_every_hardening_option(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    settings = _settings(network, worker_pids_limit=100, worker_tmp_size="64m")
    slot = _slot()
    container_id = containers.create_worker(
        docker_client, _shape(settings, stand_in_image), settings, slot, LABELS
    )
    info = docker_client.api.inspect_container(container_id)
    host = info["HostConfig"]
    assert info["State"]["Running"] is True
    assert info["Config"]["User"] == "1000:1000"
    assert info["Config"]["Hostname"] == "worker"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 100
    assert host["IpcMode"] == "private"
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["Init"] is True
    assert host["NetworkMode"] == "none"
    assert not host["PortBindings"]
    assert set(host["Tmpfs"]) == {"/tmp", "/home/worker", "/workspace"}
    assert all("nosuid" in o and "nodev" in o for o in host["Tmpfs"].values())
    assert "size=64m" in host["Tmpfs"]["/tmp"]
    assert info["Config"]["Labels"][hardening.SLOT_LABEL] == slot
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    gateway = mounts[protocol.GATEWAY_SOCKET_DIR]
    assert (gateway["Name"], gateway["RW"]) == (_socket_volume(network), False)

    _, out = _exec(
        docker_client,
        container_id,
        "id -u; grep CapEff /proc/self/status; touch /etc/x 2>&1; "
        "touch /tmp/x /workspace/x /home/worker/x /bundle/x && echo scratch-ok; "
        "stat -c %u /tmp /workspace /home/worker /bundle",
    )
    lines = out.splitlines()
    assert lines[0] == "1000"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert "Read-only file system" in lines[2]
    assert "scratch-ok" in lines
    assert lines[-4:] == ["1000", "1000", "1000", "1000"]
    containers.remove_worker(docker_client, container_id, slot)
    assert _leftovers(docker_client, slot) == []


def test_runtime_setting_passes_through_to_the_container(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    settings = _settings(network, worker_runtime="crun")
    slot = _slot()
    container_id = containers.create_worker(
        docker_client, _shape(settings, stand_in_image), settings, slot, LABELS
    )
    info = docker_client.api.inspect_container(container_id)
    assert info["HostConfig"]["Runtime"] == "crun"
    assert info["State"]["Running"] is True
    assert _exec(docker_client, container_id, "id -u") == (0, "1000\n")
    containers.remove_worker(docker_client, container_id, slot)


def test_config_hash_follows_every_shape_field(stand_in_image: str, network: str) -> None:
    base = _shape(_settings(network), stand_in_image)
    variants = [
        ContainerShape(**{**base.__dict__, field: value})
        for field, value in [
            ("image", "sha256:other"),
            ("memory", "1g"),
            ("cpus", 1.5),
            ("pids_limit", 64),
            ("runtime", "crun"),
            ("gateway_socket", "elsewhere"),
        ]
    ]
    hashes = {hardening.config_hash(shape) for shape in [base, *variants]}
    assert len(hashes) == 7
    assert hardening.config_hash(base) == hardening.config_hash(ContainerShape(**base.__dict__))
    same_limit = ContainerShape(**{**base.__dict__, "memory": "2g"})
    also_2g = ContainerShape(**{**base.__dict__, "memory": "2048M"})
    assert hardening.config_hash(same_limit) == hardening.config_hash(also_2g)


# --- failures leave nothing -------------------------------------------------------------


def test_missing_image_fails_clearly_and_leaves_nothing(
    docker_client: docker.DockerClient, network: str
) -> None:
    settings = _settings(network)
    slot = _slot()
    with pytest.raises(containers.WorkerImageMissing, match="parpaing images build"):
        containers.create_worker(
            docker_client, _shape(settings, "parpaing-no-such-image:0"), settings, slot, LABELS
        )
    assert _leftovers(docker_client, slot) == []


def test_worker_that_never_gets_ready_fails_with_its_output_and_leaves_nothing(
    docker_client: docker.DockerClient, no_python_image: str, network: str
) -> None:
    # The bare Debian base has no python3: the worker cannot start at all.
    settings = _settings(network)
    slot = _slot()
    with pytest.raises(containers.WorkerStartFailed, match=r"(?s)not ready within 2 s.*python3"):
        containers.create_worker(
            docker_client,
            _shape(settings, no_python_image),
            settings,
            slot,
            LABELS,
            ready_timeout=2,
        )
    assert _leftovers(docker_client, slot) == []


# --- one job's round trip ---------------------------------------------------------------


def test_deliver_wait_collect_round_trip_then_remove(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    container_id, slot, feed = _attached_worker(docker_client, stand_in_image, network)
    spec = {"version": 1, "job_id": "a-round-trip", "argv": ["true"]}
    containers.deliver(docker_client, feed, _bundle(spec))
    ended = workers.wait_finished(docker_client, container_id, timeout=30)
    containers.close_output(feed)
    # The worker has exited, the container stays up so that /bundle survives.
    assert ended == containers.ExitInfo(status_code=-1, oom_killed=False)
    chunks, _ = docker_client.api.get_archive(container_id, "/bundle/out")
    members = _members(b"".join(chunks))
    assert json.loads(members["out/echo.json"]) == spec
    assert json.loads(members["out/result.json"])["uid"] == 1000
    containers.remove_worker(docker_client, container_id, slot)
    assert _leftovers(docker_client, slot) == []
    assert slot not in {w.slot_id for w in workers.list_workers(docker_client)}


def test_wait_gives_up_at_the_timeout_and_kill_stops_the_worker(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    container_id, slot, feed = _attached_worker(docker_client, stand_in_image, network)
    containers.deliver(docker_client, feed, _bundle({"hang": True}))
    assert workers.wait_finished(docker_client, container_id, timeout=1) is None
    containers.close_output(feed)
    containers.kill(docker_client, container_id)
    assert workers.wait_exit(docker_client, container_id, timeout=10) is not None
    containers.kill(docker_client, container_id)  # killing a stopped worker is fine
    containers.remove_worker(docker_client, container_id, slot)
    containers.remove_worker(docker_client, container_id, slot)  # and removing twice
    assert _leftovers(docker_client, slot) == []


def test_deliver_to_a_worker_that_does_not_read_fails_instead_of_hanging(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    container_id, slot, feed = _attached_worker(docker_client, stand_in_image, network)
    try:
        containers.deliver(docker_client, feed, _bundle({"hang": True}))
        # The stand-in reads no more: far more than the pipes hold cannot be written.
        with pytest.raises(containers.DockerFailure, match="delivering the job"):
            containers.deliver(docker_client, feed, bytes(64 << 20), timeout=1)
    finally:
        containers.close_output(feed)
        containers.remove_worker(docker_client, container_id, slot)


def test_remove_by_slot_finds_the_container_without_its_id(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    settings = _settings(network)
    slot = _slot()
    containers.create_worker(docker_client, _shape(settings, stand_in_image), settings, slot)
    listed = [w for w in workers.list_workers(docker_client) if w.slot_id == slot]
    assert [w.status for w in listed] == ["running"]
    assert slot in workers.list_bundle_volumes(docker_client).values()
    containers.remove_worker(docker_client, None, slot)
    assert _leftovers(docker_client, slot) == []


# --- no network: the gateway's socket ------------------------------------------------------

# Stands in for the gateway's nginx: www-data, the socket volume read-write, a socket
# made 0666 (as nginx makes its own) that answers every connection with a word.
SOCKET_SERVER = (
    "import os, socket\n"
    "s = socket.socket(socket.AF_UNIX); s.bind('/run/parpaing-gateway/gateway.sock')\n"
    "os.chmod('/run/parpaing-gateway/gateway.sock', 0o666); s.listen()\n"
    "print('listening', flush=True)\n"
    "while True:\n c, _ = s.accept(); c.sendall(b'gateway'); c.close()\n"
)


def test_a_worker_has_only_loopback_and_the_gateway_socket_read_only(
    docker_client: docker.DockerClient, stand_in_image: str, network: str
) -> None:
    volume = _socket_volume(network)
    server = docker_client.containers.run(
        stand_in_image,
        ["python3", "-c", SOCKET_SERVER],
        user="33:33",
        network_mode="none",
        volumes={volume: {"bind": protocol.GATEWAY_SOCKET_DIR, "mode": "rw"}},
        labels=LABELS,
        detach=True,
    )
    settings = _settings(network)
    slot = _slot()
    container_id = containers.create_worker(
        docker_client, _shape(settings, stand_in_image), settings, slot, LABELS
    )
    try:
        for line in server.logs(stream=True, follow=True):
            if b"listening" in line:
                break
        probe = (
            "import os, socket\n"
            "print(sorted(os.listdir('/sys/class/net')))\n"
            "s = socket.socket(socket.AF_UNIX); s.connect('/run/parpaing-gateway/gateway.sock')\n"
            "print(s.recv(16).decode())\n"
            "try:\n open('/run/parpaing-gateway/x', 'w'); print('wrote')\n"
            "except OSError as e:\n print('refused', e.errno)\n"
        )
        code, out = _exec(docker_client, container_id, probe, shell="python")
        assert code == 0, out
        assert out.splitlines() == ["['lo']", "gateway", "refused 30"], out  # 30: EROFS
    finally:
        server.remove(force=True)
        containers.remove_worker(docker_client, container_id, slot)


def test_the_socket_volume_is_made_once_as_a_tmpfs_of_the_gateway_user(
    docker_client: docker.DockerClient,
) -> None:
    name = f"parpaing-test-socket-{RUN}"
    try:
        ensure_socket_volume(docker_client, name)
        ensure_socket_volume(docker_client, name)  # there already: kept as it is
        details = docker_client.api.inspect_volume(name)
        assert details["Options"] == SOCKET_VOLUME_OPTIONS
    finally:
        docker_client.api.remove_volume(name, force=True)


def test_the_old_workers_bridge_is_removed_once_nothing_is_on_it(
    docker_client: docker.DockerClient, stand_in_image: str
) -> None:
    name = f"parpaing-test-oldnet-{RUN}"
    options = {OLD_BRIDGE_OPTION: "true"}
    docker_client.api.create_network(name, driver="bridge", internal=True, options=options)
    other = f"parpaing-test-notours-{RUN}"
    docker_client.api.create_network(other, driver="bridge")  # not a workers' bridge
    old_worker = docker_client.containers.run(
        stand_in_image, ["sleep", "300"], network=name, labels=LABELS, detach=True
    )
    try:
        assert retire_worker_network(docker_client, name) is False  # an old worker is on it
        assert docker_client.networks.list(names=[name])
        old_worker.remove(force=True)
        assert retire_worker_network(docker_client, name) is True
        assert not [n for n in docker_client.networks.list(names=[name]) if n.name == name]
        assert retire_worker_network(docker_client, other) is False
        assert [n for n in docker_client.networks.list(names=[other]) if n.name == other]
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            old_worker.remove(force=True)
        for leftover in (name, other):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                docker_client.api.remove_network(leftover)
