"""nameko dependency providers and the thin-entrypoint helper every service uses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from pydantic import BaseModel, ValidationError

from contracts.errors import DomainError, invalid_from_validation, to_wire
from infra.db import Database, apply_schema, ensure_database, shared_database
from infra.eventstore import EventStore, PostgresEventStore
from infra.handling import INBOX_SCHEMA
from infra.logging import configure, get_logger
from infra.pii import PiiVault
from infra.projections import PROJECTION_SCHEMA
from infra.settings import Settings, settings_for

_log = get_logger(__name__)


class LogContext(DependencyProvider):
    """Configures structlog once and binds service, correlation_id and event_id per worker.

    Greenlets start with an empty contextvars context, so the binding happens in worker_setup,
    which nameko runs inside the worker's own greenlet.
    """

    def setup(self) -> None:
        cfg = settings_for(self.container)
        configure(self.container.service_name, cfg.log_format, cfg.log_level)

    def worker_setup(self, worker_ctx: Any) -> None:
        data = worker_ctx.context_data
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            service=self.container.service_name,
            correlation_id=data.get("correlation_id") or worker_ctx.call_id,
            entrypoint=worker_ctx.entrypoint.method_name,
        )
        if data.get("event_id"):
            structlog.contextvars.bind_contextvars(event_id=data["event_id"])

    def get_dependency(self, worker_ctx: Any) -> Any:
        return get_logger(self.container.service_name)


class Store(DependencyProvider):
    """The event store (EVENTSTORE_DSN), shared by the workers of one container."""

    def setup(self) -> None:
        cfg = settings_for(self.container)
        self.store = PostgresEventStore(cfg.eventstore_dsn, pool_size=cfg.db_pool_size, shared=True,
                                        idle_s=cfg.db_idle_s)
        self.store.setup()

    def stop(self) -> None:
        self.store.close()

    def get_dependency(self, worker_ctx: Any) -> EventStore:
        return self.store


def _database_dsn(container: Any) -> str:
    dsn = settings_for(container).database_dsn
    if not dsn:
        raise ValueError(f"{container.service_name}: DATABASE_DSN is not configured")
    return str(dsn)


class SettingsProvider(DependencyProvider):
    """The service's configuration as a pydantic model (a Settings subclass for its own keys)."""

    def __init__(self, model: type[Settings] = Settings) -> None:
        self.model = model

    def setup(self) -> None:
        self.settings: Settings = settings_for(self.container, self.model)

    def get_dependency(self, worker_ctx: Any) -> Settings:
        return self.settings


class ServiceDatabase(DependencyProvider):
    """This service's own database (DATABASE_DSN), created with `schema` and the inbox table."""

    def __init__(self, schema: str = "") -> None:
        self.schema = schema

    def setup(self) -> None:
        dsn = _database_dsn(self.container)
        ensure_database(dsn)
        cfg = settings_for(self.container)
        self.db = shared_database(dsn, cfg.db_pool_size, idle_s=cfg.db_idle_s)
        apply_schema(self.db, INBOX_SCHEMA + PROJECTION_SCHEMA + self.schema)

    def stop(self) -> None:
        self.db.close()

    def get_dependency(self, worker_ctx: Any) -> Database:
        return self.db


class Clock(DependencyProvider):
    """The time, injected like any other dependency (`now` in a handler's parameters), so that
    handlers never read the clock themselves and tests pass the moment they need."""

    def __init__(self, tz: tzinfo = UTC) -> None:
        self.tz = tz

    def get_dependency(self, worker_ctx: Any) -> Callable[[], datetime]:
        return lambda: datetime.now(self.tz)


class Vault(DependencyProvider):
    """Encryption of patient data at rest, keyed by PII_KEY (older keys in PII_OLD_KEYS still
    decrypt). There is no default: with no key, or the published development key, the service
    refuses to start (infra.pii.PiiKeyError says how to set one)."""

    def setup(self) -> None:
        cfg = settings_for(self.container)
        self.vault = PiiVault.from_config(cfg.pii_key, cfg.pii_old_keys)

    def get_dependency(self, worker_ctx: Any) -> PiiVault:
        return self.vault


def contract(model: type[BaseModel] | None = None) -> Callable[..., Any]:
    """Thin entrypoint: validate the incoming dict into `model`, call, answer a plain dict.

    A DomainError (or invalid input) is answered as {"domain_error": {...}} rather than raised,
    so that the caller gets a typed refusal, not nameko's RemoteError string.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                if model is not None:
                    try:
                        arg = model.model_validate(args[0] if args else kwargs.pop("payload", None))
                    except ValidationError as exc:
                        raise invalid_from_validation(exc) from None
                    result = fn(self, arg, **kwargs)
                else:
                    result = fn(self, *args, **kwargs)
            except DomainError as err:
                return to_wire(err)
            if isinstance(result, BaseModel):
                return result.model_dump(mode="json")
            return result

        return inner

    return wrap
