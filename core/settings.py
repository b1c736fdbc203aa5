"""Tandem's configuration, read once from the environment (prefix ``TANDEM_``) and passed down."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PROJECT_ROOT", "Settings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob Tandem reads. URLs are secrets: they are shown masked, never in clear."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", env_file=".env", extra="ignore")

    # Stores. Unset: `tandem up` starts the embedded PostgreSQL and Redis under `home`.
    postgres_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    home: Path = Field(default=PROJECT_ROOT / ".tandem", description="Local stack data and state")
    local_postgres_port: int = Field(default=54329, ge=1, le=65535)
    local_redis_port: int = Field(default=63799, ge=1, le=65535)

    # Feast
    feature_repo: Path = PROJECT_ROOT / "feature_repo"
    feast_project: str = Field(default="tandem", pattern=r"^[A-Za-z0-9_]+$")
    # Defaults of `tandem train` (serving, batch and checks take every promoted model and its own service).
    feature_service: str | None = Field(default=None, description="Feature service `tandem train` reads")

    # Model
    model_name: str | None = Field(default=None, description="Model name `tandem train` registers")
    labels: str | None = Field(default=None, description="Label table or SELECT query `tandem train` reads")
    model_signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC keys of model artifacts, comma-separated: the first signs, all verify (docs/security.md)",
    )
    model_signing_key_file: Path | None = Field(
        default=None,
        description="A file holding TANDEM_MODEL_SIGNING_KEY's value (a mounted secret); the variable wins",
    )
    allow_unsigned_models: bool = Field(
        default=False,
        description="With no signing key, load unsigned (unverifiable) pickle artifacts anyway: unsafe, logged",
    )

    # Blend policy
    max_staleness_s: float = Field(default=86_400.0, ge=0)

    # Scheduler
    materialize_interval_s: int = Field(default=900, ge=1, description="Incremental materialization period")
    batch_predict_cron: str = Field(default="0 2 * * *", description="Crontab (UTC) of the batch-predict job")
    check_skew_interval_s: int = Field(default=3600, ge=1)
    job_max_attempts: int = Field(default=3, ge=1, description="Tries per job run before it is marked failed")
    job_retry_backoff_s: float = Field(default=5.0, ge=0, description="First retry delay; doubles each try")
    leader_poll_s: float = Field(default=2.0, gt=0, description="How often a standby scheduler tries to lead")
    leader_lease_s: float = Field(
        default=10.0, gt=0, description="Leader lease length, renewed every leader_poll_s (must exceed it)"
    )
    job_timeout_s: float = Field(
        default=6 * 3600.0, gt=0, description="A job attempt running longer is recorded failed (timeout)"
    )
    run_liveness_s: float = Field(
        default=30.0,
        ge=1,
        description="A job run whose machine stops answering PostgreSQL this long is repairable as dead",
    )
    push_outbox_interval_s: int = Field(
        default=10, ge=1, description="How often the scheduler writes online the pushed rows Redis missed"
    )

    # Push: accepted event times are [now - the view's TTL (or push_max_age_s when the TTL is 0), now + skew]
    push_max_age_s: int = Field(default=30 * 86_400, ge=1, description="Oldest push for a view without TTL")
    push_clock_skew_s: float = Field(default=300.0, ge=0, description="How far ahead a push event may be")
    push_online_attempts: int = Field(default=2, ge=1, description="Online write tries before the outbox")
    push_online_retry_s: float = Field(default=0.05, ge=0, description="Wait between online write tries")
    push_outbox_lease_s: float = Field(default=30.0, gt=0, description="How long a drain holds an outbox row")

    # Stream ingestion (`tandem stream`, docs/streaming.md): events from Redis Streams or NATS JetStream
    stream_broker: Literal["redis", "nats"] = Field(
        default="redis", description="Where `tandem stream` reads"
    )
    stream_name: str = Field(default="tandem:events", min_length=1, description="Redis stream of events")
    stream_dead_letters: str = Field(
        default="tandem:events:dead", min_length=1, description="Redis stream of bad events, with reasons"
    )
    stream_group: str = Field(
        default="tandem",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Consumer group (Redis) / durable consumer (NATS) every `tandem stream` process shares",
    )
    stream_consumer: str | None = Field(
        default=None, description="This process's consumer name (default: host-pid)"
    )
    stream_batch: int = Field(default=5000, ge=1, le=100_000, description="Events per micro-batch, at most")
    stream_block_ms: int = Field(default=500, ge=1, description="How long a read waits for events")
    stream_claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="Unacknowledged this long, an event is taken over by another consumer (XAUTOCLAIM / ack wait)",
    )
    stream_seen_keep_s: int = Field(
        default=7 * 86_400, ge=60, description="How long event keys are kept to skip replayed events"
    )
    stream_nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server (JetStream on)")
    stream_nats_stream: str = Field(
        default="TANDEM_EVENTS",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="JetStream stream of tandem.events.>",
    )
    stream_nats_subjects: str = Field(
        default="tandem",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Subject root: events on <root>.events.<push_source>, dead letters on <root>.dead.<push_source>",
    )
    stream_metrics_host: str = Field(default="127.0.0.1", description="Address of the stream's /metrics")
    stream_metrics_port: int = Field(default=9108, ge=0, le=65535, description="Port of /metrics; 0: off")
    stream_views_poll_s: float = Field(
        default=10.0, gt=0, description="How often the stream looks for a changed Feast registry"
    )

    # Batch predictions: chunk size of scoring and publishing, and when they must be ready each day (UTC).
    batch_chunk_rows: int = Field(default=100_000, ge=1_000)
    batch_deadline_utc: time = time(8, 0)
    deadline_percentile: float = Field(default=0.9, gt=0, le=1)

    # Stream re-score (core.rescore): touched entities are coalesced, re-scored every delay or count
    stream_rescore: bool = Field(
        default=True, description="Re-score entities the stream changed (kind stream)"
    )
    stream_rescore_max_delay_ms: int = Field(
        default=0,
        ge=0,
        description="Longest a touched entity waits before its re-score; 0: right after each micro-batch",
    )
    stream_rescore_max_entities: int = Field(
        default=1_000, ge=1, description="Touched entities (per model) that trigger a re-score at once"
    )
    stream_rescore_sweep_s: int = Field(
        default=300, ge=1, description="How often the scheduler re-scores entities pushed outside the stream"
    )

    # Skew thresholds
    value_tolerance: float = Field(default=1e-6, ge=0)
    mismatch_rate_warn: float = Field(default=0.001, ge=0, le=1)
    mismatch_rate_breach: float = Field(default=0.01, ge=0, le=1)
    psi_warn: float = Field(default=0.1, ge=0)
    psi_breach: float = Field(default=0.25, ge=0)
    js_warn: float = Field(default=0.05, ge=0)
    js_breach: float = Field(default=0.1, ge=0)
    skew_online_scan_keys: int = Field(
        default=1_000_000,
        ge=0,
        description="Redis keys the skew check looks at (SCAN) to find entities that exist only online; 0: none",
    )
    skew_fresher_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="An online row newer than every offline row of its entity for longer is online_only_fresh",
    )

    # Skew policy: what the latest skew report of a model does to its `auto` answers (README, DESIGN.md)
    skew_policy: Literal["off", "annotate", "enforce"] = Field(
        default="annotate",
        description="off: nothing; annotate: answers name the steering row; enforce: the row decides",
    )
    skew_ack_stops_steering: bool = Field(
        default=True, description="An acknowledged report stops steering (annotate: stops the advice)"
    )

    # API
    api_keys: SecretStr = SecretStr("")  # entries `key`, `sha256:<hex>`, `read:key`, `admin:sha256:<hex>`...
    read_keys_required: bool = Field(
        default=False, description="Reads (predict, skew, job runs) need an API key with scope read or more"
    )
    rate_limit_per_s: float = Field(default=0.0, ge=0, description="Requests per second per API key; 0: off")
    rate_limit_anonymous_per_s: float | None = Field(
        default=None,
        ge=0,
        description="Per client address, for requests without a key; unset: rate_limit_per_s",
    )
    rate_limit_window_s: float = Field(
        default=1.0, gt=0, le=3600, description="The rate limit's fixed window"
    )
    max_entities_per_request: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    model_poll_s: float = Field(
        default=5.0, gt=0, description="How often the API checks for a newly promoted model"
    )
    redis_timeout_s: float = Field(
        default=0.5, gt=0, description="Socket and connect timeout of the API's Redis"
    )
    redis_backoff_s: float = Field(
        default=0.5,
        ge=0,
        description="After a Redis failure, how long the API skips Redis (serving degraded)",
    )
    postgres_timeout_s: float = Field(default=2.0, gt=0)

    @property
    def local_signing_key_path(self) -> Path:
        """The signing key `tandem up` generates for the embedded stack (mode 0600, never in PostgreSQL)."""
        return self.home.expanduser().resolve() / "model-signing.key"

    @property
    def uses_local_stack(self) -> bool:
        """True when no store URL is configured: Tandem runs its embedded PostgreSQL and Redis."""
        return self.postgres_url is None and self.redis_url is None
