"""Request dependencies: the runtime, a unit of work per request, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Cookie, Depends, Header, Request
from sqlalchemy.orm import Session

from api.auth import Caller, DeviceClaims, Role, check_role_key, read_device_token
from api.console_auth import manager_actor, read_session
from api.runtime import Runtime
from consent.models import Device
from core.db import transaction
from core.errors import Unauthenticated


async def get_runtime(request: Request) -> Runtime:  # async: no worker thread for a lookup
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """The request's unit of work: services flush, this commits on success, rolls back on error."""
    with transaction(runtime.sessions) as session:
        yield session


# scope="function": the commit happens before the response is sent, so a client never sees a
# success its transaction did not keep, and its next request (to any process) reads the write.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _role(role: Role):  # type: ignore[no-untyped-def]
    def check(
        request: Request,
        runtime: RuntimeDep,
        x_api_key: Annotated[str | None, Header()] = None,
        x_console: Annotated[str | None, Header()] = None,
        oe_console: Annotated[str | None, Cookie()] = None,
    ) -> Caller:
        if role is Role.MANAGER and x_api_key is None and oe_console is not None:
            settings, now = runtime.settings, runtime.clock.now()
            actor = read_session(
                settings, oe_console, now, request.method, x_console, runtime.api_keys
            )
            caller = Caller(role, "console", actor)
        else:
            caller = check_role_key(runtime.settings, role, x_api_key, runtime.api_keys)
        request.state.caller = caller
        return caller

    return Depends(check)


require_sdk_key = _role(Role.SDK)
require_manager = _role(Role.MANAGER)
require_pos = _role(Role.POS)
require_compliance = _role(Role.COMPLIANCE)


def get_caller(request: Request) -> Caller:
    """The caller a role check on this route (or its router) let through."""
    caller: Caller = request.state.caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_manager_actor(request: Request, runtime: RuntimeDep) -> str:
    """Who the audit log names for a manager change: a managed key's visible id, else the
    fingerprint of the bootstrap key (never a key itself)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        return manager_actor(runtime.settings)
    if caller.key_id == "console":  # the session names who logged in
        return caller.label
    return manager_actor(runtime.settings, caller.key_id)


ActorDep = Annotated[str, Depends(get_manager_actor)]


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def device_claims(request: Request, authorization: str | None) -> DeviceClaims:
    # the runtime from the app, not RuntimeDep: one dependency fewer to solve per request
    runtime: Runtime = request.app.state.runtime
    return read_device_token(runtime.settings, _bearer(authorization), runtime.clock.now())


async def get_device_claims(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> DeviceClaims:  # async: a signature check only, no I/O
    return device_claims(request, authorization)


DeviceClaimsDep = Annotated[DeviceClaims, Depends(get_device_claims)]


def get_device(claims: DeviceClaimsDep, session: SessionDep) -> Device:
    device = session.get(Device, claims.device_id)
    if device is None or device.token_version != claims.token_version:
        raise Unauthenticated("device token no longer valid; register the device again")
    return device


DeviceDep = Annotated[Device, Depends(get_device)]
