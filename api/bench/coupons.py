"""``offer-engine bench coupons``: N scheduled coupon sends through the real scheduler.

N coupons with one webhook delivery each are written to a throwaway database (SQLite file by
default, or a fresh schema in the PostgreSQL given), each due at its own instant, ``rate`` per
second from a common start. Then this process's scheduler takes the leader lease and sends
them, through the whole delivery path (claim under the fencing token, consent check at the
moment of sending with its receipt, signed webhook, outcome recorded), to a local HTTP sink
started on 127.0.0.1 that verifies each signature and notes each arrival.

1% of the coupons are seeded already too close to expiry at their due instant: they must be
dropped and recorded ``expired_undelivered``, never sent. Figures:

- lateness: the sink's arrival instant minus the delivery's ``due_at``;
- duplicates: arrivals beyond the first for one ``Idempotency-Key``;
- lost: live deliveries that never reached the sink, or are not final at the end;
- after_expiry: arrivals at or after the coupon's ``expires_at`` (sent or not).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text, update

from api.bench.coupon_seed import SeededDelivery, seed_webhook_coupons
from api.bench.sink import SinkProcess
from api.runtime import Runtime
from core.db import make_engine, transaction
from core.settings import EmailBackend, Environment, Settings
from offers.models import Coupon, Delivery

SECRET = "whsec_bench_" + "0" * 24
VALIDITY = timedelta(minutes=10)
DOOMED_EVERY = 100  # 1% of the coupons expire before they may be sent


@dataclass(frozen=True, slots=True)
class CouponBenchResult:
    coupons: int
    sends_per_s: float
    p50_lateness_ms: float
    p99_lateness_ms: float
    duplicates: int
    lost: int
    after_expiry: int
    expired_undelivered: int

    def result_line(self) -> str:
        return (
            f"RESULT coupons={self.coupons} sends_per_s={self.sends_per_s:.0f} "
            f"p50_lateness_ms={self.p50_lateness_ms:.0f} "
            f"p99_lateness_ms={self.p99_lateness_ms:.0f} duplicates={self.duplicates} "
            f"lost={self.lost} after_expiry={self.after_expiry}"
        )


@contextmanager
def _database(url: str | None, folder: Path) -> Iterator[str]:
    """A throwaway SQLite file, or a fresh schema in the given PostgreSQL database."""
    if url is None:
        yield f"sqlite:///{folder / 'bench-coupons.db'}"
        return
    schema = f"bench_coupons_{secrets.token_hex(4)}"
    admin = make_engine(url, pool_size=1, max_overflow=0)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _reschedule(
    runtime: Runtime, seeded: list[SeededDelivery], start: datetime, rate: float
) -> tuple[list[SeededDelivery], float]:
    """Move every due instant (and expiry) to ``start + i / rate``: the seeding took a while.
    Also returns the least time, in seconds, between a chunk's commit and its first due send."""
    shifted = []
    for i, s in enumerate(seeded):
        due = start + timedelta(seconds=i / rate)
        expires = due + (timedelta(seconds=2) if i % DOOMED_EVERY == DOOMED_EVERY - 1 else VALIDITY)
        shifted.append(SeededDelivery(s.delivery_id, s.coupon_id, due, expires))
    slack = float("inf")
    for first in range(0, len(shifted), 5_000):
        chunk = shifted[first : first + 5_000]
        with transaction(runtime.sessions) as session:
            session.execute(
                update(Delivery), [{"id": s.delivery_id, "due_at": s.due_at} for s in chunk]
            )
            session.execute(
                update(Coupon), [{"id": s.coupon_id, "expires_at": s.expires_at} for s in chunk]
            )
        slack = min(slack, (chunk[0].due_at - datetime.now(UTC)).total_seconds())
    return shifted, slack


def run_coupon_bench(
    coupons: int,
    *,
    rate: float,
    database_url: str | None,
    redis_url: str | None,
    threads: int,
    say: Callable[[str], None],
) -> CouponBenchResult:
    with (
        tempfile.TemporaryDirectory(prefix="bench-coupons-") as folder,
        _database(database_url, Path(folder)) as url,
    ):
        sink = SinkProcess(SECRET, Path(folder)).start()
        settings = Settings(
            environment=Environment.TEST,
            database_url=url,
            redis_url=redis_url,
            redis_key_prefix=f"bench:{secrets.token_hex(4)}:",
            webhook_url=sink.url,
            webhook_secret=SECRET,
            email_backend=EmailBackend.FILE,
            email_file_dir=Path(folder) / "outbox",
            run_scheduler=False,
            scheduler_threads=threads,
            scheduler_sweep_s=0.5,
        )
        runtime = Runtime.build(settings)
        runtime.start()
        try:
            seeded = _run(runtime, coupons, rate, say)
            sink.stop()  # flushes every arrival to its file
            return _figures(runtime, sink, seeded, say)
        finally:
            runtime.stop()
            sink.stop()


def _run(
    runtime: Runtime, coupons: int, rate: float, say: Callable[[str], None]
) -> list[SeededDelivery]:
    began = time.perf_counter()
    placeholder = datetime.now(UTC) + timedelta(days=1)
    seeded = seed_webhook_coupons(
        runtime.sessions,
        runtime.ledger_config,
        count=coupons,
        now=datetime.now(UTC),
        due_at=lambda i: placeholder,
        expires_at=lambda i: placeholder + VALIDITY,
    )
    # The real instants are written after the seeding, soonest first, in chunks far quicker
    # than they fall due; the first falls due once they are all in (about 20,000 rows a second
    # here), so the measured sends do not compete with the bench's own writes. The scheduler
    # is already up: it finds each chunk on its next sweep.
    runtime.scheduler.start()
    start = datetime.now(UTC) + timedelta(seconds=3 + coupons / 20_000)
    seeded, slack = _reschedule(runtime, seeded, start, rate)
    ahead = (start - datetime.now(UTC)).total_seconds()
    say(
        f"seeded {coupons} coupons in {time.perf_counter() - began:.1f} s; "
        f"sending {rate:.0f}/s from {start:%H:%M:%S}, {ahead:.1f} s after the last write "
        f"(every send written at least {slack:.1f} s before it is due)"
    )
    last_due = seeded[-1].due_at
    deadline = last_due + timedelta(seconds=60)
    while datetime.now(UTC) < deadline:
        time.sleep(1.0)
        with runtime.sessions() as session:
            open_rows = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status.in_(["pending", "sending"]))
            )
        if datetime.now(UTC) >= last_due and not open_rows:
            break
    runtime.scheduler.shutdown(wait=True)
    return seeded


def _figures(
    runtime: Runtime, sink: SinkProcess, seeded: list[SeededDelivery], say: Callable[[str], None]
) -> CouponBenchResult:
    receipts = sink.snapshot()
    arrivals = Counter(r.key for r in receipts)
    first_arrival: dict[str, datetime] = {}
    for r in receipts:
        first_arrival.setdefault(r.key, r.received_at)
    with runtime.sessions() as session:
        statuses = dict(session.execute(select(Delivery.id, Delivery.status)).tuples().all())
    live = [s for i, s in enumerate(seeded) if i % DOOMED_EVERY != DOOMED_EVERY - 1]
    doomed = [s for i, s in enumerate(seeded) if i % DOOMED_EVERY == DOOMED_EVERY - 1]
    lateness = [
        (first_arrival[s.idempotency_key] - s.due_at).total_seconds() * 1000
        for s in live
        if s.idempotency_key in first_arrival
    ]
    lost = sum(
        1
        for s in live
        if s.idempotency_key not in arrivals or statuses.get(s.delivery_id) != "sent"
    )
    lost += sum(1 for s in doomed if statuses.get(s.delivery_id) in ("pending", "sending"))
    expires = {s.idempotency_key: s.expires_at for s in seeded}
    after_expiry = sum(1 for r in receipts if r.received_at >= expires.get(r.key, r.expires_at))
    unsigned = sum(1 for r in receipts if not r.signed)
    expired_undelivered = sum(
        1 for s in doomed if statuses.get(s.delivery_id) == "expired_undelivered"
    )
    span = (
        (max(first_arrival.values()) - seeded[0].due_at).total_seconds() if first_arrival else 1.0
    )
    say(
        f"sent {len(lateness)} of {len(live)} live; {expired_undelivered} of {len(doomed)} "
        f"too-late coupons recorded expired_undelivered; unsigned arrivals: {unsigned}; "
        f"max lateness {max(lateness, default=0):.0f} ms"
    )
    return CouponBenchResult(
        coupons=len(seeded),
        sends_per_s=len(lateness) / max(span, 1e-9),
        p50_lateness_ms=_percentile(lateness, 0.50),
        p99_lateness_ms=_percentile(lateness, 0.99),
        duplicates=sum(n - 1 for n in arrivals.values() if n > 1),
        lost=lost,
        after_expiry=after_expiry,
        expired_undelivered=expired_undelivered,
    )
