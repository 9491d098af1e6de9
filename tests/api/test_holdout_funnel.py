"""Holdout, visits, purchases and the funnel end to end, against hand-counted expectations."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from api.routes.tracking import open_url
from offers.analytics import lift
from offers.experiments import holdout_draw, holdout_secret
from offers.models import OfferDecision
from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, POS, Engine

SHARE = 0.5


def _push_shopper(engine: Engine, n: int) -> dict[str, Any]:
    """A shopper with location and offers-by-push consent (no email, so nothing to confirm)."""
    device = engine.register(email=None, customer=f"shopper-{n}")
    engine.consent(device, "location_tracking")
    granted = engine.consent(device, "marketing_offers", channel="push")
    assert granted["state"] == "given", granted
    device["customer_ref"] = f"shopper-{n}"
    return device


def _funnel(engine: Engine, campaign_id: str, **params: str) -> dict[str, Any]:
    response = engine.client.get(
        f"/v1/manager/campaigns/{campaign_id}/funnel", headers=MANAGER, params=params
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_holdout_split_visits_purchases_and_lift(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign = engine_api.create_campaign([store["id"]], holdout_share=SHARE)
    secret = holdout_secret(engine_api.runtime.settings.secret_key.get_secret_value())
    shoppers: list[dict[str, Any]] = []
    held: list[bool] = []
    # Register until each group has 3 shoppers; which group is known in advance from the hash.
    while min(held.count(True), held.count(False)) < 3:
        assert len(shoppers) < 60
        s = _push_shopper(engine_api, len(shoppers))
        shoppers.append(s)
        held.append(holdout_draw(secret, campaign["id"], s["subject_id"]) < SHARE)

    coupons = {}
    for s in shoppers:
        got = engine_api.ping(s, INSIDE).json()["coupons"]
        coupons[s["subject_id"]] = got
    for s, h in zip(shoppers, held, strict=True):
        assert len(coupons[s["subject_id"]]) == (0 if h else 1), "held out: nothing sent"

    # Every other shopper of each group stays (a dwell after 2 min = a visit); the rest leave.
    stays = {}
    for group in (True, False):
        members = [s for s, h in zip(shoppers, held, strict=True) if h is group]
        for i, s in enumerate(members):
            stays[s["subject_id"]] = i % 2 == 0
    engine_api.clock.advance(timedelta(seconds=150))
    for s in shoppers:
        engine_api.ping(s, INSIDE if stays[s["subject_id"]] else OUTSIDE)
    # One treated coupon redeemed, one purchase by a held-out shopper at the till.
    treated = [s for s, h in zip(shoppers, held, strict=True) if not h]
    held_out = [s for s, h in zip(shoppers, held, strict=True) if h]
    code = coupons[treated[0]["subject_id"]][0]["code"]
    assert engine_api.redeem(code, store["id"]).status_code == 200
    purchase = engine_api.client.post(
        "/v1/pos/purchases",
        headers=POS,
        json={"customer_ref": held_out[0]["customer_ref"], "store_id": store["id"]},
    )
    assert purchase.status_code == 200 and purchase.json() == {"attributed": 1}

    n_t, n_h = len(treated), len(held_out)
    v_t = sum(stays[s["subject_id"]] for s in treated)
    v_h = sum(stays[s["subject_id"]] for s in held_out)
    body = _funnel(engine_api, campaign["id"])
    [row] = body["rows"]
    assert row["counts"]["triggered"] == n_t + n_h
    assert row["counts"]["held_out"] == n_h
    assert row["counts"]["issued"] == n_t
    assert row["counts"]["redeemed"] == 1
    assert row["counts"]["visited"] == v_t + v_h
    assert row["counts"]["purchased"] == 1
    assert row["counts"]["sent"] == 0  # push is not configured in this engine: nothing sent
    visit, purchases, redemption = body["lift"]
    assert visit["treated_rate"] == pytest.approx(v_t / n_t)
    assert visit["held_out_rate"] == pytest.approx(v_h / n_h)
    expected = lift("visit", v_t, n_t, v_h, n_h)
    assert visit["lift"] == pytest.approx(v_t / n_t - v_h / n_h)
    assert (visit["ci_low"], visit["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))
    assert purchases["lift"] == pytest.approx(0 / n_t - 1 / n_h)
    assert redemption["treated_rate"] == pytest.approx(1 / n_t)
    assert sum(b["count"] for b in body["time_to_redeem"]) == 1

    csv_text = engine_api.client.get(
        f"/v1/manager/campaigns/{campaign['id']}/funnel.csv", headers=MANAGER
    ).text
    header, line = csv_text.strip().splitlines()
    values = dict(zip(header.split(","), line.split(","), strict=True))
    assert values["triggered"] == str(n_t + n_h) and values["held_out"] == str(n_h)
    assert values["suppressed_cap"] == "0"


def test_suppression_reasons_are_counted(make_engine_api: Any) -> None:
    engine = make_engine_api()
    store = engine.create_store()
    closed = engine.client.post(
        "/v1/manager/stores",
        headers=MANAGER,
        json={
            "name": "Never open",
            "opening_hours": {},
            "fence": {"lon": OUTSIDE[0], "lat": OUTSIDE[1], "radius_m": 50},
        },
    ).json()
    campaign = engine.create_campaign([store["id"], closed["id"]])
    no_marketing = engine.register(email=None, customer="quiet")
    engine.consent(no_marketing, "location_tracking")
    assert engine.ping(no_marketing, INSIDE).json()["coupons"] == []
    shopper = engine.shopper(email="twice@example.com")
    assert len(engine.ping(shopper, INSIDE).json()["coupons"]) == 1
    for point in (OUTSIDE, OUTSIDE, INSIDE):  # leave (closed store's fence) and come back
        engine.clock.advance(timedelta(minutes=2))
        engine.ping(shopper, point)
    engine.next_report()
    [row] = _funnel(engine, campaign["id"])["rows"]
    assert row["suppressed_by"] == {"no_consent": 1, "closed": 1, "cap": 1}
    assert row["counts"]["issued"] == 1 and row["counts"]["sent"] == 1
    assert row["counts"]["delivered"] == 1 and row["counts"]["opened"] == 0
    by_store = {
        r["key"]["store"]: r["counts"]["triggered"]
        for r in _funnel(engine, campaign["id"], group_by="store")["rows"]
    }
    assert by_store == {store["id"]: 3, closed["id"]: 1}
    with engine.runtime.sessions() as session:
        anonymous = session.query(OfferDecision).filter_by(reason="no_consent").one()
        assert anonymous.subject_id == ""  # nothing kept about a shopper who said no

    [coupon] = [d for d in engine.client.get("/v1/sdk/offers", headers=shopper["auth"]).json()]
    secret = engine.runtime.settings.secret_key.get_secret_value()
    link = open_url("http://x", secret, coupon["coupon_id"]).removeprefix("http://x")
    assert engine.client.get(link).status_code == 200
    assert engine.client.get(link + "0").status_code == 404
    assert _funnel(engine, campaign["id"])["rows"][0]["counts"]["opened"] == 1
    engine.clock.advance(timedelta(minutes=20))
    assert _funnel(engine, campaign["id"])["rows"][0]["counts"]["expired"] == 1


def test_quiet_hours_and_a_spent_budget_are_counted_as_their_own_suppressions(
    make_engine_api: Any,
) -> None:
    engine = make_engine_api()
    store = engine.create_store()
    campaign = engine.create_campaign([store["id"]], max_coupons=1)
    first = engine.shopper(email="first@example.com", customer="first")
    assert len(engine.ping(first, INSIDE).json()["coupons"]) == 1
    quiet = engine.shopper(email="quiet@example.com", customer="quiet")
    asleep = {"quiet_hours": {"start": "08:00", "end": "10:00"}, "timezone": "UTC"}  # now: 09:00
    assert engine.client.put("/v1/sdk/preferences", headers=quiet["auth"], json=asleep).is_success
    assert engine.ping(quiet, INSIDE).json()["coupons"] == []
    late = engine.shopper(email="late@example.com", customer="late")
    assert engine.ping(late, INSIDE).json()["coupons"] == []  # the one coupon is out
    engine.next_report()
    [row] = _funnel(engine, campaign["id"])["rows"]
    assert row["suppressed_by"] == {"quiet_hours": 1, "budget": 1}
    assert row["counts"]["triggered"] == 3 and row["counts"]["issued"] == 1


def test_live_feed_streams_decisions(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper = _push_shopper(engine_api, 1)
    engine_api.ping(shopper, INSIDE)
    with engine_api.client.stream(
        "GET",
        "/v1/manager/events/stream",
        headers={**MANAGER, "Last-Event-ID": "0"},
        params={"max_events": 1, "poll_s": 0.05},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    [block] = [b for b in text.split("\n\n") if b.startswith("event:")]
    lines = dict(line.split(": ", 1) for line in block.splitlines())
    assert lines["event"] == "decision"
    data = json.loads(lines["data"])
    assert (data["outcome"], data["trigger"], data["store_id"]) == ("issued", "enter", store["id"])


def test_adaptive_selection_learns_from_redemptions(make_engine_api: Any) -> None:
    engine_api = make_engine_api(variant_seed=11)  # seeded: the same draws on every run
    store = engine_api.create_store()
    variant = {"title": "Coffee", "body": "Now.", "valid_minutes": 15}
    created = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={
            "name": "Learn",
            "store_ids": [store["id"]],
            "selection": "fixed",  # first an even split, then learn
            "visit_window_minutes": 60,
            "variants": [
                {**variant, "name": "A", "discount_text": "5% off"},
                {**variant, "name": "B", "discount_text": "50% off"},
            ],
        },
    ).json()
    offers = {o["name"]: o["id"] for o in created["offers"]}
    by_offer: dict[str, int] = {offers["A"]: 0, offers["B"]: 0}
    redeemed = 0
    for n in range(10):
        shopper = _push_shopper(engine_api, n)
        [coupon] = engine_api.ping(shopper, INSIDE).json()["coupons"]
        with engine_api.runtime.sessions() as session:
            decision = session.query(OfferDecision).filter_by(coupon_id=coupon["coupon_id"]).one()
        by_offer[str(decision.offer_id)] += 1
        if decision.offer_id == offers["B"]:  # only the generous variant persuades
            assert engine_api.redeem(coupon["code"], store["id"]).status_code == 200
            redeemed += 1
    engine_api.clock.advance(timedelta(minutes=61))  # every visit window has closed
    engine_api.client.patch(
        f"/v1/manager/campaigns/{created['id']}", headers=MANAGER, json={"selection": "adaptive"}
    )
    from offers.decisions import DecisionLog
    from offers.models import Offer

    with engine_api.runtime.sessions() as session:
        rows = session.query(Offer).filter(Offer.campaign_id == created["id"]).all()
        stats = {
            s.offer_id: s for s in DecisionLog(session).variant_stats(rows, engine_api.clock.now())
        }
    assert stats[offers["A"]].trials == by_offer[offers["A"]]
    assert stats[offers["B"]].trials == by_offer[offers["B"]]
    assert (stats[offers["A"]].redeemed, stats[offers["B"]].redeemed) == (0, redeemed)
    assert stats[offers["A"]].visited == stats[offers["B"]].visited == 0
    # with B at `redeemed` of `trials` and A at none, the next shoppers mostly get B
    later = Counter()
    for n in range(10, 22):
        shopper = _push_shopper(engine_api, n)
        [coupon] = engine_api.ping(shopper, INSIDE).json()["coupons"]
        later[coupon["discount_text"]] += 1
    assert min(by_offer.values()) >= 3  # both variants were tried in the even split
    assert later["50% off"] >= 10, later  # B's posterior is far ahead: A rarely wins a draw


def test_a_tracked_link_with_a_foreign_token_is_404_not_500(engine_api: Engine) -> None:
    for token in ("cpn_x.\u00e9t\u00e9", "nothing", "a.b"):
        response = engine_api.client.get(f"/o/{token}")
        assert response.status_code == 404, (token, response.text)
