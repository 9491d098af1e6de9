"""The published OpenAPI document: current, every operation tagged by its audience, every error
answer described by the engine's error body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api import schemas, schemas_sdk
from api.openapi_doc import AUDIENCES, current_document
from api.routes import preferences, tracking

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "offer-engine openapi --out docs/openapi.json"


def test_committed_document_matches_the_app() -> None:
    assert COMMITTED.is_file(), f"docs/openapi.json is missing: run `{REGENERATE}`"
    generated = current_document()
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == json.loads(generated), (
        f"docs/openapi.json is stale (the routes changed): run `{REGENERATE}` and commit it"
    )


def test_every_operation_has_one_audience_and_error_bodies() -> None:
    spec = json.loads(current_document())
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    operations = [(p, m, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(operations) > 20
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert len(op.get("tags", [])) == 1 and op["tags"][0] in AUDIENCES, where
        assert op.get("summary"), where
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert errors, f"{where} documents no error answer"
        for status, response in errors.items():
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, where
            assert set(content["example"]["error"]) == {"code", "message"}, (where, status)
    sdk = {p for p, _, op in operations if op["tags"] == ["sdk"]}
    assert {"/v1/sdk/devices/token", "/v1/sdk/fences/nearest", "/v1/sdk/me/data"} <= sdk


def _component(spec: dict[str, Any], schema: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    ref = schema.get("$ref") or (schema.get("items") or {}).get("$ref")
    if ref is None:
        return None
    name = ref.rsplit("/", 1)[-1]
    return name, spec["components"]["schemas"][name]


def test_bodies_have_examples_the_app_accepts() -> None:
    """Every JSON request body, and every SDK success body (a mobile developer reads them from
    their examples), has an example; each example is valid for the model that serves it."""
    spec = json.loads(current_document())
    checked: set[str] = set()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            media = [op.get("requestBody", {}).get("content", {}).get("application/json")]
            if op["tags"] == ["sdk"]:
                media += [
                    r.get("content", {}).get("application/json")
                    for s, r in op["responses"].items()
                    if s.startswith("2")
                ]
            for content in filter(None, media):
                found = _component(spec, content["schema"])
                if found is None:
                    continue
                name, schema = found
                assert schema.get("examples"), f"{method.upper()} {path}: {name} has no example"
                modules = (schemas, schemas_sdk, preferences, tracking)
                [model] = [getattr(m, name) for m in modules if hasattr(m, name)]
                for example in schema["examples"]:
                    model.model_validate(example)
                checked.add(name)
    assert {"DeviceIn", "PingBatchIn", "PingResult", "CampaignIn", "RedemptionIn"} <= checked
