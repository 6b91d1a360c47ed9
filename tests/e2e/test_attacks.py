"""Attacks from inside a worker fail, each in its own test, with the hardening on by default.

Every attack is a shell-engine job: the prompt is the attacker's script, run through the
real path (API, queue, Docker runner, worker). Probe scripts print one JSON line of what
they observed; the assertions read it, and each probe also checks a positive control, so
a probe that silently did nothing cannot pass.

Network probes run only from inside a worker, and only once the probe has seen that its
worker has no network device but loopback: then no packet it sends can leave the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import asyncpg
import docker
import httpx
import pytest

from tests.e2e.support import (
    container_exists,
    describe,
    docker_settings,
    host_addresses,
    isolated_network,
    last_json_line,
    poll_until,
    python_script,
    run_job,
    running_container,
    shell_tower,
    submit,
    wait_pool_ready,
    wait_terminal,
)
from tower.db.embedded import LocalPostgres

# Reserved documentation ranges (RFC 5737): addresses that look public but are nobody's.
PUBLIC_LOOKING = [("203.0.113.7", 443), ("198.51.100.7", 80)]
METADATA = [("169.254.169.254", 80)]
CONNECT_TIMEOUT = 2.0


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


# --- resource exhaustion ----------------------------------------------------------------


async def test_fork_bomb_is_held_by_the_pid_limit_and_tower_keeps_serving(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    # A low CPU cap only spares the other work on this small machine; the PID limit
    # (the default) is what the test is about.
    settings = docker_settings(
        database_url, network, pool_size=1, worker_timeout_seconds=15, worker_cpu_limit=0.5
    )
    async with shell_tower(settings) as client:
        # Only once a worker is seen to carry the limit is the bomb let loose on this host.
        host_config = await _warm_host_config(docker_client, database_url)
        assert 0 < host_config["PidsLimit"] <= settings.worker_pids_limit, host_config
        job_id = await submit(client, ":(){ :|:& };:")
        container_id = await running_container(database_url, job_id, docker_client)
        pids = await _wait_for_pids(docker_client, container_id, settings.worker_pids_limit)
        assert pids <= settings.worker_pids_limit
        assert (await client.get("/health")).status_code == 200

        # bash itself may exit 0 at once (the bomb forks into the background) or be
        # stopped by the timeout: either way the job ends, and its container goes with it.
        record = await wait_terminal(client, job_id)
        assert record["status"] in ("completed", "failed"), describe(record)
        print(f"fork bomb job ended: {describe(record)}")
        await poll_until(
            partial(_removed, docker_client, container_id), "the bomb's container to go"
        )
        assert (await client.get("/health")).status_code == 200
        follow = await run_job(client, "echo still serving")
        assert follow["status"] == "completed", describe(follow)
        assert follow["result"].strip() == "still serving"


async def _wait_for_pids(client: docker.DockerClient, container_id: str, limit: int) -> int:
    """The container's process count once the bomb has (nearly) filled the PID limit."""

    async def near_limit() -> int | None:
        stats = await asyncio.to_thread(_stats, client, container_id)
        current = int(stats.get("pids_stats", {}).get("current", 0))
        return current if current >= limit * 0.9 else None

    return await poll_until(near_limit, "the fork bomb to reach the PID limit")


async def _warm_host_config(client: docker.DockerClient, database_url: str) -> dict[str, Any]:
    [slot] = await wait_pool_ready(database_url, 1)
    container = await asyncio.to_thread(client.containers.get, slot["container_id"])
    host_config: dict[str, Any] = container.attrs["HostConfig"]
    return host_config


async def _removed(client: docker.DockerClient, container_id: str) -> bool:
    return not await asyncio.to_thread(container_exists, client, container_id)


def _stats(client: docker.DockerClient, container_id: str) -> dict[str, Any]:
    stats: dict[str, Any] = client.containers.get(container_id).stats(stream=False)
    return stats


MEMORY_HOG = """
chunks = []
for _ in range(16):  # up to 1 GiB, 64 MiB at a time, every page written
    chunks.append(b"x" * (64 << 20))
print("allocated", len(chunks) * 64, "MiB")
"""


async def test_memory_hog_is_killed_as_oom(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = docker_settings(database_url, network, pool_size=1, worker_mem_limit="256m")
    async with shell_tower(settings) as client:
        # Warm workers have the default profile's shape (2g); the shell profile sets no
        # memory, so the hog runs in a container of WORKER_MEM_LIMIT. Neither may swap.
        host_config = await _warm_host_config(docker_client, database_url)
        assert host_config["Memory"] == 2 << 30, host_config
        assert host_config["MemorySwap"] == 2 << 30, host_config  # no swap
        record = await run_job(client, python_script(MEMORY_HOG))
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "oom", describe(record)
    assert "allocated" not in (record["result"] or "")


# --- filesystem ---------------------------------------------------------------------------

WRITE_PROBE = """
import errno, json
def attempt(path):
    try:
        with open(path, "w") as handle:
            handle.write("x")
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
    return "written"
root = {p: attempt(p) for p in ("/usr/x", "/etc/x", "/x", "/opt/parpaing/x", "/bin/x")}
scratch = {p: attempt(p) for p in ("/tmp/x", "/workspace/x", "/home/worker/x")}
mounts = {line.split()[1]: line.split()[3] for line in open("/proc/mounts")}
print(json.dumps({"root": root, "scratch": scratch, "mounts": mounts}))
"""


async def test_root_filesystem_is_read_only(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(database_url, network)
    async with shell_tower(settings) as client:
        report = last_json_line(await run_job(client, python_script(WRITE_PROBE)))
    assert report["root"] == dict.fromkeys(report["root"], "EROFS"), report
    assert set(report["scratch"].values()) == {"written"}, report
    assert "ro" in report["mounts"]["/"].split(","), report["mounts"]


# --- network ----------------------------------------------------------------------------

CONNECT_PROBE = """
import errno, json, os, socket, time
def attempt(host, port):
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=%(timeout)s).close()
        outcome = "connected"
    except socket.timeout:
        outcome = "timeout"
    except OSError as error:
        outcome = errno.errorcode.get(error.errno, str(error))
    return {"target": f"{host}:{port}", "outcome": outcome,
            "seconds": round(time.monotonic() - started, 2)}
def default_routes(path, column):
    with open(path) as table:
        rows = [line.split() for line in table.read().splitlines()[1:] if line.strip()]
    return [row for row in rows if row[column] in ("00000000", "0" * 32)]
targets = json.loads(%(targets)r)
interfaces = sorted(os.listdir("/sys/class/net"))
sealed = interfaces == ["lo"]  # the precondition: nothing sent here can leave the worker
print(json.dumps({
    "interfaces": interfaces,
    "attempts": [attempt(host, port) for host, port in targets] if sealed else [],
    "default_routes": default_routes("/proc/net/route", 1),
    "default_routes_v6": default_routes("/proc/net/ipv6_route", 0)
        if open("/proc/net/if_inet6").read().strip() else [],
}))
"""


def connect_probe(targets: list[tuple[str, int]]) -> str:
    source = CONNECT_PROBE % {"timeout": CONNECT_TIMEOUT, "targets": json.dumps(targets)}
    return python_script(source)


async def _probe_from_worker(
    client: httpx.AsyncClient,
    docker_client: docker.DockerClient,
    database_url: str,
    network: str,
    targets: list[tuple[str, int]],
) -> dict[str, Any]:
    await wait_pool_ready(database_url, 1)  # a warm worker, as jobs mostly get
    report = last_json_line(await run_job(client, connect_probe(targets)))
    assert report["interfaces"] == ["lo"], f"a worker has a network device: {report}"
    assert len(report["attempts"]) == len(targets), report
    return report


# What a connect may end in when nothing answers: no route (all a worker without a
# network device gets), no neighbour, or silence. ECONNREFUSED would mean some host
# answered with a reset, so it is not among them.
NOBODY_ANSWERED = {"timeout", "EHOSTUNREACH", "ENETUNREACH"}


def _assert_unreachable(report: dict[str, Any]) -> None:
    reached = [a for a in report["attempts"] if a["outcome"] == "connected"]
    assert not reached, f"a worker reached {reached}"
    answered = [a for a in report["attempts"] if a["outcome"] not in NOBODY_ANSWERED]
    assert not answered, f"something answered a worker: {answered}"
    assert not report["default_routes"], f"the worker has a default route: {report}"
    assert not report["default_routes_v6"], f"the worker has an IPv6 default route: {report}"


async def test_internet_is_unreachable(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = docker_settings(database_url, network, pool_size=1)
    async with shell_tower(settings) as client:
        report = await _probe_from_worker(
            client, docker_client, database_url, network, PUBLIC_LOOKING
        )
    _assert_unreachable(report)


async def test_cloud_metadata_address_is_unreachable(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = docker_settings(database_url, network, pool_size=1)
    async with shell_tower(settings) as client:
        report = await _probe_from_worker(client, docker_client, database_url, network, METADATA)
    _assert_unreachable(report)


async def test_tower_is_unreachable_even_on_every_host_address(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    # The control asks the tower by each host address: a keyless tower answers only its
    # loopback names unless ALLOWED_HOSTS says otherwise.
    settings = docker_settings(database_url, network, pool_size=1, allowed_hosts="*")
    async with shell_tower(settings, host="0.0.0.0") as client:
        port = int(str(client.base_url.port))
        addresses = host_addresses()
        await _assert_host_reaches_tower(addresses, port)  # the control: it is listening
        targets = [(address, port) for address in addresses]
        report = await _probe_from_worker(client, docker_client, database_url, network, targets)
    _assert_unreachable(report)


async def _assert_host_reaches_tower(addresses: list[str], port: int) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for address in addresses:
            response = await client.get(f"http://{address}:{port}/health")
            assert response.status_code == 200, f"tower not listening on {address}:{port}"


async def test_postgres_is_unreachable_even_on_every_host_address(
    database_url: str,
    network: str,
    worker_image: str,
    docker_client: docker.DockerClient,
    pg_server: LocalPostgres,
) -> None:
    settings = docker_settings(database_url, network, pool_size=1)
    async with (
        _expose_on_every_address(pg_server.port) as port,
        shell_tower(settings) as client,
    ):
        addresses = host_addresses()
        await _assert_host_reaches_postgres(addresses, port, database_url)
        targets = [(address, port) for address in addresses]
        report = await _probe_from_worker(client, docker_client, database_url, network, targets)
    _assert_unreachable(report)


@contextlib.asynccontextmanager
async def _expose_on_every_address(target_port: int) -> AsyncIterator[int]:
    """PostgreSQL as a careless deployment would have it: listening on 0.0.0.0 (here, a
    relay on every address to the test server on loopback)."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(relay, host="0.0.0.0", port=0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _assert_host_reaches_postgres(addresses: list[str], port: int, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    for address in addresses:
        connection = await asyncpg.connect(
            host=address,
            port=port,
            user=parts.username or "postgres",
            password=parts.password,
            database=parts.path.lstrip("/"),
        )
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()


DOCKER_SOCKET_PROBE = """
import json, os, socket, stat
sockets = []
for top in ("/",):
    for directory, subdirs, files in os.walk(top, onerror=lambda error: None):
        if directory in ("/proc", "/sys"):
            subdirs[:] = []
            continue
        for name in files + subdirs:
            path = os.path.join(directory, name)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    sockets.append(path)
            except OSError:
                pass
def talk(path):
    try:
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(2)
        client.connect(path)
        client.close()
        return "connected"
    except OSError as error:
        return type(error).__name__
candidates = ["/var/run/docker.sock", "/run/docker.sock"]
print(json.dumps({
    "sockets": sockets,
    "docker_sockets": {path: talk(path) for path in candidates + [
        s for s in sockets if "docker" in s or "containerd" in s]},
    "exists": {path: os.path.exists(path) for path in candidates},
    "docker_host_env": os.environ.get("DOCKER_HOST"),
    "walked_self": os.path.isdir("/workspace"),
}))
"""


async def test_docker_socket_is_absent(database_url: str, network: str, worker_image: str) -> None:
    settings = docker_settings(database_url, network)
    async with shell_tower(settings) as client:
        report = last_json_line(await run_job(client, python_script(DOCKER_SOCKET_PROBE)))
    assert report["walked_self"], report
    assert report["exists"] == {"/var/run/docker.sock": False, "/run/docker.sock": False}
    assert "connected" not in report["docker_sockets"].values(), report
    assert not [s for s in report["sockets"] if "docker" in s or "containerd" in s], report
    assert report["docker_host_env"] is None, report


# --- other jobs ---------------------------------------------------------------------------

# The marker is assembled at run time, so the searching job's own script (its prompt
# file, its command line) never holds it: only a real leak can be found.
PLANT_SECRET = """
secret="PARP""AING-SECRET-%(token)s"
echo "$secret" > /workspace/secret.txt
echo "$secret" > /tmp/secret.txt
echo "$secret" > /home/worker/secret.txt
export PLANTED_SECRET="$secret"
echo planted
exec sleep 300
"""

SEARCH_SECRET = """
import json, os, stat
marker = ("PARP" "AING-SECRET-").encode()
own = marker + b"own-%(token)s"
with open("/tmp/own.txt", "wb") as handle:  # the control: the search must find this
    handle.write(own)
found = []
def scan(path):
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # never block on a FIFO or device
            return
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError:
        return
    if marker in data.replace(own, b""):
        found.append(path)
    if own in data:
        found_own.append(path)
found_own = []
# The image's own directories are read-only and alike in every worker: skipped, except
# where something is mounted into them, which the walk over every mount point covers.
SKIPPED = {"/usr", "/opt", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/var"}
SKIPPED |= {"/proc", "/sys", "/dev"}
PSEUDO = {"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs"}
mounts = [line.split() for line in open("/proc/mounts")]
tops = ["/"] + [
    m[1] for m in mounts
    if m[2] not in PSEUDO and m[1] != "/" and m[1].split("/")[1] not in ("proc", "sys", "dev")
]
for top in tops:
    for directory, subdirs, files in os.walk(top, onerror=lambda error: None):
        if top == "/" and directory == "/":
            subdirs[:] = [d for d in subdirs if "/" + d not in SKIPPED]
        for name in files:
            scan(os.path.join(directory, name))
for pid in (d for d in os.listdir("/proc") if d.isdigit()):
    for name in ("environ", "cmdline"):
        scan(f"/proc/{pid}/{name}")
pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
print(json.dumps({"found": found, "found_own": found_own, "pids": pids, "tops": tops}))
"""


async def test_another_jobs_files_are_out_of_reach(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    token = secrets.token_hex(8)
    settings = docker_settings(database_url, network)
    async with shell_tower(settings) as client:
        victim = await submit(client, PLANT_SECRET % {"token": token})
        container_id = await running_container(database_url, victim, docker_client)
        await _wait_for_log_line(docker_client, container_id, "planted")

        record = await run_job(client, python_script(SEARCH_SECRET % {"token": token}))
        report = last_json_line(record)

        assert (await client.delete(f"/jobs/{victim}")).status_code == 200
        victim_record = await wait_terminal(client, victim)
        await poll_until(partial(_removed, docker_client, container_id), "the victim's container")
    assert "/tmp/own.txt" in report["found_own"], report
    assert report["found"] == [], report
    assert victim_record["status"] == "cancelled", describe(victim_record)


# --- another worker ------------------------------------------------------------------------

# Both workers of this pair say which network devices and addresses they have; the
# listener waits on every address it has, and the prober tries them all and loopback.
WORKER_ADDRESSES = """
def devices():
    return sorted(os.listdir("/sys/class/net"))
def addresses():
    lines = open("/proc/net/fib_trie").read().splitlines()
    local = [a.split()[-1] for a, b in zip(lines, lines[1:]) if "/32 host LOCAL" in b]
    return sorted({a for a in local if not a.startswith("127.")})
"""

LISTENER = """
import json, os, socket
%(addresses)s
server = socket.create_server(("0.0.0.0", %(port)d))
print(json.dumps({"listening": True, "devices": devices(), "addresses": addresses()}), flush=True)
while True:
    connection, peer = server.accept()
    print(json.dumps({"reached_by": peer[0]}), flush=True)
    connection.close()
"""

PROBER = """
import errno, json, os, socket
%(addresses)s
def attempt(host):
    try:
        socket.create_connection((host, %(port)d), timeout=%(timeout)s).close()
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
targets = ["127.0.0.1"] + json.loads(%(targets)r)
print(json.dumps({"devices": devices(), "addresses": addresses(),
                  "attempts": {host: attempt(host) for host in targets}}))
"""
PAIR_PORT = 7310


async def test_a_worker_has_no_network_device_and_no_address_another_worker_could_reach(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = docker_settings(database_url, network)
    values = {"addresses": WORKER_ADDRESSES, "port": PAIR_PORT}
    async with shell_tower(settings) as client:
        listener = await submit(client, python_script(LISTENER % values))
        container_id = await running_container(database_url, listener, docker_client)
        listening = await _logged_json(docker_client, container_id, "listening")

        targets = json.dumps(listening["addresses"])
        probe = PROBER % {**values, "timeout": CONNECT_TIMEOUT, "targets": targets}
        report = last_json_line(await run_job(client, python_script(probe)))

        assert (await client.delete(f"/jobs/{listener}")).status_code == 200
        await wait_terminal(client, listener)
    assert listening["devices"] == ["lo"] and listening["addresses"] == [], listening
    assert report["devices"] == ["lo"] and report["addresses"] == [], report
    # Its own loopback is the prober's, not the listener's: nothing listens there.
    assert report["attempts"] == {"127.0.0.1": "ECONNREFUSED"}, report


async def _logged_json(client: docker.DockerClient, container_id: str, key: str) -> Any:
    """The first JSON line with `key` the worker's engine printed (its container's logs)."""

    async def found() -> dict[str, Any] | None:
        logs = await asyncio.to_thread(lambda: client.containers.get(container_id).logs())
        for line in logs.decode(errors="replace").splitlines():
            if line.startswith("{") and key in (parsed := json.loads(line)):
                return dict(parsed)
        return None

    return await poll_until(found, f"{key!r} in the logs of {container_id[:12]}")


async def _wait_for_log_line(client: docker.DockerClient, container_id: str, line: str) -> None:
    """The worker copies the engine's output to its logs: wait for `line` there."""

    async def logged() -> bool:
        logs = await asyncio.to_thread(lambda: client.containers.get(container_id).logs())
        return line in logs.decode(errors="replace").splitlines()

    await poll_until(logged, f"{line!r} in the logs of {container_id[:12]}")


# --- privileges ---------------------------------------------------------------------------

PRIVILEGE_PROBE = """
import json, os, shutil, subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
def field(name):
    return status.get(name, "").strip()
def run(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
        return {"code": done.returncode, "out": (done.stdout + done.stderr)[-300:]}
    except FileNotFoundError:
        return {"code": None, "out": "absent"}
def setuid_root():
    try:
        os.setuid(0)
        return "became root"
    except PermissionError:
        return "EPERM"
setuid_files = []
for directory in ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"):
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.stat(path).st_mode & 0o4000:
            setuid_files.append(path)
mounts = {line.split()[1]: line.split()[3].split(",") for line in open("/proc/mounts")}
print(json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "caps": {name: field(name) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "no_new_privs": field("NoNewPrivs"), "seccomp": field("Seccomp"),
    "setuid_root": setuid_root(),
    "sudo": shutil.which("sudo"),
    "su": run(["su", "-c", "id -u", "root"]),
    "mount": run(["mount", "-t", "tmpfs", "none", "/tmp"]),
    "unshare": run(["unshare", "--user", "--map-root-user", "id", "-u"]),
    "ping": run(["ping", "-c", "1", "-W", "1", "127.0.0.1"]),
    "setuid_files": setuid_files,
    "scratch_options": {p: mounts.get(p, []) for p in ("/tmp", "/workspace", "/home/worker")},
}))
"""


async def test_no_capability_can_be_gained(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(database_url, network)
    async with shell_tower(settings) as client:
        report = last_json_line(await run_job(client, python_script(PRIVILEGE_PROBE)))
    assert (report["uid"], report["euid"], report["gid"]) == (1000, 1000, 1000), report
    assert set(report["caps"].values()) == {"0000000000000000"}, report["caps"]
    assert report["no_new_privs"] == "1", report
    assert report["setuid_root"] == "EPERM", report
    assert report["sudo"] is None, report
    for attempt in ("su", "mount", "unshare", "ping"):
        assert report[attempt]["code"] != 0, f"{attempt} succeeded: {report[attempt]}"
    # mount is setuid root in the image: this refusal shows it ran as uid 1000 anyway.
    assert "must be superuser" in report["mount"]["out"], report["mount"]
    for path, options in report["scratch_options"].items():
        assert {"nosuid", "nodev"} <= set(options), f"{path} mounted {options}"
