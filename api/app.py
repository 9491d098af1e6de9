"""The FastAPI application. ``create_app(settings)`` is the only way one is made."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from api.errors import install_error_handlers
from api.routes import (
    analytics,
    campaigns,
    compliance,
    consent_links,
    console,
    erasure,
    imports,
    manager,
    pos,
    preferences,
    sdk,
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


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Pass a ``runtime`` to share one (tests, the demo); otherwise one is built
    from ``settings`` and started with the app (migrations, scheduler)."""
    if runtime is None:
        runtime = Runtime.build(settings or Settings())
    owns_runtime = not runtime.started

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owns_runtime:
            runtime.start()
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
    app.include_router(sdk.router)
    app.include_router(manager.router)
    app.include_router(campaigns.router)
    app.include_router(analytics.router)
    app.include_router(tracking.pos_router)
    app.include_router(tracking.link_router)
    app.include_router(imports.router)
    app.include_router(pos.router)
    app.include_router(preferences.router)
    app.include_router(consent_links.router)
    app.include_router(erasure.router)
    app.include_router(compliance.router)
    console.install(app)

    @app.get("/health", tags=["ops"], summary="Database and hot-state store reachable")
    def health() -> dict[str, str]:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        runtime.state.ping()
        return {"status": "ok", "hot_state": "redis" if runtime.state.shared else "in-process"}

    return app
