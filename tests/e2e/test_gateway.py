"""The gateway, for real: Debian's nginx in its container, started by a real tower, asking
that tower about tokens over the Unix socket, in front of a recording upstream.

Requests come from this host to the gateway's address on the test's egress network (the
jobs whose tokens they carry are rows the test put in the running state), or from a real
worker container, which has no network and reaches the gateway through its socket volume
(the worker's loopback forwarder, protocol.WORKER_GATEWAY_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial

import docker
import httpx
import pytest
from pydantic import SecretStr

from tests.e2e.agents import REAL_GEMINI_KEY
from tests.e2e.gateway import (
    FIRST_CHUNK,
    LAST_CHUNK,
    REAL_ANTHROPIC_KEY,
    REAL_OPENAI_KEY,
    GatewayNames,
    Recorder,
    anthropic_headers,
    egress_host_address,
    gateway_address,
    gateway_names,
    gateway_settings,
    recording_upstream,
    running_job,
)
from tests.e2e.support import (
    isolated_network,
    last_json_line,
    python_script,
    register_shell,
    run_job,
    serve,
)
from tests.support.metrics import samples
from tower.db.embedded import free_port
from tower.db.pool import create_pool
from tower.execution import protocol
from tower.gateway import tokens
from tower.gateway.container import (
    HASH_LABEL,
    SOCKET_MOUNT,
    GatewayFailure,
    container_options,
    ensure_gateway,
    gateway_spec,
)
from tower.gateway.listener import AuthListeners
from tower.queue import queries
from tower.settings import Settings

# nginx counts cache lifetimes in whole seconds: a yes cached for 1 s may be served for
# up to 2 s. Past this, a finished job's token is refused whatever was cached.
CACHE_SECONDS = 1
CACHE_BOUND = CACHE_SECONDS + 1.5


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[GatewayNames]:
    with gateway_names(docker_client) as found:
        yield found


@dataclass
class Rig:
    settings: Settings
    recorder: Recorder
    tower: httpx.AsyncClient
    gateway: httpx.AsyncClient
    upstream: str


@contextlib.asynccontextmanager
async def rig(
    database_url: str,
    network: str,
    names: GatewayNames,
    image: str,
    client: docker.DockerClient,
    **overrides: object,
) -> AsyncIterator[Rig]:
    """A tower that runs its gateway, in front of a recording upstream."""
    host = await asyncio.to_thread(egress_host_address, client, names)
    with recording_upstream(host) as (recorder, upstream):
        settings = gateway_settings(database_url, network, names, image, upstream, **overrides)
        async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as tower:
            base = await asyncio.to_thread(gateway_address, client, names)
            async with httpx.AsyncClient(base_url=base, timeout=30) as gateway:
                await _until_healthy(gateway)
                yield Rig(settings, recorder, tower, gateway, upstream)


@dataclass(frozen=True)
class RigMaker:
    """`rig` for one test's database, network, gateway names and image."""

    database_url: str
    network: str
    names: GatewayNames
    image: str
    client: docker.DockerClient

    def __call__(self, **overrides: object) -> contextlib.AbstractAsyncContextManager[Rig]:
        return rig(
            self.database_url, self.network, self.names, self.image, self.client, **overrides
        )


@pytest.fixture
def make_rig(
    database_url: str,
    network: str,
    names: GatewayNames,
    gateway_image: str,
    docker_client: docker.DockerClient,
) -> RigMaker:
    return RigMaker(database_url, network, names, gateway_image, docker_client)


async def _until_healthy(gateway: httpx.AsyncClient) -> None:
    end = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await gateway.get("/health")).status_code == 200:
                return
        assert time.monotonic() < end, "the gateway never answered /health"
        await asyncio.sleep(0.1)


async def _finish(database_url: str, job_id: str, lease_token: object) -> None:
    """End a held job the way its owner would: the fenced terminal write."""
    pool = await create_pool(database_url, 2)
    try:
        async with pool.acquire() as connection:
            final = queries.Finish("completed", 0, "done", None, None, None, 1)
            assert await queries.finish(connection, job_id, lease_token, final)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def _call(r: Rig, token: str) -> httpx.Response:
    return await r.gateway.post("/anthropic/v1/messages", json={}, headers=anthropic_headers(token))


# --- the token decides, the real key goes upstream -----------------------------------------


async def test_a_running_jobs_token_reaches_the_upstream_with_the_real_key(
    make_rig: RigMaker,
    database_url: str,
    names: GatewayNames,
    docker_client: docker.DockerClient,
) -> None:
    async with make_rig() as r:
        job = await running_job(database_url)
        # Several megabytes: prompts can be large, and must arrive whole.
        prompt = {"role": "user", "content": "x" * 6_000_000}
        body = json.dumps({"model": "m", "messages": [prompt]})
        reply = await r.gateway.post(
            "/anthropic/v1/messages?beta=true", content=body, headers=anthropic_headers(job.token)
        )
        assert reply.status_code == 200, reply.text
        openai = await r.gateway.post(
            "/openai/v1/chat/completions",
            json={"model": "m"},
            headers={"authorization": f"Bearer {job.token}"},
        )
        assert openai.status_code == 200, openai.text

        anthropic_call, openai_call = r.recorder.snapshot()
        assert anthropic_call.path == "/v1/messages?beta=true"
        assert anthropic_call.headers["x-api-key"] == REAL_ANTHROPIC_KEY
        assert anthropic_call.headers["anthropic-version"] == "2023-06-01"
        assert anthropic_call.headers["anthropic-beta"] == "tools-2024-04-04"
        assert "authorization" not in anthropic_call.headers
        assert anthropic_call.body == body.encode()
        assert openai_call.path == "/v1/chat/completions"
        assert openai_call.headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
        assert "x-api-key" not in openai_call.headers
        for call in (anthropic_call, openai_call):
            assert job.token not in json.dumps(call.headers), "the job token went upstream"
        # Each call is attributed to its job in the gateway's log.
        logs = docker_client.containers.get(names.container).logs().decode()
        assert logs.count(f"job={job.job_id}") == 2, logs[-2000:]


async def test_a_provider_without_a_credential_refuses_at_once_with_a_status_not_retried(
    make_rig: RigMaker,
    database_url: str,
) -> None:
    # No GEMINI_API_KEY, no Anthropic credential: 403 (engines retry 408, 409, 429 and
    # 5xx, and Claude Code gives up on a 403 after one call), naming what to set.
    async with make_rig(anthropic_api_key="") as r:
        job = await running_job(database_url)
        gemini = await r.gateway.post(
            "/gemini/v1beta/models/m:generateContent",
            json={},
            headers={"x-goog-api-key": job.token},
        )
        anthropic = await _call(r, job.token)
    for reply, variable in ((gemini, "GEMINI_API_KEY"), (anthropic, "ANTHROPIC_API_KEY")):
        assert reply.status_code == 403, reply.text
        assert reply.headers["x-should-retry"] == "false"
        error = reply.json()["error"]
        assert error["type"] == "permission_error"
        assert variable in error["message"], error
    assert "CLAUDE_CODE_OAUTH_TOKEN" in anthropic.json()["error"]["message"]
    assert r.recorder.snapshot() == []


async def test_unknown_missing_and_malformed_tokens_get_401_and_never_reach_upstream(
    make_rig: RigMaker,
    database_url: str,
) -> None:
    async with make_rig() as r:
        await running_job(database_url)  # a live job exists: its token is not these
        attempts = [
            anthropic_headers("A" * 43),
            anthropic_headers("not a token; with spaces"),
            {"authorization": "Bearer " + "B" * 43},
            {"authorization": "Basic Zm9vOmJhcg=="},
            {},
        ]
        for headers in attempts:
            for path in ("/anthropic/v1/messages", "/openai/v1/chat/completions"):
                reply = await r.gateway.post(path, json={}, headers=headers)
                assert reply.status_code == 401, (path, headers, reply.text)
                assert reply.json()["error"]["type"] == "authentication_error"
        assert r.recorder.snapshot() == []


async def test_finished_and_cancelled_jobs_tokens_get_401_and_never_reach_upstream(
    make_rig: RigMaker,
    database_url: str,
) -> None:
    async with make_rig() as r:
        used, unused, cancelled = [await running_job(database_url) for _ in range(3)]
        reply = await _call(r, used.token)
        assert reply.status_code == 200, reply.text
        answered_at = time.monotonic()

        await _finish(database_url, used.job_id, used.lease_token)
        await _finish(database_url, unused.job_id, unused.lease_token)
        assert (await r.tower.delete(f"/jobs/{cancelled.job_id}")).status_code == 200
        r.recorder.calls.clear()

        # Never checked while running, so nothing cached: refused at once.
        for job in (unused, cancelled):
            reply = await _call(r, job.token)
            assert reply.status_code == 401, reply.text
        # Checked while running: the cached yes lives at most CACHE_BOUND (docs/gateway.md).
        await asyncio.sleep(max(0.0, answered_at + CACHE_BOUND - time.monotonic()))
        reply = await _call(r, used.token)
        assert reply.status_code == 401, reply.text
        assert r.recorder.snapshot() == []


async def test_streaming_passes_through_unbuffered(
    make_rig: RigMaker,
    database_url: str,
) -> None:
    async with make_rig() as r:
        job = await running_job(database_url)
        request = r.gateway.build_request(
            "POST",
            "/anthropic/v1/messages",
            json={"stream": True},
            headers=anthropic_headers(job.token),
        )
        response = await r.gateway.send(request, stream=True)
        try:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            # The upstream holds the rest of its answer until this first event is here.
            first = await asyncio.wait_for(anext(chunks), 20)
            assert first == FIRST_CHUNK
            r.recorder.release.set()
            rest = b"".join([chunk async for chunk in chunks])
        finally:
            await response.aclose()
        assert rest == LAST_CHUNK
        assert r.recorder.released_in_time is True


# --- inference only ---------------------------------------------------------------------------

# Every call the shipped engines make (docs/engines.md), as a provider sees it: forwarded.
INFERENCE = [
    ("POST", "/anthropic/v1/messages?beta=true"),
    ("POST", "/anthropic/v1/messages/count_tokens"),
    ("POST", "/openai/v1/chat/completions"),
    ("POST", "/openai/v1/responses"),
    ("POST", "/openai/v1/responses/compact"),
    ("POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
    ("POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
    ("POST", "/gemini/v1beta/models/gemini-2.5-flash:countTokens"),
]
# The rest of the providers' APIs, a wrong method on an inference path, and a path that
# differs from an inference one only as written: refused, never forwarded.
NOT_INFERENCE = [
    ("POST", "/anthropic/v1/files"),
    ("GET", "/anthropic/v1/models"),
    ("POST", "/anthropic/v1/messages/batches"),
    ("GET", "/anthropic/v1/messages"),
    ("POST", "/anthropic/v1/%6Dessages"),
    ("GET", "/openai/v1/files"),
    ("POST", "/openai/v1/fine_tuning/jobs"),
    ("GET", "/openai/v1/organization/admin_api_keys"),
    ("POST", "/openai/v1/batches"),
    ("DELETE", "/openai/v1/responses/resp_1"),
    ("GET", "/gemini/v1beta/files"),
    ("POST", "/gemini/v1beta/models/gemini-2.5-flash:embedContent"),
    ("POST", "/gemini/v1beta/tunedModels/mine:generateContent"),
]


def provider_headers(path: str, token: str) -> dict[str, str]:
    if path.startswith("/anthropic/"):
        return anthropic_headers(token)
    if path.startswith("/openai/"):
        return {"authorization": f"Bearer {token}"}
    return {"x-goog-api-key": token}


def refused_counts(text: str) -> dict[str, float]:
    return {
        dict(labels)["provider"]: value
        for (name, labels), value in samples(text).items()
        if name == "tower_gateway_refused_total"
    }


async def test_only_inference_calls_are_forwarded_and_refusals_are_counted(
    make_rig: RigMaker,
    database_url: str,
    names: GatewayNames,
    docker_client: docker.DockerClient,
) -> None:
    async with make_rig(gemini_api_key=REAL_GEMINI_KEY) as r:
        job = await running_job(database_url)
        before = refused_counts((await r.tower.get("/metrics")).text)
        assert before == {"anthropic": 0, "openai": 0, "gemini": 0}
        for method, path in NOT_INFERENCE:
            reply = await r.gateway.request(
                method, path, json={}, headers=provider_headers(path, job.token)
            )
            assert reply.status_code == 403, (method, path, reply.text)
            assert reply.headers["x-should-retry"] == "false"
            error = reply.json()["error"]
            assert error["type"] == "permission_error"
            raw_path = path.split("?")[0]
            assert f"{method} {raw_path} is not an inference endpoint" in error["message"]
        # A token that is no running job's: 401 as anywhere, and no refusal counted.
        stranger = await r.gateway.post(
            "/openai/v1/files", json={}, headers=provider_headers("/openai/", tokens.mint())
        )
        assert stranger.status_code == 401, stranger.text
        assert stranger.json()["error"]["type"] == "authentication_error"
        # Codex's WebSocket handshake: 426 (it falls back to HTTPS at once), not a refusal.
        handshake = await r.gateway.get(
            "/openai/v1/responses",
            headers={
                **provider_headers("/openai/", job.token),
                "connection": "Upgrade",
                "upgrade": "websocket",
                "sec-websocket-version": "13",
                "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert handshake.status_code == 426, handshake.text
        assert r.recorder.snapshot() == [], "a refused call reached the provider"
        after = refused_counts((await r.tower.get("/metrics")).text)
        assert after == {
            provider: sum(1 for _, path in NOT_INFERENCE if path.startswith(f"/{provider}/"))
            for provider in ("anthropic", "openai", "gemini")
        }

        # The engines' calls still go through, each to the path it asked for.
        for method, path in INFERENCE:
            reply = await r.gateway.request(
                method, path, json={}, headers=provider_headers(path, job.token)
            )
            assert reply.status_code == 200, (method, path, reply.text)
        forwarded = [(call.method, call.path) for call in r.recorder.snapshot()]
        assert forwarded == [(m, "/" + p.split("/", 2)[2]) for m, p in INFERENCE]
        # The gateway's log names the job of each refused call.
        logs = docker_client.containers.get(names.container).logs().decode()
        assert f'job={job.job_id} "POST /anthropic/v1/files" 403' in logs, logs[-3000:]


# --- from a real worker --------------------------------------------------------------------

WORKER_PROBE = """
import json, os, socket, urllib.request, urllib.error
base, token = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"]
request = urllib.request.Request(
    base + "/v1/messages", data=b'{"model": "m"}', method="POST",
    headers={"x-api-key": token, "anthropic-version": "2023-06-01",
             "content-type": "application/json"})
with urllib.request.urlopen(request, timeout=20) as reply:
    through_gateway = reply.status
def reaches(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False
upstream_host, upstream_port = __UPSTREAM__
print(json.dumps({
    "base": base,
    "token": token,
    "through_gateway": through_gateway,
    "upstream_directly": reaches(upstream_host, upstream_port),
    "real_key_in_env": any(__REAL_KEY__ in value for value in os.environ.values()),
}))
"""


@pytest.mark.usefixtures("worker_image")  # the jobs' workers run it
async def test_a_worker_calls_through_the_gateway_only_and_never_holds_the_key(
    make_rig: RigMaker,
) -> None:
    async with make_rig() as r:
        await register_shell(r.tower)
        host, port = r.upstream.removeprefix("http://").split(":")
        source = WORKER_PROBE.replace("__UPSTREAM__", repr((host, int(port)))).replace(
            "__REAL_KEY__", repr(REAL_ANTHROPIC_KEY)
        )
        env = {"ANTHROPIC_BASE_URL": "{gateway_url}/anthropic", "ANTHROPIC_API_KEY": "{job_token}"}
        engine = await r.tower.get("/configs/engine/shell")
        content = (
            engine.json()["content"]
            + "\n[env]\n"
            + "".join(f'{key} = "{value}"\n' for key, value in env.items())
        )
        assert (await r.tower.put("/configs/engine/shell", json={"content": content})).is_success
        record = await run_job(r.tower, python_script(source))
        report = last_json_line(record)

        assert report["base"] == f"{protocol.WORKER_GATEWAY_URL}/anthropic"
        assert report["through_gateway"] == 200
        assert report["upstream_directly"] is False
        assert report["real_key_in_env"] is False
        (call,) = r.recorder.snapshot()
        assert call.headers["x-api-key"] == REAL_ANTHROPIC_KEY
        # The job is over: its token, once the cached yes has lapsed, is refused.
        await asyncio.sleep(CACHE_BOUND)
        r.recorder.calls.clear()
        assert (await _call(r, report["token"])).status_code == 401
        assert r.recorder.snapshot() == []


# --- tower runs the gateway ------------------------------------------------------------------


async def test_health_reports_the_gateway_and_says_when_it_is_gone(
    make_rig: RigMaker,
    names: GatewayNames,
    docker_client: docker.DockerClient,
) -> None:
    async with make_rig() as r:
        healthy = await r.tower.get("/health")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["checks"]["gateway"] == "ok"
        await asyncio.to_thread(docker_client.containers.get(names.container).stop, timeout=1)
        degraded = await r.tower.get("/health")
        assert degraded.status_code == 503, degraded.text
        assert "stopped" in degraded.json()["checks"]["gateway"]


def test_the_gateway_container_is_kept_when_unchanged_and_replaced_when_changed(
    names: GatewayNames,
    network: str,
    gateway_image: str,
    docker_client: docker.DockerClient,
) -> None:
    settings = gateway_settings("", network, names, gateway_image, "http://upstream.invalid")
    ensure = partial(ensure_gateway, docker_client, say=lambda _: None)
    first = ensure(settings)
    assert ensure(settings) == first
    rotated = settings.model_copy(update={"anthropic_api_key": SecretStr("sk-ant-rotated")})
    second = ensure(rotated)
    assert second != first
    container = docker_client.containers.get(second)
    assert container.status == "running"
    assert "ANTHROPIC_API_KEY=sk-ant-rotated" in container.attrs["Config"]["Env"]
    assert container.labels[HASH_LABEL]
    # Only its way out is a network; workers come through the socket volume.
    assert set(container.attrs["NetworkSettings"]["Networks"]) == {names.egress_net}
    mounts = {m.get("Name"): m for m in container.attrs["Mounts"]}
    assert mounts[names.socket_volume]["Destination"] == "/run/parpaing-gateway"
    assert mounts[names.socket_volume]["RW"] is True


# --- the gateway is a worker's only peer, and no way out ---------------------------------------

ESCAPE_PROBE = """
import json, socket, urllib.request, urllib.error
gateway_host, gateway_port = __GATEWAY__
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as error:
        return type(error).__name__
def status(path, headers=None):
    url = f"http://{gateway_host}:{gateway_port}{path}"
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
def raw_status(request_line):
    # A request line as written, which urllib would normalise.
    with socket.create_connection((gateway_host, gateway_port), timeout=10) as conn:
        conn.sendall(request_line.encode() + b"\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        return int(conn.recv(64).split()[1])
print(json.dumps({
    "gateway": connect(gateway_host, gateway_port),
    "health": status("/health"),
    "others": {f"{h}:{p}": connect(h, p) for h, p in __TARGETS__},
    "auth_endpoint": status("/_parpaing_auth"),
    "absolute_uri": raw_status("GET __UPSTREAM__/v1/messages HTTP/1.1"),
    "traversal": raw_status("GET /anthropic/../openai/v1/models HTTP/1.1"),
    "connect_method": raw_status("CONNECT 203.0.113.7:443 HTTP/1.1"),
    "other_path": status("/v1/messages"),
}))
"""


@pytest.mark.usefixtures("worker_image")  # the jobs' workers run it
async def test_from_a_worker_the_gateway_is_the_only_peer_and_no_way_out(
    make_rig: RigMaker,
    names: GatewayNames,
) -> None:
    async with make_rig() as r:
        await register_shell(r.tower)
        upstream_host, upstream_port = r.upstream.removeprefix("http://").split(":")
        gateway_egress = str(r.gateway.base_url.host)
        targets = [
            (upstream_host, int(upstream_port)),  # the provider, seen from the gateway
            (gateway_egress, 8080),  # the gateway's other leg
            (names.container, 8080),  # the gateway by name, as workers once reached it
            ("203.0.113.7", 443),  # a public-looking address (RFC 5737)
        ]
        source = (
            ESCAPE_PROBE.replace("__GATEWAY__", repr(("127.0.0.1", protocol.GATEWAY_PORT)))
            .replace("__TARGETS__", repr(targets))
            .replace("__UPSTREAM__", r.upstream)
        )
        report = last_json_line(await run_job(r.tower, python_script(source)))

    # Controls: the gateway is there and answers.
    assert report["gateway"] == "connected" and report["health"] == 200, report
    assert all(outcome != "connected" for outcome in report["others"].values()), report
    assert report["auth_endpoint"] == 404, report  # internal to nginx
    assert report["absolute_uri"] == 404, report  # not an open proxy
    assert report["traversal"] == 400, report
    assert report["connect_method"] in (400, 405), report
    assert report["other_path"] == 404, report
    assert r.recorder.snapshot() == [], "a worker reached the upstream without a token"


def test_a_bad_setting_fails_the_start_naming_the_variable_not_its_value(
    names: GatewayNames, network: str, gateway_image: str, docker_client: docker.DockerClient
) -> None:
    bad = 'sk-ant"; return 200 "leak'
    settings = gateway_settings(
        "", network, names, gateway_image, "http://upstream.invalid", anthropic_api_key=bad
    )
    with pytest.raises(GatewayFailure) as failure:
        ensure_gateway(docker_client, settings, say=lambda _: None)
    assert "ANTHROPIC_API_KEY is not valid" in failure.value.message
    assert bad not in failure.value.message


async def test_compose_style_the_gateway_asks_tower_over_tcp(
    database_url: str, names: GatewayNames, gateway_image: str, docker_client: docker.DockerClient
) -> None:
    # Compose: the gateway is its own service and reaches a tower's GATEWAY_AUTH_LISTEN
    # over a private network (here, this host's address on the test's egress network).
    host = await asyncio.to_thread(egress_host_address, docker_client, names)
    port = free_port()
    pool = await create_pool(database_url, 2)
    listen = Settings(gateway_auth_listen=f"{host}:{port}")
    listeners = await AuthListeners.start(listen, pool, unix_socket=False)
    try:
        with recording_upstream(host) as (recorder, upstream):
            image_id = docker_client.images.get(gateway_image).id
            spec = gateway_spec(
                gateway_settings("", "unused", names, gateway_image, upstream), image_id
            )
            options = container_options(spec)
            options["environment"]["TOWER_AUTH_URL"] = f"http://{host}:{port}/gateway/auth"
            # No auth socket to mount: tower is reached over TCP. The workers' socket
            # volume stays, as in compose.
            options["volumes"] = {
                source: mount
                for source, mount in options["volumes"].items()
                if mount["bind"] != SOCKET_MOUNT
            }
            await asyncio.to_thread(docker_client.containers.run, **options)
            base = await asyncio.to_thread(gateway_address, docker_client, names)
            async with httpx.AsyncClient(base_url=base, timeout=30) as gateway:
                await _until_healthy(gateway)
                job = await running_job(database_url)
                allowed = await gateway.post(
                    "/anthropic/v1/messages", json={}, headers=anthropic_headers(job.token)
                )
                refused = await gateway.post(
                    "/anthropic/v1/messages", json={}, headers=anthropic_headers(tokens.mint())
                )
            assert allowed.status_code == 200, allowed.text
            assert refused.status_code == 401, refused.text
            (call,) = recorder.snapshot()
            assert call.headers["x-api-key"] == REAL_ANTHROPIC_KEY
    finally:
        await listeners.stop()
        await pool.close()
