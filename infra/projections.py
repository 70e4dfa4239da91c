"""The one way to keep a read model: a projection of the event store's global order into a
service's own tables, its position recorded in the same transaction as its rows.

A service declares its read model as a `Projector`: a name and a table of event classes, each to
a function `(cur, event, envelope)` that writes rows (SQL lives in the service's readmodel.py).
`ProjectionRunner` runs it in a managed thread of the nameko container, through a catch-up
subscription that filters the projector's types in the database. Read-your-writes is one
mechanism everywhere: a command's answer waits until the projection has applied the position
its append returned (`Projection.wait_for`), so a query right after it sees what it did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nameko.extensions import DependencyProvider

from contracts.envelope import Envelope, Event
from infra.db import Database, apply_schema, ensure_database, shared_database
from infra.eventstore import CatchUpSubscription, EventStore, PostgresEventStore
from infra.logging import get_logger
from infra.settings import settings_for

_log = get_logger(__name__)
C = TypeVar("C", bound=Callable[..., Any])
Apply = Callable[[Any, Any, Envelope], None]

PROJECTION_SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);
"""


@dataclass
class Projector:
    """A read model's name and its table: event class → function(cur, event, envelope)."""

    name: str
    table: dict[str, tuple[type[Event], Apply]] = field(default_factory=dict)

    def on(self, *event_classes: type[Event]) -> Callable[[C], C]:
        def register(fn: C) -> C:
            for cls in event_classes:
                if cls.type_name() in self.table:
                    raise ValueError(f"{self.name}: {cls.__name__} is projected twice")
                self.table[cls.type_name()] = (cls, fn)
            return fn
        return register

    @property
    def types(self) -> set[str]:
        return set(self.table)

    def apply(self, cur: Any, env: Envelope) -> None:
        entry = self.table.get(env.type)
        if entry is not None:
            cls, fn = entry
            fn(cur, cls.model_validate(env.data), env)


class Projection:
    """Applies store events to a service database, checkpoint in the same transaction.

    Several replicas may run the same projection: each batch locks the checkpoint row and skips
    events at or below it, so an event is applied once whichever replica gets there first.
    """

    def __init__(self, projector: Projector, store: EventStore, db: Database) -> None:
        self.name = projector.name
        self.projector = projector
        self.store = store
        self.db = db
        self._reached = threading.Condition()
        self.applied = 0

    def subscription(self) -> CatchUpSubscription:
        """A fresh subscription for one run (never reused after it stopped or failed)."""
        return CatchUpSubscription(self.store, self.handle_batch, self.load_checkpoint,
                                   types=self.projector.types, on_progress=self._reached_position)

    def load_checkpoint(self) -> int:
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO projection_checkpoints VALUES (%s, 0) ON CONFLICT DO NOTHING", (self.name,)
            )
            cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (self.name,))
            self.applied = max(self.applied, int(cur.fetchone()[0]))
            return self.applied

    def _reached_position(self, position: int) -> None:
        # Events of other types are skipped in the database; the checkpoint row is written only
        # with applied events (a restart re-reads the skipped stretch, filtered, cheaply).
        with self._reached:
            self.applied = max(self.applied, position)
            self._reached.notify_all()

    def handle_batch(self, batch: Sequence[Envelope]) -> None:
        last = batch[-1].position or 0
        with self.db.transaction() as cur:
            cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s FOR UPDATE", (self.name,))
            done = int(cur.fetchone()[0])
            for ev in batch:
                if (ev.position or 0) > done:
                    self.projector.apply(cur, ev)
            if last > done:
                cur.execute("UPDATE projection_checkpoints SET position = %s WHERE name = %s", (last, self.name))
        self._reached_position(last)

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
    """Runs a Projector's projection in a managed background thread of the container. The
    dependency is the Projection (for `wait_for`), or `view(db, projection)` when a view class
    is given: the service's read model with its read-your-writes wait built in."""

    def __init__(self, projector: Projector, view: Callable[[Database, Projection], Any] | None = None) -> None:
        self.projector = projector
        self.view = view

    def setup(self) -> None:
        cfg = settings_for(self.container)
        store = PostgresEventStore(cfg.eventstore_dsn, pool_size=cfg.db_pool_size, shared=True,
                                   idle_s=cfg.db_idle_s)
        store.setup()
        dsn = cfg.database_dsn
        if not dsn:
            raise ValueError(f"{self.container.service_name}: DATABASE_DSN is not configured")
        ensure_database(str(dsn))
        db = shared_database(str(dsn), cfg.db_pool_size, idle_s=cfg.db_idle_s)
        apply_schema(db, PROJECTION_SCHEMA)
        self.projection = Projection(self.projector, store, db)
        self._stopping = threading.Event()
        self._current: CatchUpSubscription | None = None
        self.state = "starting"   # running / retrying (the database is gone) — for health
        self.outage: str | None = None

    def start(self) -> None:
        self.container.spawn_managed_thread(self._run)

    def _run(self) -> None:
        """Follow the store on a fresh subscription each time (a used one never runs again:
        issue 14 finding 1); a lost database is retried with back-off, 0.5 s doubling to 10 s,
        logged once when it starts and once when it is over."""
        backoff = 0.5
        while not self._stopping.is_set():
            subscription = self.projection.subscription()
            self._current = subscription
            try:
                if self.outage is not None:
                    subscription.catch_up()  # raises again while the outage lasts
                    _log.warning("projection_recovered", projection=self.projection.name, outage=self.outage)
                    self.outage, backoff = None, 0.5
                self.state = "running"
                subscription.run()
                return
            except Exception as exc:
                self.state = "retrying"
                if self.outage is None:
                    self.outage = f"{type(exc).__name__}: {exc}"[:300]
                    _log.exception("projection_outage", projection=self.projection.name)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self._stopping.set()
        if self._current is not None:
            self._current.stop()

    def get_dependency(self, worker_ctx: Any) -> Any:
        if self.view is not None:
            return self.view(self.projection.db, self.projection)
        return self.projection
