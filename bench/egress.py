"""Egress proxy benchmark: a download through the proxy from a job's worker, against the
same download from the host, and what the proxy adds to each request; in one run.

A benchmark, not a test: it prints figures and a target, and never fails on them.
Run from the repository root, with Docker up and the worker and egress images built
(`parpaing images build`):
    .venv/bin/python bench/egress.py [--mb 50] [--rounds 5] [--requests 300]

Set-up: a private PostgreSQL, a tower running the egress proxy (tower/egress/container.py,
as `parpaing serve` does) and the real worker image; a web site on this host's address on
the proxy's network, under a name only the proxy resolves (EGRESS_EXTRA_HOSTS), served
over HTTP and HTTPS. A job's allow-list names both.
1. Download: ROUNDS fetches of MB to /dev/null with curl, for each of HTTP and HTTPS:
   a. from the host, straight to the site (baseline);
   b. from one job's worker, through the proxy: the worker's loopback forwarder, the
      socket volume, socat, squid (HTTPS: a CONNECT tunnel).
   Throughput medians; the ratio is proxy / direct. Target: >= 0.7.
2. Latency: REQUESTS sequential small GETs (HTTP, a new connection each), by the same
   stdlib client, from the host straight to the site and from a worker through the proxy
   (each one authenticated and decided by tower, and reported when it ends). p50 and p99,
   and what the proxy adds at each.
"""

# ruff: noqa: E402  (sys.path is repaired below, before the imports that need it)
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import tempfile
import uuid
from typing import Any

import docker

from bench.e2e import database, remove_bench_workers
from tests.e2e.conftest import EGRESS_IMAGE
from tests.e2e.egress import Site, egress_names, egress_settings, proxy_host_address, site
from tests.e2e.support import docker_settings, python_script, shell_tower
from tower.db.embedded import LocalPostgres
from tower.images.build import EGRESS_CONTEXT, build_images, default_ca_bundle, image_is_current
from tower.settings import Settings

TARGET = 0.7
MiB = 1 << 20
NAME = "files.egress.test"
JOB_DEADLINE = 1800.0
PROFILE = 'name = "egress-bench"\nengine = "shell"\n[egress]\nallow = {allow}\n'

# One small GET, timed, by a client every host and worker has (python3's http.client): a
# new connection each time, through the proxy when PROXY is set (plain HTTP, as curl and
# pip send it: the absolute URL, the job's credentials in Proxy-Authorization).
LATENCY = """
import base64, http.client, json, os, time, urllib.parse
HOST, PORT, COUNT = {host!r}, {port}, {count}
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"]) if {proxied} else None
def once():
    started = time.perf_counter()
    if proxy:
        pair = f"{{urllib.parse.unquote(proxy.username)}}:{{urllib.parse.unquote(proxy.password)}}"
        headers = {{"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}}
        connection = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=30)
        connection.request("GET", f"http://{{HOST}}:{{PORT}}/hello", headers=headers)
    else:
        connection = http.client.HTTPConnection(HOST, PORT, timeout=30)
        connection.request("GET", "/hello")
    reply = connection.getresponse()
    reply.read()
    connection.close()
    assert reply.status == 200, reply.status
    return time.perf_counter() - started
for _ in range(10):
    once()
print(json.dumps([once() for _ in range(COUNT)]))
"""


def curl_download(url: str, extra: list[str]) -> str:
    """A curl command downloading `url` to /dev/null and printing seconds and bytes."""
    return " ".join(
        ["curl", "-sS", "-k", "-o", "/dev/null", "-w", "'%{time_total} %{size_download}\\n'",
         *extra, url]
    )  # fmt: skip


def throughput(lines: list[str], size: int) -> list[float]:
    """MB/s of each download's line ("seconds bytes"), checking it got it all."""
    found = []
    for line in lines:
        seconds, got = line.split()
        assert int(float(got)) == size, line
        found.append(size / MiB / float(seconds))
    return found


def host_download(url: str, address: str, port: int) -> str:
    command = curl_download(url, ["--resolve", f"{NAME}:{port}:{address}"])
    done = subprocess.run(command, shell=True, check=True, capture_output=True, text=True)
    return done.stdout.strip()


async def job_output(tower: Any, script: str) -> str:
    response = await tower.post(
        "/jobs",
        json={"agent_id": "bench", "engine": "shell", "profile": "egress-bench", "prompt": script},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    reply = await tower.get(
        f"/jobs/{job_id}/wait", params={"timeout": JOB_DEADLINE}, timeout=JOB_DEADLINE + 30
    )
    record = reply.json()
    assert record["status"] == "completed", record
    return str(record["result"])


# How each case downloads: its site's scheme, and curl's options through the proxy.
CASES = {
    # Plain HTTP: squid forwards the request and relays the answer (its HTTP path).
    "http": ("http", []),
    # HTTPS: a CONNECT tunnel; the site's TLS (Python's) bounds both sides.
    "https": ("https", []),
    # Plain HTTP inside a CONNECT tunnel (curl -p): the HTTPS path without TLS's cost,
    # so the relays' own ceiling shows.
    "tunnel": ("http", ["--proxytunnel"]),
}


async def downloads(
    tower: Any, served: Site, case: str, address: str, size: int, rounds: int
) -> tuple[list[float], list[float]]:
    """(direct MB/s, proxied MB/s) of each round: one from the host, then one from a
    job's worker, in turn, so that whatever else loads the machine weighs on both alike."""
    scheme, options = CASES[case]
    url = f"{scheme}://{NAME}:{served.port}/bytes/{size}"
    direct, proxied = [], []
    for _ in range(rounds):
        direct.append(await asyncio.to_thread(host_download, url, address, served.port))
        proxied.append((await job_output(tower, curl_download(url, options))).strip())
    return throughput(direct, size), throughput(proxied, size)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def current_egress_image() -> None:
    """Build the proxy's image when it is older than egress/: an image from other sources
    answers tower's helpers in another protocol, and every download gets a 403 page."""
    if not image_is_current(EGRESS_IMAGE, EGRESS_CONTEXT):
        print(f"building {EGRESS_IMAGE} (older than egress/)", flush=True)
        build_images(Settings(egress_image=EGRESS_IMAGE), ca_bundle=default_ca_bundle(),
                     which=("egress",))  # fmt: skip


async def measure(args: argparse.Namespace, database_url: str, root: Path) -> None:
    await asyncio.to_thread(current_egress_image)
    client = docker.from_env()
    network = f"parpaing-bench-egress-{uuid.uuid4().hex[:8]}"
    size = args.mb * MiB
    # The workers go before the proxy's names are let go: its socket volume, which they
    # mount, can only be removed after them.
    with egress_names(client) as names:
        try:
            address = proxy_host_address(client, names)
            with site(address) as http_site, site(address, NAME) as https_site:
                sites = {"http": http_site, "https": https_site}
                proxy = egress_settings(
                    names, EGRESS_IMAGE, {NAME: address}, egress_allow_private=True,
                    egress_max_bytes=1 << 40,
                )  # fmt: skip
                settings = docker_settings(
                    database_url, network, gateway_auth_socket=f"{root}/auth.sock",
                    pool_size=1, **proxy,
                )  # fmt: skip
                async with shell_tower(settings) as tower:
                    allow = [f"{NAME}:{http_site.port}", f"{NAME}:{https_site.port}"]
                    profile = PROFILE.format(allow=json.dumps(allow))
                    put = await tower.put(
                        "/configs/profile/egress-bench", json={"content": profile}
                    )
                    assert put.status_code in (200, 201), put.text
                    await report(args, tower, sites, address, size)
        finally:
            remove_bench_workers(network)
    client.close()


async def report(
    args: argparse.Namespace, tower: Any, sites: dict[str, Site], address: str, size: int
) -> None:
    print(f"download: {args.mb} MB x {args.rounds} rounds, curl to /dev/null")
    for case, (scheme, _) in CASES.items():
        direct, proxied = await downloads(tower, sites[scheme], case, address, size, args.rounds)
        a, b = statistics.median(direct), statistics.median(proxied)
        print(f"  {case:6}  direct {a:7.0f} MB/s   through the proxy {b:7.0f} MB/s   "
              f"ratio {b / a:.2f} (target {TARGET})")  # fmt: skip
    port = sites["http"].port
    host_script = LATENCY.format(host=address, port=port, count=args.requests, proxied=False)
    command = [sys.executable, "-c", host_script]
    done = await asyncio.to_thread(
        subprocess.run, command, check=True, capture_output=True, text=True
    )
    straight = json.loads(done.stdout)
    job_script = LATENCY.format(host=NAME, port=port, count=args.requests, proxied=True)
    through = json.loads(
        (await job_output(tower, python_script(job_script))).strip().splitlines()[-1]
    )
    print(f"latency: {args.requests} sequential GETs, a new connection each")
    for name, values in (("direct", straight), ("through the proxy", through)):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"  {name:18} p50 {p50 * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms")
    added50 = percentile(through, 0.5) - percentile(straight, 0.5)
    added99 = percentile(through, 0.99) - percentile(straight, 0.99)
    print(f"  the proxy adds     p50 {added50 * 1000:6.2f} ms   p99 {added99 * 1000:6.2f} ms")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pbe-", dir="/tmp") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            url = await database(server, "egress")
            await measure(args, url, Path(root))
        finally:
            await asyncio.to_thread(server.stop, "immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
