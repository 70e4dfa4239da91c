"""What every event-store backend shares, with no I/O: errors, the append result, event ids,
envelopes from rows. The protocol itself is in protocol.py."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.envelope import SYSTEM, Actor, Envelope, Event

ANY = None  # expected version: do not check
# The columns of a raw row, in order: what read_all_raw and read_filtered_raw return per event.
COLUMNS = "position, stream, version, event_id, type, schema_version, source, data, meta, occurred_at"


class EventStoreError(Exception):
    pass


class WrongExpectedVersion(EventStoreError):
    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(f"stream {stream} is at version {actual}, expected {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class PartialDuplicate(EventStoreError):
    """Some, not all, of the events of one append are already stored: a caller bug."""


@dataclass(frozen=True)
class AppendResult:
    events: list[Envelope]
    duplicate: bool  # True: every event id was already stored; nothing was written

    @property
    def last_position(self) -> int:
        return max(e.position or 0 for e in self.events)


def row_to_envelope(row: Sequence[Any]) -> Envelope:
    return _from_row(row)


def _from_row(row: Sequence[Any]) -> Envelope:
    position, stream, version, event_id, type_, schema_version, source, data, meta, occurred_at = row
    return Envelope.model_construct(
        event_id=event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id)),
        type=type_,
        schema_version=schema_version,
        stream=stream,
        source=source,
        occurred_at=occurred_at if isinstance(occurred_at, datetime) else datetime.fromisoformat(occurred_at),
        correlation_id=meta.get("correlation_id") or "",
        causation_id=meta.get("causation_id"),
        actor=Actor.model_construct(**meta.get("actor", {"kind": "system", "id": "platform"})),
        data=data,
        position=position,
        version=version,
    )



def ordered_events(appends: Mapping[str, tuple[int | None, Sequence[Envelope]]]) -> list[Envelope]:
    """The events of one append in append order; refuses an empty append and an event that names
    another stream than the one it is appended to."""
    ordered: list[Envelope] = []
    for stream, (_, events) in appends.items():
        for ev in events:
            if ev.stream != stream:
                raise ValueError(f"event {ev.event_id} names stream {ev.stream}, appended to {stream}")
            ordered.append(ev)
    if not ordered:
        raise ValueError("nothing to append")
    return ordered


def meta_of(ev: Envelope) -> dict[str, Any]:
    return {"correlation_id": ev.correlation_id, "causation_id": ev.causation_id,
            "actor": {"kind": ev.actor.kind, "id": ev.actor.id, "hospital_id": ev.actor.hospital_id}}


_IDEMPOTENCY_NS = uuid.UUID("8c3f6a0e-51c7-4c1e-9d0b-2f4d6f1b7a11")


def idempotent_event_id(scope: str, key: str) -> uuid.UUID:
    """The id of the first event a command produces, derived from its idempotency key: a repeat
    of the command finds it already stored and answers from it instead of appending again."""
    return uuid.uuid5(_IDEMPOTENCY_NS, f"{scope}:{key}")


def derived_event_id(key_id: uuid.UUID, n: int) -> uuid.UUID:
    """The id of the n-th other event of the command whose key event is `key_id`: a repeat that
    decides the same events appends the same ids, so the store sees a whole duplicate."""
    return uuid.uuid5(key_id, str(n))


def new_envelope(
    event: Event,
    stream: str,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    actor: Actor = SYSTEM,
    event_id: uuid.UUID | None = None,
) -> Envelope:
    return Envelope(
        event_id=event_id or uuid.uuid4(),
        type=event.type_name(),
        stream=stream,
        source=source,
        correlation_id=correlation_id or uuid.uuid4().hex,
        causation_id=causation_id,
        actor=actor,
        data=event.model_dump(mode="json"),
    )
