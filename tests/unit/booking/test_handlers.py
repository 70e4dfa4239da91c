"""Booking's handlers on the in-memory store, with fakes at the boundary (tests/unit/booking/
fakes.py): repeats answer the first answer and store nothing, conflicts are retried to one
booking, the sold-out answer reads nothing, every reaction has its effect once."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.fernet import Fernet

from contracts import (
    Actor,
    BookAppointment,
    CancelAppointment,
    CheckInAppointment,
    Conflict,
    DoctorStopApproved,
    Envelope,
    Forbidden,
    HandOverPhoneBookings,
    InvalidInput,
    LapseDueAppointments,
    NotFound,
    RefundAtWindow,
    RegisterPatient,
    SessionFull,
)
from infra.eventstore import InMemoryEventStore, new_envelope
from infra.passwords import PASSWORDS, Passwords
from infra.pii import PiiVault
from services.booking import handlers
from services.booking.domain import HOSPITAL_TZ, NoShowRules, Refused
from services.booking.handlers import APP
from tests.conftest import with_check_digit
from tests.unit.booking.fakes import AlwaysConflicting, CountingStore, FakeReadModel, RacingStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=HOSPITAL_TZ)


def resident_id(n: int) -> str:
    body = f"130102{1960 + n % 40:04d}0{1 + n % 9}1{n % 10}{n % 1000:03d}"[:17]
    return with_check_digit(body)


class Platform:
    """The handlers' dependencies: the in-memory store and fakes."""

    def __init__(self) -> None:
        self.memory = InMemoryEventStore()
        self.store: Any = self.memory
        self.readmodel = FakeReadModel(self.memory)
        self.key = Fernet.generate_key().decode()
        self.vault = PiiVault(self.key)
        self.cache = handlers.LedgerCache()
        self.now = NOW
        self.settings = SimpleNamespace(phone_max_patients=3, no_show_rules=lambda: NoShowRules(3, 90, 90))
        self.passwords: Passwords = PASSWORDS

    def deps(self) -> dict[str, Any]:
        return {"store": self.store, "readmodel": self.readmodel, "vault": self.vault, "cache": self.cache,
                "now": self.now, "settings": self.settings, "passwords": self.passwords}

    def handle(self, cmd: Any) -> Any:
        return APP.handle(cmd, self.deps())

    def session(self, session_id: str, web: int = 2, phone: int = 1, day: date | None = None,
                lapse: timedelta = timedelta(days=3), start: str = "08:00:00", hospital: str = "hosp-a",
                department: str | None = None, doctor: str = "doc-1", period: str = "morning") -> None:
        data = {"session_id": session_id, "hospital_id": hospital, "department_id": department or f"dept-{session_id}",
                "doctor_id": doctor, "doctor_name": f"医生{doctor}",
                "date": (day or (NOW + timedelta(days=3)).date()).isoformat(),
                "period": period, "start": start, "end": "17:30:00", "fee": "50.00",
                "quota": {"web": web, "phone": phone, "window": 0},
                "opens_at": (NOW - timedelta(days=1)).isoformat(), "closes_at": (NOW + timedelta(days=1)).isoformat(),
                "lapse_at": (NOW + lapse).isoformat(), "time_bands": []}
        self.memory.append_to(f"session-{session_id}", 0, Envelope(
            type="SessionScheduled", stream=f"session-{session_id}", source="schedule", correlation_id="t", data=data))

    def patient(self, n: int) -> str:
        answer = self.handle(RegisterPatient(name=f"患者{n}", id_number=resident_id(n), phone=f"139{n:08d}",
                                             idempotency_key=f"register-{n:04d}"))
        return str(answer["patient_id"])

    def book(self, patient_id: str, session_id: str, key: str, channel: str = "web") -> Any:
        return self.handle(BookAppointment(session_id=session_id, patient_id=patient_id, channel=channel,
                                           idempotency_key=key, actor=Actor(kind="patient", id=patient_id)))

    def types(self, stream: str) -> list[str]:
        return [e.type for e in self.memory.read_stream(stream)]


@pytest.fixture
def p() -> Platform:
    return Platform()


def test_a_repeated_booking_answers_the_first_answer_and_stores_nothing(p):
    p.session("s1")
    a = p.patient(1)
    first = p.book(a, "s1", "key-a-0001")
    head = p.memory.head()
    assert p.readmodel.waited[-1] == head  # answered once its own projection has caught up
    assert p.book(a, "s1", "key-a-0001") == first
    assert p.memory.head() == head
    assert p.types("ledger-s1") == ["AppointmentBooked"]


def test_the_session_and_the_patient_change_in_one_append(p):
    p.session("s1")
    a = p.patient(1)
    appends = p.memory.appends
    p.book(a, "s1", "key-a-0001")
    assert p.memory.appends == appends + 1
    assert p.types(f"patient-{a}") == ["PatientRegistered", "PatientAppointmentsChanged"]


def test_a_conflict_is_decided_again_and_books_once(p):
    p.session("s1")
    a = p.patient(1)
    p.store = RacingStore(p.memory, races=3)
    answer = p.book(a, "s1", "key-a-0001")
    assert p.store.appends == 4  # three stale attempts, then the one that stored
    booked = [e for e in p.memory.read_stream("ledger-s1") if e.type == "AppointmentBooked"]
    assert [e.data["appointment_id"] for e in booked] == [answer.appointment_id]


def test_busy_after_the_attempts_run_out_and_nothing_is_stored(p):
    p.session("s1")
    a = p.patient(1)
    head = p.memory.head()
    p.store = AlwaysConflicting(p.memory)
    with pytest.raises(Conflict) as refused:
        p.book(a, "s1", "key-a-0001")
    assert refused.value.code == "busy"
    assert p.memory.head() == head


def test_a_full_session_answers_full_without_reading_the_store(p):
    p.session("s1", web=1)
    a, b, c = (p.patient(n) for n in (1, 2, 3))
    first = p.book(a, "s1", "key-a-0001")
    with pytest.raises(SessionFull):
        p.book(b, "s1", "key-b-0001")  # learns the ledger is full
    p.store = CountingStore(p.memory)
    with pytest.raises(SessionFull):
        p.book(c, "s1", "key-c-0001")
    assert p.store.reads == 1  # only the repeat check of the refused key, no ledger or patient read
    # the winner repeating its request during the sold-out moment gets its own answer back
    assert p.book(a, "s1", "key-a-0001") == first


def test_a_booking_reads_the_store_once_its_ledger_from_the_cached_head_on(p):
    p.session("s1", web=5)
    a, b = p.patient(1), p.patient(2)
    p.book(a, "s1", "key-a-0001")
    p.store = CountingStore(p.memory)
    second = p.book(b, "s1", "key-b-0001")
    assert p.store.reads == 1  # the ledger's tail and the patient's stream in one read
    assert second.sequence_number == 2  # the cached ledger plus its tail: the first booking counted


def test_cancel_is_idempotent_and_frees_the_place_for_a_new_number(p):
    p.session("s1", web=1)
    a, b = p.patient(1), p.patient(2)
    first = p.book(a, "s1", "key-a-0001")
    cancel = CancelAppointment(appointment_id=first.appointment_id, idempotency_key="cancel-0001",
                               actor=Actor(kind="patient", id=a))
    assert p.handle(cancel)["status"] == "cancelled"
    head = p.memory.head()
    assert p.handle(cancel)["status"] == "cancelled"
    assert p.memory.head() == head
    assert p.book(b, "s1", "key-b-0001").sequence_number == 2


CLERK = Actor(kind="clerk", id="clerk-1", hospital_id="hosp-a")


def test_a_check_in_and_a_no_show_keep_their_places_in_the_ledger_and_the_availability(p):
    """DESIGN guarantee 1: web quota 3 once ended with 4 web patients after a check-in."""
    p.session("today", web=3, phone=0, day=NOW.date(), start="10:00:00", lapse=timedelta(hours=2))
    patients = [p.patient(n) for n in range(1, 5)]
    answers = [p.book(a, "today", f"key-today-{i}") for i, a in enumerate(patients[:3])]
    p.handle(CheckInAppointment(code=answers[0].code, id_number=resident_id(1), idempotency_key="checkin-0001",
                                actor=CLERK))
    # the timer's clock is past the lapse time: the two not checked in become no-shows
    assert p.handle(LapseDueAppointments(now=NOW + timedelta(hours=3), idempotency_key="lapse-0001")) == 2
    assert p.types("ledger-today") == ["AppointmentBooked"] * 3 + ["AppointmentCheckedIn"] + ["AppointmentLapsed"] * 2
    with pytest.raises(SessionFull):
        p.book(patients[3], "today", "key-today-late")
    assert handlers.availability(p.memory, p.readmodel, handlers.LedgerCache(), ["today"])["today"]["remaining"] \
        == {"web": 0, "phone": 0, "window": 0}


def test_no_show_lapses_once_and_the_third_bans(p):
    a = p.patient(1)
    for i in range(3):
        p.session(f"ns{i}", day=(NOW + timedelta(days=i + 1)).date(), lapse=timedelta(hours=1))
        p.book(a, f"ns{i}", f"key-ns-{i}-01")
    later = NOW + timedelta(hours=2)
    lapse = LapseDueAppointments(now=later, idempotency_key="lapse-0001")
    assert p.handle(lapse) == 3
    assert p.handle(lapse) == 0
    patient = p.types(f"patient-{a}")
    assert patient.count("PatientBanned") == 1
    assert [p.types(f"ledger-ns{i}").count("AppointmentLapsed") for i in range(3)] == [1, 1, 1]


def test_the_doctor_stop_moves_and_cancels_once_however_often_delivered(p):
    p.session("stopped", web=3)
    p.session("repl", web=2)
    booked = [p.book(p.patient(n), "stopped", f"key-stop-{n}") for n in (1, 2, 3)]
    stop = new_envelope(
        DoctorStopApproved(stop_id="stop-1", session_id="stopped", hospital_id="hosp-a",
                                                   reason="会议", approved_by="admin", replacement_session_id="repl"),
        "session-stopped", "schedule")
    stored = p.memory.append_to("session-stopped", None, stop).events[0]
    reaction = next(r for r in APP.reactions if r.handler is handlers.on_doctor_stop_approved)
    body = stored.model_dump(mode="json")
    first = APP.react(reaction, body, p.deps())
    again = APP.react(reaction, {**body, "event_id": str(uuid.uuid4())}, p.deps())
    assert (first["moved"], first["cancelled"], first["duplicate"]) == (2, 1, False)
    assert again["duplicate"] is True
    assert p.types("ledger-stopped").count("SessionStopApplied") == 1
    moved = [e.data["appointment_id"] for e in p.memory.read_stream("ledger-repl") if e.type == "AppointmentMoved"]
    assert moved == [b.appointment_id for b in booked[:2]]


def test_the_phone_hand_over_happens_once_a_day(p):
    day = (NOW + timedelta(days=3)).date()
    p.session("s1", phone=2)
    a = p.patient(1)
    p.handle(BookAppointment(session_id="s1", patient_id=a, channel="phone", idempotency_key="key-phone-1",
                             operator_id="op-1", actor=Actor(kind="operator", id="op-1")))
    cmd = HandOverPhoneBookings(hospital_id="hosp-a", visit_date=day, idempotency_key="handover-0001")
    first = p.handle(cmd)
    assert first["count"] == 1
    assert p.handle(cmd)["already"] is True
    assert p.types(f"handover-hosp-a-{day.isoformat()}") == ["PhoneBookingsHandedOver"]


def test_registration_repeat_is_the_same_patient_and_a_stranger_is_refused(p):
    a = p.patient(1)
    assert p.patient(1) == a  # the same key again
    with pytest.raises(Conflict) as refused:
        p.handle(RegisterPatient(name="冒名", id_number=resident_id(1), phone="13900000099",
                                 idempotency_key="register-other"))
    assert refused.value.code == "already_registered"
    assert p.types(f"patient-{a}") == ["PatientRegistered", "PatientRegistrationRefused"]


# --- 退号 at the window ---------------------------------------------------------------------------


def phone_booking(p: Platform, patient_id: str, session_id: str, key: str) -> Any:
    return p.handle(BookAppointment(session_id=session_id, patient_id=patient_id, channel="phone",
                                    idempotency_key=key, operator_id="op-1", actor=Actor(kind="operator", id="op-1")))


def refund(p: Platform, code: str, key: str, actor: Actor = CLERK) -> Any:
    return p.handle(RefundAtWindow(code=code, reason="患者临时有事", idempotency_key=key, actor=actor))


def test_a_refund_before_the_start_frees_the_place_at_once_and_a_repeat_answers_the_same(p):
    p.session("today", web=0, phone=1, day=NOW.date(), start="10:00:00", lapse=timedelta(hours=2))
    a, b = p.patient(1), p.patient(2)
    paid = phone_booking(p, a, "today", "key-phone-a")
    with pytest.raises(SessionFull):
        phone_booking(p, b, "today", "key-phone-b")  # this process now remembers "full"
    answer = refund(p, paid.code.lower(), "refund-0001")
    assert answer == {"appointment_id": paid.appointment_id, "status": "refunded", "refund_due": "50.00",
                      "place_released": True}
    head = p.memory.head()
    assert refund(p, paid.code, "refund-0001") == answer
    assert p.memory.head() == head
    assert p.types("ledger-today")[-1] == "AppointmentRefunded"
    assert p.types(f"patient-{a}")[-1] == "PatientAppointmentsChanged"
    # the ledger cache forgot its sold-out answer: the released place is booked at once
    assert phone_booking(p, b, "today", "key-phone-b2").sequence_number == 2
    with pytest.raises(Refused) as again:
        refund(p, paid.code, "refund-0002")
    assert again.value.code == "not_refundable"


def test_a_stranger_replaying_the_key_learns_nothing(p):
    p.session("today", web=0, phone=1, day=NOW.date(), start="10:00:00", lapse=timedelta(hours=2))
    paid = phone_booking(p, p.patient(1), "today", "key-phone-a")
    refund(p, paid.code, "refund-0001")
    for stranger in (Actor(kind="clerk", id="clerk-9", hospital_id="hosp-b"), Actor(kind="patient", id="x"),
                     Actor(kind="operator", id="op-1")):
        with pytest.raises(NotFound) as exc:
            refund(p, paid.code, "refund-0001", stranger)
        assert exc.value.field == "code"
    with pytest.raises(NotFound):
        refund(p, "ZZZZ9999", "refund-0003")


def test_a_checked_in_registration_refunded_after_the_start_keeps_its_place(p):
    p.session("started", web=1, phone=0, day=NOW.date(), start="08:00:00", lapse=timedelta(hours=2))
    a, b = p.patient(1), p.patient(2)
    booked = p.book(a, "started", "key-started-a")
    p.handle(CheckInAppointment(code=booked.code, id_number=resident_id(1), idempotency_key="checkin-0001",
                                actor=CLERK))
    admin = Actor(kind="hospital_admin", id="admin-a", hospital_id="hosp-a")
    answer = refund(p, booked.code, "refund-0001", admin)
    assert (answer["refund_due"], answer["place_released"]) == ("50.00", False)
    with pytest.raises(SessionFull):
        p.book(b, "started", "key-started-b")
    assert p.readmodel.window_row_by_code(booked.code)["status"] == "refunded"


def test_a_refund_on_another_day_is_refused(p):
    p.session("later", web=0, phone=1)  # in three days
    paid = phone_booking(p, p.patient(1), "later", "key-phone-a")
    with pytest.raises(Refused) as exc:
        refund(p, paid.code, "refund-0001")
    assert exc.value.code == "not_visit_day"


# --- window look-ups ---------------------------------------------------------------------------


def window_day(p: Platform) -> dict[str, Any]:
    """hosp-a today: two departments, doctors and periods; one booking at hosp-b; returns the answers."""
    day = NOW.date()
    p.session("b-pm", web=3, day=day, department="dept-b", doctor="doc-2", period="afternoon", start="14:00:00")
    p.session("b-am", web=3, day=day, department="dept-b", doctor="doc-2", period="morning", start="10:00:00")
    p.session("a-am", web=3, day=day, department="dept-a", doctor="doc-1", period="morning", start="10:00:00")
    p.session("other", web=3, day=day, hospital="hosp-b", department="dept-x")
    p.session("a-later", web=3, department="dept-a", doctor="doc-1")  # in three days
    one, two = p.patient(1), p.patient(2)
    return {
        "b-pm": p.book(one, "b-pm", "key-day-k1"), "b-am-1": p.book(two, "b-am", "key-day-k2"),
        "a-am": p.book(one, "a-am", "key-day-k3"),
        "other": p.book(two, "other", "key-day-k4"), "a-later": p.book(one, "a-later", "key-day-k5"),
    }


def test_the_hospital_day_list_is_ordered_masked_and_scoped(p):
    booked = window_day(p)
    p.handle(CheckInAppointment(code=booked["a-am"].code, id_number=resident_id(1), idempotency_key="checkin-0001",
                                actor=CLERK))
    rows = handlers.hospital_day_list(p.readmodel, p.vault, "hosp-a", NOW.date().isoformat(), CLERK)
    assert [r["session_id"] for r in rows] == ["a-am", "b-am", "b-pm"]
    first = rows[0]
    assert (first["status"], first["label"], first["doctor_name"]) == ("checked_in", "已取号", "医生doc-1")
    assert (first["name_masked"], first["id_masked"], first["phone_masked"]) == (
        "患**", resident_id(1)[:6] + "********" + resident_id(1)[-4:], "139****0001")
    assert set(first) == set(handlers.domain.WINDOW_ROW_FIELDS)
    assert rows[1]["label"] == "待取号"
    assert "患者1" not in str(rows) and resident_id(1) not in str(rows)
    only_b = handlers.hospital_day_list(p.readmodel, p.vault, "hosp-a", NOW.date().isoformat(), CLERK,
                                        department_id="dept-b")
    assert [r["session_id"] for r in only_b] == ["b-am", "b-pm"]
    assert handlers.hospital_day_list(p.readmodel, p.vault, "hosp-a", NOW.date().isoformat(), CLERK,
                                      doctor_id="doc-1")[0]["session_id"] == "a-am"
    doctor = Actor(kind="doctor", id="doc-1", hospital_id="hosp-a")
    assert len(handlers.hospital_day_list(p.readmodel, p.vault, "hosp-a", NOW.date().isoformat(), doctor)) == 3
    with pytest.raises(Forbidden):
        handlers.hospital_day_list(p.readmodel, p.vault, "hosp-b", NOW.date().isoformat(), CLERK)
    with pytest.raises(InvalidInput) as bad:
        handlers.hospital_day_list(p.readmodel, p.vault, "hosp-a", "03/10/2025", CLERK)
    assert bad.value.field == "date"
    root = Actor(kind="platform_admin", id="root")
    assert [r["session_id"] for r in handlers.hospital_day_list(p.readmodel, p.vault, "hosp-b",
                                                                NOW.date().isoformat(), root)] == ["other"]


def test_a_patient_who_lost_the_code_is_found_by_id_at_this_hospital_only(p):
    booked = window_day(p)
    found = handlers.patient_bookings_at(p.readmodel, p.vault, resident_id(1).lower(), "hosp-a", CLERK)
    assert found["patient"]["name_masked"] == "患**"
    assert set(found["patient"]) == {"patient_id", "id_masked", "phone_masked", "name_masked"}
    assert [r["code"] for r in found["appointments"]] == [
        booked["a-later"].code, booked["b-pm"].code, booked["a-am"].code]  # newest first
    with pytest.raises(NotFound) as none_here:
        handlers.patient_bookings_at(p.readmodel, p.vault, resident_id(1), "hosp-b", Actor(
            kind="clerk", id="c-b", hospital_id="hosp-b"))
    with pytest.raises(NotFound) as unknown:
        handlers.patient_bookings_at(p.readmodel, p.vault, resident_id(77), "hosp-a", CLERK)
    assert none_here.value.message == unknown.value.message and unknown.value.field == "id_number"
    with pytest.raises(InvalidInput) as bad:
        handlers.patient_bookings_at(p.readmodel, p.vault, resident_id(1)[:17] + "Y", "hosp-a", CLERK)
    assert bad.value.field == "id_number"
    with pytest.raises(Forbidden):
        handlers.patient_bookings_at(p.readmodel, p.vault, resident_id(1), "hosp-a", Actor(kind="operator", id="o"))


def test_an_appointment_by_code_only_for_its_hospital(p):
    booked = window_day(p)
    row = handlers.appointment_by_code(p.readmodel, p.vault, booked["b-am-1"].code.lower(), CLERK)
    assert (row["appointment_id"], row["name_masked"], row["label"]) == (booked["b-am-1"].appointment_id, "患**",
                                                                         "待取号")
    with pytest.raises(NotFound) as elsewhere:
        handlers.appointment_by_code(p.readmodel, p.vault, booked["other"].code, CLERK)
    with pytest.raises(NotFound) as unknown:
        handlers.appointment_by_code(p.readmodel, p.vault, "ZZZZ9999", CLERK)
    assert (elsewhere.value.message, elsewhere.value.field) == (unknown.value.message, "code")
    for malformed in ("ABC", 12345678):
        with pytest.raises(InvalidInput) as bad:
            handlers.appointment_by_code(p.readmodel, p.vault, malformed, CLERK)  # type: ignore[arg-type]
        assert bad.value.field == "code"


def _serial(fn: Any, items: Any) -> Any:
    return map(fn, items)


def _command(patient_id: str, session_id: str, key: str) -> dict[str, Any]:
    return {"session_id": session_id, "patient_id": patient_id, "channel": "web", "idempotency_key": key,
            "actor": {"kind": "patient", "id": patient_id}}


def test_a_batch_answers_each_booking_as_a_single_booking_would_in_order(p):
    p.session("s1", web=2)
    p.session("s2", web=1)
    people = [p.patient(n) for n in range(1, 7)]
    commands = [_command(people[0], "s1", "key-batch-01"), _command(people[1], "s2", "key-batch-02"),
                {"session_id": "s1", "patient_id": people[2]},  # no key: invalid, answered alone
                _command(people[3], "s1", "key-batch-04"), _command(people[4], "s1", "key-batch-05"),
                _command(people[5], "s2", "key-batch-06"), _command(people[1], "nope", "key-batch-07"),
                _command(people[0], "s2", "key-batch-08") | {"actor": {"kind": "patient", "id": people[1]}}]
    answers = handlers.book_many(commands, p.deps(), run_all=_serial)
    assert len(answers) == len(commands)
    booked = [a for a in answers if "appointment_id" in a]
    assert [(a["session_id"], a["sequence_number"]) for a in booked] == [("s1", 1), ("s2", 1), ("s1", 2)]
    assert [i for i, a in enumerate(answers) if "appointment_id" in a] == [0, 1, 3]
    assert answers[2]["domain_error"]["code"] == "invalid_input"
    assert answers[4]["domain_error"]["code"] == "session_full" and answers[5]["domain_error"]["code"] == "session_full"
    assert answers[6]["domain_error"]["status"] == 404
    assert answers[7]["domain_error"]["status"] == 403  # booking for somebody else
    assert [e.data["patient_id"] for e in p.memory.read_stream("ledger-s1")] == [people[0], people[3]]
    assert [e.data["appointment_id"] for e in p.memory.read_stream("ledger-s1")] == \
        [answers[0]["appointment_id"], answers[3]["appointment_id"]]
    assert len(p.memory.read_stream("ledger-s2")) == 1


def test_a_batch_of_a_full_session_reads_its_keys_in_one_lookup_and_a_winner_repeating_gets_its_booking(p):
    p.session("s1", web=1)
    people = [p.patient(n) for n in range(1, 40)]
    first = p.book(people[0], "s1", "key-first-0001")
    with pytest.raises(SessionFull):
        p.book(people[1], "s1", "key-late-0001")  # this process now knows the session is full
    p.store = CountingStore(p.memory)
    commands = [_command(a, "s1", f"key-crowd-{i:04d}") for i, a in enumerate(people[2:])]
    commands.insert(5, _command(people[0], "s1", "key-first-0001"))  # the winner's retry
    head = p.memory.head()
    answers = handlers.book_many(commands, p.deps(), run_all=_serial)
    assert answers[5] == first.model_dump(mode="json")
    assert [a["domain_error"]["code"] for i, a in enumerate(answers) if i != 5] == ["session_full"] * 37
    assert p.store.reads == 0  # no ledger or patient read; the keys in one get_events
    assert p.memory.head() == head


def test_a_batch_that_finds_its_cached_ledger_stale_refreshes_it_once_and_books_no_more_than_the_quota(p):
    p.session("s1", web=3)
    people = [p.patient(n) for n in range(1, 21)]
    answers = handlers.book_many([_command(a, "s1", f"key-{i:04d}") for i, a in enumerate(people)], p.deps(),
                                 run_all=_serial)
    assert sum("appointment_id" in a for a in answers) == 3
    assert sum(a.get("domain_error", {}).get("code") == "session_full" for a in answers) == 17
    assert len(p.memory.read_stream("ledger-s1")) == 3
