"""his_sync's reactions through the kernel (APP.react), with fakes at the edges: the service
database as dicts (inbox claim included), the read model's surfaces over it, and booking's RPC
for the patient's real-name fields. A reaction only queues: the sending is tested on the real
tables in tests/integration/test_his_delivery.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    Event,
    HospitalRegistered,
    PatientRegistered,
    PhoneBookingsHandedOver,
)
from contracts.envelope import BACKFILL_PREFIX
from infra.memory import NotKnownYet
from infra.pii import PiiVault
from services.his_sync import hl7
from services.his_sync.handlers import APP
from tests.unit.fakes import FakeCursor, FakeDb, FakeMemory, deliver, envelope_of

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 10, 0, 5, tzinfo=UTC)  # 08:05 in Hebei
IDENTITY = {"name": "王小明", "id_number": "130105199001011237", "sex": "M", "birth_date": "1990-01-01",
            "phone": "13812345678"}
ENDPOINT = {"hospital_id": "hb3", "host": "his.hb3", "port": 2575, "receiving_application": "HIS",
            "receiving_facility": "HB3", "sending_facility": "HEBEI-APPT", "charset": "GB 18030-2000",
            "rate_per_s": 20, "inbound_facility": "HB3-HIS", "enabled": True}


class FakeEndpoints:
    def of(self, cur: FakeCursor, hospital_id: str) -> dict[str, Any] | None:
        return cur.table("his_endpoints").get(hospital_id)

    def add_default(self, cur: FakeCursor, hospital_id: str, host: str, port: int) -> None:
        cur.table("his_endpoints").setdefault(hospital_id, {**ENDPOINT, "hospital_id": hospital_id, "host": host,
                                                            "port": port})


class FakeOutbox:
    def add(self, cur: FakeCursor, **row: Any) -> bool:
        rows = cur.table("his_outbox")
        if row["control_id"] in rows:
            return False
        rows[row["control_id"]] = row
        return True


class FakeHandovers:
    def record(self, cur: FakeCursor, hospital_id: str, visit_date: Any, bookings: int, at: Any) -> None:
        cur.table("his_handovers").setdefault((hospital_id, str(visit_date)), bookings)


class FakeBooking:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def patient_for_his(self, patient_id: str) -> dict[str, str]:
        self.asked.append(patient_id)
        return dict(IDENTITY)


class HisSync:
    def __init__(self, connected: bool = True) -> None:
        self.db = FakeDb()
        self.vault = PiiVault(Fernet.generate_key().decode())
        self.booking = FakeBooking()
        self.deps = {"db": self.db, "appointments": FakeMemory("appointments", "appointment_id"),
                     "his_endpoints": FakeEndpoints(), "his_outbox": FakeOutbox(), "booking": self.booking,
                     "his_handovers": FakeHandovers(),
                     "identities": FakeMemory("patient_identities", "patient_id"),
                     "vault": self.vault, "now": NOW, "default_his": None}
        if connected:
            with self.db.transaction() as cur:
                cur.table("his_endpoints")["hb3"] = dict(ENDPOINT)

    def deliver(self, event: Event, event_id: uuid.UUID | None = None, source: str = "booking") -> Any:
        return deliver(APP, envelope_of(event, source, event_id), self.deps)

    def queued(self) -> list[dict[str, Any]]:
        return list(self.db.rows("his_outbox").values())

    def text(self, row: dict[str, Any]) -> str:
        return self.vault.decrypt(row["raw_enc"])


BOOKED: dict[str, Any] = {
    "appointment_id": "appt-7f3a", "code": "K7M2QX9P", "session_id": "s-hb3-card-0310-am",
    "hospital_id": "hb3", "department_id": "hb3-card", "doctor_id": "dr-wang", "patient_id": "patient-5b1e",
    "channel": "phone", "sequence_number": 7, "date": "2025-03-10", "period": "morning", "start": "08:00:00",
    "fee": "50.00", "paid": True,
}
LATER = {"appointment_id": "appt-7f3a", "session_id": "s-hb3-card-0310-am", "hospital_id": "hb3",
         "patient_id": "patient-5b1e", "channel": "phone"}


@pytest.fixture
def svc() -> HisSync:
    return HisSync()


def test_a_booking_queues_one_s12_with_the_real_name_for_the_hospitals_own_his_sealed_at_rest(svc):
    event_id = uuid.uuid4()
    svc.deliver(AppointmentBooked(**BOOKED), event_id=event_id)
    svc.deliver(AppointmentBooked(**BOOKED), event_id=event_id)  # redelivered: once
    [row] = svc.queued()
    assert row["message_type"] == "SIU^S12" and row["control_id"] == event_id.hex[:20]
    assert row["appointment_id"] == "appt-7f3a" and row["hospital_id"] == "hb3"
    assert "王小明" not in row["raw_enc"] and IDENTITY["id_number"] not in row["raw_enc"]
    message = svc.text(row)
    assert "王小明" in message and IDENTITY["id_number"] in message  # PID, for this hospital's HIS only
    info = hl7.describe(message)
    assert (info.message_type, info.receiving_facility, info.control_id) == ("SIU^S12", "HB3", event_id.hex[:20])
    remembered = svc.db.rows("appointments")["appt-7f3a"]
    assert "王小明" not in str(remembered) and remembered["patient_enc"]
    assert svc.booking.asked == ["patient-5b1e"]


def test_a_hospital_without_a_his_gets_nothing_queued_and_its_patients_data_is_not_asked_for():
    svc = HisSync(connected=False)
    svc.deliver(AppointmentBooked(**BOOKED))
    assert svc.queued() == [] and svc.booking.asked == []


@pytest.mark.parametrize(("later", "message_type"), [
    (AppointmentCancelled(**LATER, reason="patient"), "SIU^S15"),
    (AppointmentLapsed(**LATER), "SIU^S26"),
    (AppointmentCheckedIn(**LATER, clerk_id="clerk-1", fee_taken="0.00"), "ADT^A04"),
    (AppointmentRefunded(**LATER, clerk_id="clerk-1", refund_due="50.00", reason="病人要求", place_released=False),
     "ADT^A11"),
])
def test_each_later_message_is_built_from_the_appointment_as_booked(svc, later, message_type):
    svc.deliver(AppointmentBooked(**BOOKED))
    svc.deliver(later)
    first, second = svc.queued()
    assert second["message_type"] == message_type and second["appointment_id"] == "appt-7f3a"
    text = svc.text(second)
    assert hl7.describe(text).message_type == message_type and "王小明" in text and "dr-wang" in text


def test_a_later_event_before_its_booking_is_retried_not_lost(svc):
    with pytest.raises(NotKnownYet):
        svc.deliver(AppointmentLapsed(**LATER))
    assert svc.queued() == []


def test_a_move_carries_the_new_session_and_keeps_the_patient(svc):
    svc.deliver(AppointmentBooked(**BOOKED))
    svc.deliver(AppointmentMoved(**{**BOOKED, "from_session_id": BOOKED["session_id"],
                                    "session_id": "s-hb3-card-0312-pm", "date": "2025-03-12",
                                    "period": "afternoon", "start": "14:00:00", "sequence_number": 3}))
    moved = svc.queued()[1]
    assert moved["message_type"] == "SIU^S14" and "s-hb3-card-0312-pm" in svc.text(moved)
    assert "王小明" in svc.text(moved) and svc.booking.asked == ["patient-5b1e"]


def test_the_handover_queues_one_a05_per_paid_phone_booking_each_with_its_own_control_id(svc):
    other = {**BOOKED, "appointment_id": "appt-2", "code": "ABCDEFGH", "patient_id": "patient-2"}
    svc.deliver(AppointmentBooked(**BOOKED))
    svc.deliver(AppointmentBooked(**other))
    handover = PhoneBookingsHandedOver(hospital_id="hb3", visit_date="2025-03-10", appointments=[
        {"appointment_id": "appt-7f3a", "code": "K7M2QX9P", "sequence_number": 7},
        {"appointment_id": "appt-2", "code": "ABCDEFGH", "sequence_number": 8}])
    event_id = uuid.uuid4()
    svc.deliver(handover, event_id=event_id)
    svc.deliver(handover, event_id=event_id)
    a05 = [r for r in svc.queued() if r["message_type"] == "ADT^A05"]
    assert sorted(r["appointment_id"] for r in a05) == ["appt-2", "appt-7f3a"]
    assert len({r["control_id"] for r in a05}) == 2
    assert all(str(r["handover_date"]) == "2025-03-10" for r in a05)
    assert svc.db.rows("his_handovers") == {("hb3", "2025-03-10"): 2}  # handed over, with two bookings


def test_a_new_hospital_gets_the_deployments_default_his_if_there_is_one():
    svc = HisSync(connected=False)
    svc.deliver(HospitalRegistered(hospital_id="hb9", name="某医院", level="3A", address="x"), source="schedule")
    assert svc.db.rows("his_endpoints") == {}
    svc.deps["default_his"] = ("127.0.0.1", 2575)
    svc.deliver(HospitalRegistered(hospital_id="hb9", name="某医院", level="3A", address="x"), source="schedule")
    assert svc.db.rows("his_endpoints")["hb9"]["host"] == "127.0.0.1"


def test_a_backfilled_history_sends_the_his_nothing(svc):
    """Past activity appended by scripts/demo_history.py (correlation `backfill:`): the HIS is not
    sent bookings, check-ins and no-shows of visits long over."""
    for event in (AppointmentBooked(**BOOKED), AppointmentCheckedIn(**LATER, clerk_id="c1", fee_taken="0.00")):
        deliver(APP, {**envelope_of(event, "booking"), "correlation_id": f"{BACKFILL_PREFIX}demo:1"}, svc.deps)
    assert svc.queued() == [] and svc.booking.asked == []
    svc.deliver(AppointmentBooked(**BOOKED))
    assert [r["message_type"] for r in svc.queued()] == ["SIU^S12"]


def test_a_patient_s_identity_is_asked_of_booking_once_and_kept_sealed(svc):
    svc.deliver(PatientRegistered(patient_id="patient-5b1e", id_masked="130105********1237",
                                  phone_masked="139****0000", birth_date="1990-01-01", sex="M"))
    assert svc.booking.asked == ["patient-5b1e"]  # learnt at registration
    kept = svc.db.rows("patient_identities")["patient-5b1e"]
    assert "王小明" not in str(kept) and IDENTITY["id_number"] not in str(kept)
    svc.deliver(AppointmentBooked(**BOOKED))
    svc.deliver(AppointmentBooked(**{**BOOKED, "appointment_id": "appt-2", "code": "K7M2QX9Q"}))
    texts = [svc.text(row) for row in svc.queued()]
    assert len(texts) == 2 and all("王小明" in t and IDENTITY["id_number"] in t for t in texts)
    assert svc.booking.asked == ["patient-5b1e"]  # neither booking asked again


def test_a_patient_registered_before_identities_were_kept_is_asked_at_the_first_booking_only(svc):
    svc.deliver(AppointmentBooked(**BOOKED))
    svc.deliver(AppointmentBooked(**{**BOOKED, "appointment_id": "appt-2", "code": "K7M2QX9Q"}))
    assert svc.booking.asked == ["patient-5b1e"] and len(svc.queued()) == 2
