"""Tower's answers to the egress proxy, through its real listener on a Unix socket and the
real queue statements: who may use the proxy, where to, within which bounds, and what each
decision leaves on the job (its events, its record, its webhook, the metrics).
docs/egress.md; the proxy itself is exercised in tests/e2e/test_egress.py."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.towers import insert_job
from tower.db.embedded import free_port
from tower.db.pool import Pool
from tower.egress.listener import EgressListener
from tower.execution.runner import ClaimedJob
from tower.jobs.service import get_job
from tower.observability.metrics import TowerMetrics
from tower.queue import queries
from tower.settings import Settings

LEASE = 30.0
DONE = queries.Finish("completed", 0, "ok", None, None, None, 5)
PUBLIC = "93.184.215.14"
MAX_BYTES = 1 << 20
# The proxy instance asking (egress/entrypoint: its container's host name and start time).
INSTANCE = "0123456789ab@2026-12-08T12:00:00.000000000Z"


@dataclass
class Proxy:
    """What the proxy's helpers would ask, over the listener's socket."""

    socket: Path
    metrics: TowerMetrics

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
            return await client.post(path, json=body)

    async def auth(self, job: ClaimedJob, token: str | None = None) -> int:
        body = {"user": user(job), "token": token or job.gateway_token}
        return (await self.post("/egress/auth", body)).status_code

    async def check(
        self,
        job: ClaimedJob,
        host: str,
        port: int = 443,
        addresses: list[str] | None = None,
        token: str | None = None,
        instance: str = INSTANCE,
    ) -> httpx.Response:
        question = {
            "user": user(job),
            "token": job.gateway_token if token is None else token,
            "host": host,
            "port": port,
            "method": "CONNECT",
            "addresses": [PUBLIC] if addresses is None else addresses,
            "proxy": instance,
        }
        return await self.post("/egress/check", question)

    async def allow(
        self, job: ClaimedJob, host: str, port: int = 443, instance: str = INSTANCE
    ) -> str:
        """Tower's yes to a request: its tag."""
        answer = await self.check(job, host, port, instance=instance)
        assert answer.status_code == 200, answer.text
        tag: str = answer.json()["tag"]
        return tag

    async def done(
        self,
        job: ClaimedJob,
        host: str,
        moved: int,
        tag: str,
        port: int = 443,
        refused: bool = False,
    ) -> None:
        entry = {"user": user(job), "host": host, "port": port, "method": "CONNECT",
                 "status": 403 if refused else 200, "bytes": moved, "refused": refused,
                 "tag": tag}  # fmt: skip
        answer = await self.post("/egress/done", {"entries": [entry]})
        assert answer.status_code == 204, answer.text

    def ends_refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "tower_egress_ends_refused_total", {"reason": reason}
        )
        return value or 0.0


def user(job: ClaimedJob) -> str:
    return f"{job.job_id}.{job.attempt}"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="peg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def proxy(pool: Pool, socket_dir: Path) -> AsyncIterator[Proxy]:
    settings = Settings(
        gateway_auth_socket=str(socket_dir / "auth.sock"),
        egress_max_connections=2,
        egress_max_bytes=MAX_BYTES,
    )
    metrics = TowerMetrics("test")
    started = await EgressListener.start(settings, pool, metrics)
    assert started.slot is not None and started.slot.path == socket_dir / "egress-0.sock"
    try:
        yield Proxy(started.slot.path, metrics)
    finally:
        await started.stop()


async def claim_with(
    db: Any, allow: list[str] | None, webhook_url: str | None = None
) -> ClaimedJob:
    """A running job whose stored list (as submit stores it) is `allow`."""
    job_id = await insert_job(db, "fetch", webhook_url=webhook_url)
    egress = None if allow is None else json.dumps({"allow": allow})
    await db.execute(
        "UPDATE jobs SET request = request || jsonb_build_object('egress', $2::text::jsonb)"
        " WHERE job_id = $1",
        job_id,
        egress or "null",
    )
    (job,) = await queries.claim(db, "owner", LEASE, 1)
    assert job.job_id == job_id
    return job


async def egress_events(db: Any, job_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'egress' ORDER BY seq", job_id
    )
    return [row["data"] for row in rows]


def counted(proxy: Proxy, profile: str, decision: str) -> float:
    value = proxy.metrics.registry.get_sample_value(
        "tower_egress_requests_total", {"profile": profile, "decision": decision}
    )
    return value or 0.0


async def test_only_a_running_attempt_with_a_list_may_use_the_proxy(db: Any, proxy: Proxy) -> None:
    job = await claim_with(db, ["pypi.org"])
    bare = await claim_with(db, None)
    assert await proxy.auth(job) == 200
    # Another attempt's name, another job's token, a job without a list: no.
    moved = {"user": f"{job.job_id}.{job.attempt + 1}", "token": job.gateway_token}
    assert (await proxy.post("/egress/auth", moved)).status_code == 401
    assert await proxy.auth(job, bare.gateway_token) == 401
    assert await proxy.auth(bare) == 401
    assert await queries.finish(db, job.job_id, job.lease_token, DONE)
    assert await proxy.auth(job) == 401
    # Even were squid to hold a cached yes, the attempt no longer runs: refused, not written.
    refused = await proxy.check(job, "pypi.org")
    assert refused.status_code == 403 and "is not running" in refused.json()["reason"]
    assert await egress_events(db, job.job_id) == []


async def test_tower_decides_only_for_the_holder_of_the_attempt_s_token(
    db: Any, proxy: Proxy
) -> None:
    job = await claim_with(db, ["pypi.org"])
    other = await claim_with(db, ["pypi.org"])
    for token in (other.gateway_token, "", "x" * 43):
        refused = await proxy.check(job, "pypi.org", token=token)
        assert refused.status_code == 403, token
        assert "not its credentials" in refused.json()["reason"]
    assert await egress_events(db, job.job_id) == []  # a stranger writes nothing
    assert (await proxy.check(job, "pypi.org")).status_code == 200


async def test_a_request_on_the_list_goes_and_its_end_is_an_event_with_its_bytes(
    db: Any, pool: Pool, proxy: Proxy
) -> None:
    job = await claim_with(db, ["pypi.org", "*.github.com:443"])
    tag = await proxy.allow(job, "api.github.com")
    assert await egress_events(db, job.job_id) == []  # written when it ends
    await proxy.done(job, "api.github.com", 5000, tag)

    [event] = await egress_events(db, job.job_id)
    assert event == {"host": "api.github.com", "port": 443, "method": "CONNECT",
                     "allowed": True, "bytes": 5000, "status": 200}  # fmt: skip
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None
    assert record.egress.model_dump() == {
        "allow": ["pypi.org", "*.github.com:443"],
        "allowed": 1,
        "refused": [],
        "refused_count": 0,
        "bytes": 5000,
        "limited": None,
    }
    assert counted(proxy, "default", "allowed") == 1
    sample = proxy.metrics.registry.get_sample_value(
        "tower_egress_bytes_total", {"profile": "default"}
    )
    assert sample == 5000


async def test_an_end_tower_did_not_tag_is_refused_and_a_real_one_counted_once(
    db: Any, pool: Pool, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Squid's report of an end carries no token: whoever reaches the listener could
    report ends. Only one with the tag tower's yes gave that request counts, once."""
    job = await claim_with(db, ["pypi.org", "*.github.com"])
    other = await claim_with(db, ["pypi.org"])
    tag = await proxy.allow(job, "pypi.org")
    others = await proxy.allow(other, "pypi.org")
    serial, mac = tag.split(".")
    forged = [
        ("pypi.org", 443, ""),  # none
        ("pypi.org", 443, f"{serial}.{'0' * 32}"),  # made up
        ("pypi.org", 443, f"{int(serial) + 1}.{mac}"),  # another request's serial
        ("api.github.com", 443, tag),  # this request's, for another host
        ("pypi.org", 80, tag),  # or port
        ("pypi.org", 443, others),  # another job's request
    ]
    for host, port, text in forged:
        await proxy.done(job, host, 1 << 19, text, port=port)
        await proxy.done(job, host, 1, text, port=port, refused=True)
    assert proxy.ends_refused("forged") == 2 * len(forged)
    # Logged once, without the tags; nothing written, nothing closed.
    warnings = [r.getMessage() for r in caplog.records if "tower did not make" in r.getMessage()]
    assert len(warnings) == 1 and mac not in warnings[0]
    assert await egress_events(db, job.job_id) == []
    assert (await get_job(pool, job.job_id, None)).egress.bytes == 0  # type: ignore[union-attr]
    assert (await proxy.check(job, "pypi.org")).status_code == 200  # 2 open: the bound
    assert (await proxy.check(job, "pypi.org")).status_code == 403

    await proxy.done(job, "pypi.org", 5000, tag)
    [_bound, event] = await egress_events(db, job.job_id)
    assert event["allowed"] is True and event["bytes"] == 5000
    assert mac not in json.dumps(event)
    # Replayed (or a report sent twice): the request is closed already, nothing changes.
    await proxy.done(job, "pypi.org", 5000, tag)
    await proxy.done(job, "pypi.org", 0, tag, refused=True)
    assert proxy.ends_refused("not_open") == 2
    assert len(await egress_events(db, job.job_id)) == 2
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None and record.egress.bytes == 5000
    assert record.egress.refused_count == 1  # the bound's refusal above, only
    # One room, not two: the replay closed no other request.
    assert (await proxy.check(job, "pypi.org")).status_code == 200
    assert (await proxy.check(job, "pypi.org")).status_code == 403
    # The other job's request is still open: its own end counts.
    await proxy.done(other, "pypi.org", 70, others)
    assert [e["bytes"] for e in await egress_events(db, other.job_id)] == [70]


async def test_refusals_are_events_and_listed_once_on_the_record(
    db: Any, pool: Pool, proxy: Proxy
) -> None:
    job = await claim_with(db, ["pypi.org"])
    off_list = await proxy.check(job, "evil.com")
    assert off_list.status_code == 403
    assert off_list.json()["reason"] == "evil.com:443 is not on this job's allow-list"
    again = await proxy.check(job, "EVIL.com.")  # the same host, as squid may spell it
    assert again.status_code == 403
    private = await proxy.check(job, "pypi.org", addresses=["10.0.0.7"])
    assert private.status_code == 403 and "EGRESS_ALLOW_PRIVATE" in private.json()["reason"]

    events = await egress_events(db, job.job_id)
    assert [(e["host"], e["allowed"], e["bytes"]) for e in events] == [
        ("evil.com", False, 0),
        ("evil.com", False, 0),
        ("pypi.org", False, 0),
    ]
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None
    assert [(r.host, r.port) for r in record.egress.refused] == [
        ("evil.com", 443),
        ("pypi.org", 443),
    ]
    assert record.egress.refused_count == 3 and record.egress.limited is None
    assert counted(proxy, "default", "refused") == 3


async def test_a_request_the_proxy_refused_after_tower_s_yes_is_a_refusal(
    db: Any, pool: Pool, proxy: Proxy
) -> None:
    # Tower saw a public address; squid's own lookup, to connect, gave a private one, and
    # its denied_destination ACL refused it (its log line says ERR_EGRESS_ADDRESS).
    job = await claim_with(db, ["pypi.org"])
    tag = await proxy.allow(job, "pypi.org")
    await proxy.done(job, "pypi.org", 3600, tag, refused=True)

    [event] = await egress_events(db, job.job_id)
    assert event["allowed"] is False and event["bytes"] == 0 and event["host"] == "pypi.org"
    assert "non-public address when the proxy connected" in event["reason"]
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None
    assert [(r.host, r.port, r.reason) for r in record.egress.refused] == [
        ("pypi.org", 443, event["reason"])
    ]
    assert record.egress.refused_count == 1 and record.egress.bytes == 0
    # No longer open: both of EGRESS_MAX_CONNECTIONS are free again.
    for _ in range(2):
        assert (await proxy.check(job, "pypi.org")).status_code == 200
    assert counted(proxy, "default", "refused") == 1


async def test_a_restarted_proxy_s_first_question_closes_what_it_held_open_before(
    db: Any, pool: Pool, proxy: Proxy
) -> None:
    """The requests a proxy instance let through end with it (a restart, a replaced
    container: compose's or tower's own), and their log lines never come. The next
    instance names itself with each question: its first about a job closes the job's
    requests of the one before, and counts its own as any."""
    job = await claim_with(db, ["pypi.org"])
    bystander = await claim_with(db, ["pypi.org"])
    before, after = INSTANCE, "0123456789ab@2026-12-08T12:05:00.000000000Z"
    old = [await proxy.allow(job, "pypi.org", instance=before) for _ in range(2)]
    left = await proxy.allow(bystander, "pypi.org", instance=before)
    assert (await proxy.check(job, "pypi.org", instance=before)).status_code == 403

    new = await proxy.allow(job, "pypi.org", instance=after)  # the old two are closed
    await proxy.allow(job, "pypi.org", instance=after)
    bound = await proxy.check(job, "pypi.org", instance=after)  # the new two are not
    assert bound.status_code == 403 and "EGRESS_MAX_CONNECTIONS" in bound.json()["reason"]
    # An end the old instance did report late closes nothing of the new one's.
    await proxy.done(job, "pypi.org", 10, old[0])
    assert proxy.ends_refused("not_open") == 1
    assert (await proxy.check(job, "pypi.org", instance=after)).status_code == 403
    await proxy.done(job, "pypi.org", 20, new)  # the new one's own end: room for one
    assert (await proxy.check(job, "pypi.org", instance=after)).status_code == 200
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None and record.egress.bytes == 20
    # Each job's own: the bystander, not asked about since, still holds its request.
    await proxy.done(bystander, "pypi.org", 30, left)
    assert [e["bytes"] for e in await egress_events(db, bystander.job_id)] == [30]


async def test_connections_at_once_are_bounded_and_the_record_says_so(
    db: Any, pool: Pool, proxy: Proxy
) -> None:
    job = await claim_with(db, ["pypi.org"])
    tag, _ = [await proxy.allow(job, "pypi.org") for _ in range(2)]  # EGRESS_MAX_CONNECTIONS
    third = await proxy.check(job, "pypi.org")
    assert third.status_code == 403 and "EGRESS_MAX_CONNECTIONS" in third.json()["reason"]
    await proxy.done(job, "pypi.org", 10, tag)
    assert (await proxy.check(job, "pypi.org")).status_code == 200  # one ended: room again
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None
    assert record.egress.limited == "connections" and record.egress.allowed == 3


async def test_bytes_in_total_are_bounded_and_the_webhook_lists_the_refusals(
    db: Any, pool: Pool, proxy: Proxy
) -> None:
    job = await claim_with(db, ["pypi.org"], webhook_url="https://hooks.example.com/x")
    late = await proxy.allow(job, "pypi.org")  # still open when the job ends
    tag = await proxy.allow(job, "pypi.org")
    await proxy.done(job, "pypi.org", MAX_BYTES, tag)
    over = await proxy.check(job, "pypi.org")
    assert over.status_code == 403 and "EGRESS_MAX_BYTES" in over.json()["reason"]
    assert await queries.finish(db, job.job_id, job.lease_token, DONE)

    payload = await db.fetchval(
        "SELECT payload FROM webhook_deliveries WHERE job_id = $1", job.job_id
    )
    egress = payload["data"]["egress"]
    assert egress["bytes"] == MAX_BYTES and egress["limited"] == "bytes"
    assert egress["refused"] == [{"host": "pypi.org", "port": 443, "reason": over.json()["reason"]}]
    # After the end, what is left over counts no more events (the terminal one is last).
    await proxy.done(job, "pypi.org", 7, late)
    events = await egress_events(db, job.job_id)
    assert [e["allowed"] for e in events] == [True, False]
    record = await get_job(pool, job.job_id, None)
    assert record.egress is not None and record.egress.bytes == MAX_BYTES + 7


async def test_a_job_without_egress_has_none_on_its_record_nor_its_webhook(
    db: Any, pool: Pool
) -> None:
    job = await claim_with(db, None, webhook_url="https://hooks.example.com/x")
    assert await queries.finish(db, job.job_id, job.lease_token, DONE)
    assert (await get_job(pool, job.job_id, None)).egress is None
    payload = await db.fetchval(
        "SELECT payload FROM webhook_deliveries WHERE job_id = $1", job.job_id
    )
    assert payload["data"]["egress"] is None


async def test_compose_asks_over_tcp_and_no_socket_is_taken(pool: Pool, socket_dir: Path) -> None:
    """EGRESS_LISTEN without a proxy of tower's own (compose): the same answers on
    host:port, and no egress socket slot."""
    port = free_port()
    settings = Settings(
        gateway_auth_socket=str(socket_dir / "auth.sock"),
        egress_managed=False,
        egress_listen=f"127.0.0.1:{port}",
    )
    started = await EgressListener.start(settings, pool, TowerMetrics("test"))
    try:
        assert started.slot is None and not os.listdir(socket_dir)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/egress/health")).status_code == 200
            auth = await client.post("/egress/auth", json={"user": "j.1", "token": "x" * 43})
            assert auth.status_code == 401
            assert (await client.post("/egress/done", content=b"x" * 300_000)).status_code == 400
    finally:
        await started.stop()
