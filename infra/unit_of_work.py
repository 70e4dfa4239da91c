"""The one command path of every service: load the streams a decision needs → decide (pure) →
append what it staged, atomically, each stream at the version it was read at → on a version
conflict decide again on fresh state, a bounded number of times → answer a repeat with the
first answer.

Idempotency: the decision names its key event; that event's id is derived from the command's
idempotency key (or, for a reaction, from the consumer and the event it reacts to), and every
other staged event's id from the key's. A repeat therefore either finds its key event stored
(`check_first`, or when its decision refuses because the first run already changed the state)
or appends exactly the same ids, which the store answers with the events as first stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from contracts.envelope import SYSTEM, Actor, Envelope, Event
from contracts.errors import Conflict, DomainError
from infra.decisions import Missing, Stored, World
from infra.eventstore.base import PartialDuplicate, WrongExpectedVersion, derived_event_id, new_envelope
from infra.eventstore.protocol import EventStore

ATTEMPTS = 20  # conflicts before "busy": a hot session's crowd takes turns, each turn one round trip
READ_ROUNDS = 50  # Missing → load → decide again, at most this often per attempt

W = TypeVar("W", bound=World)
Load = Callable[[Sequence[str]], Mapping[str, Sequence[Stored]]]


@dataclass(frozen=True)
class Outcome:
    key: Envelope | None  # the key event as stored; None when the decision changed nothing
    events: list[Envelope]  # everything this command stored (or, for a repeat, its key event)
    position: int  # the last position written (0 when nothing was): for read-your-writes
    duplicate: bool  # a repeat: nothing new was stored

    @property
    def data(self) -> dict[str, object]:
        return dict(self.key.data) if self.key is not None else {}


def busy() -> Conflict:
    return Conflict("系统繁忙，请重试 / too much contention, try again", code="busy")


def execute(
    store: EventStore,
    decide: Callable[[W], Event | None],
    *,
    key_id: uuid.UUID,
    source: str,
    world: Callable[[Mapping[str, Sequence[Stored]]], W] = World,  # type: ignore[assignment]
    correlation_id: str | None = None,
    causation_id: str | None = None,
    actor: Actor = SYSTEM,
    prefetch: Sequence[str] = (),
    load: Load | None = None,
    check_first: bool = True,
    attempts: int = ATTEMPTS,
    on_busy: Callable[[], DomainError] = busy,
) -> Outcome:
    """Run `decide` until its events are stored. It returns its key event (staged in the world
    it was given) or None for "nothing to change", and raises a DomainError to refuse."""
    if check_first and (prior := store.get_event(key_id)) is not None:
        return _repeat(prior, actor)
    read: Load = load or store.read_streams
    loaded: dict[str, Sequence[Stored]] = dict(read(list(prefetch))) if prefetch else {}
    for _ in range(attempts):
        w, key = _decide(store, decide, world, loaded, read, key_id, actor)
        if isinstance(key, Outcome):
            return key
        if key is None:
            return Outcome(key=None, events=[], position=0, duplicate=False)
        batch = _envelopes(w, key, key_id, source, correlation_id, causation_id, actor)
        try:
            result = store.append(batch)
        except WrongExpectedVersion:
            # Someone else wrote one of these streams meanwhile: everything read is re-read.
            loaded = dict(read(list(loaded)))
            continue
        except PartialDuplicate:
            if (prior := store.get_event(key_id)) is not None:
                return _repeat(prior, actor)
            raise
        stored_key = next(e for e in result.events if e.event_id == key_id)
        if result.duplicate:
            return _repeat(stored_key, actor)
        return Outcome(key=stored_key, events=result.events, position=result.last_position,
                       duplicate=result.duplicate)
    raise on_busy()


def repeat_or_raise(store: EventStore, key_id: uuid.UUID, error: DomainError, actor: Actor | None = None) -> Outcome:
    """A refusal decided before `execute` (a fast path): the first answer if this is a repeat by
    the same actor (`actor` None: the caller has checked who asks)."""
    return repeat_or_refuse(store.get_event(key_id), error, actor)


def repeat_or_refuse(prior: Envelope | None, error: DomainError, actor: Actor | None = None) -> Outcome:
    """`repeat_or_raise` with the key event already looked up (`prior`, None: not stored), for a
    caller that looked up many keys in one query."""
    if prior is not None and (actor is None or _same_actor(prior, actor)):
        return _repeat(prior, prior.actor)
    raise error


def _decide(store: EventStore, decide: Callable[[W], Event | None],
            world: Callable[[Mapping[str, Sequence[Stored]]], W], loaded: dict[str, Sequence[Stored]], read: Load,
            key_id: uuid.UUID, actor: Actor) -> tuple[W, Event | None | Outcome]:
    for _ in range(READ_ROUNDS):
        w = world(loaded)
        try:
            return w, decide(w)
        except Missing as missing:
            loaded.update(read([s for s in missing.streams if s not in loaded]))
        except DomainError:
            # A repeat of a command that succeeded is refused by the state it left behind:
            # answer it from the key event instead. Looked up only here, off the happy path.
            if (prior := store.get_event(key_id)) is not None and _same_actor(prior, actor):
                return w, _repeat(prior, actor)
            raise
    raise RuntimeError(f"a decision asked for streams more than {READ_ROUNDS} times")


def _envelopes(w: World, key: Event, key_id: uuid.UUID, source: str, correlation_id: str | None,
               causation_id: str | None, actor: Actor) -> dict[str, tuple[int | None, list[Envelope]]]:
    if not any(ev is key for _, ev in w.staged):
        raise ValueError(f"the key event {key.type_name()} was not staged")
    batch: dict[str, tuple[int | None, list[Envelope]]] = {}
    n = 0
    correlation = correlation_id or key_id.hex
    for stream, (expected, events) in w.appends().items():
        envelopes = []
        for ev in events:
            if ev is key:
                event_id = key_id
            else:
                n += 1
                event_id = derived_event_id(key_id, n)
            envelopes.append(new_envelope(ev, stream, source, correlation, causation_id, actor, event_id))
        batch[stream] = (expected, envelopes)
    return batch


def _repeat(prior: Envelope, actor: Actor) -> Outcome:
    """The first answer, to whoever asked first only: the same key from someone else is refused, as
    the answer would tell them about another's booking, stop or schedule (the security issue)."""
    if not _same_actor(prior, actor):
        raise Conflict("此幂等键已被他人使用，请换一个 / this Idempotency-Key was used by someone else",
                       field="Idempotency-Key", code="key_reused")
    return Outcome(key=prior, events=[prior], position=prior.position or 0, duplicate=True)


def _same_actor(prior: Envelope, actor: Actor) -> bool:
    return (prior.actor.kind, prior.actor.id, prior.actor.hospital_id) == (actor.kind, actor.id, actor.hospital_id)
