"""A second Docker engine on this machine, that a test may stop and start at will.

The machine's own daemon is shared by every session running tests: no test may stop it.
A test about Docker going away (or about towers on two Docker hosts) gets an engine of
its own instead: its own socket, data root, exec root (and so its own containerd) and
pid file, its own network namespace, no bridge and no iptables rules (workers have no
network), live-restore on.
A tower is pointed at it with DOCKER_HOST.

Its data root lives on in /var/tmp/parpaing-second-docker/slot-N, so the worker image
(about 2 GB) is copied from the main daemon once per machine and image, not per run:
about a minute the first time, a second or two afterwards. A session holds its slot with
an exclusive flock while the engine runs, so concurrent sessions take different slots.
Whatever a test leaves on the engine (containers, volumes) is removed before it stops.
Needs root, as dockerd does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

ROOT = Path(os.environ.get("PARPAING_SECOND_DOCKER_ROOT", "/var/tmp/parpaing-second-docker"))
SLOTS = 3
START_DEADLINE = 60.0
STOP_DEADLINE = 60.0


class SecondDocker:
    """One dockerd of the test's own; `start()` and `stop()` as often as the test needs."""

    def __init__(self, data_root: Path, run_dir: Path) -> None:
        self.data_root = data_root
        self.run_dir = run_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = run_dir / "dockerd.log"
        self.config = run_dir / "daemon.json"
        # A key of its own, kept with its slot: Docker 20.10 derives the daemon's ID from
        # it, and the default (/etc/docker/key.json) would give this engine the machine
        # daemon's ID, making the two look like one Docker host.
        key = data_root.parent / f"{data_root.name}.key.json"
        config = {"live-restore": True, "deprecated-key-path": str(key)}
        self.config.write_text(json.dumps(config))

    @property
    def host(self) -> str:
        """Its DOCKER_HOST."""
        return f"unix://{self.run_dir}/docker.sock"

    def start(self) -> None:
        """Start the daemon and wait until it answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        # In a network namespace of its own: a dockerd started with --bridge=none deletes
        # the host's docker0 (moby removes the default bridge it is told not to use),
        # which breaks the machine's own daemon for every other test and build.
        argv = [
            "unshare",
            "--net",
            "--",
            "dockerd",
            f"--host={self.host}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.run_dir / 'docker.pid'}",
            f"--config-file={self.config}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._wait_until_answering()

    def stop(self) -> None:
        """SIGTERM the daemon and wait until it has exited (containers stay, live-restore)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=60)

    def has_image_of(self, main: docker.DockerClient, tag: str) -> bool:
        wanted = main.images.get(tag).id
        with contextlib.closing(self.client()) as client:
            try:
                return bool(client.images.get(tag).id == wanted)
            except ImageNotFound:
                return False

    def copy_image(self, main: docker.DockerClient, tag: str) -> None:
        """`tag` as the main daemon has it, unless this engine has it already."""
        if self.has_image_of(main, tag):
            return
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        assert save.stdout is not None
        load = subprocess.run(
            ["docker", "--host", self.host, "load", "--quiet"],
            stdin=save.stdout, capture_output=True, check=False,
        )  # fmt: skip
        save.stdout.close()
        assert save.wait() == 0 and load.returncode == 0, load.stderr.decode(errors="replace")
        with contextlib.closing(self.client()) as client:
            client.images.prune(filters={"dangling": True})  # an older copy, untagged

    def clean(self) -> None:
        """Remove every container and volume on this engine (the test's leftovers)."""
        with contextlib.closing(self.client()) as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
            client.volumes.prune()
            for volume in client.volumes.list():
                with contextlib.suppress(DockerException):
                    volume.remove(force=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the second dockerd exited:\n{self.log()[-4000:]}")
            with contextlib.suppress(DockerException), contextlib.closing(self.client()) as c:
                c.ping()
                return
            time.sleep(0.1)
        raise RuntimeError(f"the second dockerd did not answer in time:\n{self.log()[-4000:]}")


@contextlib.contextmanager
def second_docker() -> Iterator[SecondDocker]:
    """A started second engine, cleaned and stopped afterwards."""
    with _slot() as data_root, tempfile.TemporaryDirectory(prefix="pd2-") as run:
        engine = SecondDocker(data_root, Path(run))
        engine.start()
        try:
            engine.clean()  # what a killed session left in this slot
            yield engine
        finally:
            if not engine.running:
                engine.start()  # a test that ended with it stopped: clean up all the same
            try:
                engine.clean()
            finally:
                engine.stop()


@contextlib.contextmanager
def _slot() -> Iterator[Path]:
    """The data root of a free slot, held (flock) until the block ends; when every slot
    is taken, the first one, once free."""
    ROOT.mkdir(parents=True, exist_ok=True)
    with _held_slot() as index:
        yield ROOT / f"slot-{index}"


@contextlib.contextmanager
def _held_slot() -> Iterator[int]:
    for index in range(SLOTS):
        with (ROOT / f"slot-{index}.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            yield index  # the lock goes with the file's closing
            return
    with (ROOT / "slot-0.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield 0
