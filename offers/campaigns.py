"""Campaign catalogue: validated creation and change of campaigns and their offer variants.

Every change is written to the audit log in the same transaction: who, when, and what changed
(a diff of the fields, old and new value).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import audit
from core.errors import NotFound
from core.ids import new_id
from geo.hours import validate_hours
from geo.repository import StoreRepository
from offers.domain import (
    MAX_VALID_MINUTES,
    CampaignNotFound,
    InvalidCampaign,
    Validity,
    ValidityRule,
    check_validity,
)
from offers.experiments import Selection
from offers.models import Campaign, CampaignStore, Offer
from offers.repository import CampaignBudget, CampaignRepository
from offers.templates import check_template

TRIGGERS = ("enter", "dwell", "approaching")
STATUSES = ("active", "paused")
CAMPAIGN_FIELDS = (
    "name",
    "status",
    "starts_at",
    "ends_at",
    "daily_cap_per_shopper",
    "category",
    "triggers",
    "store_tags",
    "holdout_share",
    "selection",
    "visit_window_minutes",
)
VARIANT_FIELDS = (
    "name",
    "title",
    "body",
    "discount_text",
    "valid_minutes",
    "validity_rule",
    "decision_window_minutes",
    "max_valid_minutes",
    "discount_amount",
    "weight",
    "active",
)
# The variant fields a PATCH may set to null (a travel-validity rule's parts); the others always
# hold a value.
VARIANT_CLEARABLE = frozenset({"decision_window_minutes", "max_valid_minutes"})
# Campaign fields a manager may change on a running campaign (``update_rules``).
RULE_FIELDS = frozenset(
    {
        "starts_at",
        "ends_at",
        "active_hours",
        "daily_cap_per_shopper",
        "store_cooldown_minutes",
        "max_coupons",
        "max_liability",
    }
)


@dataclass(frozen=True, slots=True)
class VariantSpec:
    title: str
    body: str
    discount_text: str
    valid_minutes: int
    name: str = "A"
    weight: int = 1
    validity_rule: str = ValidityRule.FIXED.value
    decision_window_minutes: int | None = None
    max_valid_minutes: int | None = None
    discount_amount: int = 0


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    name: str
    variants: Sequence[VariantSpec]
    store_ids: Sequence[str] = ()
    store_tags: Sequence[str] = ()
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    daily_cap_per_shopper: int = 1
    category: str | None = None
    triggers: Sequence[str] = ("enter",)
    holdout_share: float = 0.1
    selection: str = Selection.FIXED.value
    visit_window_minutes: int = 120
    active_hours: dict[str, Any] | None = None
    store_cooldown_minutes: int = 0
    max_coupons: int | None = None
    max_liability: int | None = None


def _check_rules(campaign: Campaign, amounts: Iterable[int]) -> None:
    """Schedule hours and budget of a campaign (its window is ``check_campaign``'s).
    ``amounts``: the discount amounts of its active variants. Under a liability budget each
    must be set: a coupon of a variant without one would never count against it."""
    campaign.active_hours = validate_hours(campaign.active_hours)
    if campaign.max_liability is not None and min(amounts, default=0) <= 0:
        raise InvalidCampaign(
            "a max_liability budget needs the offer's discount_amount (minor currency units) "
            "on every active variant"
        )


def _check_variant_budget(campaign: Campaign, offer: Offer) -> None:
    """A variant added to or changed in a campaign with a liability budget must count against
    it (as ``_check_rules`` asks of every active variant)."""
    if campaign.max_liability is not None and offer.active and offer.discount_amount <= 0:
        raise InvalidCampaign(
            f"variant {offer.name!r}: a max_liability budget needs the offer's discount_amount "
            "(minor currency units) on every active variant"
        )


def _check_offer_validity(offer: Offer | VariantSpec) -> None:
    check_validity(
        Validity(
            ValidityRule(offer.validity_rule),
            offer.valid_minutes,
            offer.decision_window_minutes,
            offer.max_valid_minutes,
        )
    )


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Fields whose value changed, as ``{"field": {"from": old, "to": new}}`` (JSON-safe)."""
    return {
        k: {"from": _plain(before.get(k)), "to": _plain(after.get(k))}
        for k in after
        if before.get(k) != after.get(k)
    }


def _snapshot(row: Any, fields: Sequence[str]) -> dict[str, Any]:
    return {f: getattr(row, f) for f in fields}


def check_variant(v: Mapping[str, Any], label: str) -> None:
    for what in ("title", "body"):
        if what in v and v[what] is not None:
            check_template(str(v[what]), f"{label} {what}")
    minutes = v.get("valid_minutes")
    if minutes is not None and not 1 <= int(minutes) <= MAX_VALID_MINUTES:
        raise InvalidCampaign(f"{label}: valid_minutes must be between 1 and {MAX_VALID_MINUTES}")
    weight = v.get("weight")
    if weight is not None and not 0 <= int(weight) <= 1000:
        raise InvalidCampaign(f"{label}: weight must be between 0 and 1000")


def check_campaign(values: Mapping[str, Any]) -> None:
    starts, ends = values.get("starts_at"), values.get("ends_at")
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidCampaign("ends_at must be after starts_at")
    triggers = values.get("triggers")
    if triggers is not None:
        unknown = [t for t in triggers if t not in TRIGGERS]
        if not triggers or unknown:
            raise InvalidCampaign(
                f"triggers must be a non-empty list of {', '.join(TRIGGERS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
    share = values.get("holdout_share")
    if share is not None and not 0 <= share <= 0.5:
        raise InvalidCampaign("holdout_share must be between 0 and 0.5")
    selection = values.get("selection")
    if selection is not None and selection not in tuple(Selection):
        raise InvalidCampaign("selection must be 'fixed' (weights) or 'adaptive' (Thompson)")
    status = values.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidCampaign(f"status must be one of {', '.join(STATUSES)}")


class CampaignCatalog:
    def __init__(self, session: Session, actor: str = "system") -> None:
        self.session = session
        self.actor = actor
        self.repository = CampaignRepository(session)

    def get(self, campaign_id: str) -> Campaign:
        campaign = self.session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignNotFound(f"no campaign with id {campaign_id}")
        return campaign

    def _check_stores(self, store_ids: Sequence[str], store_tags: Sequence[str]) -> list[str]:
        unique = list(dict.fromkeys(store_ids))
        if not unique and not store_tags:
            raise InvalidCampaign("a campaign needs at least one store or store tag")
        missing = set(unique) - StoreRepository(self.session).existing_ids(unique)
        if missing:
            raise InvalidCampaign(f"unknown store id(s): {', '.join(sorted(missing))}")
        return unique

    def create(self, spec: CampaignSpec, now: datetime) -> Campaign:
        stores = self._check_stores(spec.store_ids, spec.store_tags)
        values = {f: getattr(spec, f) for f in CAMPAIGN_FIELDS if hasattr(spec, f)}
        values["triggers"] = list(dict.fromkeys(spec.triggers))
        values["store_tags"] = sorted(set(spec.store_tags))
        check_campaign(values)
        if not spec.variants:
            raise InvalidCampaign("a campaign needs at least one offer variant")
        names = [v.name for v in spec.variants]
        if len(set(names)) != len(names):
            raise InvalidCampaign("variant names must be unique within a campaign")
        for v in spec.variants:
            check_variant(vars_of(v), f"variant {v.name}")
            _check_offer_validity(v)
        campaign = Campaign(
            id=new_id("cmp"),
            status="active",
            created_at=now,
            updated_at=now,
            active_hours=spec.active_hours,
            store_cooldown_minutes=spec.store_cooldown_minutes,
            max_coupons=spec.max_coupons,
            max_liability=spec.max_liability,
            issued_count=0,
            reserved_liability=0,
            **values,
        )
        _check_rules(campaign, [v.discount_amount for v in spec.variants])
        self.session.add(campaign)
        self.session.flush()
        self.session.add_all([CampaignStore(campaign_id=campaign.id, store_id=s) for s in stores])
        offers = [self._new_offer(campaign.id, v, now) for v in spec.variants]
        self.session.add_all(offers)
        self.session.flush()
        audit(
            self.session,
            actor=self.actor,
            action="campaign.create",
            at=now,
            target=campaign.id,
            details={
                "changes": diff(
                    {},
                    {
                        **values,
                        **{f: getattr(spec, f) for f in sorted(RULE_FIELDS) if hasattr(spec, f)},
                        "status": "active",
                        "store_ids": stores,
                    },
                ),
                "variants": [vars_of(v) for v in spec.variants],
            },
        )
        return campaign

    def update(self, campaign_id: str, changes: Mapping[str, Any], now: datetime) -> Campaign:
        campaign = self.get(campaign_id)
        before = _snapshot(campaign, CAMPAIGN_FIELDS)
        before["store_ids"] = self.store_ids(campaign_id)
        after = {**before, **{k: v for k, v in changes.items() if k != "store_ids"}}
        check_campaign(after)
        if "store_ids" in changes:
            after["store_ids"] = self._check_stores(
                changes["store_ids"] or [], after.get("store_tags") or []
            )
        elif "store_tags" in changes:
            self._check_stores(before["store_ids"], after.get("store_tags") or [])
        for key in CAMPAIGN_FIELDS:
            setattr(campaign, key, after[key])
        if after["store_ids"] != before["store_ids"]:
            for link in self.session.scalars(
                select(CampaignStore).where(CampaignStore.campaign_id == campaign_id)
            ):
                self.session.delete(link)
            self.session.flush()
            self.session.add_all(
                [CampaignStore(campaign_id=campaign_id, store_id=s) for s in after["store_ids"]]
            )
        changed = diff(before, after)
        if changed:
            campaign.updated_at = now
            action = "campaign.update"
            if set(changed) == {"status"}:
                action = "campaign.pause" if after["status"] == "paused" else "campaign.resume"
            audit(
                self.session,
                actor=self.actor,
                action=action,
                at=now,
                target=campaign_id,
                details={"changes": changed},
            )
        self.session.flush()
        return campaign

    def add_variant(self, campaign_id: str, spec: VariantSpec, now: datetime) -> Offer:
        self.get(campaign_id)
        if any(o.name == spec.name for o in self.variants(campaign_id)):
            raise InvalidCampaign(f"this campaign already has a variant named {spec.name!r}")
        check_variant(vars_of(spec), f"variant {spec.name}")
        offer = self._new_offer(campaign_id, spec, now)
        _check_variant_budget(self.get(campaign_id), offer)
        self.session.add(offer)
        self.session.flush()
        audit(
            self.session,
            actor=self.actor,
            action="variant.create",
            at=now,
            target=campaign_id,
            details={"variant": offer.id, "changes": diff({}, vars_of(spec))},
        )
        return offer

    def update_variant(
        self, campaign_id: str, offer_id: str, changes: Mapping[str, Any], now: datetime
    ) -> Offer:
        offer = self.session.get(Offer, offer_id)
        if offer is None or offer.campaign_id != campaign_id:
            raise NotFound(f"campaign {campaign_id} has no variant {offer_id}")
        check_variant(changes, f"variant {offer.name}")
        others = [o for o in self.variants(campaign_id) if o.id != offer_id]
        if changes.get("active") is False and not any(o.active for o in others):
            raise InvalidCampaign("a campaign keeps at least one active variant")
        if "name" in changes and any(o.name == changes["name"] for o in others):
            raise InvalidCampaign(f"this campaign already has a variant named {changes['name']!r}")
        before = _snapshot(offer, VARIANT_FIELDS)
        after = {**before, **changes}
        for key in VARIANT_FIELDS:
            setattr(offer, key, after[key])
        _check_offer_validity(offer)
        _check_variant_budget(self.get(campaign_id), offer)
        changed = diff(before, after)
        if changed:
            audit(
                self.session,
                actor=self.actor,
                action="variant.update",
                at=now,
                target=campaign_id,
                details={"variant": offer_id, "changes": changed},
            )
        self.session.flush()
        return offer

    def update_rules(self, campaign_id: str, changes: Mapping[str, Any], now: datetime) -> Campaign:
        """Change a campaign's schedule, caps, cooldown or budget. Setting a budget on a running
        campaign counts the coupons it already issued (and the liability of those not expired)."""
        unknown = set(changes) - RULE_FIELDS
        if unknown:
            raise InvalidCampaign(f"not a campaign rule: {', '.join(sorted(unknown))}")
        campaign = self.get(campaign_id)
        before = _snapshot(campaign, sorted(RULE_FIELDS))
        had_budget = campaign.max_coupons is not None or campaign.max_liability is not None
        for name, value in changes.items():
            setattr(campaign, name, value)
        check_campaign({"starts_at": campaign.starts_at, "ends_at": campaign.ends_at})
        variants = self.variants(campaign_id)
        _check_rules(campaign, [o.discount_amount for o in variants if o.active])
        self.session.flush()
        has_budget = campaign.max_coupons is not None or campaign.max_liability is not None
        if has_budget and not had_budget:
            CampaignBudget(self.session).recount(campaign.id, now)
            self.session.refresh(campaign)
        changed = diff(before, _snapshot(campaign, sorted(RULE_FIELDS)))
        if changed:
            campaign.updated_at = now
            audit(
                self.session,
                actor=self.actor,
                action="campaign.rules",
                at=now,
                target=campaign_id,
                details={"changes": changed},
            )
            self.session.flush()
        return campaign

    def store_ids(self, campaign_id: str) -> list[str]:
        return list(
            self.session.scalars(
                select(CampaignStore.store_id)
                .where(CampaignStore.campaign_id == campaign_id)
                .order_by(CampaignStore.store_id)
            )
        )

    def variants(self, campaign_id: str) -> list[Offer]:
        return list(
            self.session.scalars(
                select(Offer)
                .where(Offer.campaign_id == campaign_id)
                .order_by(Offer.created_at, Offer.name)
            )
        )

    @staticmethod
    def _new_offer(campaign_id: str, v: VariantSpec, now: datetime) -> Offer:
        return Offer(
            id=new_id("ofr"),
            campaign_id=campaign_id,
            name=v.name,
            title=v.title,
            body=v.body,
            discount_text=v.discount_text,
            valid_minutes=v.valid_minutes,
            validity_rule=v.validity_rule,
            decision_window_minutes=v.decision_window_minutes,
            max_valid_minutes=v.max_valid_minutes,
            discount_amount=v.discount_amount,
            weight=v.weight,
            active=True,
            created_at=now,
        )


def vars_of(v: VariantSpec) -> dict[str, Any]:
    return {f: getattr(v, f) for f in VariantSpec.__slots__}
