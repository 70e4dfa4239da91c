"""his_sync's reactions through the kernel (APP.react), with fakes at the edges: the service
database as dicts (inbox claim included), the read model's surfaces over it, and a fake HIS behind
the MLLP client factory that reads each message and answers a real HL7 ACK."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    Event,
)
from infra.memory import NotKnownYet
from services.his_sync import hl7
from services.his_sync.handlers import APP, HisRejected
from services.his_sync.mllp import MllpError
from tests.unit.fakes import FakeCursor, FakeDb, FakeMemory, deliver, envelope_of

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 10, 0, 5, tzinfo=UTC)  # 08:05 in Hebei


class FakeHisMessages:
    def record(self, cur: FakeCursor, *, control_id: str, **row: Any) -> None:
        cur.table("his_messages").setdefault(control_id, row)


class FakeHis:
    """The hospital's interface engine: keeps every message, answers the next queued ACK code (AA by default)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.answers: list[str] = []
        self.connections = 0
        self.open = 0
        self.down = False
        self.echo_other_control_id = False

    def connect(self) -> FakeHis.Client:
        if self.down:
            raise MllpError("cannot connect to HIS at fake:2575: connection refused")
        self.connections += 1
        self.open += 1
        return FakeHis.Client(self)

    class Client:
        def __init__(self, his: FakeHis) -> None:
            self.his = his

        def send(self, message: str) -> str:
            self.his.received.append(message)
            info = hl7.describe(message)
            if self.his.echo_other_control_id:
                info = hl7.MessageInfo(**{**info.__dict__, "control_id": "someone-else"})
            code = self.his.answers.pop(0) if self.his.answers else "AA"
            return hl7.build_ack(info, code, f"A{info.control_id}"[:20], NOW, "" if code == "AA" else "not today")

        def close(self) -> None:
            self.his.open -= 1

    def types(self) -> list[str]:
        return [hl7.describe(m).message_type for m in self.received]


class HisSync:
    def __init__(self) -> None:
        self.db = FakeDb()
        self.his = FakeHis()
        self.deps = {
            "db": self.db,
            "appointments": FakeMemory("appointments", "appointment_id"),
            "his_messages": FakeHisMessages(),
            "connect_his": self.his.connect,
            "now": NOW,
        }

    def deliver(self, event: Event, event_id: uuid.UUID | None = None) -> Any:
        return deliver(APP, envelope_of(event, "booking", event_id), self.deps)

    def acked(self) -> dict[str, dict[str, Any]]:
        return self.db.rows("his_messages")


BOOKED: dict[str, Any] = {
    "appointment_id": "appt-7f3a", "code": "K7M2QX9P", "session_id": "s-hb3-card-0310-am",
    "hospital_id": "hb3", "department_id": "hb3-card", "doctor_id": "dr-wang", "patient_id": "patient-5b1e",
    "channel": "phone", "sequence_number": 7, "date": "2025-03-10", "period": "morning", "start": "08:00:00",
    "fee": "50.00",
}
LATER = {"appointment_id": "appt-7f3a", "session_id": "s-hb3-card-0310-am", "hospital_id": "hb3",
         "patient_id": "patient-5b1e", "channel": "phone"}


def booked() -> AppointmentBooked:
    return AppointmentBooked(**BOOKED)


def moved() -> AppointmentMoved:
    return AppointmentMoved(**{**BOOKED, "from_session_id": BOOKED["session_id"], "session_id": "s-hb3-card-0312-pm",
                               "sequence_number": 3, "date": "2025-03-12", "period": "afternoon",
                               "start": "14:00:00"})


def cancelled() -> AppointmentCancelled:
    return AppointmentCancelled(**LATER, reason="doctor_stop", refund_due="50.00")


def lapsed() -> AppointmentLapsed:
    return AppointmentLapsed(**LATER)


def checked_in() -> AppointmentCheckedIn:
    return AppointmentCheckedIn(**LATER, clerk_id="clerk-1", fee_taken="50.00")


def field(message: str, segment: str, number: int) -> str:
    """HL7 field `number` of the first `segment` (raw, not unescaped); "" when absent."""
    for line in message.split("\r"):
        parts = line.split("|")
        if parts[0] == segment:
            if segment == "MSH":
                number -= 1  # MSH-1 is the separator itself
            return parts[number] if number < len(parts) else ""
    return ""


@pytest.fixture
def svc() -> HisSync:
    return HisSync()


def test_an_accepted_booking_records_the_ack_under_the_event_derived_control_id_and_remembers_the_appointment(svc):
    event_id = uuid.uuid4()
    svc.deliver(booked(), event_id=event_id)

    [message] = svc.his.received
    control_id = event_id.hex[:20]
    assert hl7.describe(message).message_type == "SIU^S12"
    assert field(message, "MSH", 10) == control_id
    assert svc.acked() == {control_id: {"event_id": event_id, "appointment_id": "appt-7f3a",
                                        "message_type": "SIU^S12", "ack_code": "AA"}}
    assert svc.db.rows("appointments")["appt-7f3a"] == booked().model_dump(mode="json")
    assert ("his_sync.send_booking", str(event_id)) in svc.db.claims()
    assert svc.his.open == 0  # the connection is closed after its message


def test_a_booking_delivered_twice_reaches_the_his_once(svc):
    event_id = uuid.uuid4()
    svc.deliver(booked(), event_id=event_id)
    svc.deliver(booked(), event_id=event_id)
    assert svc.his.types() == ["SIU^S12"]
    assert len(svc.acked()) == 1


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_a_refusal_raises_and_records_nothing_and_the_retry_carries_the_same_control_id(svc, code):
    event_id = uuid.uuid4()
    svc.his.answers = [code]
    with pytest.raises(HisRejected, match=f"HIS answered {code} to SIU\\^S12 {event_id.hex[:20]}: not today"):
        svc.deliver(booked(), event_id=event_id)
    assert svc.acked() == {}
    assert svc.db.rows("appointments") == {}
    assert svc.db.claims() == []  # rolled back with the rest: the retry is not skipped

    svc.deliver(booked(), event_id=event_id)
    first, retry = svc.his.received
    assert field(first, "MSH", 10) == field(retry, "MSH", 10) == event_id.hex[:20]
    assert [row["ack_code"] for row in svc.acked().values()] == ["AA"]
    assert "appt-7f3a" in svc.db.rows("appointments")


def test_an_his_that_cannot_be_reached_raises_and_records_nothing(svc):
    svc.his.down = True
    with pytest.raises(MllpError, match="connection refused"):
        svc.deliver(booked())
    assert svc.acked() == {} and svc.db.rows("appointments") == {} and svc.db.claims() == []


def test_an_ack_for_another_control_id_is_not_taken_as_acceptance(svc):
    svc.his.echo_other_control_id = True
    with pytest.raises(hl7.HL7Error):
        svc.deliver(booked())
    assert svc.acked() == {} and svc.db.claims() == []
    assert svc.his.open == 0


@pytest.mark.parametrize(
    ("later", "message_type"),
    [(cancelled, "SIU^S15"), (lapsed, "SIU^S26"), (checked_in, "ADT^A04")],
)
def test_each_later_message_reaches_the_his_built_from_the_appointment_as_booked(svc, later, message_type):
    svc.deliver(booked())
    event_id = uuid.uuid4()
    svc.deliver(later(), event_id=event_id)

    assert svc.his.types() == ["SIU^S12", message_type]
    message = svc.his.received[1]
    info = hl7.describe(message)
    assert (info.appointment_id, info.patient_id) == ("appt-7f3a", "patient-5b1e")
    assert info.receiving_facility == "hb3"
    if message_type == "ADT^A04":
        assert field(message, "PV1", 3).startswith("hb3-card^")
        assert field(message, "PV1", 7) == "dr-wang"
    else:
        # The booked doctor, place and time, though the later event carries none of them.
        assert field(message, "AIP", 3) == "dr-wang"
        assert field(message, "AIL", 3).startswith("hb3-card^")
        assert field(message, "TQ1", 7) == "20250310080000+0800"
        assert field(message, "SCH", 2).startswith("K7M2QX9P^")
    if message_type == "SIU^S15":
        assert field(message, "SCH", 6) == "CANCELLED^doctor_stop^L"
    assert svc.acked()[event_id.hex[:20]]["message_type"] == message_type


def test_a_move_is_sent_as_s14_with_the_new_session_and_later_messages_use_it(svc):
    svc.deliver(booked())
    svc.deliver(moved())
    svc.deliver(lapsed())
    assert svc.his.types() == ["SIU^S12", "SIU^S14", "SIU^S26"]
    s14, s26 = svc.his.received[1:]
    assert field(s14, "TQ1", 7) == field(s26, "TQ1", 7) == "20250312140000+0800"
    assert field(s14, "SCH", 5) == "s-hb3-card-0312-pm"


@pytest.mark.parametrize("later", [cancelled, lapsed, checked_in])
def test_a_later_event_before_its_booking_is_known_raises_and_sends_nothing(svc, later):
    with pytest.raises(NotKnownYet, match="appt-7f3a"):
        svc.deliver(later())
    assert svc.his.received == []
    assert svc.acked() == {} and svc.db.claims() == []
