"""Booking rules: resident IDs (GB 11643-1999), the session ledger fold, the booking decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from contracts import AppointmentBooked, BookAppointment, Conflict, InvalidInput, NotFound, SessionFull
from services.booking.domain import (
    CODE_ALPHABET,
    Ledger,
    SessionInfo,
    book,
    new_code,
    parse_resident_id,
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


# --- the ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeEnvelope:
    type: str
    data: dict[str, Any]
    version: int


def booked(version: int, patient: str, channel: str = "web", seq: int | None = None) -> FakeEnvelope:
    return FakeEnvelope(
        "AppointmentBooked",
        {"patient_id": patient, "channel": channel, "sequence_number": seq if seq is not None else version},
        version,
    )


def fold(events: list[FakeEnvelope]) -> Ledger:
    ledger = Ledger()
    for ev in events:
        ledger.apply(ev)
    return ledger


def test_empty_ledger_has_the_whole_quota_remaining():
    ledger = Ledger()
    assert ledger.version == 0
    assert ledger.issued == 0
    assert ledger.remaining({"web": 5, "phone": 3, "window": 2}) == {"web": 5, "phone": 3, "window": 2}


def test_folding_bookings_counts_per_channel_patients_and_issued_numbers():
    ledger = fold(
        [
            booked(1, "p1", "web"),
            booked(2, "p2", "phone"),
            booked(3, "p3", "web"),
            booked(4, "p4", "window"),
        ]
    )
    assert ledger.version == 4
    assert ledger.booked == {"web": 2, "phone": 1, "window": 1}
    assert ledger.active_patients == {"p1", "p2", "p3", "p4"}
    assert ledger.issued == 4
    assert ledger.remaining({"web": 5, "phone": 1, "window": 3}) == {"web": 3, "phone": 0, "window": 2}


def test_remaining_never_goes_below_zero_and_treats_a_missing_channel_as_zero():
    ledger = fold([booked(1, "p1", "web"), booked(2, "p2", "web"), booked(3, "p3", "phone")])
    assert ledger.remaining({"web": 1}) == {"web": 0, "phone": 0, "window": 0}


def test_issued_is_the_highest_sequence_number_seen_not_the_count():
    ledger = fold([booked(1, "p1", seq=3), booked(2, "p2", seq=1)])
    assert ledger.issued == 3


def test_other_event_types_advance_the_version_but_change_no_counts():
    ledger = fold([booked(1, "p1"), FakeEnvelope("SomethingElseHappened", {"x": 1}, 2)])
    assert ledger.version == 2
    assert ledger.booked == {"web": 1, "phone": 0, "window": 0}
    assert ledger.active_patients == {"p1"}
    assert ledger.issued == 1


# --- the booking decision ------------------------------------------------------------------------


def session(quota: dict[str, int] | None = None) -> SessionInfo:
    return SessionInfo(
        session_id="s-hb3-card-0310-am",
        hospital_id="hb3",
        department_id="hb3-card",
        doctor_id="dr-wang",
        date="2025-03-10",
        period="morning",
        start="08:00:00",
        fee="50.00",
        quota=quota if quota is not None else {"web": 2, "phone": 2, "window": 1},
    )


def command(patient: str = "p-new", channel: str = "web") -> BookAppointment:
    return BookAppointment(
        idempotency_key=f"key-{patient}-{channel}",
        session_id="s-hb3-card-0310-am",
        patient_id=patient,
        channel=channel,
    )


def test_booking_on_an_empty_ledger_copies_the_session_and_takes_number_one():
    ev = book(command("p1", "phone"), session(), Ledger(), "appt-1", "ABCD2345")
    assert isinstance(ev, AppointmentBooked)
    assert ev.appointment_id == "appt-1"
    assert ev.code == "ABCD2345"
    assert ev.patient_id == "p1"
    assert ev.channel == "phone"
    assert ev.sequence_number == 1
    assert (ev.session_id, ev.hospital_id, ev.department_id, ev.doctor_id) == (
        "s-hb3-card-0310-am",
        "hb3",
        "hb3-card",
        "dr-wang",
    )
    assert (ev.date, ev.period, ev.start, ev.fee) == ("2025-03-10", "morning", "08:00:00", "50.00")


def test_unknown_session_is_not_found_on_session_id():
    with pytest.raises(NotFound) as exc:
        book(command(), None, Ledger(), "appt-1", "ABCD2345")
    assert exc.value.field == "session_id"
    assert exc.value.status == 404


def test_a_patient_already_booked_on_the_session_is_refused_as_already_booked():
    ledger = fold([booked(1, "p1", "web")])
    with pytest.raises(Conflict) as exc:
        book(command("p1", "phone"), session(), ledger, "appt-2", "ABCD2345")
    assert exc.value.code == "already_booked"
    assert exc.value.status == 409
    assert not isinstance(exc.value, SessionFull)


def test_full_web_quota_refuses_web_while_phone_still_has_room():
    quota = {"web": 1, "phone": 2, "window": 0}
    ledger = fold([booked(1, "p1", "web")])

    with pytest.raises(SessionFull) as exc:
        book(command("p2", "web"), session(quota), ledger, "appt-2", "ABCD2345")
    assert exc.value.code == "session_full"
    assert exc.value.status == 409
    assert exc.value.field == "session_id"

    ev = book(command("p2", "phone"), session(quota), ledger, "appt-2", "ABCD2345")
    assert ev.channel == "phone"
    assert ev.sequence_number == 2


def test_a_channel_without_quota_is_full_from_the_start():
    with pytest.raises(SessionFull):
        book(command("p1", "window"), session({"web": 3, "phone": 3}), Ledger(), "appt-1", "ABCD2345")


def test_the_last_place_of_a_channel_can_be_taken_and_then_not_again():
    quota = {"web": 0, "phone": 2, "window": 0}
    ledger = fold([booked(1, "p1", "phone")])
    ev = book(command("p2", "phone"), session(quota), ledger, "appt-2", "ABCD2345")
    assert ev.sequence_number == 2
    ledger.apply(FakeEnvelope("AppointmentBooked", ev.model_dump(mode="json"), 2))
    with pytest.raises(SessionFull):
        book(command("p3", "phone"), session(quota), ledger, "appt-3", "ABCD2345")


def test_sequence_numbers_continue_from_the_ledger_issued_count():
    ledger = fold([booked(1, "p1", "web"), booked(2, "p2", "phone"), booked(3, "p3", "window")])
    ev = book(command("p4", "phone"), session({"web": 5, "phone": 5, "window": 5}), ledger, "a4", "ABCD2345")
    assert ev.sequence_number == 4


def test_sequence_numbers_continue_after_the_highest_issued_even_with_gaps():
    ledger = fold([booked(1, "p1", "web", seq=1), booked(2, "p2", "web", seq=7)])
    ev = book(command("p3", "web"), session({"web": 5}), ledger, "a3", "ABCD2345")
    assert ev.sequence_number == 8


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
