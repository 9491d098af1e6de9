"""Consent enforcement under random interleavings (hypothesis).

Each example is a fresh shopper who, in a random order, grants and withdraws location tracking
and offers by email (by the double opt-in link, by asking and never confirming, by the SDK or by
one-click unsubscribe), pings inside and outside a store's fence, lets time pass (up to beyond
the one-year expiry of consent) and has the worker attempt its pending deliveries (the
scheduler is off). A simple model says what consent holds at each moment; the engine must agree:

- a ping is stored only while location consent holds, and refused (403, nothing stored) otherwise;
- a coupon is issued only while offers consent holds (and is, whenever it holds, on an enter);
- a delivery is sent only while the email channel's consent holds and the coupon still lives.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent.domain import Channel
from geo.models import Ping
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, Engine, EngineFactory

MAX_AGE = timedelta(days=365)
TOKEN_REFRESH = timedelta(days=25)  # device tokens live 30 days: the app registers again
STEP = timedelta(seconds=10)  # between fixes: 550 m in 10 s is below the jump filter's limit

# Most shoppers start with some consent, so that coupons and deliveries happen often enough
# for their rules to be tested; the random actions then take it away (or not).
START_WITH = st.sampled_from(
    [
        [("grant_location",), ("grant_email",)],
        [("grant_location",), ("grant_email",)],
        [("grant_location",), ("request_email",)],
        [("grant_location",)],
        [("grant_email",)],
        [],
    ]
)
VISIT = st.just(("visit",))  # out of the fence, then in: an enter whenever location holds
DELIVER = st.just(("deliver",))
ACTIONS = st.one_of(
    VISIT,
    VISIT,
    st.tuples(st.just("ping"), st.booleans()),  # one fix, inside or outside
    DELIVER,
    DELIVER,
    st.tuples(st.just("wait"), st.sampled_from([timedelta(seconds=70), timedelta(minutes=20)])),
    st.tuples(
        st.just("wait"),
        st.sampled_from([timedelta(days=2), timedelta(days=200), MAX_AGE + timedelta(days=1)]),
    ),
    st.sampled_from(
        [
            ("grant_location",),
            ("withdraw_location",),
            ("grant_email",),
            ("request_email",),
            ("withdraw_email",),
            ("unsubscribe",),
        ]
    ),
)


@dataclass
class Model:
    """When each consent was last granted (None: not granted now)."""

    location_at: datetime | None = None
    email_at: datetime | None = None

    @staticmethod
    def holds(granted_at: datetime | None, now: datetime) -> bool:
        return granted_at is not None and now < granted_at + MAX_AGE


@dataclass
class Shopper:
    customer: str
    email: str
    device: dict[str, Any]
    registered_at: datetime
    model: Model = field(default_factory=Model)
    unsubscribe_url: str | None = None


class Run:
    def __init__(self, engine: Engine, shopper: Shopper) -> None:
        self.engine = engine
        self.s = shopper

    @property
    def now(self) -> datetime:
        return self.engine.clock.now()

    def do(self, action: tuple[Any, ...]) -> None:
        getattr(self, action[0])(*action[1:])

    # consent
    def grant_location(self) -> None:
        self.engine.consent(self.s.device, "location_tracking")
        self.s.model.location_at = self.now

    def withdraw_location(self) -> None:
        self.engine.consent(self.s.device, "location_tracking", granted=False)
        self.s.model.location_at = None

    def request_email(self) -> None:
        pending = self.engine.consent(self.s.device, "marketing_offers", channel="email")
        assert pending["state"] == "pending_confirmation"
        self.s.model.email_at = None  # pending replaces whatever was there: not consent yet

    def grant_email(self) -> None:
        self.request_email()
        confirmed = self.engine.follow(self.engine.confirmation_link(self.s.email))
        assert confirmed.status_code == 200, confirmed.text
        self.s.model.email_at = self.now

    def withdraw_email(self) -> None:
        self.engine.consent(self.s.device, "marketing_offers", granted=False, channel="email")
        self.s.model.email_at = None

    def unsubscribe(self) -> None:
        url = self.s.unsubscribe_url or self.engine.runtime.links.unsubscribe_url(
            self.s.device["subject_id"], Channel.EMAIL, self.now
        )
        done = self.engine.follow(url, "POST", data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200, done.text
        self.s.model.email_at = None

    # time and movement
    def wait(self, delta: timedelta) -> None:
        self.engine.clock.advance(delta)
        if self.now - self.s.registered_at > TOKEN_REFRESH:
            self.s.device = self.engine.register(email=self.s.email, customer=self.s.customer)
            self.s.registered_at = self.now

    def visit(self) -> None:
        self.ping(False)
        self.wait(timedelta(seconds=60))  # exit confirmed after 60 s outside
        self.ping(False)
        self.ping(True)

    def ping(self, inside: bool) -> None:
        self.wait(STEP)
        subject_id = self.s.device["subject_id"]
        stored_before = self.engine.count(Ping, Ping.subject_id == subject_id)
        response = self.engine.ping(self.s.device, INSIDE if inside else OUTSIDE)
        stored_after = self.engine.count(Ping, Ping.subject_id == subject_id)
        if not Model.holds(self.s.model.location_at, self.now):
            assert response.status_code == 403, response.text
            assert stored_after == stored_before, "a ping was stored without location consent"
            event("ping refused")
            return
        assert response.status_code == 200, response.text
        assert stored_after == stored_before + 1
        body = response.json()
        entered = any(e["kind"] == "enter" for e in body["events"])
        offers_ok = Model.holds(self.s.model.email_at, self.now)
        if body["coupons"]:
            assert offers_ok, "a coupon was issued without current offers consent"
            event("coupon issued")
        elif entered:
            event("enter without coupon")
        if entered and offers_ok:
            assert len(body["coupons"]) == 1 and body["coupons"][0]["channels"] == ["email"]

    def deliver(self) -> None:
        with self.engine.runtime.sessions() as session:
            pending = session.execute(
                select(Delivery.id, Coupon.expires_at)
                .join(Coupon, Coupon.id == Delivery.coupon_id)
                .where(
                    Coupon.subject_id == self.s.device["subject_id"],
                    Delivery.status == "pending",
                )
            ).all()
        margin = timedelta(seconds=self.engine.runtime.settings.delivery_margin_s)
        for delivery_id, expires_at in pending:
            report = self.engine.runtime.worker.deliver(delivery_id)
            assert report is not None
            event(f"delivery {report.status}")
            alive = self.now < expires_at - margin
            consented = Model.holds(self.s.model.email_at, self.now)
            if report.status == "sent":
                assert consented, "an offer email was sent without current channel consent"
                mail = self.engine.inbox.take(_offer_mail(f"{report.coupon_id}:email"))
                self.s.unsubscribe_url = str(mail["List-Unsubscribe"]).strip("<>")
            elif alive and consented:
                raise AssertionError(f"a consented live delivery was not sent: {report}")
            else:
                expected = "no_consent" if alive else "expired_undelivered"
                assert report.status == expected, report


def _offer_mail(key: str) -> Callable[[Message], bool]:
    return lambda m: bool(m["X-Offer-Engine-Idempotency-Key"] == key)


def test_consent_is_enforced_under_any_interleaving(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], cap=100, valid_minutes=15)
    numbers = itertools.count()

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        start=START_WITH,
        actions=st.lists(ACTIONS, min_size=3, max_size=16),
    )
    def interleaving(start: list[tuple[Any, ...]], actions: list[tuple[Any, ...]]) -> None:
        n = next(numbers)
        customer, email = f"prop-{n}", f"prop-{n}@example.com"
        device = engine.register(email=email, customer=customer)
        run = Run(engine, Shopper(customer, email, device, engine.clock.now()))
        for action in [*start, *actions]:
            run.do(action)
        run.deliver()  # whatever is still pending is judged at the end too

    interleaving()
