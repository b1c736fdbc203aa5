"""Tandem's configuration, read once from the environment (prefix ``TANDEM_``) and passed down."""

from __future__ import annotations

from datetime import time
from pathlib import Path

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
    feature_service: str = "customer_risk_v1"

    # Model
    model_name: str = "customer_risk"

    # Blend policy
    max_staleness_s: float = Field(default=86_400.0, ge=0)

    # Batch deadline (UTC): when batch predictions must be published each day.
    batch_deadline_utc: time = time(8, 0)

    # Skew thresholds
    value_tolerance: float = Field(default=1e-6, ge=0)
    mismatch_rate_warn: float = Field(default=0.001, ge=0, le=1)
    mismatch_rate_breach: float = Field(default=0.01, ge=0, le=1)
    psi_warn: float = Field(default=0.1, ge=0)
    psi_breach: float = Field(default=0.25, ge=0)
    js_warn: float = Field(default=0.05, ge=0)
    js_breach: float = Field(default=0.1, ge=0)

    # API
    api_keys: SecretStr = SecretStr("")

    @property
    def uses_local_stack(self) -> bool:
        """True when no store URL is configured: Tandem runs its embedded PostgreSQL and Redis."""
        return self.postgres_url is None and self.redis_url is None
