"""The application kernel on the in-memory store: the unit of work (load → decide → append,
retry, repeat), the reaction table (typed dispatch, inbox, generated nameko entrypoints) and the
projector's typed table."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import Actor, AppointmentLapsed, Conflict, DoctorStopApproved, Envelope, InvalidInput, SessionStopApplied
from contracts.envelope import BACKFILL_PREFIX, Event
from infra.application import Application, bind_reactions, source_of
from infra.decisions import Missing, World
from infra.eventstore import InMemoryEventStore, derived_event_id, idempotent_event_id, new_envelope
from infra.projections import Projector
from infra.unit_of_work import execute
from tests.unit.fakes import FakeDb

pytestmark = pytest.mark.unit


class Counted(Event):
    n: int


class Reads:
    """The in-memory store, counting read_streams calls."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.calls: list[list[str]] = []

    def read(self, streams: Any) -> Any:
        self.calls.append(list(streams))
        return self.store.read_streams(streams)


def test_a_decision_reads_nothing_itself_and_asks_for_what_it_needs_at_once():
    r = Reads()
    for s in ("a", "b", "c"):
        r.store.append_to(s, 0, new_envelope(Counted(n=1), s, "test"))

    def decide(w: World) -> Event:
        w.need("a", "b", "c")
        total = sum(len(w.events(s)) for s in ("a", "b", "c"))
        return w.stage("sum", Counted(n=total))

    out = execute(r.store, decide, key_id=idempotent_event_id("t", "k1"), source="test", load=r.read)
    assert out.key is not None and out.key.data == {"n": 3}
    assert r.calls == [["a", "b", "c"], ["sum"]]  # two reads, not one per stream


def test_an_unloaded_stream_raises_missing_in_the_world_itself():
    with pytest.raises(Missing) as missing:
        World({}).events("nowhere")
    assert missing.value.streams == ["nowhere"]


def test_expected_versions_are_the_versions_read_and_a_conflict_decides_again():
    store = InMemoryEventStore()
    store.append_to("x", 0, new_envelope(Counted(n=0), "x", "test"))
    seen: list[int] = []

    def decide(w: World) -> Event:
        seen.append(w.version("x"))
        if len(seen) == 1:  # another writer gets in between this read and the append
            store.append_to("x", None, new_envelope(Counted(n=9), "x", "test"))
        return w.stage("x", Counted(n=len(seen)))

    out = execute(store, decide, key_id=idempotent_event_id("t", "k2"), source="test")
    assert seen == [1, 2]
    assert [e.data["n"] for e in store.read_stream("x")] == [0, 9, 2]
    assert out.position == store.head() and not out.duplicate


def test_busy_after_the_attempts_and_nothing_stored():
    store = InMemoryEventStore()

    def decide(w: World) -> Event:
        store.append_to("x", None, new_envelope(Counted(n=0), "x", "test"))  # always someone first
        return w.stage("x", Counted(n=1))

    with pytest.raises(Conflict):
        execute(store, decide, key_id=idempotent_event_id("t", "k3"), source="test", attempts=3, prefetch=["x"])
    assert [e.data["n"] for e in store.read_stream("x")] == [0, 0, 0]


def test_ids_come_from_the_key_and_a_repeat_is_answered_from_the_store():
    store = InMemoryEventStore()
    key = idempotent_event_id("t", "k4")

    def decide(w: World) -> Event:
        w.stage("other", Counted(n=2))
        return w.stage("main", Counted(n=1))

    first = execute(store, decide, key_id=key, source="test", check_first=False)
    assert {e.event_id for e in first.events} == {key, derived_event_id(key, 1)}
    again = execute(store, decide, key_id=key, source="test", check_first=False)  # the same ids: a duplicate
    assert again.duplicate and again.key is not None and again.key.event_id == key
    assert store.head() == 2


def test_a_refused_repeat_is_answered_with_the_first_answer():
    store = InMemoryEventStore()
    key = idempotent_event_id("t", "k5")

    def once(w: World) -> Event:
        if w.version("main") > 0:
            raise InvalidInput("already done")
        return w.stage("main", Counted(n=1))

    execute(store, once, key_id=key, source="test", check_first=False)
    again = execute(store, once, key_id=key, source="test", check_first=False)
    assert again.duplicate and again.data == {"n": 1}
    with pytest.raises(InvalidInput):
        execute(store, once, key_id=idempotent_event_id("t", "other"), source="test", check_first=False)


@pytest.mark.parametrize("check_first", [True, False])
def test_a_repeat_is_answered_to_its_first_actor_only(check_first):
    """Another caller with the same key learns nothing of the first one's answer (the security issue)."""
    store = InMemoryEventStore()
    key = idempotent_event_id("t", "k6")
    alice, bob = Actor(kind="patient", id="alice"), Actor(kind="patient", id="bob")

    def once(w: World) -> Event:
        if w.version("main") > 0:
            raise InvalidInput("already done")
        return w.stage("main", Counted(n=1))

    def always(w: World) -> Event:
        return w.stage("main", Counted(n=1))

    execute(store, once, key_id=key, source="test", actor=alice, check_first=check_first)
    assert execute(store, once, key_id=key, source="test", actor=alice, check_first=check_first).duplicate
    with pytest.raises(InvalidInput if not check_first else Conflict) as refused:
        execute(store, once, key_id=key, source="test", actor=bob, check_first=check_first)
    assert refused.value.code in ("invalid_input", "key_reused")
    with pytest.raises(Conflict, match="someone else"):
        execute(store, always, key_id=key, source="test", actor=bob, check_first=False)
    assert store.head() == 1


def test_a_key_event_that_was_not_staged_is_a_bug():
    with pytest.raises(ValueError, match="not staged"):
        execute(InMemoryEventStore(), lambda w: Counted(n=1), key_id=idempotent_event_id("t", "k6"), source="t")


# --- reactions ------------------------------------------------------------------------------

def _app() -> tuple[Application, list[Any]]:
    app = Application("demo")
    effects: list[Any] = []

    @app.on(AppointmentLapsed)
    def on_lapsed(cur: Any, event: AppointmentLapsed, env: Envelope, sink: list[Any]) -> None:
        if event.appointment_id == "boom":
            raise RuntimeError("the effect failed")
        sink.append(event)

    return app, effects


def _body(event: Event) -> dict[str, Any]:
    return new_envelope(event, "ledger-s", "booking").model_dump(mode="json")


def test_a_reaction_gets_the_typed_event_once_however_often_delivered():
    app, effects = _app()
    reaction = app.reactions[0]
    assert reaction.consumer == "demo.on_lapsed" and source_of(reaction.event_cls) == "booking"
    body = _body(AppointmentLapsed(appointment_id="a1", session_id="s", hospital_id="h", patient_id="p",
                                   channel="web"))
    db = FakeDb()
    for _ in range(3):
        app.react(reaction, body, {"db": db, "sink": effects})
    assert len(effects) == 1 and isinstance(effects[0], AppointmentLapsed) and effects[0].appointment_id == "a1"


def test_a_failed_effect_releases_its_claim_so_the_retry_runs_it():
    app, effects = _app()
    reaction = app.reactions[0]
    body = _body(AppointmentLapsed(appointment_id="boom", session_id="s", hospital_id="h", patient_id="p",
                                   channel="web"))
    db = FakeDb()
    with pytest.raises(RuntimeError):
        app.react(reaction, body, {"db": db, "sink": effects})
    assert db.claims() == []


def test_a_live_only_reaction_leaves_backfilled_history_alone_and_claims_nothing():
    app = Application("demo")
    seen: list[tuple[str, Any]] = []

    @app.on(AppointmentLapsed, backfill=False)
    def tell(cur: Any, event: AppointmentLapsed, env: Envelope, sink: list[Any]) -> None:
        sink.append(("on", event.appointment_id))

    @app.decides(AppointmentLapsed, backfill=False)
    def decide(event: AppointmentLapsed, env: Envelope, sink: list[Any]) -> None:
        sink.append(("decides", event.appointment_id))

    @app.on(AppointmentLapsed)
    def count(cur: Any, event: AppointmentLapsed, env: Envelope, sink: list[Any]) -> None:
        sink.append(("count", event.appointment_id))

    lapsed = AppointmentLapsed(appointment_id="a1", session_id="s", hospital_id="h", patient_id="p", channel="web")
    past = new_envelope(lapsed, "ledger-s", "booking", correlation_id=f"{BACKFILL_PREFIX}demo").model_dump(mode="json")
    live = new_envelope(lapsed, "ledger-s", "booking", correlation_id="backfill-not-a-prefix").model_dump(mode="json")
    db = FakeDb()
    for reaction in app.reactions:
        app.react(reaction, past, {"db": db, "sink": seen})
    assert seen == [("count", "a1")]
    assert [c[0] for c in db.claims()] == ["demo.count"]
    seen.clear()
    for reaction in app.reactions:
        app.react(reaction, live, {"db": db, "sink": seen})
    assert seen == [("on", "a1"), ("decides", "a1"), ("count", "a1")]


def test_nameko_entrypoints_are_generated_from_the_table():
    app = Application("demo")

    @app.decides(DoctorStopApproved)
    def on_stop(event: DoctorStopApproved, env: Envelope) -> None:
        return None

    @bind_reactions(app)
    class Service:
        name = "demo"

    method = Service.on_stop  # type: ignore[attr-defined]
    (entrypoint,) = method.nameko_entrypoints
    assert (entrypoint.source_service, entrypoint.event_type) == ("schedule", "DoctorStopApproved")


def test_a_projector_dispatches_on_classes_and_refuses_a_type_twice():
    projector = Projector("demo")
    seen: list[Any] = []

    @projector.on(SessionStopApplied)
    def _stopped(cur: Any, event: SessionStopApplied, env: Envelope) -> None:
        seen.append(event.session_id)

    assert projector.types == {"SessionStopApplied"}
    env = new_envelope(SessionStopApplied(stop_id="x", session_id="s9", replacement_session_id=None, moved=0,
                                          cancelled=0), "ledger-s9", "booking")
    projector.apply(None, env)
    projector.apply(None, new_envelope(Counted(n=1), "x", "test"))  # not in the table: ignored
    assert seen == ["s9"]
    with pytest.raises(ValueError):
        projector.on(SessionStopApplied)(_stopped)
