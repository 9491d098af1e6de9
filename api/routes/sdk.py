"""Mobile SDK: device registration, consent, pings, the offers inbox."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from api.auth import DeviceClaims, issue_device_token
from api.deps import (
    DeviceClaimsDep,
    DeviceDep,
    RuntimeDep,
    SessionDep,
    device_claims,
    require_sdk_key,
)
from api.errors import ErrorResponse
from api.limits import request_subjects
from api.openapi_doc import request_body
from api.ping_groups import PingGroups
from api.schemas import (
    ConsentIn,
    ConsentOut,
    CouponOut,
    DeviceIn,
    DeviceOut,
    EventOut,
    NoticeOut,
    PingBatchIn,
    PingResult,
)
from api.schemas_sdk import TokenOut
from consent.domain import Channel, CollectionMethod, ConsentStatus, Purpose
from consent.gate import ConsentGate
from consent.ledger import ConsentLedger
from consent.models import ConsentEvent, ConsentState
from consent.optin import EmailOptIn
from consent.service import NoticeRegistry, SubjectRegistry
from core.errors import InvalidInput, NotFound, Unauthenticated
from geo.domain import Fix
from offers.domain import format_code, remaining_seconds
from offers.flows import PingBatch

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (401, 403, 404, 422, 503)
}
router = APIRouter(prefix="/v1/sdk", tags=["sdk"], responses=_ERRORS)
# Pings are counted against the rate limits with the rest of their group (``api.ping_groups``),
# so their router is included without the per-request limit dependency: the busiest route
# solves as few dependencies as it can.
ping_router = APIRouter(prefix="/v1/sdk", tags=["sdk"], responses=_ERRORS)


def _consent_out(row: ConsentState) -> ConsentOut:
    return ConsentOut(
        purpose=row.purpose,
        channel=row.channel or None,
        state=row.state,
        event_id=row.event_id,
        event_hash=row.event_hash,
        occurred_at=row.occurred_at,
        valid_until=row.valid_until,
    )


def _event_out(event: ConsentEvent) -> ConsentOut:
    return ConsentOut(
        purpose=event.purpose,
        channel=event.channel or None,
        state=event.state,
        event_id=event.id,
        event_hash=event.entry_hash,
        occurred_at=event.occurred_at,
        valid_until=event.valid_until,
    )


@router.post(
    "/devices",
    status_code=201,
    response_model=DeviceOut,
    dependencies=[require_sdk_key],
    summary="Register a device; returns its device-bound token",
)
def register_device(body: DeviceIn, session: SessionDep, runtime: RuntimeDep) -> DeviceOut:
    now = runtime.clock.now()
    subject, device = SubjectRegistry(session).register_device(
        customer_ref=body.customer_ref,
        platform=body.platform,
        push_token=body.push_token,
        email=str(body.email) if body.email else None,
        now=now,
    )
    token, expires = issue_device_token(
        runtime.settings, DeviceClaims(device.id, subject.id, device.token_version), now
    )
    return DeviceOut(
        device_id=device.id, subject_id=subject.id, token=token, token_expires_at=expires
    )


@router.post(
    "/devices/token",
    response_model=TokenOut,
    summary="Rotate the device token: exchange the current token for a new one",
    description="Send the current, still valid token; the answer carries the next one and the "
    "one sent stops working at once (also for a second, concurrent rotation with it: 401). "
    "Rotate well before `token_expires_at`; an expired token cannot be rotated (register again).",
)
def rotate_token(
    claims: DeviceClaimsDep, device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> TokenOut:
    now = runtime.clock.now()
    generation = SubjectRegistry(session).rotate_token(device.id, claims.token_version)
    if generation is None:
        raise Unauthenticated("device token no longer valid; register the device again")
    # the ping path reads a device's token generation with its subject's consent projection
    ConsentGate(session, runtime.state).invalidate_after_commit(device.subject_id)
    token, expires = issue_device_token(
        runtime.settings, DeviceClaims(device.id, device.subject_id, generation), now
    )
    return TokenOut(
        device_id=device.id, token=token, token_expires_at=expires, generation=generation
    )


@router.post(
    "/consents",
    status_code=201,
    response_model=ConsentOut,
    summary="Give or withdraw consent for a purpose (and channel)",
    description="Offers by email need a double opt-in: a grant of `marketing_offers` on channel "
    "`email` is recorded as `pending_confirmation` and a confirmation email is sent to the "
    "device's address; offers are emailed only once the shopper follows its link.",
)
def record_consent(
    body: ConsentIn, request: Request, device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> ConsentOut:
    now = runtime.clock.now()
    evidence = {
        "device_id": device.id,
        "ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
        "app_version": request.headers.get("x-app-version"),
        "actor": "data_subject",
    }
    if body.granted and (body.purpose, body.channel) == (Purpose.MARKETING_OFFERS, Channel.EMAIL):
        if not device.email:
            raise InvalidInput(
                "offers by email need an email address: register the device with one",
                code="email_required",
            )
        optin = EmailOptIn(
            session, runtime.ledger_config, runtime.state, runtime.links, runtime.confirmations
        )
        pending = optin.request(
            subject_id=device.subject_id,
            address=device.email,
            notice_version=body.notice_version,
            evidence=evidence,
            now=now,
        )
        return _event_out(pending)
    gate = ConsentGate(session, runtime.state)
    had = gate.check(device.subject_id, body.purpose, body.channel, now)
    if body.granted:
        status = ConsentStatus.GIVEN
    else:
        status = ConsentStatus.WITHDRAWN if had.event_id is not None else ConsentStatus.REFUSED
    ledger = ConsentLedger(session, runtime.ledger_config)
    event = ledger.record(
        subject_id=device.subject_id,
        purpose=body.purpose,
        channel=body.channel,
        status=status,
        notice_version=body.notice_version,
        method=CollectionMethod.SDK,
        evidence=evidence,
        occurred_at=now,
        now=now,
    )
    gate.invalidate_after_commit(device.subject_id)
    return _event_out(event)


@router.get(
    "/consents", response_model=list[ConsentOut], summary="The device owner's current consents"
)
def current_consents(device: DeviceDep, session: SessionDep) -> list[ConsentOut]:
    return [_consent_out(row) for row in ConsentLedger.current_of(session, device.subject_id)]


def _header(name: str, description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "title": name.title(),
    }
    parameter: dict[str, Any] = {"name": name, "in": "header", "required": False}
    if description:
        schema["description"] = parameter["description"] = description
    return {**parameter, "schema": schema}


# The busiest route reads its headers and its body itself, as a plain Starlette endpoint would.
# Declared parameters make FastAPI solve them on every request (a header's annotation is
# inspected anew, the body goes through ``json.loads`` then validation): 150-164 us per one-fix
# request with the headers declared, 67-69 us without; the route with its body declared took
# 201-225 us in all (in process, ingest stubbed), 124-171 us reading it here (docs/scaling.md).
# Headers and body are documented exactly as declared ones would be.
PING_HEADERS = [
    _header("sec-gpc", "Global Privacy Control: '1' opts out"),
    _header("x-limit-precise-location", "'1': the shopper limited use of their precise location"),
    _header("authorization"),
]
PING_BODY = TypeAdapter(PingBatchIn)


def _json_body(request: Request) -> bool:
    """Whether the body is declared JSON (or not declared at all), as FastAPI decides it."""
    declared = request.headers.get("content-type")
    if not declared:
        return True
    kind = declared.partition(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def _ping_body(request: Request) -> PingBatchIn:
    """The validated body: a 422 with FastAPI's validation errors otherwise (the same message
    as for any other route's body)."""
    if not _json_body(request):
        message = "send the pings as JSON (Content-Type: application/json)"
        raise RequestValidationError([{"type": "content_type", "loc": ("body",), "msg": message}])
    try:
        return PING_BODY.validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


@ping_router.post(
    "/pings",
    response_model=PingResult,
    summary="Send 1 to 1,000 location fixes (403 without location_tracking consent)",
    openapi_extra={"parameters": PING_HEADERS, "requestBody": request_body(PingBatchIn)},
)
async def post_pings(request: Request) -> Response:
    headers = request.headers
    # the token before the body: 401 before 422, as on every other route
    claims = device_claims(request, headers.get("authorization"))
    body = await _ping_body(request)
    fixes = [
        Fix(
            claims.device_id,
            p.lon,
            p.lat,
            p.recorded_at,
            p.accuracy_m,
            p.speed_mps,
            p.heading_deg,
            p.mock,
            p.id,
        )
        for p in body.pings
    ]
    signal = None
    if headers.get("sec-gpc") == "1":
        signal = "Global Privacy Control signal"
    elif headers.get("x-limit-precise-location") == "1":
        signal = "the shopper limited use of their precise location"
    groups: PingGroups = request.app.state.ping_groups
    batch = PingBatch(claims.device_id, claims.token_version, fixes, signal, claims.subject_id)
    result = await groups.submit(batch, request_subjects(request, claims.device_id))
    now = request.app.state.runtime.clock.now()
    answer = PingResult(
        accepted=result.accepted,
        ignored=result.ignored,
        consent_event_id=result.consent.event_id,
        events=[
            EventOut(
                id=e.id,
                kind=e.kind,
                store_id=e.store_id,
                fence_id=e.fence_id,
                occurred_at=e.occurred_at,
                details=e.details,
                eligible=e.eligible,
                reason=e.reason,
            )
            for e in result.events
        ],
        coupons=[
            CouponOut(
                coupon_id=c.coupon_id,
                code=format_code(c.code),
                title=c.title,
                discount_text=c.discount_text,
                store_id=c.store_id,
                expires_at=c.expires_at,
                remaining_s=remaining_seconds(c.expires_at, now),
                channels=list(c.delivery_channels),
            )
            for c in result.coupons
        ],
    )
    # built and checked once here: the hot path skips the second validation of the answer
    return Response(answer.model_dump_json(), media_type="application/json")


@router.get(
    "/notices/{purpose}",
    response_model=NoticeOut,
    summary="The notice to show before asking for consent to a purpose",
)
def current_notice(
    purpose: Purpose,
    session: SessionDep,
    language: Annotated[str | None, Query(min_length=2, max_length=16)] = None,
) -> NoticeOut:
    notice = NoticeRegistry(session).latest(purpose, language)
    if notice is None:
        raise NotFound(f"no notice is published for {purpose.value}")
    return NoticeOut.model_validate(notice, from_attributes=True)
