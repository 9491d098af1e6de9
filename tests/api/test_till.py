"""The till on both stacks: grace after expiry, Idempotency-Key replays, voids, and the guessing
lockout per terminal and per IP address."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest

from core.apikeys import ApiKeyAdmin
from offers.domain import TooManyAttempts
from offers.lockout import GuessLockout
from offers.models import Coupon
from tests.api.conftest import INSIDE, Engine
from tests.api.coupon_helpers import campaign, quick_shopper, till


def _coupon(engine: Engine, valid_minutes: int = 10) -> tuple[dict[str, Any], dict[str, Any]]:
    store = engine.create_store()
    campaign(engine, [store["id"]], offer={"valid_minutes": valid_minutes})
    [coupon] = engine.ping(quick_shopper(engine, "c1"), INSIDE).json()["coupons"]
    return store, coupon


def test_a_till_may_redeem_within_the_grace_after_expiry(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api, valid_minutes=5)
    engine_api.clock.advance(timedelta(minutes=5, seconds=20))  # grace is 30 s
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 200


def test_a_retried_request_gets_the_stored_answer(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api)
    first = till(engine_api, "redemptions", coupon["code"], store["id"], key="till-7-0001")
    engine_api.clock.advance(timedelta(seconds=3))
    retry = till(engine_api, "redemptions", coupon["code"], store["id"], key="till-7-0001")
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    fresh = till(engine_api, "redemptions", coupon["code"], store["id"], key="till-7-0002")
    assert fresh.status_code == 409  # a new request is a new attempt
    assert engine_api.count(Coupon, Coupon.status == "redeemed") == 1


def test_a_refusal_is_replayed_too_and_a_key_is_bound_to_its_request(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api)
    unknown = till(engine_api, "redemptions", "ZZZZZ-ZZZZZ", store["id"], key="k-1")
    replay = till(engine_api, "redemptions", "ZZZZZ-ZZZZZ", store["id"], key="k-1")
    assert unknown.status_code == replay.status_code == 404
    assert unknown.json() == replay.json()
    reused = till(engine_api, "redemptions", coupon["code"], store["id"], key="k-1")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert "different request" in reused.json()["error"]["message"]
    blank = till(engine_api, "redemptions", coupon["code"], store["id"], key="x" * 201)
    assert blank.status_code == 422 and "Idempotency-Key" in blank.json()["error"]["message"]


def test_simultaneous_copies_of_one_request_all_get_the_one_answer(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda _: till(engine_api, "redemptions", coupon["code"], store["id"], key="dup"),
                range(16),
            )
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert engine_api.count(Coupon, Coupon.status == "redeemed") == 1


def test_a_void_restores_a_still_valid_coupon(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api)
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 200
    engine_api.clock.advance(timedelta(minutes=2))
    voided = till(engine_api, "voids", coupon["code"], store["id"], key="void-1")
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "issued"
    assert till(engine_api, "voids", coupon["code"], store["id"], key="void-1").json() == (
        voided.json()
    )
    assert engine_api.count(Coupon, Coupon.status == "issued") == 1
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 200


def test_a_void_needs_a_recent_redemption_at_the_same_store(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api, valid_minutes=60)
    other = engine_api.create_store(lon=INSIDE[0] + 0.05, name="Other")
    never = till(engine_api, "voids", coupon["code"], store["id"])
    assert never.status_code == 409 and never.json()["error"]["code"] == "coupon_not_redeemed"
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 200
    elsewhere = till(engine_api, "voids", coupon["code"], other["id"])
    unknown = till(engine_api, "voids", "ZZZZZ-ZZZZZ", other["id"])
    assert elsewhere.status_code == unknown.status_code == 404
    assert elsewhere.json() == unknown.json()
    window = engine_api.runtime.settings.void_window_minutes
    engine_api.clock.advance(timedelta(minutes=window, seconds=1))
    late = till(engine_api, "voids", coupon["code"], store["id"])
    assert late.status_code == 409
    assert f"{window}-minute void window" in late.json()["error"]["message"]
    assert engine_api.count(Coupon, Coupon.status == "redeemed") == 1


def test_repeated_failed_lookups_lock_the_terminal_out(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api, valid_minutes=30)
    limit = engine_api.runtime.settings.pos_lockout_failures
    for i in range(limit):
        guess = f"ZZZZZ-{i:05d}".replace("0", "A")
        assert till(engine_api, "redemptions", guess, store["id"]).status_code == 404
    locked = till(engine_api, "redemptions", coupon["code"], store["id"])
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "too_many_attempts"
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= engine_api.runtime.settings.pos_lockout_window_s
    engine_api.clock.advance(timedelta(seconds=retry_after))
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 200


def test_guesses_from_one_address_lock_out_every_terminal_there(engine_api: Engine) -> None:
    """Over HTTP: failures spread over two terminals (two POS keys) at one address add up for
    the address, so a third terminal there is refused too; the terminals' own counts do not
    reach the limit."""
    store, coupon = _coupon(engine_api, valid_minutes=30)
    limit = engine_api.runtime.settings.pos_lockout_failures
    admin = ApiKeyAdmin(engine_api.runtime.sessions, engine_api.runtime.state, engine_api.clock)
    terminals = [{"X-API-Key": admin.create("pos", f"till {n}").key} for n in range(3)]
    for i in range(limit):
        guess = f"ZZZZZ-{i:05d}".replace("0", "A")
        answer = till(engine_api, "redemptions", guess, store["id"], headers=terminals[i % 2])
        assert answer.status_code == 404
    locked = till(engine_api, "redemptions", coupon["code"], store["id"], headers=terminals[2])
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"]["code"] == "too_many_attempts"


def _fail(lockout: GuessLockout, who: list[str], now: datetime) -> None:
    with lockout.attempt(who, now) as attempt:
        attempt.failed()


def _refusal(lockout: GuessLockout, who: list[str], now: datetime) -> str | None:
    """Why a lookup would be refused now, or None (one that runs finds its code)."""
    try:
        with lockout.attempt(who, now):
            return None
    except TooManyAttempts as exc:
        return str(exc)


def test_the_lockout_counts_per_terminal_and_per_ip_in_the_shared_state(
    engine_api: Engine,
) -> None:
    lockout = GuessLockout(engine_api.runtime.state, failures=3, window_s=300)
    now = engine_api.clock.now()
    for _ in range(3):
        _fail(lockout, ["terminal:a", "ip:10.0.0.1"], now)
    assert _refusal(lockout, ["terminal:b", "ip:10.0.0.2"], now) is None  # elsewhere: fine
    for who in (["terminal:b", "ip:10.0.0.1"], ["terminal:a", "ip:10.0.0.9"]):
        # the same address from another terminal, the same terminal from another address
        assert "too many failed coupon lookups" in (_refusal(lockout, who, now) or "")


def test_lookups_still_running_hold_their_place_and_found_codes_give_it_back(
    engine_api: Engine,
) -> None:
    lockout = GuessLockout(engine_api.runtime.state, failures=2, window_s=300, wait_s=0.05)
    now = engine_api.clock.now()
    who = ["terminal:t", "ip:10.0.0.3"]
    with lockout.attempt(who, now), lockout.attempt(who, now):
        # two running: a third waits for a place, then is told why it got none
        assert "already running" in (_refusal(lockout, who, now) or "")
    assert all(_refusal(lockout, who, now) is None for _ in range(5))  # found codes never add up
    with pytest.raises(RuntimeError), lockout.attempt(who, now):
        raise RuntimeError("database went away")  # a lookup that breaks gives its place back
    assert _refusal(lockout, who, now) is None
    # A refusal by the address gives back the place the terminal had already taken.
    for _ in range(2):
        _fail(lockout, ["terminal:x", "ip:10.0.0.4"], now)
    assert _refusal(lockout, ["terminal:y", "ip:10.0.0.4"], now)
    for _ in range(2):  # terminal y still has both its places ...
        _fail(lockout, ["terminal:y", "ip:10.0.0.5"], now)
    assert _refusal(lockout, ["terminal:y", "ip:10.0.0.6"], now)  # ... and no more


def test_a_lookup_waits_for_a_place_that_a_running_lookup_gives_back(engine_api: Engine) -> None:
    lockout = GuessLockout(engine_api.runtime.state, failures=1, window_s=300, wait_s=5.0)
    now = engine_api.clock.now()
    who = ["terminal:w", "ip:10.0.0.7"]
    running = threading.Event()

    def slow_lookup() -> None:
        with lockout.attempt(who, now):
            running.set()
            time.sleep(0.3)

    thread = threading.Thread(target=slow_lookup)
    thread.start()
    assert running.wait(5)
    started = time.monotonic()
    try:
        assert _refusal(lockout, who, now) is None
    finally:
        thread.join()
    assert time.monotonic() - started >= 0.1, "it waited for the running lookup"


def test_simultaneous_guesses_never_get_past_the_limit(engine_api: Engine) -> None:
    """Guesses sent all at once from one terminal: at most ``limit`` are looked up (404), the
    rest are refused (429); afterwards the terminal is locked out."""
    store, coupon = _coupon(engine_api, valid_minutes=30)
    limit = engine_api.runtime.settings.pos_lockout_failures
    guesses = [f"ZZZZZ-{i:05d}".replace("0", "A") for i in range(3 * limit)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda g: till(engine_api, "redemptions", g, store["id"]), guesses))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {404, 429}
    assert codes.count(404) == limit  # none lost: every place taken is a failure kept
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 429


def test_stored_answers_are_forgotten_after_a_day(engine_api: Engine) -> None:
    store, coupon = _coupon(engine_api)
    assert till(engine_api, "redemptions", coupon["code"], store["id"], key="k").status_code == 200
    engine_api.clock.advance(timedelta(days=1, seconds=1))
    engine_api.runtime.scheduler.tick()  # renew the lease at the moved clock
    purge = engine_api.runtime.scheduler._scheduler.get_job("till-answers-purge")
    assert purge is not None, "the leading scheduler runs the purge"
    purge.func()
    again = till(engine_api, "redemptions", coupon["code"], store["id"], key="k")
    assert again.status_code == 409  # a new attempt: the day-old answer is gone
