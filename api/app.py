"""The FastAPI application. ``create_app(settings)`` is the only way one is made."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from api.errors import ErrorResponse, install_error_handlers
from api.limits import COMMON_RESPONSES, RateLimitDep, install_limits
from api.openapi_doc import install_openapi
from api.ping_groups import PingGroups
from api.routes import (
    analytics,
    campaigns,
    compliance,
    consent_links,
    console,
    countdown,
    erasure,
    imports,
    manager,
    pos,
    preferences,
    sdk,
    sdk_offers,
    tracking,
)
from api.runtime import Runtime
from core.settings import Settings

TAGS = [
    {"name": "sdk", "description": "The mobile app: devices, consent, pings, offers inbox."},
    {"name": "manager", "description": "The campaign manager: stores, fences, campaigns, offers."},
    {"name": "pos", "description": "Point-of-sale terminals: coupon redemption."},
    {"name": "consent", "description": "Links in emails: confirm offers by email, unsubscribe."},
    {"name": "compliance", "description": "Consent exports, ledger verification, receipts."},
    {"name": "ops", "description": "Health of this process and its dependencies."},
]


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    server_process: bool = False,
) -> FastAPI:
    """Build the app. Pass a ``runtime`` to share one (tests, the demo); otherwise one is built
    from ``settings`` and started with the app (migrations, scheduler).

    ``server_process``: the app is the process's only one (a server worker). Once started,
    everything built so far (fence index, ORM mappings, libraries) is moved out of the cyclic
    garbage collector's reach (``gc.freeze``): its full collections stop walking a heap that
    lives as long as the process, which took tens of milliseconds from requests under load."""
    if runtime is None:
        runtime = Runtime.build(settings or Settings())
    owns_runtime = not runtime.started

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owns_runtime:
            runtime.start()
        if server_process:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if owns_runtime:
                runtime.stop()

    app = FastAPI(
        title="Offer Engine",
        version="0.1.0",
        summary="Location-aware, permission-first exploding offers.",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    install_limits(app, runtime)
    app.state.ping_groups = PingGroups(
        runtime.ingestor.ingest_many,
        app.state.limiter,
        runtime.settings.ping_group_max_fixes,
        runtime.settings.ping_groups_in_flight,
        close=runtime.ingestor.close,
    )
    # first: the busiest route is matched before any other (limits: counted by ping group)
    app.include_router(sdk.ping_router, responses=COMMON_RESPONSES)
    routers = (
        sdk,
        sdk_offers,
        manager,
        campaigns,
        analytics,
        imports,
        pos,
        preferences,
        consent_links,
        erasure,
        compliance,
        countdown,
    )
    for router in routers:
        app.include_router(router.router, dependencies=[RateLimitDep], responses=COMMON_RESPONSES)
    for extra in (tracking.pos_router, tracking.link_router):
        app.include_router(extra, dependencies=[RateLimitDep], responses=COMMON_RESPONSES)
    console.install(app)

    @app.get(
        "/health",
        tags=["ops"],
        summary="Database and hot-state store reachable",
        responses={503: {"model": ErrorResponse}},
    )
    def health() -> dict[str, str]:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        runtime.state.ping()
        return {"status": "ok", "hot_state": "redis" if runtime.state.shared else "in-process"}

    install_openapi(app)
    return app


def app_from_environment() -> FastAPI:
    """An app from ``OFFER_ENGINE_*`` variables, for servers that import a factory per worker
    process (``uvicorn api.app:app_from_environment --factory --workers N``)."""
    return create_app(Settings(), server_process=True)
