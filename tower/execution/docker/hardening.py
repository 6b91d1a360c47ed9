"""How a worker container is locked down: the keyword arguments for `containers.create`.

Pure: no Docker calls here, so the options can be unit-tested and hashed. The contract
is docs/execution.md, "The worker container"; DESIGN §5 says why each option exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tower.configs.models import Profile
from tower.execution import protocol
from tower.execution.slots import ContainerShape
from tower.execution.spec import bounded_cpus, bounded_memory, container_shape
from tower.settings import Settings, egress_socket_volume, gateway_socket_volume, memory_bytes

WORKER_UID = protocol.WORKER_UID
WORKER_USER = f"{WORKER_UID}:{WORKER_UID}"
ROLE_LABEL = "parpaing.role"
SLOT_LABEL = "parpaing.slot"
HASH_LABEL = "parpaing.config_hash"
WORKER_ROLE = "worker"
# Bump when the options below change in a way that makes older warm containers unfit.
# 3: the bundle comes on stdin (stdin_open), no longer put_archive + SIGUSR1.
# 4: the entry script is a file of the image (worker/entrypoint.sh), no longer `sh -c`.
# 5: no network (network_mode none); the gateway through its socket volume, read-only.
# 6: Docker's `local` log driver, bounded (LOG_CONFIG).
HARDENING_VERSION = 6

# Tower follows a worker through attach, not its log; Docker keeps one only for the ready
# line (containers.wait_ready) and for an operator's `docker logs`. The `local` driver,
# bounded: json-file kept every byte an agent printed on the host's disk, unbounded, and
# encoding it cost stdout three quarters of its throughput (100 MB: 2.6 s, not 0.8 s).
LOG_CONFIG = {
    "type": "local",
    "config": {"max-size": "1m", "max-file": "2", "compress": "false"},
}

# The worker runs under its image's entry script, which outlives it (it keeps the
# container, and so the bundle volume's tmpfs, up until tower has collected /bundle/out),
# passes SIGTERM/SIGINT on and prints the done line: see worker/entrypoint.sh. `sh`, not
# the file itself, so no exec bit is needed on it.
WORKER_COMMAND = ("sh", protocol.ENTRYPOINT_PATH)


def worker_name(slot_id: str) -> str:
    return f"parpaing-worker-{slot_id}"


def bundle_volume_name(slot_id: str) -> str:
    return f"parpaing-bundle-{slot_id}"


def worker_labels(
    shape: ContainerShape, slot_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Labels on a worker and its volume: what reconcile and test clean-up find them by."""
    own = {ROLE_LABEL: WORKER_ROLE, SLOT_LABEL: slot_id, HASH_LABEL: config_hash(shape)}
    return {**(extra or {}), **own}


def pool_shape(profile: Profile | None, settings: Settings, image: str) -> ContainerShape:
    """The warm pool's shape: the default profile's (`image` the worker image's ID), so
    the jobs that name no profile, most of them, find warm containers whatever its
    resources say; the settings' defaults where no default profile exists."""
    if profile is None:
        return shape_from_settings(settings, image)
    return dataclasses.replace(container_shape(profile, settings), image=image)


def shape_from_settings(settings: Settings, image: str | None = None) -> ContainerShape:
    """The pool's default shape. `image` is the worker image's ID as the daemon resolved it
    (containers.image_id), so a rebuilt image makes older warm containers unfit; without
    it, the configured tag stands in."""
    return ContainerShape(
        image=image or settings.worker_image,
        # Within the maxima, as every job's own shape is: warm containers must fit jobs.
        memory=bounded_memory(settings.worker_mem_limit, settings, "WORKER_MEM_LIMIT"),
        cpus=bounded_cpus(settings.worker_cpu_limit, settings, "WORKER_CPU_LIMIT"),
        pids_limit=int(settings.worker_pids_limit),
        runtime=settings.worker_runtime,
        gateway_socket=gateway_socket_volume(settings),
        egress_socket=egress_socket_volume(settings),
    )


def config_hash(shape: ContainerShape) -> str:
    """A stable digest of everything in a shape that decides whether a warm container fits."""
    fields = {**dataclasses.asdict(shape), "hardening": HARDENING_VERSION}
    # "2g" and "2048m" are the same limit, so the same warm containers fit both.
    fields["memory"] = _docker_memory(shape.memory)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _docker_memory(limit: str) -> int | str:
    """A memory limit as Docker's API takes it: bytes where it reads as a size, else as
    given, for Docker to reject with its own message."""
    size = memory_bytes(limit)
    return limit if size is None else size


def container_options(
    shape: ContainerShape,
    settings: Settings,
    slot_id: str,
    volume: str,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """kwargs for `client.containers.create`: the hardened worker of `shape` for `slot_id`."""
    options: dict[str, Any] = {
        "image": shape.image,
        "name": worker_name(slot_id),
        "hostname": "worker",
        "user": WORKER_USER,
        "read_only": True,
        "tmpfs": _scratch_mounts(settings),
        "volumes": {
            volume: {"bind": protocol.BUNDLE_DIR, "mode": "rw"},
            # The gateway's socket, a worker's only peer (docker/network.py).
            shape.gateway_socket: {"bind": protocol.GATEWAY_SOCKET_DIR, "mode": "ro"},
        },
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": shape.pids_limit,
        "ipc_mode": "private",
        # Equal limits: no swap, so a memory hog is OOM-killed instead of thrashing.
        "mem_limit": shape.memory,
        "memswap_limit": shape.memory,
        "nano_cpus": round(shape.cpus * 1e9),
        # No device but loopback: nothing to reach, nothing to be reached at.
        "network_mode": "none",
        # tini as PID 1 forwards SIGTERM to the worker's shell and reaps the engine's orphans.
        "init": True,
        "command": list(WORKER_COMMAND),
        # The bundle comes on stdin (containers.deliver); no tty, so output stays framed
        # as stdout and stderr apart.
        "stdin_open": True,
        "log_config": LOG_CONFIG,
        "labels": worker_labels(shape, slot_id, labels),
        "detach": True,
    }
    if shape.egress_socket:
        # The egress proxy's socket: reached only by a job told of it (docs/egress.md).
        options["volumes"][shape.egress_socket] = {
            "bind": protocol.EGRESS_SOCKET_DIR,
            "mode": "ro",
        }
    if shape.runtime:
        options["runtime"] = shape.runtime
    return options


def _scratch_mounts(settings: Settings) -> dict[str, str]:
    """Bounded writable places on a read-only root, owned by the worker user."""
    return {
        "/tmp": _tmpfs(settings.worker_tmp_size, mode="1777"),
        protocol.HOME_DIR: _tmpfs(settings.worker_workspace_size, mode="0700"),
        protocol.WORKSPACE_DIR: _tmpfs(settings.worker_workspace_size, mode="0755"),
    }


def _tmpfs(size: str, *, mode: str) -> str:
    # `exec` spelled out: Docker's tmpfs default is noexec, and agents must be able to run
    # what they build in /workspace (./configure, node_modules/.bin). nosuid keeps it harmless.
    return f"rw,exec,nosuid,nodev,size={size},uid={WORKER_UID},gid={WORKER_UID},mode={mode}"
