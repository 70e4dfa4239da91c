"""A service's application layer in one table: the commands it handles and the events it reacts
to, each entry a plain function; nameko entrypoints are generated from the table.

Dependencies are injected by parameter name (as cosmicpython's bootstrap does): a handler
`def book_appointment(cmd, store, db, cache, now)` gets the command and, for every other
parameter, the attribute of that name of the running service (its dependency providers, nameko
gives each worker their values), so unit tests call `app.handle(cmd, deps)` with an in-memory
store and fakes. `now` is the clock, injected like the rest.

Reactions, the two kinds, each exactly-once in effect:
- `@app.on(EventClass)`: a change to this service's own database. The handler gets
  `(cur, event, envelope, ...)` inside one transaction that has already claimed the event in the
  inbox (consumer = "<service>.<handler name>"); a redelivered event finds its claim and does
  nothing; an exception rolls both back and the delivery is retried (infra.handling).
- `@app.decides(EventClass)`: a decision that appends to the event store. It runs through the
  unit of work with its key event id derived from the consumer and the event id, so a
  redelivery or a replica racing this one finds it stored (the store is its inbox).
The event is parsed into its contract class; dispatch is on classes, never on type strings.
A reaction declared with `backfill=False` (an SMS, a message to a hospital's HIS: effects about
the present) is not run for an event a back-fill of past activity appended
(`contracts.envelope.is_backfill`); nothing is claimed for it either.
Which service publishes an event is the contracts module it is declared in (contracts.booking →
"booking").
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from contracts.envelope import Command, Envelope, Event, is_backfill
from infra.eventstore.base import idempotent_event_id
from infra.handling import claim, reliable_event_handler

C = TypeVar("C", bound=Callable[..., Any])
Deps = Mapping[str, Any] | object


def consumer_name(service: str, handler: Callable[..., Any]) -> str:
    return f"{service}.{handler.__name__}"


def source_of(event_cls: type[Event]) -> str:
    """The service that publishes `event_cls`: the contracts module that declares it."""
    module = event_cls.__module__
    if not module.startswith("contracts."):
        raise ValueError(f"{event_cls.__name__} is not a contract event")
    return module.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Reaction:
    event_cls: type[Event]
    handler: Callable[..., Any]
    consumer: str
    kind: str  # "on" (inbox, own database) or "decides" (event store)
    params: tuple[str, ...]
    backfill: bool = True  # False: events of a back-fill of past activity are left alone

    @property
    def method_name(self) -> str:
        return "on_" + _snake(self.event_cls.__name__) if self.handler.__name__.startswith("_") \
            else self.handler.__name__


@dataclass
class Application:
    service: str
    commands: dict[type[Command], Callable[..., Any]] = field(default_factory=dict)
    reactions: list[Reaction] = field(default_factory=list)

    # --- declaring ------------------------------------------------------------------------

    def command(self, cmd_cls: type[Command]) -> Callable[[C], C]:
        def register(fn: C) -> C:
            if cmd_cls in self.commands:
                raise ValueError(f"{cmd_cls.__name__} already has a handler")
            self.commands[cmd_cls] = fn
            return fn
        return register

    def on(self, *event_classes: type[Event], backfill: bool = True) -> Callable[[C], C]:
        return self._reaction(event_classes, "on", fixed=3, backfill=backfill)

    def decides(self, *event_classes: type[Event], backfill: bool = True) -> Callable[[C], C]:
        return self._reaction(event_classes, "decides", fixed=2, backfill=backfill)

    def _reaction(self, event_classes: tuple[type[Event], ...], kind: str, fixed: int,
                  backfill: bool) -> Callable[[C], C]:
        def register(fn: C) -> C:
            params = tuple(inspect.signature(fn).parameters)[fixed:]
            for cls in event_classes:
                consumer = consumer_name(self.service, fn)
                if len(event_classes) > 1:
                    consumer = f"{consumer}.{cls.__name__}"
                self.reactions.append(Reaction(cls, fn, consumer, kind, params, backfill))
            return fn
        return register

    # --- running --------------------------------------------------------------------------

    def handle(self, cmd: Command, deps: Deps) -> Any:
        """Run the handler of `cmd`, its dependencies taken from `deps` by parameter name."""
        # The nearest registered class: a service may validate with a stricter subclass.
        fn = next((self.commands[c] for c in type(cmd).__mro__ if c in self.commands), None)
        if fn is None:
            raise LookupError(f"{self.service} has no handler for {type(cmd).__name__}")
        return fn(cmd, **_inject(fn, deps, skip=1))

    def react(self, reaction: Reaction, body: Mapping[str, Any], deps: Deps) -> Any:
        """Deliver one message (an envelope as the relay publishes it) to `reaction`."""
        env = Envelope.model_validate(body)
        if not reaction.backfill and is_backfill(env):
            return None
        event = reaction.event_cls.model_validate(env.data)
        kwargs = {name: _get(deps, name) for name in reaction.params}
        if reaction.kind == "decides":
            return reaction.handler(event, env, **kwargs)
        db = _get(deps, "db")
        with db.transaction() as cur:
            if not claim(cur, reaction.consumer, env.event_id):
                return None
            return reaction.handler(cur, event, env, **kwargs)

    def reaction_key(self, reaction: Reaction, env: Envelope) -> Any:
        """The key event id of a `decides` reaction to `env`: its inbox entry in the store."""
        return idempotent_event_id(reaction.consumer, str(env.event_id))

    def entrypoints(self) -> dict[str, Callable[..., None]]:
        """One nameko reliable event handler per reaction, to be set on the service class
        (`bind_reactions`). The queue is named after the method, as nameko does."""
        return {name: self._entrypoint(reaction, name) for name, reaction in self._methods()}

    def event_queues(self, service: str | None = None) -> list[str]:
        """The queue of each generated entrypoint, as nameko names a service-pool event handler's
        (`evt-<source>-<event type>--<service>.<method>`): what infra.deadletters watches."""
        return [f"evt-{source_of(r.event_cls)}-{r.event_cls.type_name()}--{service or self.service}.{name}"
                for name, r in self._methods()]

    def _methods(self) -> list[tuple[str, Reaction]]:
        found = []
        for reaction in self.reactions:
            name = reaction.method_name
            if len([r for r in self.reactions if r.handler is reaction.handler]) > 1:
                name = f"{name}__{_snake(reaction.event_cls.__name__)}"
            found.append((name, reaction))
        return found

    def _entrypoint(self, reaction: Reaction, name: str) -> Callable[..., None]:
        app = self

        def deliver(service: Any, body: dict[str, Any]) -> None:
            app.react(reaction, body, service)

        deliver.__name__ = deliver.__qualname__ = name
        decorated: Callable[..., None] = reliable_event_handler(
            source_of(reaction.event_cls), reaction.event_cls.type_name())(deliver)
        return decorated


def bind_reactions(app: Application) -> Callable[[type], type]:
    """Class decorator: the nameko service class gets one entrypoint per reaction of `app`."""
    def bind(cls: type) -> type:
        for name, method in app.entrypoints().items():
            if hasattr(cls, name):
                raise ValueError(f"{cls.__name__}.{name} exists already")
            setattr(cls, name, method)
        return cls
    return bind


def _inject(fn: Callable[..., Any], deps: Deps, skip: int) -> dict[str, Any]:
    return {name: _get(deps, name) for name in _params(fn)[skip:]}


@functools.cache
def _params(fn: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def dependency(deps: Deps, name: str) -> Any:
    """One of a handler's dependencies, from a service (attributes) or a mapping (tests)."""
    return _get(deps, name)


def _get(deps: Deps, name: str) -> Any:
    if isinstance(deps, Mapping):
        if name not in deps:
            raise LookupError(f"no dependency named {name!r}")
        return deps[name]
    if name == "now" and not hasattr(deps, "now"):
        raise LookupError("no clock: the service needs a `now` dependency")
    value = getattr(deps, name)
    return value() if name == "now" and callable(value) else value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
