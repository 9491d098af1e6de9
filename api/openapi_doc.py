"""The OpenAPI document as published: every error answer described by ``ErrorResponse``
(``{"error": {"code", "message"}}``, never FastAPI's default validation shape), with an example,
and the committed copy in ``docs/openapi.json`` (``offer-engine openapi --out ...``)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.errors import ErrorResponse

AUDIENCES = ("sdk", "manager", "compliance", "pos", "consent", "ops")
REF = "#/components/schemas/ErrorResponse"
EXAMPLES = {
    "400": ("bad_request", "the request cannot be processed"),
    "401": (
        "unauthenticated",
        "this endpoint needs a device token: 'Authorization: Bearer <token>'",
    ),
    "403": ("consent_required", "no current location_tracking consent"),
    "404": ("not_found", "no offer cpn_... for this device"),
    "409": ("conflict", "a concurrent request changed the same data; retry"),
    "410": ("coupon_expired", "the coupon expired at 2026-11-23T09:15:00+00:00"),
    "413": ("payload_too_large", "the upload is larger than 50 MB"),
    "422": ("invalid_request", "pings.0.lat: Input should be less than or equal to 90"),
    "429": ("rate_limited", "too many requests; retry after the Retry-After seconds"),
    "503": ("unavailable", "the hot-state store is unreachable; nothing was processed"),
}
DESCRIPTIONS = {
    "401": "Missing or invalid credential",
    "403": "Refused: consent or permission missing",
    "404": "Not found (or not yours: the same answer)",
    "409": "Conflict",
    "410": "Gone (expired)",
    "413": "Payload too large",
    "422": "Invalid request",
    "429": "Too many requests",
    "503": "A dependency is unreachable; retry later",
}


# Bodies that a route reads and validates itself (see ``request_body``), by schema name.
_BODIES_READ_BY_HAND: dict[str, type[BaseModel]] = {}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``requestBody`` of a route that reads and validates its JSON body itself (for its
    ``openapi_extra``), the same as FastAPI writes for a declared body; ``build_openapi`` adds
    the model's schema to the components."""
    _BODIES_READ_BY_HAND[model.__name__] = model
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


def _error_content(status: str) -> dict[str, Any]:
    code, message = EXAMPLES.get(status, ("error", "the request was refused"))
    return {
        "application/json": {
            "schema": {"$ref": REF},
            "example": {"error": {"code": code, "message": message}},
        }
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [ErrorResponse, *_BODIES_READ_BY_HAND.values()]
    _, top = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = _error_content(status)
                    if response.get("description") in (None, "", "Validation Error"):
                        response["description"] = DESCRIPTIONS.get(status, "Error")
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def current_document() -> str:
    """The document of an app built with test settings (nothing is started or connected)."""
    from api.app import create_app
    from core.settings import Environment, Settings

    settings = Settings(environment=Environment.TEST, database_url="sqlite://", redis_url=None)
    return render(create_app(settings).openapi())
