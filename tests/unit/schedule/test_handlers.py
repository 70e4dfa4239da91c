"""Schedule's handlers through the kernel's unit of work, on the in-memory event store, with fakes
at the edges (the clock, the read-model query for planned doctors). No PostgreSQL, no RabbitMQ:
the fixture points every address at a closed port to prove it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from contracts import (
    Actor,
    ApproveDoctorStop,
    CancelHoliday,
    ChangeFee,
    Command,
    Conflict,
    CreateDepartment,
    DeclareHoliday,
    GenerateSessions,
    ImportPlan,
    InvalidInput,
    NotFound,
    Quota,
    RegisterDoctor,
    RegisterHospital,
    RequestDoctorStop,
    ScheduleSession,
    SetWeeklyPlan,
    UpdateDepartment,
)
from contracts.schedule import PlanSlot, ReplacementSession
from infra.eventstore import InMemoryEventStore, WrongExpectedVersion
from infra.eventstore.protocol import Appends
from services.schedule import handlers
from services.schedule.domain import HOSPITAL_TZ
from services.schedule.handlers import APP, ATTEMPTS, COMMANDS
from services.schedule.service import ScheduleService
from tests.unit.schedule.test_import import demo_plan

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=HOSPITAL_TZ)  # a Saturday
MONDAY = date(2025, 3, 10)
WEDNESDAY = date(2025, 3, 12)
PLATFORM = Actor(kind="platform_admin", id="root")
ADMIN = Actor(kind="hospital_admin", id="admin-hb3", hospital_id="hb3")
CLOSED = "127.0.0.1:9"  # discard: nothing listens


@pytest.fixture(autouse=True)
def _no_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_URL", f"postgresql://nobody@{CLOSED}/none")
    monkeypatch.setenv("EVENTSTORE_DSN", f"postgresql://nobody@{CLOSED}/none")
    monkeypatch.setenv("DATABASE_DSN", f"postgresql://nobody@{CLOSED}/none")
    monkeypatch.setenv("AMQP_URI", f"amqp://guest:guest@{CLOSED}/")


class Counting:
    """The store, counting the reads a command makes (a read is one round trip to PostgreSQL)."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.read_streams_calls: list[list[str]] = []
        self.read_stream_calls = 0

    def read_streams(self, streams: Sequence[str]) -> dict[str, list[Any]]:
        self.read_streams_calls.append(list(streams))
        return self.store.read_streams(streams)

    def read_stream(self, stream: str, from_version: int = 1) -> list[Any]:
        self.read_stream_calls += 1
        return self.store.read_stream(stream, from_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Interfering:
    """The store, with `meanwhile()` run just before each of the first `times` appends: a writer that
    gets in between this command's read and its append. `always_conflict` makes every append fail."""

    def __init__(self, store: InMemoryEventStore, meanwhile: Callable[[], None] = lambda: None, times: int = 1,
                 always_conflict: bool = False) -> None:
        self.store = store
        self.meanwhile = meanwhile
        self.times = times
        self.always_conflict = always_conflict
        self.attempts = 0

    def append(self, appends: Appends) -> Any:
        self.attempts += 1
        if self.always_conflict:
            stream, (expected, _) = next(iter(appends.items()))
            raise WrongExpectedVersion(stream, expected, (expected or 0) + 1)
        if self.attempts <= self.times:
            self.meanwhile()
        return self.store.append(appends)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def run(store: Any, cmd: Command, planned: Sequence[str] = (),
        chain: Callable[[str], Sequence[str]] = lambda department_id: [],
        day_sessions: Callable[[str, date], Sequence[str]] | None = None) -> dict[str, Any]:
    deps = {"store": store, "now": NOW, "planned_doctors": lambda hospital_id: list(planned), "department_chain": chain,
            "sessions_of_day": day_sessions or (lambda hospital_id, day: sessions_of_day(store, hospital_id, day))}
    answer: dict[str, Any] = APP.handle(cmd, deps)
    return answer


def sessions_of_day(store: Any, hospital_id: str, day: date) -> list[str]:
    """The read model's answer, from the store: every session published for the hospital that day."""
    return [e.data["session_id"] for e in store.read_all(0, 100_000) if e.type == "SessionScheduled"
            and e.data["hospital_id"] == hospital_id and e.data["date"] == day.isoformat()]


def slot(weekday: int, start: time = time(8), end: time = time(11, 30)) -> PlanSlot:
    return PlanSlot(weekday=weekday, period="morning" if start < time(12) else "afternoon", start=start, end=end,
                    capacity=20, quota=Quota(web=10, phone=5, window=5))


def hospital(store: Any, doctors: Sequence[str] = ("dr-wang", "dr-li")) -> None:
    run(store, RegisterHospital(idempotency_key="key-reg-hb3", actor=PLATFORM, hospital_id="hb3",
                                name="河北医科大学第三医院", level="三级甲等", address="石家庄市"))
    for fee_class, fee in (("主任医师", "30.00"), ("普通门诊", "6.00")):
        run(store, ChangeFee(idempotency_key=f"fee-{fee_class}", actor=ADMIN, hospital_id="hb3", fee_class=fee_class,
                             fee=Decimal(fee)))
    run(store, CreateDepartment(idempotency_key="key-dep-card", actor=ADMIN, hospital_id="hb3",
                                department_id="hb3-card", name="心内科"))
    for doctor_id in doctors:
        run(store, RegisterDoctor(idempotency_key=f"doc-{doctor_id}", actor=ADMIN, hospital_id="hb3",
                                  department_id="hb3-card", doctor_id=doctor_id, name=doctor_id, title="主任医师",
                                  specialty=""))


def session_cmd(session_id: str, doctor_id: str = "dr-wang", day: date = WEDNESDAY, start: time = time(8),
                end: time = time(11, 30), key: str | None = None) -> ScheduleSession:
    return ScheduleSession(idempotency_key=key or f"sess-{session_id}", actor=ADMIN, session_id=session_id,
                           doctor_id=doctor_id, date=day, period="morning", start=start, end=end, capacity=20,
                           quota=Quota(web=10, phone=5, window=5))


def types_of(store: InMemoryEventStore, stream: str) -> list[str]:
    return [e.type for e in store.read_stream(stream)]


# --- the table --------------------------------------------------------------------------------------


def test_every_command_the_service_accepts_has_a_handler_in_the_table():
    accepted = {fn.__wrapped__.__annotations__["cmd"] for fn in vars(ScheduleService).values()
                if hasattr(fn, "__wrapped__") and "cmd" in fn.__wrapped__.__annotations__}
    import services.schedule.service as module

    classes = {getattr(module, name) for name in accepted}  # annotations are strings (PEP 563)
    unhandled = [cls.__name__ for cls in classes if not any(c in COMMANDS for c in cls.__mro__)]
    assert unhandled == []
    assert len(accepted) == 19


# --- repeats ----------------------------------------------------------------------------------------


def test_a_repeat_answers_the_first_answer_and_appends_nothing_even_after_the_state_moved_on():
    store = InMemoryEventStore()
    hospital(store)
    first = run(store, ChangeFee(idempotency_key="key-fee-raise", actor=ADMIN, hospital_id="hb3", fee_class="主任医师",
                                 fee=Decimal("45.00")))
    run(store, ChangeFee(idempotency_key="key-fee-raise-again", actor=ADMIN, hospital_id="hb3", fee_class="主任医师",
                         fee=Decimal("50.00")))
    head = store.head()
    again = run(store, ChangeFee(idempotency_key="key-fee-raise", actor=ADMIN, hospital_id="hb3", fee_class="主任医师",
                                 fee=Decimal("45.00")))
    assert store.head() == head
    assert again == {**first, "duplicate": True}
    assert (first["fee"], first["previous_fee"], first["duplicate"], first["changed"]) == ("45.00", "30.00", False,
                                                                                            True)
    assert first["position"] > 0 and again["position"] == first["position"]


def test_a_command_that_changes_nothing_answers_unchanged_and_appends_nothing():
    store = InMemoryEventStore()
    hospital(store)
    head = store.head()
    answer = run(store, ChangeFee(idempotency_key="key-fee-same", actor=ADMIN, hospital_id="hb3", fee_class="主任医师",
                                  fee=Decimal("30.00")))
    assert answer == {"position": 0, "duplicate": False, "changed": False}
    assert store.head() == head


# --- conflicts --------------------------------------------------------------------------------------


def test_a_write_between_read_and_append_is_retried_on_fresh_state_and_stores_one_change():
    store = InMemoryEventStore()
    hospital(store)
    holiday = DeclareHoliday(idempotency_key="key-holiday", actor=ADMIN, hospital_id="hb3", date=MONDAY, name="院庆")
    racing = Interfering(store, meanwhile=lambda: run(store, holiday))
    answer = run(racing, ChangeFee(idempotency_key="key-fee-race", actor=ADMIN, hospital_id="hb3", fee_class="主任医师",
                                   fee=Decimal("45.00")))
    assert racing.attempts == 2  # the first append met the holiday, the second went through
    assert types_of(store, "hospital-hb3")[-2:] == ["HolidayDeclared", "FeeChanged"]
    assert types_of(store, "hospital-hb3").count("FeeChanged") == 3  # two set up, exactly one by this command
    assert answer["position"] == store.head() and answer["duplicate"] is False


def test_a_concurrent_overlapping_session_makes_the_retry_refuse_the_overlap():
    store = InMemoryEventStore()
    hospital(store)
    racing = Interfering(store, meanwhile=lambda: run(store, session_cmd("s-first")))
    with pytest.raises(Conflict) as exc:
        run(racing, session_cmd("s-second", start=time(9), end=time(10)))
    assert exc.value.field == "start" and "s-first" in exc.value.message
    assert types_of(store, "session-s-second") == []
    assert len(store.read_stream("doctor-sessions-dr-wang")) == 1


def test_busy_when_every_attempt_conflicts_and_nothing_is_stored():
    store = InMemoryEventStore()
    hospital(store)
    head = store.head()
    always = Interfering(store, always_conflict=True)
    with pytest.raises(Conflict) as exc:
        run(always, ChangeFee(idempotency_key="key-fee-busy", actor=ADMIN, hospital_id="hb3", fee_class="主任医师",
                              fee=Decimal("45.00")))
    assert exc.value.code == "busy" and "出诊信息正被同时修改" in exc.value.message
    assert always.attempts == ATTEMPTS
    assert store.head() == head


# --- several aggregates in one append ---------------------------------------------------------------


def test_approving_a_stop_with_a_replacement_stores_the_replacement_before_the_approval_in_one_append():
    store = InMemoryEventStore()
    hospital(store)
    run(store, session_cmd("s-wed"))
    stop = run(store, RequestDoctorStop(idempotency_key="key-stop", actor=ADMIN, session_id="s-wed", reason="外出会诊",
                                        requested_by="dr-wang"))
    appends, head = store.appends, store.head()
    replacement = ReplacementSession(doctor_id="dr-li", date=WEDNESDAY, period="afternoon", start=time(14),
                                     end=time(17))
    answer = run(store, ApproveDoctorStop(idempotency_key="key-approve", actor=ADMIN, session_id="s-wed",
                                          stop_id=stop["stop_id"], replacement=replacement))
    assert store.appends == appends + 1
    stored = store.read_all(head)
    assert [(e.type, e.stream) for e in stored] == [
        ("SessionScheduled", "session-s-wed-bz1"), ("DoctorSessionAdded", "doctor-sessions-dr-li"),
        ("DoctorStopApproved", "session-s-wed")]
    assert [e.position for e in stored] == [head + 1, head + 2, head + 3]
    assert answer["replacement_session_id"] == "s-wed-bz1" and answer["position"] == head + 3
    assert stored[0].data["replaces_session_id"] == "s-wed" and stored[0].data["doctor_id"] == "dr-li"


# --- holidays: the holiday and the stops it makes in one append -------------------------------------


def holiday_day(store: InMemoryEventStore) -> None:
    """WEDNESDAY: s-wed (王 08:00) and s-wed-li (李 14:00); s-thu the day after."""
    hospital(store)
    run(store, session_cmd("s-wed"))
    run(store, session_cmd("s-wed-li", doctor_id="dr-li", start=time(14), end=time(17)))
    run(store, session_cmd("s-thu", day=date(2025, 3, 13)))


def declare(confirm: int | None, key: str = "key-holiday-wed") -> DeclareHoliday:
    return DeclareHoliday(idempotency_key=key, actor=ADMIN, hospital_id="hb3", date=WEDNESDAY, name="院庆",
                          confirm_stops=confirm)


def test_a_holiday_and_the_stops_it_makes_are_one_append_read_in_one_round_trip_and_a_repeat_appends_nothing():
    store = InMemoryEventStore()
    holiday_day(store)
    appends, head = store.appends, store.head()
    counting = Counting(store)
    answer = run(counting, declare(2))
    assert store.appends == appends + 1
    assert len(counting.read_streams_calls) == 1  # the hospital and the day's sessions, prefetched together
    stored = store.read_all(head)
    assert [(e.type, e.stream) for e in stored] == [
        ("DoctorStopRequested", "session-s-wed"), ("DoctorStopApproved", "session-s-wed"),
        ("DoctorStopRequested", "session-s-wed-li"), ("DoctorStopApproved", "session-s-wed-li"),
        ("HolidayDeclared", "hospital-hb3")]
    assert {e.data["reason"] for e in stored[:-1]} == {"节假日：院庆"}
    assert {e.actor.id for e in stored} == {"admin-hb3"}
    assert answer["stopped_session_ids"] == ["s-wed", "s-wed-li"] and answer["position"] == store.head()
    assert types_of(store, "session-s-thu") == ["SessionScheduled"]

    after = store.head()
    again = run(store, declare(2))
    assert store.head() == after and again == {**answer, "duplicate": True}
    other_key = run(store, declare(None, key="key-holiday-wed-2"))  # the day is a holiday already
    assert other_key["changed"] is False and store.head() == after


def test_an_unconfirmed_holiday_stores_nothing_and_says_how_many_sessions_it_would_stop():
    store = InMemoryEventStore()
    holiday_day(store)
    head = store.head()
    with pytest.raises(Conflict) as exc:
        run(store, declare(None))
    assert (exc.value.code, exc.value.field) == ("confirm_holiday_stops", "confirm_stops")
    assert exc.value.message.startswith("该节假日将停诊当日 2 个")
    assert store.head() == head


def test_a_session_stopped_between_the_preview_and_the_declaration_makes_the_confirmed_number_wrong():
    store = InMemoryEventStore()
    holiday_day(store)

    def stop_one() -> None:
        stop = run(store, RequestDoctorStop(idempotency_key="key-stop-li", actor=ADMIN, session_id="s-wed-li",
                                            reason="外出会诊", requested_by="dr-li"))
        run(store, ApproveDoctorStop(idempotency_key="key-approve-li", actor=ADMIN, session_id="s-wed-li",
                                     stop_id=stop["stop_id"]))

    racing = Interfering(store, meanwhile=stop_one)
    with pytest.raises(Conflict) as exc:
        run(racing, declare(2))
    assert exc.value.code == "confirm_holiday_stops" and "1 个" in exc.value.message
    assert racing.attempts == 1 and "HolidayDeclared" not in types_of(store, "hospital-hb3")
    assert run(store, declare(1, key="key-holiday-wed-again"))["stopped_session_ids"] == ["s-wed"]


def test_a_cancelled_holiday_lets_generation_publish_the_day_again():
    store = InMemoryEventStore()
    hospital(store)
    run(store, SetWeeklyPlan(idempotency_key="key-plan-wang", actor=ADMIN, doctor_id="dr-wang", slots=[slot(3)]))
    run(store, declare(None))
    generate = GenerateSessions(idempotency_key="key-gen-wed", actor=ADMIN, hospital_id="hb3", date_from=WEDNESDAY,
                                date_to=WEDNESDAY, doctor_ids=["dr-wang"])
    assert run(store, generate)["session_ids"] == []
    cancelled = run(store, CancelHoliday(idempotency_key="key-cancel-wed", actor=ADMIN, hospital_id="hb3",
                                         date=WEDNESDAY))
    assert (cancelled["date"], cancelled["changed"]) == ("2025-03-12", True)
    assert types_of(store, "hospital-hb3")[-1] == "HolidayCancelled"
    again = run(store, generate.model_copy(update={"idempotency_key": "key-gen-wed-2"}))
    assert again["session_ids"] == ["dr-wang-20250312-am"]
    with pytest.raises(NotFound) as exc:
        run(store, CancelHoliday(idempotency_key="key-cancel-wed-2", actor=ADMIN, hospital_id="hb3", date=WEDNESDAY))
    assert exc.value.field == "date"


# --- import: all or nothing -------------------------------------------------------------------------


def import_cmd(records: list[dict[str, Any]], key: str = "import-1") -> ImportPlan:
    return ImportPlan.model_validate({"idempotency_key": key, "actor": PLATFORM, "source": "test.csv",
                                      "records": records})


GOOD = [
    {"line": "r:1", "kind": "hospital",
     "data": {"hospital_id": "hb9", "name": "九院", "level": "二级", "address": "保定"}},
    {"line": "r:2", "kind": "department",
     "data": {"hospital_id": "hb9", "department_id": "hb9-card", "name": "心内科"}},
]
BAD_DOCTOR = {"line": "r:3", "kind": "doctor",
              "data": {"doctor_id": "d1", "hospital_id": "hb9", "department_id": "hb9-ghost", "name": "甲",
                       "title": "主任医师"}}


def test_an_import_with_a_bad_record_stores_nothing_and_answers_the_refusals():
    store = InMemoryEventStore()
    answer = run(store, import_cmd([*GOOD, BAD_DOCTOR]))
    assert store.head() == 0
    assert (answer["ok"], answer["position"], answer["duplicate"]) == (False, 0, False)
    assert [(p["line"], p["field"]) for p in answer["rejected"]] == [("r:3", "department_id")]


def test_a_clean_import_is_one_append_and_its_repeat_answers_the_same_report():
    store = InMemoryEventStore()
    fixed = {**BAD_DOCTOR, "data": {**BAD_DOCTOR["data"], "department_id": "hb9-card"}}
    first = run(store, import_cmd([*GOOD, fixed], key="import-2"))
    assert first["ok"] and first["created"] == {"hospitals": 1, "departments": 1, "doctors": 1}
    assert store.appends == 1 and store.head() == 4  # three entities and the PlanImported summary
    assert first["position"] == 4
    again = run(store, import_cmd([*GOOD, fixed], key="import-2"))
    assert store.head() == 4
    assert again == {**first, "duplicate": True}


# --- decisions that read many streams ---------------------------------------------------------------


def planned_store(doctors: Sequence[str]) -> InMemoryEventStore:
    store = InMemoryEventStore()
    hospital(store, doctors)
    for doctor_id in doctors:
        run(store, SetWeeklyPlan(idempotency_key=f"plan-{doctor_id}", actor=ADMIN, doctor_id=doctor_id,
                                 slots=[slot(1), slot(3, time(14), time(17)), slot(5)]))
    return store


@pytest.mark.parametrize("n", [1, 8])
def test_generation_reads_every_doctor_and_session_in_a_bounded_number_of_reads(n: int):
    doctors = [f"dr-{i}" for i in range(n)]
    counting = Counting(planned_store(doctors))
    answer = run(counting, GenerateSessions(idempotency_key="key-generate", actor=ADMIN, hospital_id="hb3",
                                            date_from=date(2025, 3, 2), date_to=date(2025, 3, 15)),
                 planned=doctors)
    assert len(answer["session_ids"]) == 6 * n  # Mon, Wed, Fri of two weeks, per doctor
    assert counting.read_stream_calls == 0
    assert len(counting.read_streams_calls) == 2  # the doctors, then what their plans name
    # the hospital, its generation log and the doctors; then each doctor's calendar and six sessions
    assert [len(c) for c in counting.read_streams_calls] == [2 + n, n * (1 + 6)]


def test_generation_without_doctors_named_takes_the_planned_doctors_from_the_read_model():
    store = planned_store(["dr-wang", "dr-li"])
    answer = run(store, GenerateSessions(idempotency_key="key-gen-all", actor=ADMIN, hospital_id="hb3",
                                         date_from=MONDAY, date_to=MONDAY), planned=["dr-li"])
    assert answer["session_ids"] == ["dr-li-20250310-am"]


def test_a_refused_generation_stores_nothing():
    store = planned_store(["dr-wang"])
    head = store.head()
    with pytest.raises(InvalidInput) as exc:
        run(store, GenerateSessions(idempotency_key="key-gen-bad", actor=ADMIN, hospital_id="hb3",
                                    date_from=MONDAY, date_to=date(2025, 3, 1)), planned=["dr-wang"])
    assert exc.value.field == "date_to" and store.head() == head


def department_tree(depth: int) -> InMemoryEventStore:
    """hb3-card with `depth` levels below it: hb3-d1 under hb3-card, hb3-d2 under hb3-d1, …"""
    store = InMemoryEventStore()
    hospital(store, doctors=())
    parent = "hb3-card"
    for level in range(1, depth + 1):
        run(store, CreateDepartment(idempotency_key=f"key-dep-{level}", actor=ADMIN, hospital_id="hb3",
                                    department_id=f"hb3-d{level}", name=f"{level}科", parent_id=parent))
        parent = f"hb3-d{level}"
    return store


def read_model_chain(department_id: str) -> list[str]:
    """The chain as the read model of department_tree answers it."""
    if department_id == "hb3-card":
        return ["hb3-card"]
    return [f"hb3-d{level}" for level in range(int(department_id.removeprefix("hb3-d")), 0, -1)] + ["hb3-card"]


def test_moving_a_department_under_its_own_descendant_is_refused_reading_the_tree_in_one_round_trip():
    counting = Counting(department_tree(5))
    move = UpdateDepartment(idempotency_key="key-move-card", actor=ADMIN, department_id="hb3-card", name="心内科",
                            parent_id="hb3-d5")
    with pytest.raises(InvalidInput) as exc:
        run(counting, move, chain=read_model_chain)
    assert exc.value.field == "parent_id"
    assert len(counting.read_streams_calls) == 1


def test_a_stale_department_chain_costs_reads_never_a_wrong_answer():
    counting = Counting(department_tree(5))
    move = UpdateDepartment(idempotency_key="key-move-card", actor=ADMIN, department_id="hb3-card", name="心内科",
                            parent_id="hb3-d5")
    with pytest.raises(InvalidInput):
        run(counting, move)  # the read model knows nothing yet: the walk loads a level per read
    assert len(counting.read_streams_calls) == 1 + 4
    moved = run(counting.store, UpdateDepartment(idempotency_key="key-move-d5", actor=ADMIN, department_id="hb3-d5",
                                                 name="5科", parent_id="hb3-card"), chain=read_model_chain)
    assert moved["parent_id"] == "hb3-card" and moved["changed"] is True


def test_a_large_import_is_read_in_a_few_round_trips_not_one_per_record():
    plan = demo_plan()
    counting = Counting(InMemoryEventStore())
    answer = handlers.import_plan(plan, counting, NOW)  # type: ignore[arg-type]
    assert answer["ok"], answer["rejected"]
    assert len(plan.records) > 50
    assert counting.read_stream_calls == 0
    assert len(counting.read_streams_calls) == 2  # every record's streams; then what generation publishes
