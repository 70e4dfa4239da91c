"""nameko dependency providers and the thin-entrypoint helper every service uses."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from pydantic import BaseModel, ValidationError

from contracts.envelope import Envelope
from contracts.errors import DomainError, invalid_from_validation, to_wire
from infra.db import Database, apply_schema, ensure_database, shared_database
from infra.eventstore import CatchUpSubscription, EventStore
from infra.handling import INBOX_SCHEMA
from infra.logging import configure, get_logger
from infra.pii import DEV_KEY, PiiVault
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
        self.store = EventStore(cfg.eventstore_dsn, pool_size=cfg.db_pool_size, shared=True)
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
        self.settings = settings_for(self.container, self.model)

    def get_dependency(self, worker_ctx: Any) -> Settings:
        return self.settings


class ServiceDatabase(DependencyProvider):
    """This service's own database (DATABASE_DSN), created with `schema` and the inbox table."""

    def __init__(self, schema: str = "") -> None:
        self.schema = schema

    def setup(self) -> None:
        dsn = _database_dsn(self.container)
        ensure_database(dsn)
        self.db = shared_database(dsn, settings_for(self.container).db_pool_size)
        apply_schema(self.db, INBOX_SCHEMA + PROJECTION_SCHEMA + self.schema)

    def stop(self) -> None:
        self.db.close()

    def get_dependency(self, worker_ctx: Any) -> Database:
        return self.db


class Vault(DependencyProvider):
    """Encryption of patient data at rest, keyed by PII_KEY (a development key by default)."""

    def setup(self) -> None:
        self.vault = PiiVault(settings_for(self.container).pii_key or DEV_KEY)

    def get_dependency(self, worker_ctx: Any) -> PiiVault:
        return self.vault


PROJECTION_SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);
"""


class Projection:
    """Applies store events to a service database, checkpoint in the same transaction.

    Several replicas may run the same projection: each batch locks the checkpoint row and skips
    events at or below it, so an event is applied once whichever replica gets there first.
    """

    def __init__(
        self,
        name: str,
        store: EventStore,
        db: Database,
        apply: Callable[[Any, Envelope], None],
        types: set[str] | None = None,
    ) -> None:
        self.name = name
        self.db = db
        self.apply = apply
        self.types = types
        self._reached = threading.Condition()
        self.applied = 0
        self.subscription = CatchUpSubscription(store, self.handle_batch, self.load_checkpoint, types=types,
                                                on_progress=self._reached_position)

    def load_checkpoint(self) -> int:
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO projection_checkpoints VALUES (%s, 0) ON CONFLICT DO NOTHING", (self.name,)
            )
            cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (self.name,))
            self.applied = int(cur.fetchone()[0])
            return self.applied

    def _reached_position(self, position: int) -> None:
        # Events of other types are skipped in the database; the checkpoint row is written only
        # with applied events (a restart re-reads the skipped stretch, filtered, cheaply).
        with self._reached:
            self.applied = max(self.applied, position)
            self._reached.notify_all()

    def handle_batch(self, batch: Any) -> None:
        last = batch[-1].position
        with self.db.transaction() as cur:
            cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s FOR UPDATE", (self.name,))
            done = int(cur.fetchone()[0])
            for ev in batch:
                if ev.position > done:
                    self.apply(cur, ev)
            if last > done:
                cur.execute("UPDATE projection_checkpoints SET position = %s WHERE name = %s", (last, self.name))
        with self._reached:
            self.applied = max(self.applied, last)
            self._reached.notify_all()

    def wait_for(self, position: int, timeout: float = 10.0) -> bool:
        """Block until this projection has applied `position` (read-your-writes for a command)."""
        deadline = time.monotonic() + timeout
        with self._reached:
            while self.applied < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._reached.wait(min(left, 0.5))
        return True


class ProjectionRunner(DependencyProvider):
    """Runs a Projection in a managed background thread of the container."""

    def __init__(self, name: str, apply: Callable[[Any, Envelope], None], types: set[str] | None = None,
                 store_attr: str = "store", db_attr: str = "db") -> None:
        self.name = name
        self.apply = apply
        self.types = types
        self.store_attr = store_attr
        self.db_attr = db_attr

    def setup(self) -> None:
        cfg = settings_for(self.container)
        self.store = EventStore(cfg.eventstore_dsn, pool_size=cfg.db_pool_size, shared=True)
        self.store.setup()
        dsn = _database_dsn(self.container)
        ensure_database(dsn)
        self.db = shared_database(dsn, cfg.db_pool_size)
        apply_schema(self.db, PROJECTION_SCHEMA)
        self.projection = Projection(self.name, self.store, self.db, self.apply, self.types)

    def start(self) -> None:
        self.container.spawn_managed_thread(self._run)

    def _run(self) -> None:
        while True:
            try:
                self.projection.subscription.run()
                return
            except Exception:
                _log.exception("projection_failed_restarting", projection=self.name)
                time.sleep(1.0)

    def stop(self) -> None:
        self.projection.subscription.stop()

    def get_dependency(self, worker_ctx: Any) -> Projection:
        return self.projection


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
