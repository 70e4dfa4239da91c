"""Booking rules: resident IDs (GB 11643-1999), the ledger and patient aggregates folded from events,
and every decision of the appointment lifecycle (book, cancel, check in, lapse, ban, doctor stop)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest

from contracts import (
    Actor,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    BookAppointment,
    BookingRules,
    Conflict,
    Event,
    Forbidden,
    InvalidInput,
    NotFound,
    PatientAppointmentsChanged,
    PatientBanned,
    PatientRegistered,
    SessionFull,
    SessionStopApplied,
)
from services.booking.domain import (
    CODE_ALPHABET,
    HOSPITAL_TZ,
    Booking,
    Ledger,
    NoShowRules,
    PatientRecord,
    Refused,
    SessionInfo,
    apply_stop,
    authorize_hospital_read,
    authorize_read_by_code,
    ban_after_no_show,
    book,
    cancel,
    check_in,
    lapse,
    mask_name,
    new_code,
    parse_resident_id,
    refund_at_window,
    valid_code,
    valid_day,
    window_row,
)

pytestmark = pytest.mark.unit

TODAY = date(2025, 3, 1)


def iso7064_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 as the standard states it: weight 2^(17-i) mod 11, check = (12 - S mod 11) mod 11.

    Written from the formula, not from a lookup table, so that it is independent of the code under test.
    """
    s = sum(int(ch) * pow(2, 17 - i, 11) for i, ch in enumerate(first17))
    value = (12 - s % 11) % 11
    return "X" if value == 10 else str(value)


def make_id(region: str, birth: str, order: str) -> str:
    first17 = region + birth + order
    return first17 + iso7064_check(first17)


def wrong_check(number: str) -> str:
    right = number[17]
    replacement = "0" if right != "0" else "1"
    return number[:17] + replacement


# --- resident IDs --------------------------------------------------------------------------------


def test_reference_check_algorithm_agrees_with_the_published_sample():
    # The example of GB 11643-1999 itself; guards the independent helper above.
    assert iso7064_check("11010519491231002") == "X"


def test_published_sample_with_check_x_is_accepted_with_its_birth_date_and_sex():
    rid = parse_resident_id("11010519491231002X", today=TODAY)
    assert rid.number == "11010519491231002X"
    assert rid.birth_date == date(1949, 12, 31)
    assert rid.sex == "F"  # order 002: 17th digit 2 is even


def test_lower_case_x_and_surrounding_spaces_are_normalised():
    rid = parse_resident_id("  11010519491231002x ", today=TODAY)
    assert rid.number == "11010519491231002X"


@pytest.mark.parametrize(
    ("order", "sex"),
    [("001", "M"), ("013", "M"), ("999", "M"), ("002", "F"), ("010", "F"), ("998", "F")],
)
def test_sex_follows_the_parity_of_the_17th_digit(order, sex):
    number = make_id("130102", "19850615", order)
    rid = parse_resident_id(number, today=TODAY)
    assert rid.sex == sex
    assert rid.birth_date == date(1985, 6, 15)


def test_many_generated_ids_with_every_check_value_are_accepted():
    seen_checks = set()
    for order in range(100, 160):
        number = make_id("130602", "20000229", f"{order:03d}")
        seen_checks.add(number[17])
        assert parse_resident_id(number, today=TODAY).number == number
    # The sample must have exercised X as well as digits, or the test proves less than it claims.
    assert "X" in seen_checks
    assert len(seen_checks) >= 8


@pytest.mark.parametrize(
    "number",
    ["11010519491231002X", make_id("130102", "19850615", "001"), make_id("130602", "20000229", "123")],
)
def test_wrong_check_digit_is_refused(number):
    with pytest.raises(InvalidInput) as exc:
        parse_resident_id(wrong_check(number), today=TODAY)
    assert exc.value.field == "id_number"
    assert "check" in exc.value.message


def test_a_digit_where_x_belongs_is_refused():
    with pytest.raises(InvalidInput):
        parse_resident_id("110105194912310020", today=TODAY)


@pytest.mark.parametrize(
    "raw",
    [
        "11010519491231002",  # 17 characters
        "11010519491231002X0",  # 19 characters
        "",
        "1101051949123100AX",  # letter among the first 17
        "X1010519491231002X",
        "11010519491231002Y",  # check char neither digit nor X
    ],
)
def test_malformed_ids_are_refused_naming_the_field(raw):
    with pytest.raises(InvalidInput) as exc:
        parse_resident_id(raw, today=TODAY)
    assert exc.value.field == "id_number"
    assert exc.value.status == 400


@pytest.mark.parametrize("birth", ["19990230", "19991301", "19990000", "20010229"])
def test_impossible_birth_date_is_refused_even_with_a_valid_check_digit(birth):
    number = make_id("130102", birth, "011")
    with pytest.raises(InvalidInput) as exc:
        parse_resident_id(number, today=TODAY)
    assert exc.value.field == "id_number"
    assert "birth" in exc.value.message


def test_future_birth_date_is_refused_but_today_is_accepted():
    tomorrow = make_id("130102", "20250302", "011")
    with pytest.raises(InvalidInput) as exc:
        parse_resident_id(tomorrow, today=TODAY)
    assert "birth" in exc.value.message

    born_today = make_id("130102", "20250301", "011")
    assert parse_resident_id(born_today, today=TODAY).birth_date == TODAY


# --- fakes and builders --------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeEnvelope:
    type: str
    data: dict[str, Any]
    version: int


Aggregate = TypeVar("Aggregate", Ledger, PatientRecord)


def fold(aggregate: Aggregate, *events: Event) -> Aggregate:
    """Apply events as the store hands them back: JSON data, each at the stream's next version."""
    for ev in events:
        aggregate.apply(FakeEnvelope(ev.type_name(), ev.model_dump(mode="json"), aggregate.version + 1))
    return aggregate


OPENS_AT = datetime(2025, 3, 3, 8, 0, tzinfo=HOSPITAL_TZ)
CLOSES_AT = datetime(2025, 3, 9, 16, 0, tzinfo=HOSPITAL_TZ)
LAPSE_AT = datetime(2025, 3, 10, 11, 0, tzinfo=HOSPITAL_TZ)
OPEN = datetime(2025, 3, 5, 10, 0, tzinfo=HOSPITAL_TZ)  # booking is open
VISIT = datetime(2025, 3, 10, 8, 30, tzinfo=HOSPITAL_TZ)  # the visit morning, before the lapse time
SECOND = timedelta(seconds=1)
RULES = BookingRules()  # max_active 5, max_per_day 2, max_per_department_day 1

SESSION_ID = "s-hb3-card-0310-am"
BANDS = [
    {"start": "08:00:00", "end": "09:00:00", "numbers": 2},
    {"start": "09:00:00", "end": "10:30:00", "numbers": 3},
]
CLERK = Actor(kind="clerk", id="clerk-7", hospital_id="hb3")
OPERATOR = Actor(kind="operator", id="op-12580")


def make_session(**changes: Any) -> SessionInfo:
    base = SessionInfo(
        session_id=SESSION_ID,
        hospital_id="hb3",
        department_id="hb3-card",
        doctor_id="dr-wang",
        date="2025-03-10",
        period="morning",
        start="08:00:00",
        end="12:00:00",
        fee="50.00",
        quota={"web": 3, "phone": 2, "window": 1},
        opens_at=OPENS_AT,
        closes_at=CLOSES_AT,
        lapse_at=LAPSE_AT,
        time_bands=[dict(b) for b in BANDS],
    )
    return replace(base, **changes)


def registered(patient_id: str = "p1") -> PatientRecord:
    return fold(
        PatientRecord(),
        PatientRegistered(
            patient_id=patient_id, id_masked="130102********0011", phone_masked="138****0000",
            birth_date="1985-06-15", sex="M",
        ),
    )


def command(patient_id: str = "p1", channel: str = "web", session_id: str = SESSION_ID,
            operator_id: str | None = None) -> BookAppointment:
    return BookAppointment(
        idempotency_key=f"key-{patient_id}-{channel}", session_id=session_id, patient_id=patient_id,
        channel=channel, operator_id=operator_id,
    )


def held(appointment_id: str, day: str = "2025-03-10", department_id: str = "hb3-derm", active: bool = True,
         outcome: str = "booked", patient_id: str = "p1") -> PatientAppointmentsChanged:
    """An appointment the patient holds in some other session."""
    return PatientAppointmentsChanged(
        patient_id=patient_id, appointment_id=appointment_id, session_id=f"s-{appointment_id}", hospital_id="hb5",
        department_id=department_id, date=day, active=active, outcome=outcome,
    )


class Clinic:
    """One session's ledger and its patients' records kept in memory as the handlers keep the streams:
    every decision's events are folded back into the aggregates they would be appended to."""

    def __init__(self, session: SessionInfo | None = None, rules: BookingRules = RULES) -> None:
        self.session = session or make_session()
        self.rules = rules
        self.ledger = Ledger()
        self.patients: dict[str, PatientRecord] = {}

    def patient(self, patient_id: str) -> PatientRecord:
        if patient_id not in self.patients:
            self.patients[patient_id] = registered(patient_id)
        return self.patients[patient_id]

    def booking(self, appointment_id: str) -> Booking:
        return self.ledger.bookings[appointment_id]

    def book(self, patient_id: str, channel: str = "web", now: datetime = OPEN) -> AppointmentBooked:
        appointment_id = f"a{len(self.ledger.bookings) + 1}-{patient_id}"
        booked, change = book(command(patient_id, channel, self.session.session_id), self.session, self.ledger,
                              self.patient(patient_id), self.rules, now, appointment_id, new_code())
        fold(self.ledger, booked)
        fold(self.patient(patient_id), change)
        return booked

    def cancel(self, appointment_id: str, now: datetime = OPEN) -> AppointmentCancelled:
        b = self.booking(appointment_id)
        cancelled, change = cancel(b, self.session, Actor(kind="patient", id=b.patient_id), now)
        fold(self.ledger, cancelled)
        fold(self.patient(b.patient_id), change)
        return cancelled

    def check_in(self, appointment_id: str, now: datetime = VISIT) -> AppointmentCheckedIn:
        b = self.booking(appointment_id)
        checked_in, change = check_in(b, self.session, CLERK, True, now)
        fold(self.ledger, checked_in)
        fold(self.patient(b.patient_id), change)
        return checked_in

    def refund(self, appointment_id: str, now: datetime = VISIT, clerk: Actor = CLERK) -> AppointmentRefunded:
        b = self.booking(appointment_id)
        refunded, change = refund_at_window(b, self.session, clerk, "患者身体不适", now)
        fold(self.ledger, refunded)
        fold(self.patient(b.patient_id), change)
        return refunded


# --- book: refusals before any counting ----------------------------------------------------------


def test_unknown_session_is_not_found_on_session_id():
    with pytest.raises(NotFound) as exc:
        book(command(), None, Ledger(), registered(), RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.field == "session_id"
    assert exc.value.status == 404


def test_unknown_patient_is_not_found_on_patient_id():
    assert not PatientRecord().exists
    with pytest.raises(NotFound) as exc:
        book(command(), make_session(), Ledger(), PatientRecord(), RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.field == "patient_id"


def test_a_stopped_session_refuses_bookings():
    with pytest.raises(Refused) as exc:
        book(command(), make_session(stopped=True), Ledger(), registered(), RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.code == "session_stopped"
    assert exc.value.status == 422


def test_a_ledger_that_applied_a_stop_refuses_bookings_even_if_the_session_row_is_not_marked_yet():
    ledger = fold(Ledger(), SessionStopApplied(stop_id="st1", session_id=SESSION_ID, replacement_session_id=None,
                                               moved=0, cancelled=0))
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), ledger, registered(), RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.code == "session_stopped"


def test_before_opening_is_refused_naming_the_local_opening_time():
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), registered(), RULES, OPENS_AT - SECOND, "a1", "ABCD2345")
    assert exc.value.code == "not_open"
    assert "2025-03-03 08:00" in exc.value.message


def test_the_opening_time_is_shown_in_hospital_time_even_when_stored_in_utc():
    session = make_session(opens_at=OPENS_AT.astimezone(UTC))  # 2025-03-03 00:00 UTC
    with pytest.raises(Refused) as exc:
        book(command(), session, Ledger(), registered(), RULES, OPENS_AT - timedelta(hours=1), "a1", "ABCD2345")
    assert "2025-03-03 08:00" in exc.value.message
    assert "00:00" not in exc.value.message


def test_booking_is_possible_from_the_opening_second_until_just_before_closing():
    clinic = Clinic()
    assert clinic.book("p1", now=OPENS_AT).sequence_number == 1
    assert clinic.book("p2", now=CLOSES_AT - SECOND).sequence_number == 2


@pytest.mark.parametrize("now", [CLOSES_AT, CLOSES_AT + timedelta(days=3)], ids=["at-close", "later"])
def test_at_or_after_closing_is_refused_as_closed(now):
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), registered(), RULES, now, "a1", "ABCD2345")
    assert exc.value.code == "closed"
    assert "2025-03-09 16:00" in exc.value.message


@pytest.mark.parametrize("until", [date(2025, 3, 5), date(2025, 6, 1)], ids=["ends-today", "ends-later"])
def test_a_banned_patient_is_refused_naming_the_date_the_ban_ends(until):
    patient = fold(registered(), PatientBanned(patient_id="p1", until=until.isoformat(), no_shows=3))
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), patient, RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.code == "banned"
    assert exc.value.field == "patient_id"
    assert until.isoformat() in exc.value.message


def test_a_ban_that_ended_yesterday_no_longer_refuses():
    patient = fold(registered(), PatientBanned(patient_id="p1", until="2025-03-04", no_shows=3))
    booked, _ = book(command(), make_session(), Ledger(), patient, RULES, OPEN, "a1", "ABCD2345")
    assert booked.patient_id == "p1"


def test_the_ban_is_judged_on_the_hospital_calendar_day_not_the_utc_one():
    # 00:30 on 5 March in Shanghai is still 4 March in UTC: the ban until 4 March is over.
    just_after_midnight = datetime(2025, 3, 5, 0, 30, tzinfo=HOSPITAL_TZ).astimezone(UTC)
    assert just_after_midnight.date() == date(2025, 3, 4)
    patient = fold(registered(), PatientBanned(patient_id="p1", until="2025-03-04", no_shows=3))
    booked, _ = book(command(), make_session(), Ledger(), patient, RULES, just_after_midnight, "a1", "ABCD2345")
    assert booked.sequence_number == 1


# --- book: one place per patient, per-patient limits ---------------------------------------------


def test_a_patient_already_booked_on_the_session_is_refused_as_already_booked_on_any_channel():
    clinic = Clinic()
    clinic.book("p1", "web")
    with pytest.raises(Conflict) as exc:
        clinic.book("p1", "phone")
    assert exc.value.code == "already_booked"
    assert exc.value.status == 409
    assert not isinstance(exc.value, SessionFull)


def test_a_patient_whose_booking_was_cancelled_may_book_the_session_again():
    clinic = Clinic()
    first = clinic.book("p1")
    clinic.cancel(first.appointment_id)
    again = clinic.book("p1")
    assert again.appointment_id != first.appointment_id
    assert again.sequence_number == 2


def test_max_active_bookings_across_hospitals_is_enforced():
    patient = fold(registered(), held("x1", day="2025-03-11"), held("x2", day="2025-03-12"))
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), patient, BookingRules(max_active=2), OPEN, "a1", "ABCD2345")
    assert exc.value.code == "limit_active"
    assert "2" in exc.value.message


def test_cancelled_checked_in_and_missed_appointments_do_not_count_as_active():
    patient = fold(
        registered(),
        held("x1", day="2025-03-11"),
        held("x2", day="2025-03-12"),
        held("x2", day="2025-03-12", active=False, outcome="cancelled"),  # the same appointment, later
        held("x3", day="2025-03-13", active=False, outcome="checked_in"),
        held("x4", day="2025-03-14", active=False, outcome="no_show"),
    )
    assert [a["appointment_id"] for a in patient.active()] == ["x1"]
    booked, _ = book(command(), make_session(), Ledger(), patient, BookingRules(max_active=2), OPEN, "a1", "ABCD2345")
    assert booked.patient_id == "p1"


def test_max_bookings_per_day_counts_only_the_same_date():
    two_that_day = fold(registered(), held("x1", department_id="hb3-derm"), held("x2", department_id="hb5-eye"))
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), two_that_day, RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.code == "limit_day"

    two_next_day = fold(registered(), held("x1", day="2025-03-11"), held("x2", day="2025-03-11"))
    booked, _ = book(command(), make_session(), Ledger(), two_next_day, RULES, OPEN, "a1", "ABCD2345")
    assert booked.date == "2025-03-10"


def test_max_per_day_comes_from_the_hospital_rules():
    one_that_day = fold(registered(), held("x1"))
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), one_that_day, BookingRules(max_per_day=1), OPEN, "a1", "ABCD2345")
    assert exc.value.code == "limit_day"


def test_one_booking_per_department_per_day():
    same_department = fold(registered(), held("x1", department_id="hb3-card"))  # e.g. the afternoon session
    with pytest.raises(Refused) as exc:
        book(command(), make_session(), Ledger(), same_department, RULES, OPEN, "a1", "ABCD2345")
    assert exc.value.code == "limit_department"


@pytest.mark.parametrize(
    "other",
    [
        held("x1", department_id="hb3-card", day="2025-03-11"),
        held("x1", department_id="hb3-derm"),
        held("x1", department_id="hb3-card", active=False, outcome="cancelled"),
    ],
    ids=["other-day", "other-department", "cancelled"],
)
def test_the_department_limit_ignores_other_days_other_departments_and_inactive_bookings(other):
    patient = fold(registered(), other)
    booked, _ = book(command(), make_session(), Ledger(), patient, RULES, OPEN, "a1", "ABCD2345")
    assert booked.department_id == "hb3-card"


def test_the_department_limit_comes_from_the_hospital_rules():
    patient = fold(registered(), held("x1", department_id="hb3-card"))
    rules = BookingRules(max_per_department_day=2)
    booked, _ = book(command(), make_session(), Ledger(), patient, rules, OPEN, "a1", "ABCD2345")
    assert booked.sequence_number == 1


# --- book: quota per channel, sequence numbers, arrival windows ----------------------------------


def test_full_web_quota_refuses_web_while_phone_still_has_room():
    clinic = Clinic(make_session(quota={"web": 1, "phone": 2, "window": 0}))
    clinic.book("p1", "web")
    with pytest.raises(SessionFull) as exc:
        clinic.book("p2", "web")
    assert exc.value.code == "session_full"
    assert exc.value.status == 409
    assert exc.value.field == "session_id"
    assert clinic.book("p2", "phone").channel == "phone"


def test_a_cancelled_booking_frees_a_place_on_its_own_channel_only():
    clinic = Clinic(make_session(quota={"web": 1, "phone": 1, "window": 0}))
    web = clinic.book("p1", "web")
    clinic.book("p2", "phone")
    clinic.cancel(web.appointment_id)
    with pytest.raises(SessionFull):
        clinic.book("p3", "phone")
    assert clinic.book("p3", "web").channel == "web"


def test_a_channel_without_quota_is_full_from_the_start():
    clinic = Clinic(make_session(quota={"web": 3, "phone": 3}))
    with pytest.raises(SessionFull):
        clinic.book("p1", "window")


def test_the_last_place_of_a_channel_can_be_taken_and_then_not_again():
    clinic = Clinic(make_session(quota={"web": 0, "phone": 2, "window": 0}))
    clinic.book("p1", "phone")
    assert clinic.book("p2", "phone").sequence_number == 2
    with pytest.raises(SessionFull):
        clinic.book("p3", "phone")


def test_sequence_numbers_count_across_channels_and_are_not_reused_after_a_cancellation():
    clinic = Clinic()
    numbers = [clinic.book(p, ch).sequence_number for p, ch in (("p1", "web"), ("p2", "phone"), ("p3", "web"))]
    assert numbers == [1, 2, 3]
    clinic.cancel("a2-p2")
    assert clinic.book("p4", "phone").sequence_number == 4


def test_sequence_numbers_continue_after_the_highest_issued_even_with_gaps():
    ledger = Ledger()
    ledger.apply(FakeEnvelope("AppointmentBooked", {"appointment_id": "x", "code": "ABCD2345", "patient_id": "q",
                                                    "channel": "web", "sequence_number": 7, "fee": "50.00"}, 1))
    booked, _ = book(command(), make_session(), ledger, registered(), RULES, OPEN, "a1", "ABCD2345")
    assert booked.sequence_number == 8


@pytest.mark.parametrize(
    ("sequence", "window"),
    [(1, "08:00-09:00"), (2, "08:00-09:00"), (3, "09:00-10:30"), (5, "09:00-10:30"), (6, None), (40, None)],
)
def test_arrival_window_follows_the_time_bands(sequence, window):
    assert make_session().arrival_window(sequence) == window


def test_no_time_bands_means_no_arrival_window():
    assert make_session(time_bands=[]).arrival_window(1) is None


def test_booked_numbers_carry_the_arrival_window_of_their_band():
    clinic = Clinic()
    windows = [clinic.book(p).arrival_window for p in ("p1", "p2", "p3")]
    assert windows == ["08:00-09:00", "08:00-09:00", "09:00-10:30"]


@pytest.mark.parametrize(("channel", "paid"), [("phone", True), ("web", False), ("window", False)])
def test_only_phone_bookings_are_paid_at_booking(channel, paid):
    assert Clinic().book("p1", channel).paid is paid


def test_the_booking_copies_the_session_and_the_patient_change_mirrors_it():
    session = make_session()
    booked, change = book(command("p9", "phone", operator_id="op-12580"), session, Ledger(), registered("p9"),
                          RULES, OPEN, "appt-1", "ABCD2345")
    assert isinstance(booked, AppointmentBooked)
    assert (booked.appointment_id, booked.code, booked.patient_id, booked.channel) == (
        "appt-1", "ABCD2345", "p9", "phone")
    assert (booked.session_id, booked.hospital_id, booked.department_id, booked.doctor_id) == (
        SESSION_ID, "hb3", "hb3-card", "dr-wang")
    assert (booked.date, booked.period, booked.start, booked.fee) == ("2025-03-10", "morning", "08:00:00", "50.00")
    assert (booked.sequence_number, booked.arrival_window, booked.operator_id) == (1, "08:00-09:00", "op-12580")

    assert isinstance(change, PatientAppointmentsChanged)
    assert change.model_dump() == {
        "patient_id": "p9", "appointment_id": "appt-1", "session_id": SESSION_ID, "hospital_id": "hb3",
        "department_id": "hb3-card", "date": "2025-03-10", "active": True, "outcome": "booked",
    }


def test_session_info_from_the_scheduled_event_data_reads_bands_and_local_times():
    data = {
        "session_id": SESSION_ID, "hospital_id": "hb3", "department_id": "hb3-card", "doctor_id": "dr-wang",
        "date": "2025-03-10", "period": "morning", "start": "08:00:00", "end": "12:00:00", "fee": "50.00",
        "quota": {"web": "3", "phone": 2, "window": 1},
        "opens_at": "2025-03-03T08:00:00+08:00", "closes_at": "2025-03-09T16:00:00", "lapse_at": LAPSE_AT,
        "time_bands": BANDS,
    }
    info = SessionInfo.from_event(data)
    assert info.quota == {"web": 3, "phone": 2, "window": 1}
    assert info.opens_at == OPENS_AT
    assert info.closes_at == CLOSES_AT  # a naive time is hospital time
    assert info.lapse_at == LAPSE_AT
    assert info.arrival_window(3) == "09:00-10:30"
    assert not info.stopped
    assert SessionInfo.from_event({**data, "time_bands": None}, stopped=True).time_bands == []


# --- the ledger ----------------------------------------------------------------------------------


def test_empty_ledger_has_the_whole_quota_remaining():
    ledger = Ledger()
    assert (ledger.version, ledger.issued, ledger.stopped) == (0, 0, False)
    assert ledger.remaining({"web": 5, "phone": 3, "window": 2}) == {"web": 5, "phone": 3, "window": 2}


def test_a_booked_event_becomes_an_active_booking_with_its_terms():
    clinic = Clinic()
    booked = clinic.book("p1", "phone")
    b = clinic.booking(booked.appointment_id)
    assert (b.patient_id, b.channel, b.sequence_number, b.status) == ("p1", "phone", 1, "booked")
    assert (b.code, b.paid, b.fee, b.arrival_window) == (booked.code, True, "50.00", "08:00-09:00")
    assert (clinic.ledger.version, clinic.ledger.issued) == (1, 1)
    assert clinic.ledger.patients_holding_places() == {"p1"}
    assert clinic.ledger.remaining(clinic.session.quota) == {"web": 3, "phone": 1, "window": 1}


def test_a_cancellation_ends_the_booking_and_frees_its_place_but_not_its_number():
    clinic = Clinic()
    clinic.book("p1", "web")
    clinic.book("p2", "web")
    clinic.ledger.apply(FakeEnvelope("AppointmentCancelled", {"appointment_id": "a1-p1"}, 3))
    assert clinic.booking("a1-p1").status == "cancelled"
    assert clinic.ledger.version == 3
    assert clinic.ledger.issued == 2
    assert clinic.ledger.patients_holding_places() == {"p2"}
    assert clinic.ledger.remaining(clinic.session.quota)["web"] == 2
    assert [b.appointment_id for b in clinic.ledger.upcoming_in_order()] == ["a2-p2"]


@pytest.mark.parametrize(
    ("closing", "data", "status"),
    [("AppointmentCheckedIn", {"fee_taken": "50.00"}, "checked_in"), ("AppointmentLapsed", {}, "no_show")],
)
def test_a_check_in_or_a_no_show_ends_the_booking_but_keeps_its_place(closing, data, status):
    """DESIGN guarantee 1: a confirmed booking keeps its place unless it is cancelled."""
    clinic = Clinic()
    clinic.book("p1", "web")
    clinic.book("p2", "web")
    clinic.ledger.apply(FakeEnvelope(closing, {"appointment_id": "a1-p1", **data}, 3))
    assert clinic.booking("a1-p1").status == status
    assert clinic.ledger.version == 3
    assert clinic.ledger.issued == 2
    assert clinic.ledger.patients_holding_places() == {"p1", "p2"}
    assert clinic.ledger.remaining(clinic.session.quota)["web"] == 1
    assert [b.appointment_id for b in clinic.ledger.upcoming_in_order()] == ["a2-p2"]


def test_a_full_session_stays_full_after_a_check_in_and_a_no_show():
    """Seen: web quota 3 ended with 4 web patients after a check-in and a same-day booking."""
    clinic = Clinic(make_session(quota={"web": 3, "phone": 0, "window": 0}))
    for p in ("p1", "p2", "p3"):
        clinic.book(p, "web")
    clinic.check_in("a1-p1")
    lapsed, _ = lapse(clinic.booking("a2-p2"), clinic.session, LAPSE_AT)  # type: ignore[misc]
    fold(clinic.ledger, lapsed)
    with pytest.raises(SessionFull):
        clinic.book("p4", "web")
    assert sum(1 for b in clinic.ledger.bookings.values() if b.channel == "web") == 3


@pytest.mark.parametrize("first", ["check_in", "no_show"])
def test_a_patient_whose_place_was_used_or_missed_cannot_book_the_session_again(first):
    clinic = Clinic()
    clinic.book("p1")
    if first == "check_in":
        clinic.check_in("a1-p1")
    else:
        fold(clinic.ledger, lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT)[0])  # type: ignore[index]
    with pytest.raises(Conflict) as exc:
        book(command("p1"), clinic.session, clinic.ledger, clinic.patient("p1"), RULES, OPEN, "a9", "ABCD2345")
    assert exc.value.code == "already_booked"


def test_a_checked_in_booking_still_fills_the_replacement_of_a_doctor_stop():
    repl = Clinic(make_replacement(quota={"web": 1, "phone": 0, "window": 0}))
    repl.book("q1", "web")
    repl.check_in("a1-q1", now=datetime(2025, 3, 12, 8, 30, tzinfo=HOSPITAL_TZ))
    stopped = Clinic()
    stopped.book("p1", "web")
    outcome = apply_stop("st1", stopped.session, stopped.ledger, repl.session, repl.ledger)
    assert outcome.replacement_events == []
    assert [e.reason for e in outcome.stopped_events[1:]] == ["doctor_stop"]


def test_a_closing_event_for_an_unknown_appointment_only_advances_the_version():
    clinic = Clinic()
    clinic.book("p1")
    clinic.ledger.apply(FakeEnvelope("AppointmentCancelled", {"appointment_id": "nobody"}, 2))
    assert clinic.ledger.version == 2
    assert clinic.booking("a1-p1").status == "booked"
    assert set(clinic.ledger.bookings) == {"a1-p1"}


def test_a_moved_in_booking_is_active_and_raises_issued():
    moved = AppointmentMoved(
        appointment_id="a9", code="ZZZZ2345", from_session_id="s-old", session_id=SESSION_ID, hospital_id="hb3",
        department_id="hb3-card", doctor_id="dr-wang", patient_id="p9", channel="phone", sequence_number=4,
        date="2025-03-10", period="morning", start="08:00:00", fee="40.00", arrival_window="09:00-10:30", paid=True,
    )
    ledger = fold(Ledger(), moved)
    b = ledger.bookings["a9"]
    assert (b.status, b.code, b.fee, b.paid, b.sequence_number) == ("moved", "ZZZZ2345", "40.00", True, 4)
    assert ledger.issued == 4
    assert ledger.patients_holding_places() == {"p9"}
    assert ledger.remaining({"web": 1, "phone": 1, "window": 1}) == {"web": 1, "phone": 0, "window": 1}


def test_a_stop_marker_stops_the_ledger_and_takes_out_only_the_active_bookings():
    clinic = Clinic()
    clinic.book("p1")
    clinic.cancel(clinic.book("p2").appointment_id)
    clinic.book("p3")
    fold(clinic.ledger, SessionStopApplied(stop_id="st1", session_id=SESSION_ID, replacement_session_id=None,
                                           moved=0, cancelled=0))
    assert clinic.ledger.stopped
    assert {k: b.status for k, b in clinic.ledger.bookings.items()} == {
        "a1-p1": "moved_out", "a2-p2": "cancelled", "a3-p3": "moved_out"}
    assert clinic.ledger.upcoming_in_order() == []
    assert clinic.ledger.version == 5


def test_remaining_never_goes_below_zero_and_treats_a_missing_channel_as_zero():
    clinic = Clinic()
    clinic.book("p1", "web")
    clinic.book("p2", "web")
    clinic.book("p3", "phone")
    assert clinic.ledger.remaining({"web": 1}) == {"web": 0, "phone": 0, "window": 0}


def test_upcoming_in_order_sorts_by_sequence_number_whatever_the_order_of_events():
    ledger = Ledger()
    for version, (appointment_id, seq) in enumerate((("late", 3), ("first", 1), ("middle", 2)), start=1):
        ledger.apply(FakeEnvelope("AppointmentBooked", {
            "appointment_id": appointment_id, "code": "ABCD2345", "patient_id": appointment_id, "channel": "web",
            "sequence_number": seq, "fee": "50.00"}, version))
    ledger.apply(FakeEnvelope("AppointmentCancelled", {"appointment_id": "middle"}, 4))
    assert [b.appointment_id for b in ledger.upcoming_in_order()] == ["first", "late"]
    assert ledger.issued == 3


def test_other_event_types_advance_the_version_but_change_nothing_else():
    clinic = Clinic()
    clinic.book("p1")
    clinic.ledger.apply(FakeEnvelope("SomethingElseHappened", {"x": 1}, 2))
    assert clinic.ledger.version == 2
    assert clinic.ledger.patients_holding_places() == {"p1"}
    assert clinic.ledger.issued == 1
    assert not clinic.ledger.stopped


# --- the patient record --------------------------------------------------------------------------


def test_a_registered_patient_exists_and_holds_nothing():
    patient = registered()
    assert patient.exists
    assert patient.version == 1
    assert patient.active() == []
    assert (patient.no_show_dates, patient.banned_until) == ([], None)


def test_the_latest_change_of_an_appointment_wins():
    patient = fold(registered(), held("x1"), held("x2"), held("x1", active=False, outcome="checked_in"))
    assert [a["appointment_id"] for a in patient.active()] == ["x2"]
    assert patient.appointments["x1"]["outcome"] == "checked_in"
    assert patient.version == 4


def test_only_no_show_outcomes_are_remembered_as_no_show_dates_with_the_visit_date():
    patient = fold(
        registered(),
        held("x1", day="2025-02-01", active=False, outcome="no_show"),
        held("x2", day="2025-02-05", active=False, outcome="cancelled"),
        held("x3", day="2025-02-09", active=False, outcome="checked_in"),
        held("x4", day="2025-02-11", active=False, outcome="no_show"),
    )
    assert patient.no_show_dates == [date(2025, 2, 1), date(2025, 2, 11)]


def test_a_later_ban_extends_and_an_earlier_one_does_not_shorten():
    patient = fold(registered(), PatientBanned(patient_id="p1", until="2025-06-01", no_shows=3))
    assert patient.banned_until == date(2025, 6, 1)
    fold(patient, PatientBanned(patient_id="p1", until="2025-05-01", no_shows=3))
    assert patient.banned_until == date(2025, 6, 1)
    fold(patient, PatientBanned(patient_id="p1", until="2025-07-01", no_shows=4))
    assert patient.banned_until == date(2025, 7, 1)
    assert patient.version == 4


# --- cancel --------------------------------------------------------------------------------------


def test_a_patient_cancels_their_own_booking_and_the_change_mirrors_it():
    clinic = Clinic()
    clinic.book("p1", "web")
    cancelled, change = cancel(clinic.booking("a1-p1"), clinic.session, Actor(kind="patient", id="p1"), OPEN)
    assert isinstance(cancelled, AppointmentCancelled)
    assert (cancelled.appointment_id, cancelled.session_id, cancelled.hospital_id) == ("a1-p1", SESSION_ID, "hb3")
    assert (cancelled.patient_id, cancelled.channel, cancelled.date) == ("p1", "web", "2025-03-10")
    assert cancelled.reason == "patient"
    assert cancelled.refund_due is None
    assert (change.appointment_id, change.active, change.outcome, change.date) == (
        "a1-p1", False, "cancelled", "2025-03-10")


def test_another_patient_is_told_the_booking_does_not_exist():
    clinic = Clinic()
    clinic.book("p1")
    with pytest.raises(NotFound) as unknown:
        cancel(None, clinic.session, Actor(kind="patient", id="p2"), OPEN)
    with pytest.raises(NotFound) as other:
        cancel(clinic.booking("a1-p1"), clinic.session, Actor(kind="patient", id="p2"), OPEN)
    assert other.value.body() == unknown.value.body()
    assert other.value.field == "appointment_id"


def test_an_operator_cancels_with_reason_operator():
    clinic = Clinic()
    clinic.book("p1", "phone")
    cancelled, _ = cancel(clinic.booking("a1-p1"), clinic.session, OPERATOR, OPEN)
    assert cancelled.reason == "operator"


@pytest.mark.parametrize("kind", ["clerk", "hospital_admin", "analyst", "system"])
def test_staff_other_than_operators_may_not_cancel(kind):
    clinic = Clinic()
    clinic.book("p1")
    with pytest.raises(Forbidden) as exc:
        cancel(clinic.booking("a1-p1"), clinic.session, Actor(kind=kind, id="x", hospital_id="hb3"), OPEN)
    assert exc.value.status == 403


def test_cancelling_is_possible_until_just_before_closing_and_refused_from_then_on():
    clinic = Clinic()
    clinic.book("p1")
    clinic.book("p2")
    assert clinic.cancel("a1-p1", now=CLOSES_AT - SECOND).reason == "patient"
    with pytest.raises(Refused) as exc:
        clinic.cancel("a2-p2", now=CLOSES_AT)
    assert exc.value.code == "cancel_closed"
    assert "2025-03-09 16:00" in exc.value.message


def test_cancelling_a_cancelled_or_checked_in_booking_is_an_invalid_transition():
    clinic = Clinic()
    clinic.book("p1")
    clinic.book("p2")
    clinic.cancel("a1-p1")
    clinic.check_in("a2-p2")
    for appointment_id in ("a1-p1", "a2-p2"):
        b = clinic.booking(appointment_id)
        with pytest.raises(Conflict) as exc:
            cancel(b, clinic.session, Actor(kind="patient", id=b.patient_id), OPEN)
        assert exc.value.code == "invalid_transition"


@pytest.mark.parametrize(("channel", "refund"), [("phone", "50.00"), ("web", None), ("window", None)])
def test_a_refund_is_due_only_for_bookings_paid_by_phone(channel, refund):
    clinic = Clinic()
    clinic.book("p1", channel)
    cancelled, _ = cancel(clinic.booking("a1-p1"), clinic.session, OPERATOR, OPEN)
    assert cancelled.refund_due == refund


def test_a_cancellation_frees_the_patient_for_other_bookings():
    clinic = Clinic(rules=BookingRules(max_active=1))
    clinic.book("p1")
    other = make_session(session_id="s-hb3-derm-0311", department_id="hb3-derm", date="2025-03-11")
    with pytest.raises(Refused):
        book(command("p1", session_id=other.session_id), other, Ledger(), clinic.patient("p1"), clinic.rules, OPEN,
             "b1", "ABCD2345")
    clinic.cancel("a1-p1")
    booked, _ = book(command("p1", session_id=other.session_id), other, Ledger(), clinic.patient("p1"),
                     clinic.rules, OPEN, "b1", "ABCD2345")
    assert booked.session_id == "s-hb3-derm-0311"


# --- check in ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "fee_taken"), [("web", "50.00"), ("window", "50.00"), ("phone", "0.00")])
def test_a_clerk_checks_in_on_the_visit_day_taking_the_fee_unless_paid(channel, fee_taken):
    clinic = Clinic()
    clinic.book("p1", channel)
    checked_in, change = check_in(clinic.booking("a1-p1"), clinic.session, CLERK, True, VISIT)
    assert isinstance(checked_in, AppointmentCheckedIn)
    assert (checked_in.appointment_id, checked_in.session_id, checked_in.hospital_id) == ("a1-p1", SESSION_ID, "hb3")
    assert (checked_in.patient_id, checked_in.channel, checked_in.clerk_id) == ("p1", channel, "clerk-7")
    assert checked_in.fee_taken == fee_taken
    assert checked_in.date == "2025-03-10"
    assert (change.active, change.outcome) == (False, "checked_in")


def test_a_hospital_admin_of_the_same_hospital_may_check_in():
    clinic = Clinic()
    clinic.book("p1")
    admin = Actor(kind="hospital_admin", id="adm-1", hospital_id="hb3")
    assert check_in(clinic.booking("a1-p1"), clinic.session, admin, True, VISIT)[0].clerk_id == "adm-1"


@pytest.mark.parametrize("hospital_id", ["hb5", None])
def test_a_clerk_of_another_hospital_learns_nothing(hospital_id):
    clinic = Clinic()
    clinic.book("p1")
    clinic.check_in("a1-p1")  # even a wrong ID or a finished booking must not show through
    stranger = Actor(kind="clerk", id="clerk-9", hospital_id=hospital_id)
    with pytest.raises(NotFound) as unknown:
        check_in(None, clinic.session, CLERK, True, VISIT)
    with pytest.raises(NotFound) as exc:
        check_in(clinic.booking("a1-p1"), clinic.session, stranger, False, VISIT)
    assert exc.value.body() == unknown.value.body()
    assert exc.value.field == "code"


@pytest.mark.parametrize("actor", [Actor(kind="patient", id="p1"), OPERATOR], ids=["patient", "operator"])
def test_only_window_staff_may_check_in(actor):
    clinic = Clinic()
    clinic.book("p1")
    with pytest.raises(Forbidden):
        check_in(clinic.booking("a1-p1"), clinic.session, actor, True, VISIT)


def test_a_resident_id_that_does_not_match_is_refused():
    clinic = Clinic()
    clinic.book("p1")
    with pytest.raises(Refused) as exc:
        check_in(clinic.booking("a1-p1"), clinic.session, CLERK, False, VISIT)
    assert exc.value.code == "id_mismatch"
    assert exc.value.field == "id_number"


@pytest.mark.parametrize(
    "now",
    [datetime(2025, 3, 9, 9, 0, tzinfo=HOSPITAL_TZ), datetime(2025, 3, 9, 23, 59, tzinfo=HOSPITAL_TZ)],
    ids=["day-before", "day-before-late"],
)
def test_check_in_is_only_on_the_visit_day(now):
    clinic = Clinic()
    clinic.book("p1")
    with pytest.raises(Refused) as exc:
        check_in(clinic.booking("a1-p1"), clinic.session, CLERK, True, now)
    assert exc.value.code == "not_visit_day"
    assert "2025-03-10" in exc.value.message


def test_the_visit_day_is_the_hospital_calendar_day_not_the_utc_one():
    clinic = Clinic()
    clinic.book("p1")
    early = datetime(2025, 3, 10, 7, 30, tzinfo=HOSPITAL_TZ).astimezone(UTC)  # still 9 March in UTC
    assert early.date() == date(2025, 3, 9)
    assert check_in(clinic.booking("a1-p1"), clinic.session, CLERK, True, early)[0].fee_taken == "50.00"


def test_check_in_closes_at_the_lapse_time():
    clinic = Clinic()
    clinic.book("p1")
    clinic.book("p2")
    assert clinic.check_in("a1-p1", now=LAPSE_AT - SECOND).clerk_id == "clerk-7"
    with pytest.raises(Refused) as exc:
        clinic.check_in("a2-p2", now=LAPSE_AT)
    assert exc.value.code == "check_in_closed"
    assert "2025-03-10 11:00" in exc.value.message


@pytest.mark.parametrize("first", ["check_in", "cancel"])
def test_a_booking_already_checked_in_or_cancelled_cannot_be_checked_in(first):
    clinic = Clinic()
    clinic.book("p1")
    getattr(clinic, first)("a1-p1")
    with pytest.raises(Conflict) as exc:
        clinic.check_in("a1-p1")
    assert exc.value.code == "invalid_transition"


# --- lapse ---------------------------------------------------------------------------------------


def test_nothing_lapses_before_the_lapse_time():
    clinic = Clinic()
    clinic.book("p1")
    assert lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT - SECOND) is None


def test_at_the_lapse_time_an_active_booking_becomes_a_no_show():
    clinic = Clinic()
    clinic.book("p1", "phone")
    decided = lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT)
    assert decided is not None
    lapsed, change = decided
    assert isinstance(lapsed, AppointmentLapsed)
    assert (lapsed.appointment_id, lapsed.session_id, lapsed.hospital_id) == ("a1-p1", SESSION_ID, "hb3")
    assert (lapsed.patient_id, lapsed.channel, lapsed.date) == ("p1", "phone", "2025-03-10")
    assert (change.active, change.outcome, change.date) == (False, "no_show", "2025-03-10")
    fold(clinic.patient("p1"), change)
    assert clinic.patient("p1").no_show_dates == [date(2025, 3, 10)]


@pytest.mark.parametrize("first", ["check_in", "cancel"])
def test_a_booking_that_is_no_longer_active_never_lapses(first):
    clinic = Clinic()
    clinic.book("p1")
    getattr(clinic, first)("a1-p1")
    assert lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT + timedelta(hours=5)) is None


def test_a_booking_lapses_only_once():
    clinic = Clinic()
    clinic.book("p1")
    lapsed, _ = lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT)  # type: ignore[misc]
    fold(clinic.ledger, lapsed)
    assert clinic.booking("a1-p1").status == "no_show"
    assert lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT + SECOND) is None


# --- bans after no-shows -------------------------------------------------------------------------

BAN_TODAY = date(2025, 6, 1)


def with_no_shows(*days_ago: int) -> PatientRecord:
    return fold(registered(), *(
        held(f"n{i}", day=(BAN_TODAY - timedelta(days=d)).isoformat(), active=False, outcome="no_show")
        for i, d in enumerate(days_ago)
    ))


def test_the_third_no_show_within_ninety_days_bans_for_ninety_days():
    ban = ban_after_no_show("p1", with_no_shows(60, 30), BAN_TODAY, BAN_TODAY, NoShowRules())
    assert isinstance(ban, PatientBanned)
    assert ban.patient_id == "p1"
    assert ban.until == "2025-08-30"
    assert ban.no_shows == 3
    assert ban.reason == "no_show"


def test_two_no_shows_do_not_ban():
    assert ban_after_no_show("p1", with_no_shows(30), BAN_TODAY, BAN_TODAY, NoShowRules()) is None


def test_no_shows_older_than_the_window_do_not_count():
    assert ban_after_no_show("p1", with_no_shows(120, 30), BAN_TODAY, BAN_TODAY, NoShowRules()) is None
    assert ban_after_no_show("p1", with_no_shows(91, 89), BAN_TODAY, BAN_TODAY, NoShowRules()) is None


def test_every_no_show_within_the_window_is_counted():
    ban = ban_after_no_show("p1", with_no_shows(200, 80, 50, 10), BAN_TODAY, BAN_TODAY, NoShowRules())
    assert ban is not None
    assert ban.no_shows == 4


def test_no_new_ban_when_already_banned_at_least_that_long():
    patient = fold(with_no_shows(60, 30), PatientBanned(patient_id="p1", until="2025-09-15", no_shows=3))
    assert ban_after_no_show("p1", patient, BAN_TODAY, BAN_TODAY, NoShowRules()) is None
    patient = fold(with_no_shows(60, 30), PatientBanned(patient_id="p1", until="2025-08-30", no_shows=3))
    assert ban_after_no_show("p1", patient, BAN_TODAY, BAN_TODAY, NoShowRules()) is None


def test_a_shorter_running_ban_is_extended():
    patient = fold(with_no_shows(60, 30), PatientBanned(patient_id="p1", until="2025-06-10", no_shows=3))
    ban = ban_after_no_show("p1", patient, BAN_TODAY, BAN_TODAY, NoShowRules())
    assert ban is not None
    assert ban.until == "2025-08-30"


def test_the_hospital_may_set_its_own_no_show_rules():
    rules = NoShowRules(limit=2, window_days=30, ban_days=7)
    ban = ban_after_no_show("p1", with_no_shows(20), BAN_TODAY, BAN_TODAY, rules)
    assert ban is not None
    assert (ban.until, ban.no_shows) == ("2025-06-08", 2)
    assert ban_after_no_show("p1", with_no_shows(40), BAN_TODAY, BAN_TODAY, rules) is None
    assert ban_after_no_show("p1", registered(), BAN_TODAY, BAN_TODAY, rules) is None


def test_a_ban_folded_into_the_record_refuses_the_next_booking():
    patient = with_no_shows(60, 30)
    ban = ban_after_no_show("p1", patient, BAN_TODAY, BAN_TODAY, NoShowRules())
    fold(patient, held("n-new", day=BAN_TODAY.isoformat(), active=False, outcome="no_show"), ban)  # type: ignore[arg-type]
    assert patient.banned_until == date(2025, 8, 30)
    june = make_session(date="2025-06-05", opens_at=datetime(2025, 5, 29, 8, 0, tzinfo=HOSPITAL_TZ),
                        closes_at=datetime(2025, 6, 4, 16, 0, tzinfo=HOSPITAL_TZ),
                        lapse_at=datetime(2025, 6, 5, 11, 0, tzinfo=HOSPITAL_TZ))
    with pytest.raises(Refused) as exc:
        book(command(), june, Ledger(), patient, RULES, datetime(2025, 6, 2, 9, tzinfo=HOSPITAL_TZ), "a1", "ABCD2345")
    assert exc.value.code == "banned"
    assert "2025-08-30" in exc.value.message


# --- doctor stop ---------------------------------------------------------------------------------

REPLACEMENT_ID = "s-hb3-card-0312-am"


def make_replacement(**changes: Any) -> SessionInfo:
    two_days = timedelta(days=2)
    base = make_session(
        session_id=REPLACEMENT_ID, doctor_id="dr-li", date="2025-03-12", fee="80.00",
        quota={"web": 2, "phone": 1, "window": 0}, opens_at=OPENS_AT + two_days, closes_at=CLOSES_AT + two_days,
        lapse_at=LAPSE_AT + two_days,
        time_bands=[{"start": "08:00:00", "end": "08:30:00", "numbers": 3},
                    {"start": "08:30:00", "end": "09:00:00", "numbers": 3}],
    )
    return replace(base, **changes)


def stopped_clinic() -> Clinic:
    """a1 web, a2 phone, a3 cancelled web, a4 web, a5 window, a6 phone, a7 web checked in (later), a8 web."""
    clinic = Clinic(make_session(quota={"web": 5, "phone": 2, "window": 1}))
    for patient_id, channel in (("p1", "web"), ("p2", "phone"), ("p3", "web"), ("p4", "web"), ("p5", "window"),
                                ("p6", "phone"), ("p7", "web"), ("p8", "web")):
        clinic.book(patient_id, channel)
    clinic.cancel("a3-p3")
    clinic.check_in("a7-p7")
    return clinic


def replacement_clinic() -> Clinic:
    """Replacement already holds one web booking (number 1) and a cancelled one (number 2)."""
    clinic = Clinic(make_replacement())
    clinic.book("q1", "web")
    clinic.cancel(clinic.book("q2", "web").appointment_id)
    return clinic


def test_a_stop_without_replacement_cancels_every_active_booking_for_the_doctor_stop():
    clinic = stopped_clinic()
    outcome = apply_stop("st1", clinic.session, clinic.ledger, None, None)

    marker, *cancelled = outcome.stopped_events
    assert isinstance(marker, SessionStopApplied)
    assert marker.model_dump() == {"stop_id": "st1", "session_id": SESSION_ID, "replacement_session_id": None,
                                   "moved": 0, "cancelled": 6}
    assert all(isinstance(c, AppointmentCancelled) for c in cancelled)
    assert [c.appointment_id for c in cancelled] == ["a1-p1", "a2-p2", "a4-p4", "a5-p5", "a6-p6", "a8-p8"]
    assert {c.reason for c in cancelled} == {"doctor_stop"}
    assert {c.appointment_id: c.refund_due for c in cancelled if c.refund_due} == {"a2-p2": "50.00",
                                                                                   "a6-p6": "50.00"}
    assert {(c.session_id, c.hospital_id, c.date) for c in cancelled} == {(SESSION_ID, "hb3", "2025-03-10")}
    assert outcome.replacement_events == []
    assert [(ch.appointment_id, ch.session_id, ch.active, ch.outcome) for ch in outcome.patient_changes] == [
        (c.appointment_id, SESSION_ID, False, "cancelled") for c in cancelled]


def test_folding_the_stop_leaves_a_stopped_ledger_that_refuses_bookings():
    clinic = stopped_clinic()
    outcome = apply_stop("st1", clinic.session, clinic.ledger, None, None)
    fold(clinic.ledger, *outcome.stopped_events)
    for change in outcome.patient_changes:
        fold(clinic.patient(change.patient_id), change)
    assert clinic.ledger.stopped
    assert clinic.ledger.upcoming_in_order() == []
    assert clinic.booking("a1-p1").status == "cancelled"
    assert clinic.booking("a7-p7").status == "checked_in"
    assert clinic.patient("p1").active() == []
    with pytest.raises(Refused) as exc:
        clinic.book("p9")
    assert exc.value.code == "session_stopped"


def test_a_stop_moves_bookings_in_sequence_order_while_each_channel_of_the_replacement_has_room():
    clinic, repl = stopped_clinic(), replacement_clinic()
    replacement = repl.session
    outcome = apply_stop("st1", clinic.session, clinic.ledger, replacement, repl.ledger)

    # web: 2 places, 1 taken -> a1 moves, a4 and a8 are cancelled; phone: 1 place -> a2 moves, a6 cancelled;
    # window: no place -> a5 cancelled. a3 (cancelled) and a7 (checked in) are left alone.
    moved = outcome.replacement_events
    assert all(isinstance(m, AppointmentMoved) for m in moved)
    assert [(m.appointment_id, m.channel, m.sequence_number) for m in moved] == [("a1-p1", "web", 3),
                                                                                 ("a2-p2", "phone", 4)]
    marker, *cancelled = outcome.stopped_events
    assert (marker.replacement_session_id, marker.moved, marker.cancelled) == (REPLACEMENT_ID, 2, 4)
    assert [c.appointment_id for c in cancelled] == ["a4-p4", "a5-p5", "a6-p6", "a8-p8"]
    assert {c.appointment_id: c.refund_due for c in cancelled} == {"a4-p4": None, "a5-p5": None,
                                                                   "a6-p6": "50.00", "a8-p8": None}


def test_a_moved_booking_keeps_its_code_fee_and_payment_and_takes_the_replacement_terms():
    clinic, repl = stopped_clinic(), replacement_clinic()
    outcome = apply_stop("st1", clinic.session, clinic.ledger, repl.session, repl.ledger)
    phone = next(m for m in outcome.replacement_events if m.appointment_id == "a2-p2")
    original = clinic.booking("a2-p2")
    assert (phone.code, phone.fee, phone.paid, phone.patient_id) == (original.code, "50.00", True, "p2")
    assert (phone.from_session_id, phone.session_id, phone.hospital_id) == (SESSION_ID, REPLACEMENT_ID, "hb3")
    assert (phone.doctor_id, phone.date, phone.period, phone.start) == ("dr-li", "2025-03-12", "morning",
                                                                         "08:00:00")
    assert phone.arrival_window == "08:30-09:00"  # number 4 falls in the replacement's second band


def test_folding_the_moves_fills_the_replacement_ledger_and_moves_the_patients():
    clinic, repl = stopped_clinic(), replacement_clinic()
    outcome = apply_stop("st1", clinic.session, clinic.ledger, repl.session, repl.ledger)
    fold(repl.ledger, *outcome.replacement_events)
    fold(clinic.ledger, *outcome.stopped_events)
    assert [(b.appointment_id, b.status) for b in repl.ledger.upcoming_in_order()] == [
        ("a1-q1", "booked"), ("a1-p1", "moved"), ("a2-p2", "moved")]
    assert repl.ledger.remaining(repl.session.quota) == {"web": 0, "phone": 0, "window": 0}
    assert repl.ledger.issued == 4
    assert clinic.booking("a1-p1").status == "moved_out"
    assert clinic.booking("a4-p4").status == "cancelled"

    changes = {c.appointment_id: c for c in outcome.patient_changes}
    assert set(changes) == {"a1-p1", "a2-p2", "a4-p4", "a5-p5", "a6-p6", "a8-p8"}
    for moved_id in ("a1-p1", "a2-p2"):
        c = changes[moved_id]
        assert (c.session_id, c.date, c.active, c.outcome) == (REPLACEMENT_ID, "2025-03-12", True, "moved")
    for cancelled_id in ("a4-p4", "a5-p5", "a6-p6", "a8-p8"):
        c = changes[cancelled_id]
        assert (c.session_id, c.date, c.active, c.outcome) == (SESSION_ID, "2025-03-10", False, "cancelled")

    p1 = fold(clinic.patient("p1"), changes["a1-p1"])
    assert [(a["session_id"], a["date"]) for a in p1.active()] == [(REPLACEMENT_ID, "2025-03-12")]


def test_a_moved_booking_can_be_checked_in_on_the_replacement_day():
    clinic, repl = stopped_clinic(), replacement_clinic()
    outcome = apply_stop("st1", clinic.session, clinic.ledger, repl.session, repl.ledger)
    fold(repl.ledger, *outcome.replacement_events)
    checked_in, _ = check_in(repl.booking("a2-p2"), repl.session, CLERK, True, VISIT + timedelta(days=2))
    assert (checked_in.session_id, checked_in.fee_taken) == (REPLACEMENT_ID, "0.00")


def test_a_stopped_replacement_takes_nobody():
    clinic, repl = stopped_clinic(), replacement_clinic()
    outcome = apply_stop("st1", clinic.session, clinic.ledger, make_replacement(stopped=True), repl.ledger)
    marker = outcome.stopped_events[0]
    assert (marker.replacement_session_id, marker.moved, marker.cancelled) == (REPLACEMENT_ID, 0, 6)
    assert outcome.replacement_events == []
    assert all(not c.active for c in outcome.patient_changes)


def test_a_replacement_whose_ledger_applied_a_stop_takes_nobody():
    clinic, repl = stopped_clinic(), replacement_clinic()
    fold(repl.ledger, SessionStopApplied(stop_id="st0", session_id=REPLACEMENT_ID, replacement_session_id=None,
                                         moved=0, cancelled=1))
    outcome = apply_stop("st1", clinic.session, clinic.ledger, repl.session, repl.ledger)
    assert outcome.replacement_events == []
    assert outcome.stopped_events[0].cancelled == 6


def test_a_patient_already_booked_on_the_replacement_is_not_given_a_second_place():
    clinic = Clinic(make_session())
    clinic.book("p1", "phone")
    repl = Clinic(make_replacement(quota={"web": 2, "phone": 2, "window": 0}))
    repl.book("q1", "web")
    repl.book("p1", "web")  # a2-p1: its own appointment id, not the one being moved
    outcome = apply_stop("st1", clinic.session, clinic.ledger, repl.session, repl.ledger)
    fold(repl.ledger, *outcome.replacement_events)
    assert [b.patient_id for b in repl.ledger.upcoming_in_order()].count("p1") == 1
    assert [(c.appointment_id, c.refund_due) for c in outcome.stopped_events[1:]] == [("a1-p1", "50.00")]


def test_a_stop_of_a_session_without_active_bookings_only_marks_it():
    clinic = Clinic()
    clinic.cancel(clinic.book("p1").appointment_id)
    outcome = apply_stop("st1", clinic.session, clinic.ledger, make_replacement(), Ledger())
    assert [type(e) for e in outcome.stopped_events] == [SessionStopApplied]
    assert (outcome.stopped_events[0].moved, outcome.stopped_events[0].cancelled) == (0, 0)
    assert outcome.replacement_events == []
    assert outcome.patient_changes == []


# --- appointment codes ---------------------------------------------------------------------------


def test_code_alphabet_has_no_characters_that_are_misread_over_the_phone():
    assert not set("0O1IL") & set(CODE_ALPHABET)
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET)


def test_new_codes_are_eight_characters_from_the_alphabet_and_vary():
    codes = [new_code() for _ in range(500)]
    for code in codes:
        assert len(code) == 8
        assert set(code) <= set(CODE_ALPHABET)
        assert not set(code) & set("0O1IL")
    assert len(set(codes)) > 490
    assert len(set("".join(codes))) > len(CODE_ALPHABET) // 2


# --- 退号 at the window ---------------------------------------------------------------------------

BEFORE_START = datetime(2025, 3, 10, 7, 30, tzinfo=HOSPITAL_TZ)  # the visit day, the session starts at 08:00
ADMIN = Actor(kind="hospital_admin", id="admin-3", hospital_id="hb3")
PLATFORM = Actor(kind="platform_admin", id="root")


def test_a_paid_phone_booking_refunded_before_the_start_releases_its_place():
    starts = datetime(2025, 3, 10, 8, 0, tzinfo=HOSPITAL_TZ)  # a hospital whose booking closes at the start
    clinic = Clinic(make_session(quota={"web": 0, "phone": 1, "window": 0}, closes_at=starts))
    clinic.book("p1", "phone")
    refunded = clinic.refund("a1-p1", BEFORE_START)
    assert (refunded.refund_due, refunded.place_released, refunded.clerk_id) == ("50.00", True, "clerk-7")
    assert (refunded.reason, refunded.date, refunded.channel) == ("患者身体不适", "2025-03-10", "phone")
    assert clinic.booking("a1-p1").status == "refunded"
    assert clinic.ledger.remaining(clinic.session.quota)["phone"] == 1
    assert clinic.ledger.patients_holding_places() == set()
    change = clinic.patient("p1").appointments["a1-p1"]
    assert (change["active"], change["outcome"]) == (False, "refunded")
    # the released place is bookable again, with a new number
    booked, _ = book(command("p2", "phone"), clinic.session, clinic.ledger, clinic.patient("p2"), RULES,
                     BEFORE_START, "a2-p2", "ABCD2345")
    assert booked.sequence_number == 2


def test_a_refund_after_the_start_keeps_the_place_taken():
    clinic = Clinic(make_session(quota={"web": 0, "phone": 1, "window": 0}))
    clinic.book("p1", "phone")
    refunded = clinic.refund("a1-p1", clinic.session.starts_at())
    assert refunded.place_released is False
    assert clinic.ledger.remaining(clinic.session.quota)["phone"] == 0
    assert clinic.ledger.patients_holding_places() == {"p1"}
    with pytest.raises(SessionFull):
        book(command("p2", "phone"), clinic.session, clinic.ledger, clinic.patient("p2"), RULES, OPEN, "a2",
             "ABCD2345")


@pytest.mark.parametrize(("channel", "due"), [("web", "50.00"), ("window", "50.00"), ("phone", "50.00")])
def test_a_checked_in_registration_is_refunded_the_fee_taken_or_paid(channel, due):
    clinic = Clinic()
    clinic.book("p1", channel)
    clinic.check_in("a1-p1")
    assert clinic.refund("a1-p1").refund_due == due


def test_the_refund_of_a_registration_is_the_fee_taken_at_the_window():
    clinic = Clinic()
    clinic.book("p1", "web")
    clinic.ledger.apply(FakeEnvelope("AppointmentCheckedIn", {"appointment_id": "a1-p1", "fee_taken": "35.50"}, 2))
    refunded, _ = refund_at_window(clinic.booking("a1-p1"), clinic.session, CLERK, "r", VISIT)
    assert refunded.refund_due == "35.50"


def test_a_checked_in_registration_refunded_before_the_start_releases_its_place():
    clinic = Clinic(make_session(quota={"web": 1, "phone": 0, "window": 0}))
    clinic.book("p1", "web")
    clinic.check_in("a1-p1", BEFORE_START)
    assert clinic.ledger.remaining(clinic.session.quota)["web"] == 0  # checked in: still taken
    assert clinic.refund("a1-p1", BEFORE_START).place_released is True
    assert clinic.ledger.remaining(clinic.session.quota)["web"] == 1


def test_the_start_is_judged_in_hospital_time():
    clinic = Clinic()
    clinic.book("p1", "phone")
    just_before = datetime(2025, 3, 9, 23, 59, 59, tzinfo=UTC)  # 07:59:59 in Shijiazhuang
    assert clinic.refund("a1-p1", just_before).place_released is True


@pytest.mark.parametrize("channel", ["web", "window"])
def test_an_unpaid_booking_not_checked_in_is_not_refundable(channel):
    clinic = Clinic()
    clinic.book("p1", channel)
    with pytest.raises(Refused) as exc:
        clinic.refund("a1-p1")
    assert (exc.value.code, exc.value.field) == ("not_refundable", "code")


@pytest.mark.parametrize("first", ["cancel", "no_show", "refund"])
def test_a_cancelled_missed_or_refunded_booking_is_not_refundable(first):
    clinic = Clinic()
    clinic.book("p1", "phone")
    if first == "cancel":
        clinic.cancel("a1-p1")
    elif first == "no_show":
        fold(clinic.ledger, lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT)[0])  # type: ignore[index]
    else:
        clinic.refund("a1-p1")
    with pytest.raises(Refused) as exc:
        clinic.refund("a1-p1", VISIT + SECOND)
    assert exc.value.code == "not_refundable"


def test_a_paid_phone_booking_past_the_lapse_time_is_a_no_show_not_a_refund():
    clinic = Clinic()
    clinic.book("p1", "phone")
    with pytest.raises(Refused) as exc:
        clinic.refund("a1-p1", LAPSE_AT)
    assert exc.value.code == "not_refundable"
    clinic.refund("a1-p1", LAPSE_AT - SECOND)


def test_a_checked_in_registration_may_be_refunded_after_the_lapse_time_that_day():
    clinic = Clinic()
    clinic.book("p1", "web")
    clinic.check_in("a1-p1")
    assert clinic.refund("a1-p1", LAPSE_AT + timedelta(hours=1)).place_released is False


@pytest.mark.parametrize("now", [datetime(2025, 3, 9, 16, 0, tzinfo=HOSPITAL_TZ),
                                 datetime(2025, 3, 11, 8, 0, tzinfo=HOSPITAL_TZ)], ids=["day-before", "day-after"])
def test_refunds_only_on_the_visit_day(now):
    clinic = Clinic()
    clinic.book("p1", "phone")
    with pytest.raises(Refused) as exc:
        clinic.refund("a1-p1", now)
    assert (exc.value.code, exc.value.field) == ("not_visit_day", "code")


def test_a_refunded_booking_never_lapses_and_cannot_be_checked_in():
    clinic = Clinic()
    clinic.book("p1", "phone")
    clinic.refund("a1-p1", BEFORE_START)
    assert lapse(clinic.booking("a1-p1"), clinic.session, LAPSE_AT) is None
    with pytest.raises(Conflict) as exc:
        check_in(clinic.booking("a1-p1"), clinic.session, CLERK, True, VISIT)
    assert exc.value.code == "invalid_transition"


@pytest.mark.parametrize("actor", [ADMIN, PLATFORM], ids=["hospital-admin", "platform-admin"])
def test_a_hospital_admin_of_the_hospital_and_a_platform_admin_may_refund(actor):
    clinic = Clinic()
    clinic.book("p1", "phone")
    assert clinic.refund("a1-p1", clerk=actor).clerk_id == actor.id


@pytest.mark.parametrize("actor", [
    Actor(kind="clerk", id="clerk-9", hospital_id="hb5"),
    Actor(kind="hospital_admin", id="admin-5", hospital_id="hb5"),
    Actor(kind="doctor", id="dr-wang", hospital_id="hb3"),
    Actor(kind="operator", id="op-1"),
    Actor(kind="patient", id="p1"),
    Actor(kind="analyst", id="an-1"),
], ids=["other-clerk", "other-admin", "doctor", "operator", "patient", "analyst"])
def test_anyone_else_is_told_the_code_does_not_exist(actor):
    clinic = Clinic()
    clinic.book("p1", "phone")
    with pytest.raises(NotFound) as exc:
        clinic.refund("a1-p1", clerk=actor)
    unknown = pytest.raises(NotFound)
    with unknown as nothing:
        refund_at_window(None, clinic.session, CLERK, "r", VISIT)
    assert (exc.value.code, exc.value.field, exc.value.message) == (
        nothing.value.code, nothing.value.field, nothing.value.message)


# --- what the window sees ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "masked"), [("张三丰", "张**"), ("李明", "李*"), ("王", "王"),
                                              ("欧阳娜娜", "欧***"), (" 赵六 ", "赵*")])
def test_a_name_keeps_its_first_character_only(name, masked):
    assert mask_name(name) == masked


@pytest.mark.parametrize(("status", "label"), [("booked", "待取号"), ("moved", "待取号"), ("checked_in", "已取号"),
                                               ("refunded", "已退号"), ("cancelled", "已取消"), ("no_show", "爽约")])
def test_a_window_row_is_masked_and_labelled(status, label):
    clinic = Clinic()
    booked = clinic.book("p1", "phone")
    row = window_row(booked.model_dump(mode="json"), status, "王医生", "130102********0011", "138****0000", "张三丰")
    assert row == {
        "appointment_id": "a1-p1", "code": booked.code, "session_id": SESSION_ID, "department_id": "hb3-card",
        "doctor_id": "dr-wang", "doctor_name": "王医生", "date": "2025-03-10", "period": "morning",
        "start": "08:00:00", "sequence_number": 1, "channel": "phone", "fee": "50.00", "paid": True,
        "status": status, "label": label, "id_masked": "130102********0011", "phone_masked": "138****0000",
        "name_masked": "张**", "arrival_window": "08:00-09:00",
    }
    assert "张三丰" not in str(row)


@pytest.mark.parametrize("raw", ["ABCD234", "ABCD23456", "ABCD2340", "ABCDO234", "ABC-2345", ""])
def test_a_malformed_code_is_invalid_input_naming_the_code(raw):
    with pytest.raises(InvalidInput) as exc:
        valid_code(raw)
    assert exc.value.field == "code"


def test_a_code_is_read_case_insensitively():
    assert valid_code(" abcd2345 ") == "ABCD2345"


@pytest.mark.parametrize("raw", ["2025-13-01", "2025/03/10", "tomorrow", ""])
def test_a_malformed_day_is_invalid_input_naming_the_date(raw):
    with pytest.raises(InvalidInput) as exc:
        valid_day(raw)
    assert exc.value.field == "date"


@pytest.mark.parametrize("actor", [CLERK, ADMIN, Actor(kind="doctor", id="dr-wang", hospital_id="hb3"), PLATFORM],
                         ids=["clerk", "admin", "doctor", "platform-admin"])
def test_staff_of_the_hospital_and_platform_admins_read_its_lists(actor):
    authorize_hospital_read(actor, "hb3")
    authorize_read_by_code(actor, "hb3")


@pytest.mark.parametrize("actor", [
    Actor(kind="clerk", id="clerk-9", hospital_id="hb5"), Actor(kind="doctor", id="dr-x", hospital_id="hb5"),
    Actor(kind="operator", id="op-1"), Actor(kind="patient", id="p1"), Actor(kind="analyst", id="an-1"), None,
], ids=["other-clerk", "other-doctor", "operator", "patient", "analyst", "nobody"])
def test_nobody_else_reads_a_hospitals_lists_and_a_code_elsewhere_is_unknown(actor):
    with pytest.raises(Forbidden):
        authorize_hospital_read(actor, "hb3")
    with pytest.raises(NotFound) as exc:
        authorize_read_by_code(actor, "hb3")
    assert exc.value.field == "code"
