"""The composition root: settings -> engine, hot state, channels, services, scheduler.

Nothing is built at import time; ``Runtime.build`` makes one of everything for one process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from consent.crypto import CheckpointSigner, EvidenceSealer
from consent.ledger import LedgerConfig
from consent.optin import ConfirmationSender, ConsentLinks
from core.apikeys import ApiKeyVerifier
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory, upgrade_database
from core.settings import EmailBackend, Settings
from core.state import HotState, make_hot_state
from geo.index import LiveFenceIndex
from geo.matcher import BatchMatcher
from geo.prediction import PredictionRules
from geo.retention import PingRetention
from geo.tracking import TrackingRules
from notify.channel import Channel
from notify.email import FileEmailChannel, SmtpEmailChannel
from notify.providers import build_remote_channels
from offers.campaign_clock import CampaignClock
from offers.decisions import VariantPicker
from offers.delivery import DeliveryWorker
from offers.eligibility import IssueLimits
from offers.experiments import holdout_secret
from offers.expiry import CouponExpiry
from offers.flows import PingIngestor
from offers.followups import FollowUps
from offers.idempotency import IdempotentTill
from offers.lease import LeaderLease
from offers.live_campaigns import LiveCampaigns
from offers.live_campaigns import watch as watch_campaigns
from offers.scheduler import DeliveryScheduler, default_holder

log = logging.getLogger(__name__)
TILL_ANSWERS_KEPT = timedelta(days=1)  # Idempotency-Key answers outlive any till's retries


def build_channels(settings: Settings, clock: Clock | None = None) -> dict[str, Channel]:
    channels: dict[str, Channel] = build_remote_channels(settings, clock or SystemClock())
    if settings.email_backend is EmailBackend.FILE:
        channels["email"] = FileEmailChannel(settings.email_file_dir, settings.email_from)
    else:
        channels["email"] = SmtpEmailChannel(
            settings.smtp_host, settings.smtp_port, settings.email_from, settings.smtp_timeout_s
        )
    return channels


def build_confirmation_sender(settings: Settings) -> ConfirmationSender:
    """The double opt-in's confirmation email goes out with the same settings as offer email."""
    if settings.email_backend is EmailBackend.FILE:
        return FileEmailChannel(settings.email_file_dir, settings.email_from)
    return SmtpEmailChannel(
        settings.smtp_host, settings.smtp_port, settings.email_from, settings.smtp_timeout_s
    )


def build_matcher(settings: Settings) -> BatchMatcher:
    tracking = TrackingRules(
        max_accuracy_m=settings.max_ping_accuracy_m,
        entry_accuracy_weight=settings.entry_accuracy_weight,
        exit_buffer_m=settings.exit_buffer_m,
        exit_confirm_fixes=settings.exit_confirm_fixes,
        exit_confirm_s=settings.exit_confirm_s,
        max_speed_mps=settings.max_speed_kmh / 3.6,
        default_dwell_s=settings.default_dwell_s,
    )
    prediction = None
    if settings.prediction_horizon_s > 0:
        prediction = PredictionRules(horizon_s=settings.prediction_horizon_s)
    return BatchMatcher(tracking, prediction)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    state: HotState
    fences: LiveFenceIndex
    channels: dict[str, Channel]
    worker: DeliveryWorker
    scheduler: DeliveryScheduler
    ingestor: PingIngestor
    ledger_config: LedgerConfig
    links: ConsentLinks
    confirmations: ConfirmationSender
    api_keys: ApiKeyVerifier
    started: bool = field(default=False)
    expiry: CouponExpiry | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        channels: dict[str, Channel] | None = None,
        state: HotState | None = None,
    ) -> Runtime:
        clock = clock or SystemClock()
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        state = state or make_hot_state(
            settings.redis_url, settings.redis_key_prefix, settings.redis_cluster
        )
        channels = channels if channels is not None else build_channels(settings, clock)
        fences = LiveFenceIndex(sessions, state, settings.fence_index_check_s)
        campaigns = LiveCampaigns(sessions, state)
        watch_campaigns(sessions, campaigns)
        secret = settings.secret_key.get_secret_value()
        links = ConsentLinks(secret, settings.public_base_url)
        sealer = EvidenceSealer(secret)
        worker = DeliveryWorker(
            sessions,
            channels,
            clock,
            timedelta(seconds=settings.delivery_margin_s),
            state,
            links=links,
            followups=FollowUps(
                reminder_before=timedelta(minutes=settings.reminder_minutes_before) or None
            ),
            countdown_url=lambda code: f"{settings.public_base_url.rstrip('/')}/c/{code}",
            sealer=sealer,
        )
        expiry = CouponExpiry(sessions, clock, timedelta(seconds=settings.redemption_grace_s))
        lease = LeaderLease(
            sessions, clock, default_holder(), ttl=timedelta(seconds=settings.scheduler_lease_ttl_s)
        )
        scheduler = DeliveryScheduler(
            worker,
            lease,
            heartbeat_s=settings.scheduler_heartbeat_s,
            sweep_interval_s=settings.scheduler_sweep_s,
            threads=settings.scheduler_threads,
            expire_due=lambda now: expiry.expire_due(now).expired,
            campaigns=CampaignClock(sessions),
        )
        retention = PingRetention(sessions, clock, timedelta(hours=settings.ping_retention_hours))
        scheduler.add_periodic("ping-retention", retention.purge, settings.ping_purge_interval_s)
        ingestor = PingIngestor(
            sessions,
            state,
            fences,
            clock,
            build_matcher(settings),
            set(channels),
            scheduler.enqueue,
            IssueLimits(settings.shopper_daily_offer_cap),
            picker=VariantPicker(settings.variant_seed),
            holdout_secret=holdout_secret(secret),
            campaigns=campaigns,
            trigger_max_age=timedelta(seconds=settings.offer_trigger_max_age_s),
        )
        answers = IdempotentTill(sessions)
        scheduler.add_periodic(
            "till-answers-purge",
            lambda: answers.purge(clock.now() - TILL_ANSWERS_KEPT),
            300.0,  # housekeeping: every five minutes is plenty
        )
        ledger_config = LedgerConfig(
            sealer,
            CheckpointSigner(secret),
            timedelta(days=settings.consent_max_age_days),
            settings.ledger_checkpoint_every,
        )
        return cls(
            settings,
            clock,
            engine,
            sessions,
            state,
            fences,
            channels,
            worker,
            scheduler,
            ingestor,
            ledger_config,
            links,
            build_confirmation_sender(settings),
            ApiKeyVerifier(
                sessions,
                state,
                clock,
                cache_s=settings.api_key_cache_s,
                recheck_s=settings.api_key_recheck_s,
            ),
            expiry=expiry,
        )

    def start(self, *, migrate: bool = True) -> None:
        if self.started:
            return
        if migrate:
            upgrade_database(self.engine)
        if not self.state.shared:
            log.warning(
                "OFFER_ENGINE_REDIS_URL is not set: hot state (presence, caps, locks) is held in "
                "this process only. Run a single process, or set a Redis URL to run several."
            )
        self.fences.start()
        if self.settings.run_scheduler:
            self.scheduler.start()
        self.started = True

    def stop(self) -> None:
        self.fences.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.state.close()
        self.engine.dispose()
        self.started = False
