"""create_app(settings): wiring only. Routers, lifespan, middleware."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from tower.artifacts import routes as artifact_routes
from tower.configs import routes as config_routes
from tower.configs.store import ConfigStore
from tower.credentials import routes as credential_routes
from tower.db import channels
from tower.db.migrate import migrate
from tower.db.notify import NotifyHub
from tower.db.pool import Pool, create_pool, create_statement_pool
from tower.egress.listener import EgressListener
from tower.events import routes as event_routes
from tower.execution.runner import Runner
from tower.gateway import listener as auth_listener
from tower.jobs import routes as job_routes
from tower.jobs.service import job_inserts
from tower.observability.metrics import TowerMetrics
from tower.ops import health, metrics, stats
from tower.queue import capacity
from tower.queue.adoption import adopter_for
from tower.queue.dispatcher import Dispatcher
from tower.queue.reaper import Reaper
from tower.queue.retention import Retention
from tower.runners import build_runner
from tower.sessions import routes as session_routes
from tower.settings import Settings, egress_enabled
from tower.state import TowerState
from tower.tenants import routes as tenant_routes
from tower.tenants.admission import Quotas
from tower.tenants.cache import KeyCache
from tower.uploads import routes as upload_routes
from tower.web import docs
from tower.web.dashboard import install_dashboard
from tower.web.errors import install_error_handlers
from tower.web.gate import RequestGate
from tower.web.headers import SECURITY_HEADERS, SecurityHeaders
from tower.web.openapi import install_openapi
from tower.web.streams import StreamLimits
from tower.webhooks import routes as webhook_routes
from tower.webhooks.deliverer import Deliverer
from tower.webhooks.secret import webhook_secret
from tower.webhooks.signing import signing_key

__all__ = ["SECURITY_HEADERS", "create_app", "replica_id"]


def replica_id(settings: Settings) -> str:
    return settings.tower_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def create_app(settings: Settings, runner: Runner | None = None) -> FastAPI:
    app = FastAPI(
        title="Parpaing",
        version="0.1.0",
        lifespan=_lifespan(settings, runner),
        docs_url=None,
        redoc_url=None,
    )
    # The server reads what it needs of them (the header read timeout) before the lifespan.
    app.state.settings = settings
    install_error_handlers(app)
    # The gate answers 401/413 before any body is read; the headers wrap its answers too.
    streamed = {"/uploads": (settings.max_upload_bytes, "MAX_UPLOAD_BYTES")}
    app.add_middleware(RequestGate, settings=settings, streamed=streamed)
    app.add_middleware(SecurityHeaders)
    for router in (
        job_routes.router,
        session_routes.router,
        webhook_routes.router,
        event_routes.router,
        config_routes.router,
        credential_routes.router,
        upload_routes.router,
        artifact_routes.router,
        tenant_routes.router,
        health.router,
        metrics.router,
        stats.router,
        docs.router,
    ):
        app.include_router(router)
    install_dashboard(app)
    install_openapi(app)
    return app


def begin_shutdown(app: FastAPI) -> None:
    """Stop claiming jobs at once; safe from a signal handler. The server calls it on
    SIGTERM, before it winds HTTP down: the lifespan's shutdown does the rest."""
    drain = getattr(app.state, "drain", None)
    if drain is not None:
        drain()


def hurry_shutdown(app: FastAPI) -> None:
    """Stop asked for again: running jobs are handed back now, without their grace.
    Safe from a signal handler."""
    hurry = getattr(app.state, "hurry", None)
    if hurry is not None:
        hurry()


def _lifespan(settings: Settings, runner: Runner | None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.tower, dispatcher = await _start(settings, runner, stack)
            # With MAX_CONCURRENT_JOBS fitted at start: what every route now reads.
            app.state.settings = app.state.tower.settings
            loop = asyncio.get_running_loop()
            state: TowerState = app.state.tower

            def drain() -> None:
                state.stopping.set()
                dispatcher.drain()

            app.state.drain = lambda: loop.call_soon_threadsafe(drain)
            app.state.hurry = lambda: loop.call_soon_threadsafe(dispatcher.hurry)
            yield

    return lifespan


async def _start(
    settings: Settings, runner: Runner | None, stack: AsyncExitStack
) -> tuple[TowerState, Dispatcher]:
    await migrate(settings.database_url)
    pool = await create_pool(settings.database_url, settings.db_pool_size)
    stack.push_async_callback(pool.close)
    hub = NotifyHub(settings.database_url)
    await hub.start()
    stack.push_async_callback(hub.stop)
    configs = ConfigStore(pool, hub)
    stack.push_async_callback(configs.close)
    await configs.load()
    settings, _ = capacity.resolve(settings, configs.memory_limits())
    name = replica_id(settings)
    statements = await create_statement_pool(settings.database_url)
    stack.push_async_callback(statements.close)
    inserts = job_inserts(statements)
    stack.push_async_callback(inserts.close)
    metrics = TowerMetrics(name)
    unix, tcp = auth_listener.wanted(settings)
    slot = None
    if unix or tcp:
        listeners = await auth_listener.AuthListeners.start(
            settings, pool, unix_socket=unix, refused=metrics.gateway_refused
        )
        stack.push_async_callback(listeners.stop)
        slot = listeners.slot.number if listeners.slot is not None else None
    egress_slot = None
    if settings.tower_runner == "docker" and egress_enabled(settings):
        # The egress proxy's questions (docs/egress.md), on a socket slot of their own
        # and, in compose, on EGRESS_LISTEN.
        egress = await EgressListener.start(settings, pool, metrics)
        stack.push_async_callback(egress.stop)
        egress_slot = egress.slot.number if egress.slot is not None else None
    runner = runner or await build_runner(settings, pool, configs, metrics, slot, egress_slot)
    stack.push_async_callback(runner.close)
    streams = StreamLimits(settings.max_streams, settings.max_streams_per_key)
    state = TowerState(
        settings,
        name,
        pool,
        hub,
        configs,
        metrics,
        inserts,
        statements,
        runner,
        streams,
        keys=_key_cache(pool, hub),
        quotas=_quotas(pool, hub, settings),
    )
    return state, await _start_background(state, stack)


def _key_cache(pool: Pool, hub: NotifyHub) -> KeyCache:
    """API keys as this replica knows them: a revoke anywhere drops one at once."""
    keys = KeyCache(pool)
    hub.on(channels.KEYS_CHANGED, keys.forget)
    hub.on_reconnect(keys.clear)
    return keys


def _quotas(pool: Pool, hub: NotifyHub, settings: Settings) -> Quotas:
    """Tenants' quotas as this replica knows them: set anywhere, dropped here at once."""
    quotas = Quotas(pool, settings)
    hub.on(channels.TENANTS_CHANGED, quotas.forget)
    hub.on_reconnect(quotas.clear)
    return quotas


async def _start_background(state: TowerState, stack: AsyncExitStack) -> Dispatcher:
    key = signing_key(
        await webhook_secret(state.settings.webhook_secret.get_secret_value(), state.pool)
    )
    dispatcher = Dispatcher(
        state.settings,
        state.pool,
        state.hub,
        state.runner,
        state.replica_id,
        state.metrics,
        statement_pool=state.statement_pool,
    )
    # Jobs of a replica that died, whose containers run on here (tower/queue/adoption.py).
    adopter = adopter_for(
        state.runner,
        state.pool,
        state.replica_id,
        state.settings.lease_seconds,
        dispatcher.adopt,
        dispatcher.accepting,
    )
    for service in (
        dispatcher,
        Reaper(state.settings, state.pool, state.replica_id, state.metrics, adopter),
        Retention(state.settings, state.pool),
        Deliverer(state.settings, state.pool, state.hub, key, state.metrics),
    ):
        await service.start()
        stack.push_async_callback(service.stop)
    return dispatcher
