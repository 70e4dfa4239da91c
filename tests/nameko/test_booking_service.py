"""The booking service in a real nameko container against real PostgreSQL and RabbitMQ: every
lifecycle path, idempotency, the doctor-stop reaction (with redelivery), no-shows and bans.

Schedule's sessions are appended to the real event store, where booking's read-model projection
finds them (as schedule's own appends would be), with session times arranged around the real
clock; the doctor stop is handed to booking's event-handler entrypoint (entrypoint_hook), the
way the relay would deliver it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import eventlet
import eventlet.event
import pytest
from nameko.extensions import Entrypoint
from nameko.testing.services import entrypoint_hook
from nameko.testing.utils import get_extension

from contracts import Envelope, from_wire
from infra.eventstore import PostgresEventStore
from services.booking.domain import HOSPITAL_TZ
from services.booking.service import BookingService
from tests.conftest import with_check_digit

pytestmark = pytest.mark.integration



def resident_id(n: int) -> str:
    body = f"130102{1960 + n % 40:04d}0{1 + n % 9}1{n % 10}{n % 1000:03d}"[:17]
    return with_check_digit(body)


def phone(n: int) -> str:
    return f"139{n:08d}"


@pytest.fixture
def booking(container_factory, rabbit_config, unique_name):
    class Booking(BookingService):
        name = unique_name("booking")

    container = container_factory(Booking, rabbit_config)
    container.start()
    return container


def rpc(container, method: str, *args: Any) -> Any:
    with entrypoint_hook(container, method) as call:
        answer = call(*args)
    return answer


def concurrent_rpc(container, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
    """Workers of `method` running at once, each answer its own (entrypoint_hook cannot: its waiter
    answers every hook with the first worker of the method that finishes)."""
    entrypoint = get_extension(container, Entrypoint, method_name=method)
    done = [eventlet.event.Event() for _ in calls]
    for ev, args in zip(done, calls, strict=True):
        def handle_result(worker_ctx: Any, result: Any, exc_info: Any, ev: Any = ev) -> Any:
            ev.send(exc_info[1] if exc_info else result)
            return result, exc_info
        container.spawn_worker(entrypoint, args, {}, handle_result=handle_result)
    answers = [ev.wait() for ev in done]
    assert not any(isinstance(a, BaseException) for a in answers), answers
    return answers


def ok(answer: Any) -> Any:
    err = from_wire(answer)
    assert err is None, f"refused: {err.code} {err.message}" if err else ""
    return answer


def refused(answer: Any) -> str:
    err = from_wire(answer)
    assert err is not None, f"expected a refusal, got {answer!r}"
    return err.code


def envelope(event_type: str, data: dict[str, Any], source: str = "schedule") -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": event_type, "schema_version": 1, "stream": f"x-{uuid.uuid4()}",
            "source": source, "occurred_at": datetime.now(UTC).isoformat(), "correlation_id": "test",
            "causation_id": None, "actor": {"kind": "system", "id": "platform", "hospital_id": None}, "data": data}


def session_event(session_id: str, *, day: str | None = None, quota: dict[str, int] | None = None,
                  opens: timedelta = timedelta(days=-1), closes: timedelta = timedelta(days=1),
                  lapse: timedelta = timedelta(days=1), department: str = "dept-a", hospital: str = "hosp-a",
                  bands: list[dict[str, Any]] | None = None, start: str = "08:00:00",
                  end: str = "11:30:00") -> dict[str, Any]:
    now = datetime.now(HOSPITAL_TZ)
    return envelope("SessionScheduled", {
        "session_id": session_id, "hospital_id": hospital, "department_id": department, "doctor_id": "doc-1",
        "doctor_name": "张医生", "doctor_title": "主任医师",
        "date": day or (now + timedelta(days=3)).date().isoformat(),
        "period": "morning", "start": start, "end": end, "capacity": 40,
        "quota": quota or {"web": 2, "phone": 1, "window": 0}, "fee": "50.00",
        "opens_at": (now + opens).isoformat(), "closes_at": (now + closes).isoformat(),
        "lapse_at": (now + lapse).isoformat(), "time_bands": bands or [],
    })


def scheduled(container, env: dict[str, Any]) -> None:
    """Append schedule's event to the store and wait until booking's projection has it."""
    store = PostgresEventStore(container.config["EVENTSTORE_DSN"], pool_size=1)
    try:
        store.append_to(env["stream"], None, Envelope.model_validate(env))
    finally:
        store.close()
    session_id = env["data"]["session_id"]
    deadline = time.monotonic() + 20
    while not rpc(container, "session_availability", session_id)["known"]:
        assert time.monotonic() < deadline, f"booking never learned session {session_id}"
        time.sleep(0.05)


def register(container, n: int) -> str:
    answer = ok(rpc(container, "register_patient", {
        "name": f"患者{n}", "id_number": resident_id(n), "phone": phone(n), "idempotency_key": f"reg-{n}-0000"}))
    return str(answer["patient_id"])


def book(container, patient_id: str, session_id: str, key: str, channel: str = "web") -> Any:
    return rpc(container, "book_appointment", {"session_id": session_id, "patient_id": patient_id,
                                               "channel": channel, "idempotency_key": key})


def test_book_repeat_full_cancel_and_rebook(booking, rabbit_config):
    scheduled(booking, session_event("s1", bands=[
        {"start": "08:00:00", "end": "08:30:00", "numbers": 1}, {"start": "08:30:00", "end": "09:00:00",
                                                                 "numbers": 5}]))
    p1, p2, p3 = (register(booking, n) for n in (1, 2, 3))

    first = ok(book(booking, p1, "s1", "key-p1-0001"))
    assert first["sequence_number"] == 1 and first["arrival_window"] == "08:00-08:30"
    assert ok(book(booking, p1, "s1", "key-p1-0001")) == first, "a repeated key must answer the same"
    assert refused(book(booking, p1, "s1", "key-p1-0002")) == "already_booked"
    second = ok(book(booking, p2, "s1", "key-p2-0001"))
    assert second["sequence_number"] == 2 and second["arrival_window"] == "08:30-09:00"
    assert refused(book(booking, p3, "s1", "key-p3-0001")) == "session_full"
    phone_booking = ok(book(booking, p3, "s1", "key-p3-0002", channel="phone"))
    assert phone_booking["paid"] is True

    store = PostgresEventStore(rabbit_config["EVENTSTORE_DSN"])
    assert [e.type for e in store.read_stream("ledger-s1")] == ["AppointmentBooked"] * 3

    # another patient cannot cancel p1's booking, and learns nothing about it
    cancel = {"appointment_id": first["appointment_id"], "idempotency_key": "cancel-0001"}
    assert refused(rpc(booking, "cancel_appointment", {**cancel, "actor": {"kind": "patient", "id": p2}})) \
        == "not_found"
    done = ok(rpc(booking, "cancel_appointment", {**cancel, "actor": {"kind": "patient", "id": p1}}))
    assert done["status"] == "cancelled" and done["refund_due"] is None
    again = ok(rpc(booking, "cancel_appointment", {**cancel, "actor": {"kind": "patient", "id": p1}}))
    assert again["status"] == "cancelled"
    assert refused(rpc(booking, "cancel_appointment", {**cancel, "idempotency_key": "cancel-0002",
                                                       "actor": {"kind": "patient", "id": p1}})) \
        == "invalid_transition"

    # p3 still holds the phone booking: one booking per session
    assert refused(book(booking, p3, "s1", "key-p3-0003")) == "already_booked"
    # the phone booking's refund is due when it is cancelled by an operator
    op = ok(rpc(booking, "cancel_appointment", {"appointment_id": phone_booking["appointment_id"],
                                               "idempotency_key": "cancel-0003",
                                               "actor": {"kind": "operator", "id": "op-7"}}))
    assert op["refund_due"] == "50.00"
    # the freed web slot goes to p3 with a new number (numbers are never reused)
    third = ok(book(booking, p3, "s1", "key-p3-0004"))
    assert third["sequence_number"] == 4
    types = [e.type for e in store.read_stream("ledger-s1")]
    assert types.count("AppointmentBooked") == 4 and types.count("AppointmentCancelled") == 2
    patient_stream = [e.type for e in store.read_stream(f"patient-{p1}")]
    assert patient_stream == ["PatientRegistered", "PatientAppointmentsChanged", "PatientAppointmentsChanged"]
    store.close()


def test_concurrent_batches_book_exactly_the_quota_and_a_winner_repeating_in_a_batch_gets_its_booking(booking):
    """The gateway's batcher sends bookings in `book_appointments` requests, several in flight at
    once: exactly the quota is booked, every other answer is "full", each in its place."""
    scheduled(booking, session_event("crowd", quota={"web": 5, "phone": 0, "window": 0}))
    people = [register(booking, 200 + n) for n in range(45)]

    def command(p: str, key: str) -> dict[str, Any]:
        return {"session_id": "crowd", "patient_id": p, "channel": "web", "idempotency_key": key,
                "actor": {"kind": "patient", "id": p}}

    batches = [[command(p, f"crowd-{b}-{i:03d}") for i, p in enumerate(people[b::3])] for b in range(3)]
    answers = concurrent_rpc(booking, "book_appointments", [(batch,) for batch in batches])
    assert [len(a) for a in answers] == [len(b) for b in batches]
    flat = [a for batch in answers for a in batch]
    booked = [a for a in flat if "appointment_id" in a]
    assert len(booked) == 5, str([from_wire(a).code if from_wire(a) else a["sequence_number"] for a in flat])
    assert all(refused(a) == "session_full" for a in flat if "appointment_id" not in a)
    assert sorted(a["sequence_number"] for a in booked) == [1, 2, 3, 4, 5]
    store = PostgresEventStore(booking.config["EVENTSTORE_DSN"], pool_size=1)
    try:
        ledger = store.read_stream("ledger-crowd")
    finally:
        store.close()
    assert sorted(e.data["appointment_id"] for e in ledger) == sorted(a["appointment_id"] for a in booked)
    # a winner's retry, in a later batch of losers, answers its own booking
    b, i = next((b, i) for b, batch in enumerate(answers) for i, a in enumerate(batch) if "appointment_id" in a)
    again = rpc(booking, "book_appointments", [command(people[50 % 45], "crowd-late-001"), batches[b][i]])
    assert refused(again[0]) in ("session_full", "already_booked")
    assert again[1] == answers[b][i]
    assert refused(rpc(booking, "book_appointments", [batches[0][0]] * 201)) == "invalid_input"


def test_booking_window_and_unknown_things_are_refused(booking):
    scheduled(booking, session_event("later", opens=timedelta(days=2), closes=timedelta(days=3)))
    scheduled(booking, session_event("past", opens=timedelta(days=-3), closes=timedelta(hours=-1)))
    p = register(booking, 11)
    assert refused(book(booking, p, "later", "k-later-01")) == "not_open"
    assert refused(book(booking, p, "past", "k-past-001")) == "closed"
    assert refused(book(booking, p, "nope", "k-nope-001")) == "not_found"
    assert refused(book(booking, "no-such-patient", "later", "k-nobody-1")) == "not_found"
    assert refused(rpc(booking, "book_appointment", {"session_id": "later", "patient_id": p})) == "invalid_input"
    assert refused(rpc(booking, "register_patient", {"name": "x", "id_number": resident_id(12)[:17] + "0",
                                                     "phone": phone(12), "idempotency_key": "reg-bad-01"})) \
        in ("invalid_input",)


def test_check_in_by_the_right_clerk_with_the_right_id(booking):
    today = datetime.now(HOSPITAL_TZ).date().isoformat()
    scheduled(booking, session_event("today", day=today, lapse=timedelta(hours=2)))
    p = register(booking, 21)
    b = ok(book(booking, p, "today", "k-today-01"))
    base = {"code": b["code"], "idempotency_key": "checkin-01"}
    clerk = {"kind": "clerk", "id": "clerk-1", "hospital_id": "hosp-a"}
    other = {"kind": "clerk", "id": "clerk-9", "hospital_id": "hosp-b"}
    assert refused(rpc(booking, "check_in", {**base, "id_number": resident_id(21), "actor": other})) == "not_found"
    assert refused(rpc(booking, "check_in", {**base, "id_number": resident_id(22), "actor": clerk})) \
        == "id_mismatch"
    done = ok(rpc(booking, "check_in", {**base, "id_number": resident_id(21), "actor": clerk}))
    assert done == {"appointment_id": b["appointment_id"], "status": "checked_in", "fee_taken": "50.00"}
    assert rpc(booking, "session_availability", "today")["remaining"]["web"] == 1, "a check-in freed its place"
    assert refused(rpc(booking, "check_in", {**base, "idempotency_key": "checkin-02", "id_number": resident_id(21),
                                             "actor": clerk})) == "invalid_transition"


def test_no_shows_lapse_and_the_third_bans(booking, wait_for):
    p = register(booking, 31)
    now = datetime.now(HOSPITAL_TZ)
    for i in range(3):
        day = (now + timedelta(days=i + 1)).date().isoformat()
        scheduled(booking, session_event(f"ns{i}", day=day, department=f"dept-{i}",
                                                           lapse=timedelta(seconds=2)))
        ok(book(booking, p, f"ns{i}", f"k-ns-{i}-0001"))
    scheduled(booking, session_event("after", department="dept-x"))

    def all_lapsed() -> bool:
        rpc(booking, "lapse_due_appointments")
        mine = ok(rpc(booking, "appointments_of", p))
        return [a["status"] for a in mine["appointments"]] == ["no_show"] * 3 and mine["banned_until"] is not None

    wait_for(all_lapsed, 30, "three no-shows and a ban", interval=0.5)
    assert rpc(booking, "session_availability", "ns0")["remaining"]["web"] == 1, "a no-show freed its place"
    until = ok(rpc(booking, "appointments_of", p))["banned_until"]
    assert until == (now.date() + timedelta(days=90)).isoformat()
    assert refused(book(booking, p, "after", "k-after-001")) == "banned"


def test_doctor_stop_moves_in_order_cancels_the_overflow_once(booking, rabbit_config):
    scheduled(booking, session_event("stopped", quota={"web": 5, "phone": 0, "window": 0}))
    scheduled(booking, session_event("repl", quota={"web": 2, "phone": 0, "window": 0},
                                                       department="dept-r"))
    patients = [register(booking, 40 + i) for i in range(3)]
    answers = [ok(book(booking, p, "stopped", f"k-stop-{i}-01")) for i, p in enumerate(patients)]
    stop = envelope("DoctorStopApproved", {"stop_id": "stop-1", "session_id": "stopped", "hospital_id": "hosp-a",
                                           "reason": "会议", "approved_by": "admin-1",
                                           "replacement_session_id": "repl"})
    rpc(booking, "on_doctor_stop_approved", stop)
    rpc(booking, "on_doctor_stop_approved", {**stop, "event_id": str(uuid.uuid4())})  # a redelivery as a new copy
    rpc(booking, "on_doctor_stop_approved", stop)

    store = PostgresEventStore(rabbit_config["EVENTSTORE_DSN"])
    old = [e for e in store.read_stream("ledger-stopped")]
    new = [e for e in store.read_stream("ledger-repl")]
    store.close()
    assert [e.type for e in old].count("SessionStopApplied") == 1
    moved = [e.data for e in new if e.type == "AppointmentMoved"]
    assert [m["appointment_id"] for m in moved] == [a["appointment_id"] for a in answers[:2]]
    assert [m["sequence_number"] for m in moved] == [1, 2]
    assert [m["code"] for m in moved] == [a["code"] for a in answers[:2]]
    cancelled = [e.data for e in old if e.type == "AppointmentCancelled"]
    assert [(c["appointment_id"], c["reason"]) for c in cancelled] == [(answers[2]["appointment_id"], "doctor_stop")]
    assert refused(book(booking, register(booking, 49), "stopped", "k-stop-late")) == "session_stopped"


def test_accounts_refused_registration_reset_and_a_scoped_lookup(booking, rabbit_config):
    owner = register(booking, 51)
    stranger = {"name": "冒名", "id_number": resident_id(51), "phone": phone(59), "idempotency_key": "reg-51-other"}
    answer = rpc(booking, "register_patient", stranger)
    err = from_wire(answer)
    assert err is not None and (err.code, err.field) == ("already_registered", "id_number")
    assert phone(51)[:3] + "****" + phone(51)[-4:] in err.message
    assert refused(rpc(booking, "register_patient", stranger)) == "already_registered"  # a retry
    store = PostgresEventStore(rabbit_config["EVENTSTORE_DSN"])
    try:
        assert [e.type for e in store.read_stream(f"patient-{owner}")] == [
            "PatientRegistered", "PatientRegistrationRefused"]

        cmd = {"id_number": resident_id(51), "phone": phone(51), "password": "new-secret-51",
               "idempotency_key": "reset-51-0001"}
        done = ok(rpc(booking, "reset_patient_password", cmd))
        assert done == {"patient_id": owner, "phone_masked": phone(51)[:3] + "****" + phone(51)[-4:]}
        assert ok(rpc(booking, "reset_patient_password", cmd)) == done
        assert ok(rpc(booking, "authenticate_patient", phone(51), "new-secret-51"))["patient_id"] == owner
        assert refused(rpc(booking, "reset_patient_password", {**cmd, "phone": phone(52)})) == "no_such_account"
        assert refused(rpc(booking, "reset_patient_password", {**cmd, "id_number": resident_id(53)})) \
            == "no_such_account"
        assert refused(rpc(booking, "reset_patient_password", {**cmd, "password": "11111111"})) == "weak_password"
        assert [e.type for e in store.read_stream(f"patient-{owner}")].count("PatientPasswordReplaced") == 1
    finally:
        store.close()

    scheduled(booking, session_event("acc-s1", hospital="hosp-a"))
    ok(book(booking, owner, "acc-s1", "k-acc-51-01"))
    clerk_a = {"kind": "clerk", "id": "clerk-a", "hospital_id": "hosp-a"}
    clerk_b = {"kind": "clerk", "id": "clerk-b", "hospital_id": "hosp-b"}
    assert ok(rpc(booking, "find_patient", resident_id(51), clerk_a))["patient_id"] == owner
    assert refused(rpc(booking, "find_patient", resident_id(51), clerk_b)) == "not_found"
    assert ok(rpc(booking, "find_patient", resident_id(51), {"kind": "operator", "id": "op-1"}))["patient_id"] \
        == owner
    assert ok(rpc(booking, "find_patient", resident_id(51)))["patient_id"] == owner  # today's gateway


def test_a_replayed_cancel_or_check_in_tells_a_stranger_nothing(booking):
    today = datetime.now(HOSPITAL_TZ).date().isoformat()
    scheduled(booking, session_event("replay", day=today, lapse=timedelta(hours=2),
                                     quota={"web": 2, "phone": 2, "window": 0}))
    a, b = register(booking, 61), register(booking, 62)
    paid = ok(rpc(booking, "book_appointment", {"session_id": "replay", "patient_id": a, "channel": "phone",
                                                "idempotency_key": "k-replay-a1",
                                                "actor": {"kind": "operator", "id": "op-1"}}))
    cancel = {"appointment_id": paid["appointment_id"], "idempotency_key": f"cancel:{paid['appointment_id']}"}
    assert ok(rpc(booking, "cancel_appointment", {**cancel, "actor": {"kind": "patient", "id": a}}))["refund_due"] \
        == "50.00"
    assert refused(rpc(booking, "cancel_appointment", {**cancel, "actor": {"kind": "patient", "id": b}})) \
        == "not_found"

    web = ok(book(booking, a, "replay", "k-replay-a2"))
    check_in = {"code": web["code"], "id_number": resident_id(61), "idempotency_key": "checkin-replay-1"}
    clerk = {"kind": "clerk", "id": "clerk-1", "hospital_id": "hosp-a"}
    assert ok(rpc(booking, "check_in", {**check_in, "actor": clerk}))["status"] == "checked_in"
    assert refused(rpc(booking, "check_in", {**check_in, "actor": {**clerk, "hospital_id": "hosp-b"}})) \
        == "not_found"


def later_today(minutes: float) -> str:
    moment = datetime.now(HOSPITAL_TZ) + timedelta(minutes=minutes)
    if moment.date() != datetime.now(HOSPITAL_TZ).date():
        pytest.skip("the last 20 minutes of the day (Asia/Shanghai): no session can start and end later today")
    return moment.strftime("%H:%M:00")


def test_refund_at_the_window_frees_the_place_before_the_start_and_the_window_sees_it(booking):
    today = datetime.now(HOSPITAL_TZ).date().isoformat()
    start, end = later_today(10), later_today(20)
    scheduled(booking, session_event("refund-s", day=today, start=start, end=end, lapse=timedelta(hours=2),
                                     quota={"web": 1, "phone": 1, "window": 0}))
    a, b = register(booking, 71), register(booking, 72)
    operator = {"kind": "operator", "id": "op-1"}
    paid = ok(rpc(booking, "book_appointment", {"session_id": "refund-s", "patient_id": a, "channel": "phone",
                                                "idempotency_key": "k-refund-a1", "actor": operator}))
    web = ok(book(booking, b, "refund-s", "k-refund-b1"))
    assert rpc(booking, "session_availability", "refund-s")["remaining"] == {"web": 0, "phone": 0, "window": 0}

    clerk = {"kind": "clerk", "id": "clerk-1", "hospital_id": "hosp-a"}
    other = {"kind": "clerk", "id": "clerk-9", "hospital_id": "hosp-b"}
    cmd = {"code": paid["code"], "reason": "患者临时有事", "idempotency_key": "refund-0001"}
    assert refused(rpc(booking, "refund_at_window", {**cmd, "actor": other})) == "not_found"
    assert refused(rpc(booking, "refund_at_window", {**cmd, "code": web["code"], "actor": clerk})) == "not_refundable"
    done = ok(rpc(booking, "refund_at_window", {**cmd, "actor": clerk}))
    assert done == {"appointment_id": paid["appointment_id"], "status": "refunded", "refund_due": "50.00",
                    "place_released": True}
    assert ok(rpc(booking, "refund_at_window", {**cmd, "actor": clerk})) == done
    assert refused(rpc(booking, "refund_at_window", {**cmd, "actor": other})) == "not_found"  # scope before repeat
    assert refused(rpc(booking, "refund_at_window", {**cmd, "idempotency_key": "refund-0002", "actor": clerk})) \
        == "not_refundable"
    assert refused(rpc(booking, "refund_at_window", {**cmd, "code": "ABC", "actor": clerk})) == "invalid_input"
    assert rpc(booking, "session_availability", "refund-s")["remaining"]["phone"] == 1

    # every read model says refunded
    mine = ok(rpc(booking, "appointments_of", a))["appointments"]
    assert [x["status"] for x in mine] == ["refunded"]
    listed = ok(rpc(booking, "session_list", "refund-s", clerk))
    assert {x["appointment_id"]: x["status"] for x in listed} == {paid["appointment_id"]: "refunded",
                                                                  web["appointment_id"]: "booked"}
    row = ok(rpc(booking, "appointment_by_code", paid["code"].lower(), clerk))
    assert (row["status"], row["label"], row["doctor_name"], row["name_masked"]) == ("refunded", "已退号", "张医生",
                                                                                   "患***")
    assert refused(rpc(booking, "appointment_by_code", paid["code"], other)) == "not_found"
    day = ok(rpc(booking, "hospital_day_list", "hosp-a", today, clerk))
    assert [(x["code"], x["label"]) for x in day] == [(paid["code"], "已退号"), (web["code"], "待取号")]
    assert "患者71" not in str(day) and resident_id(71) not in str(day) and phone(71) not in str(day)
    assert refused(rpc(booking, "hospital_day_list", "hosp-a", "2025-13-01", clerk)) == "invalid_input"
    assert refused(rpc(booking, "hospital_day_list", "hosp-b", today, clerk)) == "forbidden"
    found = ok(rpc(booking, "patient_bookings_at", resident_id(71), "hosp-a", clerk))
    assert found["patient"] == {"patient_id": a, "id_masked": resident_id(71)[:6] + "********" + resident_id(71)[-4:],
                                "phone_masked": phone(71)[:3] + "****" + phone(71)[-4:], "name_masked": "患***"}
    assert [x["status"] for x in found["appointments"]] == ["refunded"]
    assert refused(rpc(booking, "patient_bookings_at", resident_id(79), "hosp-a", clerk)) == "not_found"
    assert refused(rpc(booking, "patient_bookings_at", "12345", "hosp-a", clerk)) == "invalid_input"

    # the released place is bookable again (a new number), and the one it went to holds it
    again = ok(rpc(booking, "book_appointment", {"session_id": "refund-s", "patient_id": register(booking, 73),
                                                 "channel": "phone", "idempotency_key": "k-refund-c1",
                                                 "actor": operator}))
    assert again["sequence_number"] == 3


def test_a_refund_is_on_the_visit_day_only(booking):
    scheduled(booking, session_event("refund-later", quota={"web": 1, "phone": 1, "window": 0}))
    a = register(booking, 74)
    paid = ok(rpc(booking, "book_appointment", {"session_id": "refund-later", "patient_id": a, "channel": "phone",
                                                "idempotency_key": "k-refund-l1",
                                                "actor": {"kind": "operator", "id": "op-1"}}))
    assert refused(rpc(booking, "refund_at_window", {
        "code": paid["code"], "reason": "改期", "idempotency_key": "refund-l-0001",
        "actor": {"kind": "hospital_admin", "id": "admin-1", "hospital_id": "hosp-a"}})) == "not_visit_day"
