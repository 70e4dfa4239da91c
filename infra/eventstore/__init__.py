"""The append-only event store: its protocol, the PostgreSQL and in-memory backends, and a
catch-up subscription on its global order."""

from infra.eventstore.base import (
    ANY,
    AppendResult,
    EventStoreError,
    PartialDuplicate,
    WrongExpectedVersion,
    derived_event_id,
    idempotent_event_id,
    new_envelope,
    row_to_envelope,
)
from infra.eventstore.memory import InMemoryEventStore
from infra.eventstore.protocol import EventStore, Listener
from infra.eventstore.store import PostgresEventStore
from infra.eventstore.subscription import CatchUpSubscription

__all__ = [
    "ANY",
    "AppendResult",
    "CatchUpSubscription",
    "EventStore",
    "EventStoreError",
    "InMemoryEventStore",
    "Listener",
    "PartialDuplicate",
    "PostgresEventStore",
    "WrongExpectedVersion",
    "derived_event_id",
    "idempotent_event_id",
    "new_envelope",
    "row_to_envelope",
]
