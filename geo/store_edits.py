"""Manager edits of a store (name, tags, opening hours), each written to the audit log."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.audit import audit
from core.errors import NotFound
from geo.hours import validate_hours
from geo.models import Store

EDITABLE = ("name", "tags", "opening_hours")


class StoreEditor:
    def __init__(self, session: Session, actor: str) -> None:
        self.session = session
        self.actor = actor

    def created(self, store: Store, now: datetime) -> None:
        audit(
            self.session,
            actor=self.actor,
            action="store.create",
            at=now,
            target=store.id,
            details={
                "changes": {
                    k: {"from": None, "to": getattr(store, k)}
                    for k in ("name", "timezone", "tags", "opening_hours")
                }
            },
        )

    def update(self, store_id: str, changes: Mapping[str, Any], now: datetime) -> Store:
        store = self.session.get(Store, store_id)
        if store is None:
            raise NotFound(f"no store with id {store_id}")
        if changes.get("opening_hours") is not None:
            validate_hours(changes["opening_hours"])
        changed: dict[str, dict[str, Any]] = {}
        for key in EDITABLE:
            if key not in changes:
                continue
            value = sorted(set(changes[key] or [])) if key == "tags" else changes[key]
            if getattr(store, key) != value:
                changed[key] = {"from": getattr(store, key), "to": value}
                setattr(store, key, value)
        if changed:
            audit(
                self.session,
                actor=self.actor,
                action="store.update",
                at=now,
                target=store_id,
                details={"changes": changed},
            )
        self.session.flush()
        return store
