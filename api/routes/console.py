"""The web console: static pages served by the engine, behind the manager role.

``/console/login`` exchanges the manager key for a session cookie (see ``api/console_auth.py``);
the pages then call the manager API with that cookie. Leaflet comes from the XStatic-Leaflet
package installed from PyPI and is served from site-packages, never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import xstatic.pkg.leaflet as leaflet
from fastapi import APIRouter, Cookie, FastAPI, Form
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.auth import Role, check_role_key
from api.console_auth import COOKIE, issue_session, manager_actor, read_session
from api.deps import RuntimeDep
from api.runtime import Runtime
from core.errors import Unauthenticated
from core.settings import Settings

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(prefix="/console", include_in_schema=False)


def _headers(settings: Settings) -> dict[str, str]:
    images = "'self' data:"
    if settings.console_tile_url:
        images += " " + _origin(settings.console_tile_url)
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; img-src {images}; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
            "base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].replace("{s}", "*")
    return f"{scheme}://{host}"


def _signed_in(runtime: Runtime, token: str | None) -> bool:
    if not token:
        return False
    try:
        read_session(runtime.settings, token, runtime.clock.now(), "GET", None, runtime.api_keys)
    except Unauthenticated:
        return False
    return True


@router.get("")
def console_page(
    runtime: RuntimeDep, oe_console: Annotated[str | None, Cookie()] = None
) -> Response:
    if not _signed_in(runtime, oe_console):
        return RedirectResponse("/console/login", status_code=303)
    return FileResponse(STATIC / "index.html", headers=_headers(runtime.settings))


@router.get("/login")
def login_page(runtime: RuntimeDep) -> Response:
    return FileResponse(STATIC / "login.html", headers=_headers(runtime.settings))


@router.post("/login")
def login(runtime: RuntimeDep, key: Annotated[str, Form(max_length=500)]) -> Response:
    try:
        caller = check_role_key(runtime.settings, Role.MANAGER, key, runtime.api_keys)
    except Unauthenticated:
        return RedirectResponse("/console/login?failed=1", status_code=303)
    token, _ = issue_session(runtime.settings, runtime.clock.now(), caller.key_id)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(runtime.settings.console_session_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=runtime.settings.public_base_url.startswith("https://"),
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/config.json")
def console_config(
    runtime: RuntimeDep, oe_console: Annotated[str | None, Cookie()] = None
) -> Response:
    if not _signed_in(runtime, oe_console):
        return JSONResponse(
            {"error": {"code": "unauthenticated", "message": "log in to the console"}},
            status_code=401,
        )
    return JSONResponse(
        {"tile_url": runtime.settings.console_tile_url, "actor": manager_actor(runtime.settings)},
        headers={"Cache-Control": "no-store"},
    )


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.mount(
        "/console/vendor/leaflet",
        StaticFiles(directory=leaflet.BASE_DIR),
        name="console-leaflet",
    )
