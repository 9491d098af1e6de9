"""Manager API: variants, triggers, store tags, pause/resume, filters, validation, audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, STORE_LAT, STORE_LON, Engine
from tests.conftest import text_of

VARIANT = {"title": "{discount} at {store}", "body": "Until {expires_at}.", "valid_minutes": 15}


def _campaign(engine: Engine, **body: Any) -> Any:
    return engine.client.post("/v1/manager/campaigns", headers=MANAGER, json=body)


def _tagged_store(engine: Engine, name: str, tags: list[str], lon: float = STORE_LON) -> Any:
    response = engine.client.post(
        "/v1/manager/stores",
        headers=MANAGER,
        json={"name": name, "tags": tags, "fence": {"lon": lon, "lat": STORE_LAT, "radius_m": 50}},
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_variants_templates_and_tags_target_the_right_stores(engine_api: Engine) -> None:
    city = _tagged_store(engine_api, "City Cafe", ["city", "cafe"])
    _tagged_store(engine_api, "Suburb Cafe", ["suburb"], lon=STORE_LON + 0.05)
    created = _campaign(
        engine_api,
        name="Tagged",
        store_tags=["city"],
        variants=[
            {**VARIANT, "name": "A", "discount_text": "10% off", "weight": 1},
            {**VARIANT, "name": "B", "discount_text": "20% off", "weight": 0},
        ],
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["store_ids"] == [] and body["store_tags"] == ["city"]
    assert [(o["name"], o["weight"]) for o in body["offers"]] == [("A", 1), ("B", 0)]
    shopper = engine_api.shopper()
    [coupon] = engine_api.ping(shopper, INSIDE).json()["coupons"]
    # weight 0 is never drawn; the title template is filled in
    assert coupon["title"] == "10% off at City Cafe" and coupon["store_id"] == city["id"]
    [message] = engine_api.inbox.wait_for(1)
    assert message["Subject"] is not None
    text = text_of(message) + text_of(message, "html")
    assert "{store}" not in text and "{expires_at}" not in text
    assert "10% off at City Cafe" in message["Subject"]


def test_a_dwell_trigger_waits_for_the_dwell(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], triggers=["dwell"])
    shopper = engine_api.shopper()
    assert engine_api.ping(shopper, INSIDE).json()["coupons"] == []
    engine_api.clock.advance(timedelta(seconds=130))
    later = engine_api.ping(shopper, INSIDE).json()
    assert [e["kind"] for e in later["events"]] == ["dwell"]
    assert len(later["coupons"]) == 1


def test_pause_and_resume_are_audited_and_stop_offers(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign = engine_api.create_campaign([store["id"]], cap=5)
    paused = engine_api.client.post(
        f"/v1/manager/campaigns/{campaign['id']}/pause", headers=MANAGER
    )
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    shopper = engine_api.shopper()
    assert engine_api.ping(shopper, INSIDE).json()["coupons"] == []
    resumed = engine_api.client.post(
        f"/v1/manager/campaigns/{campaign['id']}/resume", headers=MANAGER
    )
    assert resumed.json()["status"] == "active"
    engine_api.clock.advance(timedelta(minutes=2))
    engine_api.ping(shopper, OUTSIDE)
    engine_api.clock.advance(timedelta(minutes=2))
    engine_api.ping(shopper, OUTSIDE)
    engine_api.clock.advance(timedelta(minutes=2))
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1
    log = engine_api.client.get(
        "/v1/manager/audit", headers=MANAGER, params={"target": campaign["id"]}
    ).json()
    actions = [a["action"] for a in log["items"]]
    assert actions == ["campaign.resume", "campaign.pause", "campaign.create"]
    pause = log["items"][1]
    assert pause["details"]["changes"] == {"status": {"from": "active", "to": "paused"}}
    assert pause["actor"].startswith("manager:") and "dev-manager-key" not in pause["actor"]


def test_changes_are_diffed_in_the_audit_log(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign = engine_api.create_campaign([store["id"]])
    patched = engine_api.client.patch(
        f"/v1/manager/campaigns/{campaign['id']}",
        headers=MANAGER,
        json={"holdout_share": 0.2, "selection": "adaptive", "name": "Coffee later"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["selection"] == "adaptive"
    offer_id = campaign["offers"][0]["id"]
    variant = engine_api.client.patch(
        f"/v1/manager/campaigns/{campaign['id']}/variants/{offer_id}",
        headers=MANAGER,
        json={"weight": 3},
    )
    assert variant.status_code == 200 and variant.json()["weight"] == 3
    added = engine_api.client.post(
        f"/v1/manager/campaigns/{campaign['id']}/variants",
        headers=MANAGER,
        json={**VARIANT, "name": "B", "discount_text": "2 for 1"},
    )
    assert added.status_code == 201, added.text
    log = engine_api.client.get(
        "/v1/manager/audit", headers=MANAGER, params={"target": campaign["id"]}
    ).json()["items"]
    assert [a["action"] for a in log] == [
        "variant.create",
        "variant.update",
        "campaign.update",
        "campaign.create",
    ]
    assert log[2]["details"]["changes"] == {
        "name": {"from": "Coffee now", "to": "Coffee later"},
        "holdout_share": {"from": 0.0, "to": 0.2},
        "selection": {"from": "fixed", "to": "adaptive"},
    }
    assert log[1]["details"]["changes"] == {"weight": {"from": 1, "to": 3}}
    store_patch = engine_api.client.patch(
        f"/v1/manager/stores/{store['id']}", headers=MANAGER, json={"tags": ["mall", "city"]}
    )
    assert store_patch.json()["tags"] == ["city", "mall"]
    [entry] = engine_api.client.get(
        "/v1/manager/audit", headers=MANAGER, params={"action": "store.update"}
    ).json()["items"]
    assert entry["details"]["changes"]["tags"] == {"from": [], "to": ["city", "mall"]}


def test_validation_messages_are_clear(engine_api: Engine) -> None:
    store = engine_api.create_store()
    base = {"name": "X", "store_ids": [store["id"]]}
    cases = [
        ({**base, "offer": {**VARIANT, "discount_text": "1", "title": "{name}"}}, "unknown field"),
        (
            {**base, "offer": {**VARIANT, "discount_text": "1", "body": "{store.x}"}},
            "unknown field",
        ),
        ({**base}, "either one offer or a list of variants"),
        ({"name": "X", "offer": {**VARIANT, "discount_text": "1"}}, "store_ids or store_tags"),
        ({**base, "triggers": ["exit"], "offer": {**VARIANT, "discount_text": "1"}}, "triggers"),
        ({**base, "holdout_share": 0.9, "offer": {**VARIANT, "discount_text": "1"}}, "0.5"),
        ({**base, "store_tags": ["Bad Tag"], "offer": {**VARIANT, "discount_text": "1"}}, "tag"),
    ]
    for body, needle in cases:
        response = _campaign(engine_api, **body)
        assert response.status_code == 422, (body, response.text)
        assert needle in response.text, (needle, response.text)
    twins = _campaign(
        engine_api,
        **base,
        variants=[{**VARIANT, "discount_text": "1"}, {**VARIANT, "discount_text": "2"}],
    )
    assert twins.status_code == 422 and "unique" in twins.json()["error"]["message"]
    missing = engine_api.client.patch("/v1/manager/campaigns/cmp_nope", headers=MANAGER, json={})
    assert missing.status_code == 404
    bad_group = engine_api.client.get(
        "/v1/manager/campaigns/cmp_nope/funnel", headers=MANAGER, params={"group_by": "weekday"}
    )
    assert bad_group.status_code == 422 and "weekday" in bad_group.text


def test_lists_filter_and_paginate(engine_api: Engine) -> None:
    stores = []
    for i in range(5):
        engine_api.clock.advance(timedelta(seconds=1))  # lists are in creation order
        tag = "even" if i % 2 == 0 else "odd"
        stores.append(_tagged_store(engine_api, f"Shop {i}", [tag], STORE_LON + i))
    for i, store in enumerate(stores):
        engine_api.clock.advance(timedelta(seconds=1))
        engine_api.create_campaign([store["id"]], name=f"Campaign {i}", category=f"c{i % 2}")
    page = engine_api.client.get(
        "/v1/manager/stores", headers=MANAGER, params={"tag": "even", "limit": 2, "offset": 0}
    ).json()
    assert page["page"] == {"total": 3, "limit": 2, "offset": 0}
    assert [s["name"] for s in page["items"]] == ["Shop 0", "Shop 2"]
    named = engine_api.client.get("/v1/manager/stores", headers=MANAGER, params={"q": "shop 4"})
    assert [s["name"] for s in named.json()["items"]] == ["Shop 4"]
    first = engine_api.client.get(
        "/v1/manager/campaigns", headers=MANAGER, params={"category": "c1"}
    ).json()
    assert [c["name"] for c in first["items"]] == ["Campaign 1", "Campaign 3"]
    engine_api.client.post(
        f"/v1/manager/campaigns/{first['items'][0]['id']}/pause", headers=MANAGER
    )
    paused = engine_api.client.get(
        "/v1/manager/campaigns", headers=MANAGER, params={"status": "paused"}
    ).json()
    assert [c["name"] for c in paused["items"]] == ["Campaign 1"]
    by_store = engine_api.client.get(
        "/v1/manager/campaigns", headers=MANAGER, params={"store_id": stores[4]["id"]}
    ).json()
    assert [c["name"] for c in by_store["items"]] == ["Campaign 4"]
    audit = engine_api.client.get(
        "/v1/manager/audit", headers=MANAGER, params={"action": "campaign.", "limit": 2}
    ).json()
    assert audit["page"]["total"] == 6 and len(audit["items"]) == 2


def test_campaigns_of_several_stores_at_once_match_each_store_alone(engine_api: Engine) -> None:
    """The ping path looks up the campaigns of every store a batch triggers at once: the same
    campaigns, in the same order, as store by store (by id, by tag, paused ones left out)."""
    city = _tagged_store(engine_api, "City", ["city"])
    plain = _tagged_store(engine_api, "Plain", [], lon=STORE_LON + 0.02)
    mall = _tagged_store(engine_api, "Mall", ["mall", "city"], lon=STORE_LON + 0.04)
    made = []
    for store_ids, name, tags in (
        ([plain["id"]], "Plain only", []),
        ([city["id"], plain["id"]], "By id", []),
        ([], "City tag", ["city"]),
        ([mall["id"]], "Paused", []),
    ):
        engine_api.clock.advance(timedelta(seconds=1))  # oldest campaign first
        made.append(engine_api.create_campaign(store_ids, name=name, store_tags=tags))
    paused = made[-1]
    assert (
        engine_api.client.post(
            f"/v1/manager/campaigns/{paused['id']}/pause", headers=MANAGER
        ).status_code
        == 200
    )
    stores = {city["id"]: ["city"], plain["id"]: [], mall["id"]: ["mall", "city"]}
    live = engine_api.runtime.ingestor.campaigns.current()
    together = live.for_stores(stores)
    alone = {s: live.for_stores({s: tags})[s] for s, tags in stores.items()}

    def names(found: dict[str, list[tuple[Any, Any]]]) -> dict[str, list[str]]:
        return {s: [c.name for c, _ in pairs] for s, pairs in found.items()}

    assert (
        names(together)
        == names(alone)
        == {
            city["id"]: ["By id", "City tag"],
            plain["id"]: ["Plain only", "By id"],
            mall["id"]: ["City tag"],
        }
    )
    assert live.for_stores({}) == {}


def test_a_stores_new_name_and_tags_reach_offers_at_once(engine_api: Engine) -> None:
    """A PATCH of a store's name or tags changes what offer decisions see, as hours do: a
    campaign targeting the new tag issues there, and the coupon names the store anew."""
    store = engine_api.create_store()
    variant = {**VARIANT, "discount_text": "10%"}
    created = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={"name": "Tagged", "store_tags": ["city"], "offer": variant},
    )
    assert created.status_code == 201, created.text

    patched = engine_api.client.patch(
        f"/v1/manager/stores/{store['id']}",
        headers=MANAGER,
        json={"tags": ["city"], "name": "Renamed Cafe"},
    )
    assert patched.status_code == 200, patched.text
    [coupon] = engine_api.ping(engine_api.shopper(), INSIDE).json()["coupons"]

    assert coupon["title"] == "10% at Renamed Cafe"


def test_a_patch_cannot_empty_a_required_field_or_break_a_rule_creation_keeps(
    engine_api: Engine,
) -> None:
    """Null for a field that cannot be empty, a variant renamed to a name the campaign already
    has, a budgeted campaign's variant left without a discount amount: each a clear 422 that
    changes nothing (they used to reach the database: a 409 "retry", or a 500)."""
    store = engine_api.create_store()
    offer = {**VARIANT, "discount_text": "10%", "discount_amount": 100}
    created = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={
            "name": "AB",
            "store_ids": [store["id"]],
            "max_liability": 1000,
            "variants": [{**offer, "name": "A"}, {**offer, "name": "B"}],
        },
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    variant = f"/v1/manager/campaigns/{campaign['id']}/variants/{campaign['offers'][1]['id']}"
    refused = [
        ("/v1/manager/campaigns/" + campaign["id"], {"name": None}, "cannot be null"),
        ("/v1/manager/campaigns/" + campaign["id"], {"holdout_share": None}, "cannot be null"),
        (variant, {"validity_rule": None}, "cannot be null"),
        (variant, {"title": None, "weight": None}, "title, weight cannot be null"),
        (f"/v1/manager/stores/{store['id']}", {"name": None}, "cannot be null"),
        (variant, {"name": "A"}, "already has a variant named 'A'"),
        (variant, {"discount_amount": 0}, "max_liability budget needs"),
    ]

    for path, body, needle in refused:
        answer = engine_api.client.patch(path, headers=MANAGER, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert needle in answer.json()["error"]["message"], (body, answer.text)
    again = engine_api.client.get(f"/v1/manager/campaigns/{campaign['id']}", headers=MANAGER)
    assert [(o["name"], o["discount_amount"]) for o in again.json()["offers"]] == [
        ("A", 100),
        ("B", 100),
    ]
    free = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={
            "name": "Half free",
            "store_ids": [store["id"]],
            "max_liability": 1000,
            "variants": [{**offer, "name": "A"}, {**offer, "name": "B", "discount_amount": 0}],
        },
    )
    assert free.status_code == 422 and "every active variant" in free.text, free.text
