"""``offer-engine bench consent``: append to the consent ledger, export it, verify the export.

- Append: the first ``full_path`` events go through ``ConsentLedger.record`` (notice lookup,
  evidence sealed with the subject's key, head lock, chain hash, projection, checkpoints), one
  transaction per 500 events; the rest through a bulk path that seals the evidence and computes
  the chain hashes the same way (``consent.domain.chain_hash`` over ``event_fields``) and signs a
  checkpoint every ``checkpoint_every`` entries, but inserts 5,000 rows per statement and skips
  the current-state projection. The verification at the end proves both wrote the same chain.
- Export + verify: in a fresh child process, the whole ledger is exported as NDJSON to a temporary
  file (``LedgerExporter``, keyset pages) and the file is verified (``verify_file``). Its peak
  resident set size (``resource.getrusage``, the OS figure, so C allocations count too) shows
  whether memory stays flat as the ledger grows. This is repeated (3 times by default, each in a
  new process) and the fastest run is reported, as ``timeit`` does: on a shared machine the
  slower runs measure the other load.
"""

from __future__ import annotations

import json
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from consent.crypto import CheckpointSigner, EvidenceSealer
from consent.domain import (
    GENESIS_HASH,
    Channel,
    CollectionMethod,
    ConsentStatus,
    Purpose,
    chain_hash,
)
from consent.export import LedgerExporter, LedgerRange
from consent.ledger import ConsentLedger, LedgerConfig, event_fields
from consent.models import ConsentEvent, LedgerHead, SubjectKey
from consent.service import NoticeRegistry
from consent.verify import verify_file
from core.clock import ManualClock
from core.db import make_engine, make_session_factory, transaction, upgrade_database

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
STEP = timedelta(milliseconds=7)
BULK_ROWS = 5_000
FULL_PATH_TX = 500
NOTICE = "bench-1"
CHANNELS = (Channel.EMAIL, Channel.PUSH, None)
SUBJECTS = 10_000  # the same for every N, so runs of different sizes compare like with like


@dataclass(frozen=True, slots=True)
class ConsentBenchResult:
    events: int
    full_path_events: int
    full_path_per_s: float
    bulk_per_s: float | None
    export_s: float
    verify_s: float
    export_bytes: int
    export_peak_rss_mb: float
    append_peak_rss_mb: float

    @property
    def export_verify_s(self) -> float:
        return self.export_s + self.verify_s

    def result_line(self) -> str:
        return (
            f"RESULT events={self.events} append_per_s={self.full_path_per_s:.0f} "
            f"export_verify_s={self.export_verify_s:.1f} "
            f"peak_rss_mb={max(self.export_peak_rss_mb, self.append_peak_rss_mb):.0f}"
        )


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _event(i: int) -> dict[str, Any]:
    status = ConsentStatus.WITHDRAWN if i % 5 == 4 else ConsentStatus.GIVEN
    return {
        "purpose": Purpose.LOCATION_TRACKING if i % 3 == 0 else Purpose.MARKETING_OFFERS,
        "channel": None if i % 3 == 0 else CHANNELS[i % 2],
        "status": status,
        "evidence": {
            "device_id": f"dev_{i % 9973:032x}",
            "ip": f"10.{i % 200}.{i % 250}.{i % 7 + 1}",
            "user_agent": "okhttp/4.12.0 (Android 14)",
            "app_version": "5.2.1",
            "actor": "data_subject",
        },
    }


def _append_full(
    sessions: sessionmaker[Session],
    config: LedgerConfig,
    clock: ManualClock,
    count: int,
    subjects: int,
) -> None:
    done = 0
    while done < count:
        with transaction(sessions) as session:
            ledger = ConsentLedger(session, config)
            for i in range(done, min(count, done + FULL_PATH_TX)):
                event = _event(i)
                now = clock.advance(STEP)
                ledger.record(
                    subject_id=f"sub_{i % subjects:08d}",
                    purpose=event["purpose"],
                    channel=event["channel"],
                    status=event["status"],
                    notice_version=NOTICE,
                    method=CollectionMethod.SDK,
                    evidence=event["evidence"],
                    occurred_at=now,
                    now=now,
                )
        done = min(count, done + FULL_PATH_TX)


def _append_bulk(
    sessions: sessionmaker[Session],
    config: LedgerConfig,
    clock: ManualClock,
    first: int,
    count: int,
    subjects: int,
) -> None:
    """The entries ``ConsentLedger.record`` would write, 5,000 rows per statement."""
    keys_table = SubjectKey.__table__
    with transaction(sessions) as session:
        ledger = ConsentLedger(session, config)
        notices = {p: ledger.notice(p, NOTICE) for p in Purpose}
        keys: dict[str, str] = {
            subject_id: wrapped
            for subject_id, wrapped in session.execute(
                select(keys_table.c.subject_id, keys_table.c.wrapped_key)
            )
        }
        now = clock.now()
        missing = [f"sub_{s:08d}" for s in range(subjects) if f"sub_{s:08d}" not in keys]
        for start in range(0, len(missing), BULK_ROWS):
            chunk = [
                {"subject_id": s, "wrapped_key": config.sealer.new_wrapped_key(), "created_at": now}
                for s in missing[start : start + BULK_ROWS]
            ]
            session.execute(insert(SubjectKey), chunk)
            keys.update((str(row["subject_id"]), str(row["wrapped_key"])) for row in chunk)
        head = session.get(LedgerHead, 1)
        if head is None:
            session.add(LedgerHead(id=1, last_id=0, last_hash=GENESIS_HASH))
        last_id, last_hash = (head.last_id, head.last_hash) if head else (0, GENESIS_HASH)
    rows: list[dict[str, Any]] = []
    for i in range(first, first + count):
        event = _event(i)
        now = clock.advance(STEP)
        subject = f"sub_{i % subjects:08d}"
        notice = notices[event["purpose"]]
        status: ConsentStatus = event["status"]
        entry = ConsentEvent(
            id=last_id + 1,
            subject_id=subject,
            purpose=event["purpose"].value,
            channel=event["channel"].value if event["channel"] else "",
            state=status.value,
            notice_id=notice.id,
            notice_version=notice.version,
            method=CollectionMethod.SDK.value,
            evidence_sealed=config.sealer.seal(keys[subject], event["evidence"]),
            occurred_at=now,
            valid_until=now + config.max_age if status is ConsentStatus.GIVEN else None,
            recorded_at=now,
        )
        fields = event_fields(entry)
        entry_hash = chain_hash(last_hash, fields)
        rows.append({**fields, "prev_hash": last_hash, "entry_hash": entry_hash})
        last_id, last_hash = last_id + 1, entry_hash
        if len(rows) == BULK_ROWS or i == first + count - 1:
            with transaction(sessions) as session:
                session.execute(insert(ConsentEvent), rows)
                ledger = ConsentLedger(session, config)
                for row in rows:
                    if row["id"] % config.checkpoint_every == 0:
                        ledger.checkpoint(row["id"], row["entry_hash"], row["recorded_at"])
                session.execute(
                    update(LedgerHead)
                    .where(LedgerHead.id == 1)
                    .values(last_id=last_id, last_hash=last_hash)
                )
            rows = []


def _export_and_verify(url: str, secret: str, out: str) -> dict[str, Any]:
    """Runs in a fresh process so its peak RSS is the export's and verifier's alone."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    config = LedgerConfig(EvidenceSealer(secret), CheckpointSigner(secret))
    exporter = LedgerExporter(sessions, config, ManualClock(datetime.now(UTC)))
    cpu_before = _cpu_s()
    started = time.perf_counter()
    plan = exporter.begin(LedgerRange(), fmt="ndjson", actor="bench")
    with open(out, "w", encoding="utf-8") as handle:
        for chunk in exporter.ndjson(plan):
            handle.write(chunk)
    exported = time.perf_counter()
    result = verify_file(out, trusted_key=config.signer.public_key)
    verified = time.perf_counter()
    engine.dispose()
    return {
        "export_s": exported - started,
        "verify_s": verified - exported,
        "cpu_s": _cpu_s() - cpu_before,
        "bytes": Path(out).stat().st_size,
        "rss_mb": _rss_mb(),
        "summary": result.summary(),
        "ok": result.ok,
        "entries": result.entries,
    }


@contextmanager
def _database(url: str | None, folder: Path) -> Iterator[str]:
    """A throwaway SQLite file, or a fresh schema in the given PostgreSQL database."""
    if url is None:
        yield f"sqlite:///{folder / 'bench-consent.db'}"
        return
    if make_url(url).get_backend_name() != "postgresql":
        raise ValueError("--database-url must be PostgreSQL (the default is a throwaway SQLite)")
    schema = f"bench_consent_{secrets.token_hex(4)}"
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


def run_consent_bench(
    events: int,
    database_url: str | None = None,
    *,
    full_path: int = 5_000,
    subjects: int | None = None,
    repeat: int = 3,
    say: Callable[[str], None] = print,
) -> ConsentBenchResult:
    full_path = min(full_path, events)
    subjects = subjects or min(SUBJECTS, events)
    secret = secrets.token_hex(32)
    config = LedgerConfig(EvidenceSealer(secret), CheckpointSigner(secret))
    clock = ManualClock(START)
    folder = Path(tempfile.mkdtemp(prefix="bench-consent-"))
    try:
        with _database(database_url, folder) as url:
            engine = make_engine(url)
            say(f"database: {engine.url.render_as_string(hide_password=True)}")
            upgrade_database(engine)
            sessions = make_session_factory(engine)
            with transaction(sessions) as session:
                for purpose in Purpose:
                    NoticeRegistry(session).publish(
                        purpose=purpose,
                        version=NOTICE,
                        language="en",
                        text=f"bench notice for {purpose.value}",
                        now=clock.now(),
                    )
            started = time.perf_counter()
            _append_full(sessions, config, clock, full_path, subjects)
            full_s = time.perf_counter() - started
            say(
                f"append, full path (ConsentLedger.record, {FULL_PATH_TX} per transaction): "
                f"{full_path:,} events in {full_s:.1f} s = {full_path / full_s:,.0f}/s"
            )
            bulk_rate = None
            if events > full_path:
                started = time.perf_counter()
                _append_bulk(sessions, config, clock, full_path, events - full_path, subjects)
                bulk_s = time.perf_counter() - started
                bulk_rate = (events - full_path) / bulk_s
                say(
                    f"append, bulk path (same seal and chain hash, {BULK_ROWS:,} rows per "
                    f"insert, no projection): {events - full_path:,} events in {bulk_s:.1f} s "
                    f"= {bulk_rate:,.0f}/s"
                )
            engine.dispose()
            append_rss = _rss_mb()
            say(f"peak RSS while appending (this process): {append_rss:.0f} MB")
            runs = []
            for run in range(1, repeat + 1):
                child = _child(url, secret, str(folder / "ledger.ndjson"))
                if not child["ok"] or child["entries"] != events:
                    raise RuntimeError(f"the exported ledger did not verify: {child['summary']}")
                runs.append(child)
                say(
                    f"run {run}/{repeat}: export NDJSON {child['export_s']:.1f} s "
                    f"({child['bytes'] / 1e6:,.0f} MB), verify the file {child['verify_s']:.1f} s "
                    f"= {child['export_s'] + child['verify_s']:.1f} s "
                    f"({child['cpu_s']:.1f} s CPU); peak RSS {child['rss_mb']:.0f} MB"
                )
            say(f"verify: {runs[-1]['summary']}")
            child = min(runs, key=lambda r: float(r["export_s"]) + float(r["verify_s"]))
            child["rss_mb"] = max(float(r["rss_mb"]) for r in runs)
            if repeat > 1:
                say("export_verify_s below: the fastest run (others are slowed by other load)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ConsentBenchResult(
        events=events,
        full_path_events=full_path,
        full_path_per_s=full_path / full_s,
        bulk_per_s=bulk_rate,
        export_s=child["export_s"],
        verify_s=child["verify_s"],
        export_bytes=child["bytes"],
        export_peak_rss_mb=child["rss_mb"],
        append_peak_rss_mb=append_rss,
    )


def _child(url: str, secret: str, out: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "api.bench.consent"],
        input=json.dumps({"url": url, "secret": secret, "out": out}),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"export and verify failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":  # the export-and-verify child: arguments as JSON on stdin
    arguments = json.load(sys.stdin)
    print(json.dumps(_export_and_verify(arguments["url"], arguments["secret"], arguments["out"])))
