"""The event store as every service, the relay and the projections see it.

Two backends implement it and pass the same conformance suite (tests/eventstore_contract.py):
`PostgresEventStore` (store.py), the one every process runs on, and `InMemoryEventStore`
(memory.py), for unit tests of handlers. A backend comes back only with a server to test it
against: the KurrentDB placeholder that always skipped was removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from contracts.envelope import Envelope
from infra.eventstore.base import AppendResult

Appends = Mapping[str, tuple[int | None, Sequence[Envelope]]]


class Listener(Protocol):
    """What a subscription waits on once it has caught up: woken by an append or by wake()."""

    def wait(self, timeout: float) -> None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class EventStore(Protocol):
    # --- writing --------------------------------------------------------------------------
    def append(self, appends: Appends) -> AppendResult:
        """Atomically, each stream at its expected version (0 = new, None = any). Raises
        WrongExpectedVersion; a repeat of stored event ids answers them as first stored
        (duplicate=True); a partial repeat raises PartialDuplicate."""
        ...

    def append_to(self, stream: str, expected: int | None, *events: Envelope) -> AppendResult: ...

    # --- reading --------------------------------------------------------------------------
    def read_stream(self, stream: str, from_version: int = 1) -> list[Envelope]: ...

    def read_streams(self, streams: Sequence[str], from_versions: Mapping[str, int] | None = None
                     ) -> dict[str, list[Envelope]]: ...

    def stream_version(self, stream: str) -> int: ...

    def read_all(self, from_position: int = 0, limit: int = 1000) -> list[Envelope]: ...

    def read_all_raw(self, from_position: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]: ...

    def read_filtered_raw(self, from_position: int, types: Sequence[str], limit: int = 1000
                          ) -> tuple[list[tuple[Any, ...]], int]: ...

    def get_event(self, event_id: uuid.UUID) -> Envelope | None: ...

    def get_events(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Envelope]: ...

    def head(self) -> int: ...

    def listen(self) -> Listener: ...

    # --- checkpoints of readers that live beside the store ---------------------------------
    def checkpoint(self, name: str) -> int: ...

    def save_checkpoint(self, name: str, position: int) -> None: ...
