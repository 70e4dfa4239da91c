"""Append-only event store on PostgreSQL, and a catch-up subscription on its global order."""

from infra.eventstore.store import (
    ANY,
    AppendResult,
    EventStore,
    EventStoreError,
    PartialDuplicate,
    WrongExpectedVersion,
    idempotent_event_id,
    new_envelope,
    row_to_envelope,
)
from infra.eventstore.subscription import CatchUpSubscription

__all__ = [
    "ANY",
    "AppendResult",
    "CatchUpSubscription",
    "EventStore",
    "EventStoreError",
    "PartialDuplicate",
    "WrongExpectedVersion",
    "idempotent_event_id",
    "new_envelope",
    "row_to_envelope",
]
