"""`parpaing doctor`: checks this host can run a tower (database and schema, Docker, the
worker image, the gateway, the egress proxy, the providers with a credential), each finding
with the fix to try; exit 1 when one fails."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Literal

import asyncpg

from tower.cli.admin import current_revision, head_revision
from tower.cli.database import PROBE_TIMEOUT, database, postgres_dir, redacted
from tower.cli.output import CliError
from tower.execution.docker import probe
from tower.gateway.providers import ALL_VARIABLES, providers
from tower.settings import Settings, egress_enabled, egress_managed, gateway_container


@dataclass(frozen=True)
class Finding:
    name: str
    outcome: Literal["ok", "FAIL", "skip"]
    detail: str
    fix: str = ""


def doctor(_args: argparse.Namespace) -> int:
    settings = Settings()
    findings = [_database_finding(settings)]
    docker = _docker_finding()
    findings += [docker, _image_finding(settings, docker), _gateway_finding(settings)]
    findings.append(_egress_finding(settings, docker))
    findings.append(_providers_finding(settings))
    for finding in findings:
        _print_finding(finding)
    return 1 if any(finding.outcome == "FAIL" for finding in findings) else 0


def _print_finding(finding: Finding) -> None:
    print(f"[{finding.outcome:^4}] {finding.name:<13} {finding.detail}")
    if finding.fix:
        print(f"{'':7}fix: {finding.fix}")


def _database_finding(settings: Settings) -> Finding:
    try:
        with database(settings, owner=False) as url:
            return _schema_finding(url)
    except CliError as exc:
        fix = f"read {postgres_dir(settings) / 'server.log'}, or set DATABASE_URL"
        return Finding("database", "FAIL", str(exc), fix)


def _schema_finding(url: str) -> Finding:
    where = redacted(url)
    try:
        revision = asyncio.run(current_revision(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        fix = "start PostgreSQL or correct DATABASE_URL (unset it to use the embedded server)"
        return Finding("database", "FAIL", f"cannot connect to {where}: {exc}", fix)
    head = head_revision()
    if revision != head:
        detail = f"{where} is at revision {revision or 'none'}, code expects {head}"
        return Finding("database", "FAIL", detail, "run `parpaing migrate`")
    return Finding("database", "ok", f"{where}, revision {revision} (latest)")


def _docker_finding() -> Finding:
    result = probe.ping(PROBE_TIMEOUT)
    if result.ok:
        return Finding("docker", "ok", f"daemon answers ({result.detail})")
    fix = "start dockerd (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at a daemon"
    return Finding("docker", "FAIL", f"daemon unreachable: {result.detail}", fix)


def _image_finding(settings: Settings, docker: Finding) -> Finding:
    image = settings.worker_image
    if docker.outcome != "ok":
        return Finding("worker image", "skip", f"{image}: not checked, Docker is unreachable")
    result = probe.image_present(image, PROBE_TIMEOUT)
    if result.ok:
        return Finding("worker image", "ok", f"{image} ({result.detail})")
    fix = "run `parpaing images build`, or set WORKER_IMAGE to an image you built"
    return Finding("worker image", "FAIL", result.detail, fix)


def _gateway_finding(settings: Settings) -> Finding:
    from tower.gateway.container import probe_gateway  # it brings the Docker SDK along

    result = probe_gateway(settings, PROBE_TIMEOUT)
    if result.ok:
        return Finding("gateway", "ok", result.detail)
    if settings.gateway_managed:
        fix = (
            "start `parpaing serve` (it builds and starts the gateway); if it is running, "
            f"read `docker logs {gateway_container(settings)}` (a bad key or upstream stops it); "
            "for a gateway of your own, set GATEWAY_URL and GATEWAY_MANAGED=false"
        )
    else:
        fix = "start the gateway (compose: `docker compose up -d gateway`) or set GATEWAY_URL"
    return Finding("gateway", "FAIL", result.detail, fix)


def _egress_finding(settings: Settings, docker: Finding) -> Finding:
    """The egress proxy (docs/egress.md): it answers, and reaches a tower's egress check."""
    name = "egress proxy"
    if not egress_enabled(settings):
        return Finding(
            name, "skip", "none here (EGRESS_MANAGED=false, no EGRESS_LISTEN): no job may reach out"
        )
    if docker.outcome != "ok":
        return Finding(name, "skip", "not checked, Docker is unreachable")
    from tower.egress.container import probe_egress  # it brings the Docker SDK along

    result = probe_egress(settings, None, PROBE_TIMEOUT)
    if result.ok:
        return Finding(name, "ok", result.detail)
    if egress_managed(settings):
        fix = (
            "start `parpaing serve` (it builds and starts the proxy); if it is running, read "
            f"`docker logs {settings.egress_container}` (a bad setting stops it)"
        )
    else:
        fix = (
            "start the proxy (compose: `docker compose up -d egress`); if it is running, "
            f"read `docker logs {settings.egress_container}`"
        )
    return Finding(name, "FAIL", result.detail, fix)


def _providers_finding(settings: Settings) -> Finding:
    """The providers with a credential (never a key): without any, every agent job is
    refused at submit."""
    known = providers(settings)
    if not known.known:
        return Finding("providers", "skip", known.describe())
    if known.with_credential:
        return Finding("providers", "ok", f"credentials for {known.describe()}")
    fix = f"set {' or '.join(ALL_VARIABLES)} in tower's environment, then restart it"
    return Finding("providers", "FAIL", "no provider has a credential", fix)
