"""GET /health: can this replica do its work right now?

Which checks decide the HTTP status (the others are reported, never fatal):
- db is always required: without PostgreSQL a replica can neither accept nor run a job.
- docker is required only when TOWER_RUNNER=docker, the runner that needs it, which
  answers with the client it already holds (Runner.health). With the simulated runner
  (tests, benchmarks) the daemon is probed here, reported but harmless.
- gateway (asked by the Docker runner, through its own client) is required when this
  tower runs it (GATEWAY_MANAGED, all-in-one): without it no agent reaches a provider.
  There it must also reach this replica's token check end to end (tower/gateway/
  container.py, probe_tower_check), or every agent's call would fail with a 503.
  A gateway run by someone else (compose) is reported only, so one gateway restart does
  not take every replica out of the load balancer.
  With the simulated runner it reads "not configured".
- egress (the egress proxy, asked like the gateway: it must also reach this replica's
  egress socket) is reported, never required: only jobs with an allow-list need it,
  and they say so when it is down. "not configured" where this tower runs none.
- pool reads "not configured" until the warm pool reports here.
- providers lists the LLM providers with a credential (never a key), reported only:
  a job for an engine whose provider has none is refused at submit (409).
Beside the checks, `docker_host` names the Docker daemon this replica runs jobs on (its
ID; null when it has none or Docker never answered): with towers on several Docker hosts
it says which replica is where (docs/operations.md).
If a required check fails the answer is 503 with status "degraded", so a load balancer
stops sending traffic to this replica; otherwise 200 with status "ok".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.errors import one_line
from tower.execution.adoption import Adopting
from tower.execution.docker import probe
from tower.execution.runner import Probe, Runner
from tower.gateway.providers import providers
from tower.observability import queries
from tower.settings import Settings, egress_enabled
from tower.web.deps import Db, SettingsDep, held

DB_TIMEOUT = 2.0
DOCKER_TIMEOUT = 2.0
NOT_CONFIGURED = "not configured"

router = APIRouter(tags=["ops"])

HeldRunner = Annotated[Runner, Depends(held("runner"))]


@dataclass(frozen=True)
class Check:
    detail: str
    ok: bool
    required: bool


@dataclass(frozen=True)
class HealthReport:
    checks: dict[str, Check]
    docker_host: str | None = None
    # MAX_CONCURRENT_JOBS as this replica applies it (fitted to the machine when 0).
    max_concurrent_jobs: int = 0

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks.values() if check.required)

    def body(self) -> dict[str, Any]:
        status = "ok" if self.healthy else "degraded"
        checks = {k: c.detail for k, c in self.checks.items()}
        return {
            "status": status,
            "docker_host": self.docker_host,
            "max_concurrent_jobs": self.max_concurrent_jobs,
            "checks": checks,
        }


@router.get("/health", summary="Replica health")
async def health(settings: SettingsDep, db: Db, runner: HeldRunner) -> JSONResponse:
    report = await check_health(settings, db, runner)
    return JSONResponse(report.body(), status_code=200 if report.healthy else 503)


async def check_health(settings: Settings, pool: Pool, runner: Runner) -> HealthReport:
    db, held = await asyncio.gather(check_db(pool), runner.health())
    docker = await check_docker(settings, held.docker)
    gateway = check_gateway(settings, held.gateway)
    egress = check_egress(settings, held.egress)
    pending = Check(NOT_CONFIGURED, ok=True, required=False)
    known = Check(providers(settings).describe(), ok=True, required=False)
    checks = {"db": db, "docker": docker, "pool": pending, "gateway": gateway, "egress": egress}
    host = await docker_host_of(runner)
    return HealthReport(checks | {"providers": known}, host, settings.max_concurrent_jobs)


async def docker_host_of(runner: Runner) -> str | None:
    """The ID of the Docker daemon `runner` starts containers on, if it has one."""
    return await runner.docker_host() if isinstance(runner, Adopting) else None


async def check_db(pool: Pool) -> Check:
    try:
        await asyncio.wait_for(_ping(pool), DB_TIMEOUT)
    except TimeoutError:
        return Check(f"error: no answer within {DB_TIMEOUT:g}s", ok=False, required=True)
    except DATABASE_ERRORS as exc:
        return Check(f"error: {one_line(exc)}", ok=False, required=True)
    return Check("ok", ok=True, required=True)


async def check_docker(settings: Settings, held: Probe | None) -> Check:
    """The runner's answer, from the client it holds. A runner without Docker (simulated)
    has none: the daemon is then probed once here, reported but never required."""
    required = settings.tower_runner == "docker"
    result = held or await _probe_unheld_docker()
    return _check(result, required)


async def _probe_unheld_docker() -> Probe:
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(probe.ping, DOCKER_TIMEOUT), DOCKER_TIMEOUT + 0.5
        )
    except TimeoutError:
        return Probe(False, f"no answer within {DOCKER_TIMEOUT:g}s")


def check_gateway(settings: Settings, held: Probe | None) -> Check:
    if held is None:
        return Check(NOT_CONFIGURED, ok=True, required=False)
    return _check(held, bool(settings.gateway_managed))


def check_egress(settings: Settings, held: Probe | None) -> Check:
    if settings.tower_runner != "docker" or not egress_enabled(settings):
        return Check(NOT_CONFIGURED, ok=True, required=False)
    return _check(held or Probe(False, "not checked: Docker is down"), required=False)


def _check(result: Probe, required: bool) -> Check:
    detail = "ok" if result.ok else f"error: {result.detail}"
    return Check(detail, ok=result.ok, required=required)


async def _ping(pool: Pool) -> None:
    async with pool.acquire() as connection:
        await connection.fetchval(queries.PING)
