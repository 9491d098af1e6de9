"""Every refusal as ``{"error": {"code": ..., "message": ...}}`` with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from consent.domain import ConsentRequired
from consent.service import NoticeConflict
from core.errors import (
    EngineError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from core.state import HotStateUnavailable
from geo.service import StoreConflict
from offers.domain import (
    CouponAlreadyRedeemed,
    CouponExpired,
    CouponNotRedeemed,
    TooManyAttempts,
)

log = logging.getLogger(__name__)

UNREADABLE_BODY = "There was an error parsing the body"

STATUS_BY_ERROR: list[tuple[type[EngineError], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (ConsentRequired, 403),
    (NotFound, 404),
    (CouponAlreadyRedeemed, 409),
    (CouponNotRedeemed, 409),
    (TooManyAttempts, 429),
    (StoreConflict, 409),
    (NoticeConflict, 409),
    (CouponExpired, 410),
    (InvalidInput, 422),
    (RateLimited, 429),
    (Unavailable, 503),
]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: ErrorBody


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def status_for(exc: EngineError) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    return 400


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        if isinstance(exc, (TooManyAttempts, RateLimited)):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(status_for(exc), exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == UNREADABLE_BODY:
            # FastAPI's answer to a body it cannot decode at all (e.g. not UTF-8): the same 422
            # as any other invalid body, with a message that says what to send.
            return error_response(
                422, "invalid_request", "the request body could not be read: send UTF-8 JSON"
            )
        if exc.status_code == 400 and str(exc.detail).startswith("Invalid multipart"):
            # Starlette's answer to a broken multipart upload: an invalid body like any other.
            return error_response(
                422, "invalid_request", f"the upload could not be read: {exc.detail}"
            )
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(HotStateUnavailable)
    async def _state_down(_: Request, exc: HotStateUnavailable) -> JSONResponse:
        log.error("hot state unavailable: %s", exc)
        return error_response(
            503,
            "unavailable",
            "the hot-state store is unreachable; nothing was processed",
            {"Retry-After": "5"},
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return error_response(
            503,
            "unavailable",
            "the database is unreachable; nothing was processed",
            {"Retry-After": "5"},
        )

    @app.exception_handler(DataError)
    async def _bad_value(_: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot take at all (PostgreSQL: a NUL character in text), in a
        # path, a query or a body: the request is at fault, and nothing was written.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        log.warning("value refused by the database: %s", reason)
        return error_response(
            422, "invalid_request", f"a value in the request is invalid: {reason}"
        )

    @app.exception_handler(IntegrityError)
    async def _conflict(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("write conflict: %s", exc.orig)
        return error_response(409, "conflict", "a concurrent request changed the same data; retry")

    @app.exception_handler(PoolTimeout)
    async def _pool(_: Request, exc: PoolTimeout) -> JSONResponse:
        return error_response(
            503, "unavailable", "the database is overloaded; try again", {"Retry-After": "2"}
        )
