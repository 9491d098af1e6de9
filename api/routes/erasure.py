"""Compliance: erase a subject (GDPR Art. 17)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.deps import RuntimeDep, SessionDep, require_compliance
from api.errors import ErrorResponse
from consent.erasure import SubjectEraser
from offers.erasure import LocationAndOfferData

router = APIRouter(
    prefix="/v1/compliance",
    tags=["compliance"],
    dependencies=[require_compliance],
    responses={s: {"model": ErrorResponse} for s in (401, 404, 422, 503)},
)


class ErasureOut(BaseModel):
    subject_id: str
    erased_at: datetime
    already_erased: bool = Field(description="true when an earlier request erased the subject")
    ledger_event_ids: list[int] = Field(
        description="the `invalidated` events appended, one per consent that had not ended"
    )
    erased: dict[str, int] = Field(description="what was erased or scrubbed, by kind")
    evidence_shredded: bool = Field(
        description="the subject's evidence key was deleted: sealed evidence is now unreadable"
    )


@router.delete(
    "/subjects/{subject_id}",
    response_model=ErasureOut,
    summary="Erase a subject: location data, devices' addresses, preferences, evidence key",
    description="Ends every consent in the ledger (`invalidated`, method `api`), deletes pings "
    "and fence events, drops unsent deliveries, scrubs delivery addresses and devices, deletes "
    "preferences and the subject's evidence key (crypto-shredding: the ledger still verifies). "
    "Idempotent.",
)
def erase_subject(
    subject_id: Annotated[str, Path(min_length=1, max_length=40)],
    session: SessionDep,
    runtime: RuntimeDep,
    reference: Annotated[
        str | None,
        Query(max_length=200, description="the erasure request's reference, for the audit log"),
    ] = None,
) -> ErasureOut:
    eraser = SubjectEraser(
        session, runtime.ledger_config, runtime.state, holders=[LocationAndOfferData()]
    )
    report = eraser.erase(
        subject_id, actor="compliance-api-key", now=runtime.clock.now(), reference=reference
    )
    return ErasureOut(
        subject_id=report.subject_id,
        erased_at=report.erased_at,
        already_erased=report.already_erased,
        ledger_event_ids=report.ledger_event_ids,
        erased=report.counts,
        evidence_shredded=report.evidence_shredded,
    )
