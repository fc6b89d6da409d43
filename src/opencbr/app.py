"""Wiring: builds the FastAPI application from settings. One of the two modules (with cli.py)
allowed to import every layer."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from opencbr import __version__, data_dir, logs
from opencbr.api import errors
from opencbr.api.metrics import HttpMetricsMiddleware
from opencbr.api.middleware import BodyLimitMiddleware, NulRefusalMiddleware, RequestIdMiddleware
from opencbr.api.routes import (
    backups,
    checkpoints,
    credentials,
    features,
    identity,
    members,
    operation_logs,
    policies,
    policy_runs,
    protectables,
    regions,
    replication,
    replication_status,
    tags,
    unsupported,
    usage,
    vault_collection,
    vaults,
    verify,
)
from opencbr.api.signature import verify_signature
from opencbr.db.migrate import upgrade
from opencbr.db.session import Database, WalCheckpoints
from opencbr.jobs.queue import Jobs, yield_to_requests
from opencbr.services.runtime import Runtime
from opencbr.settings import Settings

# Included in this order: the first router whose route matches answers.
ROUTERS = (
    identity.router,
    credentials.router,
    vault_collection.router,  # before vaults: its /vaults/<name> routes are no vault ids
    vaults.router,
    tags.router,
    policies.router,
    protectables.router,
    regions.router,
    replication.router,
    replication_status.router,
    checkpoints.router,
    backups.router,
    members.router,
    operation_logs.router,
    usage.router,
    features.router,
    policy_runs.router,
    verify.router,
    identity.root_router,
    unsupported.router,  # last: it never shadows a route that works
)


@functools.cache
def _routes() -> tuple[BaseRoute, ...]:
    """The routes of ROUTERS, built once per process and shared by every app it creates.

    FastAPI builds a route's parameter and response models (pydantic adapters) when its
    router is first searched for a match, once per inclusion: ~0.1 s for all of ours (more
    on a busy machine), paid again by every app that included the routers itself (every
    API test builds one). Routes read what is the app's own from `request.app.state`.
    """
    holder = APIRouter()
    for router in ROUTERS:
        holder.include_router(router)
    return tuple(holder.routes)


def create_app(settings: Settings, db: Database | None = None, *, migrate: bool = True) -> FastAPI:
    logs.configure(settings)  # before anything can log: no event escapes redaction
    database = db or Database(settings.db_url)
    if migrate:
        data_dir.prepare(settings.data_dir)
        upgrade(database)

    runtime = Runtime(database, settings)
    jobs = Jobs(runtime)

    # With or without workers: the requests' commits are what it spares.
    checkpoints = WalCheckpoints(database, yield_to_requests) if database.is_sqlite else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if checkpoints is not None:
            checkpoints.start()
        if settings.embedded_worker:
            jobs.start(settings.worker_threads)
        try:
            yield
        finally:
            jobs.stop()
            if checkpoints is not None:
                checkpoints.stop()
            jobs.close()
            runtime.close()
            if db is None:
                database.dispose()

    app = FastAPI(
        title="opencbr",
        version=__version__,
        description="Cloud Backup and Recovery (CBR) v3 API, self-hosted.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.verify_signature = verify_signature
    app.state.runtime = runtime
    app.state.jobs = jobs
    app.router.routes.extend(_routes())
    errors.install(app)
    # The last added runs first: the body limit bounds what the NUL check buffers.
    app.add_middleware(NulRefusalMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(HttpMetricsMiddleware)  # outermost: times all of the above
    return app
