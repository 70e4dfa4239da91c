"""The event store in memory: the same contract as PostgreSQL, for unit tests of handlers.

Faithful where the handlers rely on it: one writer at a time hands out positions and publishes
them only when its append is complete ("committed"), so a reader never sees a later position
before an earlier one; expected versions, idempotent repeats and partial duplicates behave as in
PostgreSQL. Readers take no lock: they read the committed prefix.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from contracts.envelope import Envelope
from infra.eventstore.base import AppendResult, PartialDuplicate, WrongExpectedVersion, meta_of, ordered_events
from infra.eventstore.protocol import Appends


class InMemoryEventStore:
    def __init__(self) -> None:
        self._write = threading.Lock()
        self._events: list[Envelope] = []  # the committed prefix is self._events[: self._head]
        self._head = 0
        self._streams: dict[str, list[Envelope]] = {}
        self._by_id: dict[uuid.UUID, Envelope] = {}
        self._checkpoints: dict[str, int] = {}
        self._appended = threading.Condition()
        self.appends = 0  # how many appends wrote something: tests count round trips with it

    # --- writing --------------------------------------------------------------------------

    def append(self, appends: Appends) -> AppendResult:
        with self._writing(appends) as stored:
            pass
        return stored[0]

    @contextlib.contextmanager
    def _writing(self, appends: Appends, hold: Callable[[list[int]], None] | None = None
                 ) -> Iterator[list[AppendResult]]:
        """One append; `hold(positions)` runs after positions are assigned and before they are
        published, with the writer lock held (the conformance suite's slow transaction)."""
        ordered = ordered_events(appends)
        result: list[AppendResult] = []
        with self._write:
            known = [e for e in ordered if e.event_id in self._by_id]
            if known:
                if len(known) < len(ordered):
                    raise PartialDuplicate(f"{len(known)} of {len(ordered)} events are already stored")
                first = sorted((self._by_id[e.event_id] for e in ordered), key=lambda e: e.position or 0)
                result.append(AppendResult(events=first, duplicate=True))
                yield result
                return
            versions: dict[str, int] = {}
            for stream, (expected, events) in appends.items():
                if not events:
                    continue
                current = len(self._streams.get(stream, ()))
                if expected is not None and expected != current:
                    raise WrongExpectedVersion(stream, expected, current)
                versions[stream] = current
            stored: list[Envelope] = []
            position = self._head
            for ev in ordered:
                position += 1
                versions[ev.stream] += 1
                stored.append(_copy(ev, versions[ev.stream], position))
            if hold is not None:
                hold([e.position or 0 for e in stored])
            for ev in stored:
                self._events.append(ev)
                self._streams.setdefault(ev.stream, []).append(ev)
                self._by_id[ev.event_id] = ev
            self.appends += 1
            with self._appended:
                self._head = position
                self._appended.notify_all()
            result.append(AppendResult(events=stored, duplicate=False))
        yield result

    def append_slowly(self, appends: Appends, hold: Callable[[list[int]], None]) -> AppendResult:
        with self._writing(appends, hold) as stored:
            pass
        return stored[0]

    def append_to(self, stream: str, expected: int | None, *events: Envelope) -> AppendResult:
        return self.append({stream: (expected, list(events))})

    # --- reading --------------------------------------------------------------------------

    def _committed(self) -> list[Envelope]:
        return self._events[: self._head]

    def read_stream(self, stream: str, from_version: int = 1) -> list[Envelope]:
        head = self._head
        return [e for e in self._streams.get(stream, ())[max(from_version, 1) - 1:] if (e.position or 0) <= head]

    def read_streams(self, streams: Sequence[str], from_versions: Mapping[str, int] | None = None
                     ) -> dict[str, list[Envelope]]:
        return {s: self.read_stream(s, (from_versions or {}).get(s, 1)) for s in streams}

    def stream_version(self, stream: str) -> int:
        return len(self.read_stream(stream))

    def read_all(self, from_position: int = 0, limit: int = 1000) -> list[Envelope]:
        return self._committed()[from_position: from_position + limit]

    def read_all_raw(self, from_position: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]:
        return [_row(e) for e in self.read_all(from_position, limit)]

    def read_filtered_raw(self, from_position: int, types: Sequence[str], limit: int = 1000
                          ) -> tuple[list[tuple[Any, ...]], int]:
        wanted = set(types)
        committed = self._committed()
        head = len(committed)
        rows = []
        for ev in committed[from_position:]:
            if ev.type in wanted:
                rows.append(_row(ev))
                if len(rows) == limit:
                    return rows, int(rows[-1][0])
        return rows, head

    def get_event(self, event_id: uuid.UUID) -> Envelope | None:
        ev = self._by_id.get(event_id)
        return ev if ev is not None and (ev.position or 0) <= self._head else None

    def get_events(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Envelope]:
        return {i: ev for i in event_ids if (ev := self.get_event(i)) is not None}

    def head(self) -> int:
        return self._head

    def listen(self) -> MemoryListener:
        return MemoryListener(self)

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, name: str) -> int:
        return self._checkpoints.get(name, 0)

    def save_checkpoint(self, name: str, position: int) -> None:
        with self._write:
            self._checkpoints[name] = max(self._checkpoints.get(name, 0), position)


class MemoryListener:
    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store
        self._seen = store.head()
        self._woken = False

    def wait(self, timeout: float) -> None:
        cond = self._store._appended
        with cond:
            if not self._woken and self._store.head() == self._seen:
                cond.wait(timeout)
            self._woken = False
            self._seen = self._store.head()

    def wake(self) -> None:
        cond = self._store._appended
        with cond:
            self._woken = True
            cond.notify_all()

    def close(self) -> None:
        self.wake()


def _copy(ev: Envelope, version: int, position: int) -> Envelope:
    # Stored events are copies: a caller mutating its own data afterwards changes nothing here.
    return ev.model_copy(update={"version": version, "position": position, "data": _deep(ev.data)})


def _deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep(v) for v in value]
    return value


def _row(ev: Envelope) -> tuple[Any, ...]:
    return (ev.position, ev.stream, ev.version, ev.event_id, ev.type, ev.schema_version, ev.source,
            ev.data, meta_of(ev), ev.occurred_at)
