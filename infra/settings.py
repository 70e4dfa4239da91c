"""Configuration: YAML with ${VAR:default} substitution, parsed once into a pydantic model.

nameko's own `--config` loader understands the same ${VAR:default} syntax, so one config.yaml
serves both nameko and `Settings`; processes that are not nameko services use `load_config`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>[^}]*))?\}")


def substitute(text: str, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def repl(m: re.Match[str]) -> str:
        name, default = m.group("name"), m.group("default")
        if name in env:
            return env[name]
        if default is None:
            raise KeyError(f"configuration needs environment variable {name} (no default given)")
        return default

    return _VAR.sub(repl, text)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> dict[str, Any]:
    data = yaml.safe_load(substitute(Path(path).read_text(encoding="utf-8"), environ))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a configuration file must hold a mapping")
    return data


def pg_dsn(database: str) -> str:
    """DSN of one of the platform's databases on the configured server (PG_URL, APPT_DB_PREFIX)."""
    base = os.environ.get("PG_URL", "postgresql://postgres@127.0.0.1:5432")
    prefix = os.environ.get("APPT_DB_PREFIX", "appt")
    return f"{base.rstrip('/')}/{prefix}_{database}"


class Settings(BaseModel):
    """What every process of the platform reads. Service-specific keys are kept as extras."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    service_name: str = Field(alias="SERVICE_NAME")
    amqp_uri: str = Field(default="amqp://guest:guest@127.0.0.1:5672/", alias="AMQP_URI")
    eventstore_dsn: str = Field(alias="EVENTSTORE_DSN")
    database_dsn: str | None = Field(default=None, alias="DATABASE_DSN")
    log_format: Literal["auto", "json", "console"] = Field(default="auto", alias="LOG_FORMAT")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    pii_key: str | None = Field(default=None, alias="PII_KEY")
    pii_old_keys: str | None = Field(default=None, alias="PII_OLD_KEYS")  # comma-separated, decrypt only
    db_pool_size: int = Field(default=8, ge=1, le=100, alias="DB_POOL_SIZE")
    # A pooled connection idle longer than this is closed (all but one per pool: infra/db.py).
    db_idle_s: float = Field(default=10.0, gt=0, alias="DB_IDLE_S")
    retry_attempts: int = Field(default=5, ge=1, alias="RETRY_ATTEMPTS")
    retry_base_delay_ms: int = Field(default=200, ge=1, alias="RETRY_BASE_DELAY_MS")
    # Observability (infra/metrics.py, infra/health.py; README "Operations"). "" serves no metrics.
    metrics_address: str | None = Field(default=None, alias="METRICS_ADDRESS")
    metrics_refresh_s: float = Field(default=15.0, gt=0, alias="METRICS_REFRESH_S")
    health_timeout_s: float = Field(default=0.8, gt=0, le=30, alias="HEALTH_TIMEOUT_S")
    health_projection_lag_s: float = Field(default=30.0, gt=0, alias="HEALTH_PROJECTION_LAG_S")
    health_relay_lag_s: float = Field(default=30.0, gt=0, alias="HEALTH_RELAY_LAG_S")
    health_dead_letters_max: int = Field(default=0, ge=0, alias="HEALTH_DEAD_LETTERS_MAX")
    health_his_backlog_max: int = Field(default=200, ge=0, alias="HEALTH_HIS_BACKLOG_MAX")
    health_his_backlog_age_s: float = Field(default=300.0, gt=0, alias="HEALTH_HIS_BACKLOG_AGE_S")
    health_sms_backlog_max: int = Field(default=1000, ge=0, alias="HEALTH_SMS_BACKLOG_MAX")
    health_sms_backlog_age_s: float = Field(default=600.0, gt=0, alias="HEALTH_SMS_BACKLOG_AGE_S")

    @classmethod
    def from_config(cls, config: dict[str, Any], service_name: str | None = None) -> Settings:
        data = dict(config)
        if service_name is not None:
            data.setdefault("SERVICE_NAME", service_name)
        return cls.model_validate(data)


def settings_for(container: Any, model: type[Settings] = Settings) -> Any:
    """The container's config parsed once into `model` (cached on the container)."""
    cache: dict[type[Settings], Settings] = container.__dict__.setdefault("_appt_settings", {})
    if model not in cache:
        cache[model] = model.from_config(container.config, container.service_name)
    return cache[model]
