"""Engine settings, read from ``OFFER_ENGINE_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.ratelimit import RateLimits

DEFAULT_DATA_DIR = Path("data")

# Well-known values only the demo and test environments may use; every other environment refuses
# them (and any secret or key too short to be random).
INSECURE_SECRET = "insecure-dev-secret-change-me-0000000000"
INSECURE_KEYS = {
    "sdk": "dev-sdk-key",
    "manager": "dev-manager-key",
    "pos": "dev-pos-key",
    "compliance": "dev-compliance-key",
}
MIN_SECRET_LENGTH = 32


class Environment(StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"
    DEMO = "demo"
    TEST = "test"


class EmailBackend(StrEnum):
    SMTP = "smtp"
    FILE = "file"


class Settings(BaseSettings):
    """Every knob of the engine. Field names map to ``OFFER_ENGINE_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="OFFER_ENGINE_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Environment = Environment.PRODUCTION
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR / 'offer-engine.db'}",
        description="SQLAlchemy URL: SQLite file by default; postgresql+psycopg://... in prod.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for shared hot state. Unset: in-process state, one process only.",
    )
    redis_key_prefix: str = "oe:"
    redis_cluster: bool = Field(
        default=False,
        description="OFFER_ENGINE_REDIS_URL names a node of a Redis Cluster (redis-py's "
        "RedisCluster client is used).",
    )
    secret_key: SecretStr = SecretStr(INSECURE_SECRET)
    sdk_api_key: SecretStr = SecretStr(INSECURE_KEYS["sdk"])
    manager_api_key: SecretStr = SecretStr(INSECURE_KEYS["manager"])
    pos_api_key: SecretStr = SecretStr(INSECURE_KEYS["pos"])
    compliance_api_key: SecretStr = SecretStr(INSECURE_KEYS["compliance"])
    device_token_ttl_days: int = Field(default=30, ge=1, le=365)

    email_backend: EmailBackend = EmailBackend.SMTP
    email_file_dir: Path = DEFAULT_DATA_DIR / "outbox"
    email_from: str = "offers@offer-engine.local"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    public_base_url: str = "http://127.0.0.1:8000"

    run_scheduler: bool = True
    delivery_margin_s: int = Field(
        default=5, ge=0, description="A delivery is not handed over with less life left than this."
    )
    # The timed work (offers/scheduler.py): one leader among all processes, by a lease in SQL.
    scheduler_lease_ttl_s: float = Field(default=15.0, gt=0, le=600)
    scheduler_heartbeat_s: float = Field(default=5.0, gt=0, le=300)
    scheduler_sweep_s: float = Field(default=2.0, gt=0, le=300)
    scheduler_threads: int = Field(default=8, ge=1, le=256)
    reminder_minutes_before: int = Field(
        default=0, ge=0, le=1440, description="Remind N minutes before expiry; 0: no reminder."
    )
    # Push and webhook providers: each is off while its settings are unset.
    fcm_project_id: str | None = None
    fcm_service_account_file: Path | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    apns_team_id: str | None = None
    apns_key_id: str | None = None
    apns_key_file: Path | None = None
    apns_topic: str | None = None
    apns_base_url: str = "https://api.push.apple.com"
    vapid_private_key: SecretStr | None = None
    vapid_subject: str | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    max_ping_accuracy_m: float = Field(default=100.0, gt=0)
    entry_accuracy_weight: float = Field(default=0.5, ge=0, le=2)
    exit_buffer_m: float = Field(default=20.0, ge=0, le=1000)
    exit_confirm_fixes: int = Field(default=2, ge=1, le=20)
    exit_confirm_s: float = Field(default=60.0, gt=0, le=3600)
    max_speed_kmh: float = Field(default=300.0, gt=0)
    ping_group_max_fixes: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Ping requests arriving together share a transaction up to this many fixes.",
    )
    ping_groups_in_flight: int = Field(
        default=1, ge=1, le=64, description="Ping groups one API process works on at once."
    )
    default_dwell_s: int | None = Field(default=120, gt=0, le=86400)
    prediction_horizon_s: float = Field(default=600.0, ge=0, le=3600)
    fence_index_check_s: float = Field(default=0.5, gt=0, le=60)
    consent_max_age_days: int = Field(default=365, ge=1, le=3650)
    shopper_daily_offer_cap: int = Field(
        default=10, ge=1, le=1000, description="Coupons per shopper per day, all campaigns."
    )
    offer_trigger_max_age_s: float = Field(
        default=300.0,
        gt=0,
        le=30 * 86400,
        description="An enter or dwell leads to an offer only when the engine hears of it at "
        "most this long after it happened.",
    )
    redemption_grace_s: int = Field(
        default=30, ge=0, le=600, description="A till may redeem this long after expires_at."
    )
    void_window_minutes: int = Field(
        default=10, ge=0, le=1440, description="A redemption can be voided this long after."
    )
    pos_lockout_failures: int = Field(
        default=10, ge=1, le=10_000, description="Failed code lookups per terminal/IP per window."
    )
    pos_lockout_window_s: int = Field(default=300, ge=10, le=86_400)
    ledger_checkpoint_every: int = Field(default=1000, ge=1)
    default_holdout_share: float = Field(
        default=0.1, ge=0, le=0.5, description="Share of eligible triggers held out, per campaign."
    )
    default_visit_window_minutes: int = Field(default=120, ge=1, le=7 * 24 * 60)
    variant_seed: int | None = Field(
        default=None, description="Seed of the variant chooser's random generator (tests)."
    )
    console_tile_url: str | None = Field(
        default=None,
        description="Map tile URL template for the console, e.g. https://tile.example/{z}/{x}/{y}"
        ".png; unset: fences on a plain background, no tile server contacted.",
    )
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 7)

    # security and limits (README: "Security and limits")
    api_key_cache_s: float = Field(default=30.0, ge=0, le=3600)
    api_key_recheck_s: float = Field(default=2.0, ge=0, le=3600)
    cors_origins: list[str] | None = Field(
        default=None, description="Origins the browser may call from; default: public_base_url's."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    rate_limit_window_s: int = Field(default=60, ge=1, le=86_400)
    rate_limits: RateLimits = RateLimits()
    ping_retention_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    ping_purge_interval_s: float = Field(default=600.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.scheduler_heartbeat_s * 2 > self.scheduler_lease_ttl_s:
            raise ValueError(
                "OFFER_ENGINE_SCHEDULER_HEARTBEAT_S must be at most half of "
                "OFFER_ENGINE_SCHEDULER_LEASE_TTL_S, or the leader loses its lease between beats"
            )
        return self

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.environment in (Environment.DEMO, Environment.TEST):
            return self
        problems: list[str] = []
        secret = self.secret_key.get_secret_value()
        if secret == INSECURE_SECRET or len(secret) < MIN_SECRET_LENGTH:
            problems.append(
                f"OFFER_ENGINE_SECRET_KEY must be set to a random value of at least "
                f"{MIN_SECRET_LENGTH} characters"
            )
        for role, default in INSECURE_KEYS.items():
            value = getattr(self, f"{role}_api_key").get_secret_value()
            if value == default or len(value) < 16:
                problems.append(
                    f"OFFER_ENGINE_{role.upper()}_API_KEY must be set "
                    "(16+ characters, not the default)"
                )
        if problems:
            raise ValueError(
                f"insecure settings for environment '{self.environment}': " + "; ".join(problems)
            )
        return self

    @property
    def uses_shared_state(self) -> bool:
        return self.redis_url is not None
