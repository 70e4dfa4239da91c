"""The envelope every event travels in, in the store and on the bus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# C0 control characters other than tab, LF and CR: PostgreSQL text cannot hold NUL, and none of them
# belongs in a name, a reason or an address (they would break a page, an SMS or an HL7 segment).
_CONTROL = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r") | {"\x7f"}


def no_control_characters(value: Any) -> Any:
    """A text field with a control character is refused as that field's error."""
    if isinstance(value, str) and not _CONTROL.isdisjoint(value):
        raise ValueError("must not contain control characters")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every model that crosses a process boundary: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    _text = field_validator("*", mode="after")(no_control_characters)


class Actor(Contract):
    """Who caused something: a patient, a staff member, a service or the system clock."""

    kind: str = Field(pattern=r"^(patient|operator|clerk|hospital_admin|doctor|analyst|platform_admin|service|system)$")
    id: str = Field(min_length=1, max_length=64)
    # Staff of one hospital (clerk, hospital_admin, doctor) act only within it; set by the gateway from the login.
    hospital_id: str | None = Field(default=None, max_length=40)


SYSTEM = Actor(kind="system", id="platform")

# The correlation id of every event a back-fill of past activity appends (scripts/demo_history.py:
# weeks of history under a simulated clock). Its events are facts of the past: consumers whose
# effect is about the present (an SMS, a message to the HIS) leave them alone (infra.application,
# `backfill=False`); the store's readers (statistics, read models) take them as any other. The
# gateway never passes a client's correlation id with this prefix on.
BACKFILL_PREFIX = "backfill:"


def is_backfill(env: Envelope) -> bool:
    return env.correlation_id.startswith(BACKFILL_PREFIX)


class Envelope(Contract):
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str = Field(min_length=1, max_length=100)
    schema_version: int = Field(default=1, ge=1)
    stream: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=50, description="emitting service; its exchange is <source>.events")
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str = Field(min_length=1, max_length=100)
    causation_id: str | None = Field(default=None, max_length=100)
    actor: Actor = SYSTEM
    data: dict[str, Any]
    # Set by the store when the event was appended; absent before.
    position: int | None = None
    version: int | None = None


class Command(Contract):
    """Every command carries the key that makes a repeat harmless."""

    idempotency_key: str = Field(min_length=8, max_length=100)
    correlation_id: str | None = Field(default=None, max_length=100)
    actor: Actor = SYSTEM


class Event(Contract):
    """Payload of an event. Subclasses name themselves in the past tense."""

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__
