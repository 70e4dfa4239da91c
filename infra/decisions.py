"""What a decision sees: the streams it reads, loaded before it runs, and the events it stages.

Pure: no store, no driver, no clock. A domain module may import it. A decision never reads the
store: asking a `World` for a stream that was not loaded raises `Missing`, and the unit of work
(`infra.unit_of_work.execute`) loads what was missing, in one read, and runs the decision again
from the start. A decision that knows what it needs says so first with `need(...)`, so that
everything is loaded in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from contracts.envelope import Event

E = TypeVar("E", bound=Event)


class Stored(Protocol):
    """An event as a decision reads it: a stored Envelope, or one staged in this decision."""

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def version(self) -> int | None: ...


class Missing(Exception):  # noqa: N818 - a request to load, not an error of the caller
    """The decision needs streams that were not loaded: load them and decide again."""

    def __init__(self, streams: Iterable[str]) -> None:
        self.streams = list(dict.fromkeys(streams))
        super().__init__(f"not loaded: {', '.join(self.streams[:5])}")


@dataclass(frozen=True)
class _Staged:
    type: str
    data: dict[str, Any]
    version: int


class World:
    """The loaded streams (each at the version it was read at) plus the events staged so far, so
    that a later step of the same decision sees an earlier one. Services subclass it with
    accessors that fold their aggregates (`hospital(id)`, `session(id)`, …)."""

    def __init__(self, loaded: Mapping[str, Sequence[Stored]]) -> None:
        self._events: dict[str, list[Stored]] = {s: list(evs) for s, evs in loaded.items()}
        # The version each stream was read at: the expected version of its append.
        self.base: dict[str, int] = {s: (evs[-1].version or 0) if evs else 0 for s, evs in self._events.items()}
        self.staged: list[tuple[str, Event]] = []

    def load(self, stream: str, events: Sequence[Stored]) -> None:
        """Add a stream read now (its version is the expected version of its append)."""
        self._events[stream] = list(events)
        self.base[stream] = (events[-1].version or 0) if events else 0

    def need(self, *streams: str) -> None:
        """Ask for several streams at once (one read) before using any of them."""
        missing = [s for s in streams if s not in self._events]
        if missing:
            raise Missing(missing)

    def events(self, stream: str) -> list[Stored]:
        if stream not in self._events:
            raise Missing([stream])
        return self._events[stream]

    def version(self, stream: str) -> int:
        events = self.events(stream)
        return (events[-1].version or 0) if events else 0

    def stage(self, stream: str, event: E) -> E:
        version = self.version(stream) + 1
        self._events[stream].append(_Staged(event.type_name(), event.model_dump(mode="json"), version))
        self.staged.append((stream, event))
        return event

    def rollback(self, mark: int) -> None:
        """Forget what was staged after `mark` (len(staged) at that time)."""
        while len(self.staged) > mark:
            stream, _ = self.staged.pop()
            self._events[stream].pop()

    def appends(self) -> dict[str, tuple[int, list[Event]]]:
        """Staged events grouped by stream, streams in the order they were first staged (so an
        entity is stored before the first event that refers to it), each with its expected version."""
        out: dict[str, tuple[int, list[Event]]] = {}
        for stream, event in self.staged:
            out.setdefault(stream, (self.base[stream], []))[1].append(event)
        return out
