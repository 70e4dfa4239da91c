"""notification's reactions through the kernel (APP.react), with fakes at the edges: the service
database as dicts (inbox claim included), the read model's surfaces over it, booking's RPC."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentMoved,
    DepartmentCreated,
    DoctorRegistered,
    HospitalRegistered,
    NotFound,
    PatientPasswordReplaced,
    PatientRegistrationRefused,
    to_wire,
)
from infra.memory import NotKnownYet
from infra.pii import PiiVault
from services.notification import domain
from services.notification.handlers import APP
from tests.unit.fakes import FakeCursor, FakeDb, FakeMemory, deliver, envelope_of

pytestmark = pytest.mark.unit

PHONE = "13812345678"
PHONE_MASKED = "138****5678"


class FakeNames:
    def remember(self, cur: FakeCursor, id_: str, name: str) -> None:
        cur.table("names")[id_] = name

    def of(self, cur: FakeCursor, ids: Any) -> dict[str, str]:
        names = cur.table("names")
        return {i: names[i] for i in ids if i in names}


class FakeOutbox:
    def add(self, cur: FakeCursor, **row: Any) -> None:
        rows = cur.table("outbox")
        rows[len(rows)] = row


class FakeBooking:
    """booking's RPC: patient_contact answers the clear phone, or a domain error on the wire."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.missing: set[str] = set()

    def patient_contact(self, patient_id: str) -> dict[str, Any]:
        self.asked.append(patient_id)
        if patient_id in self.missing:
            return to_wire(NotFound(f"no patient {patient_id}"))
        return {"phone": PHONE, "phone_masked": PHONE_MASKED}


class Notification:
    """The service's dependencies, as the nameko class would inject them by name."""

    def __init__(self) -> None:
        self.db = FakeDb()
        self.booking = FakeBooking()
        self.vault = PiiVault(Fernet.generate_key().decode())
        self.deps = {
            "db": self.db,
            "booking": self.booking,
            "vault": self.vault,
            "names": FakeNames(),
            "sms_outbox": FakeOutbox(),
            "appointments": FakeMemory("appointments", "appointment_id"),
        }

    def deliver(self, event: Any, source: str = "booking", event_id: uuid.UUID | None = None) -> Any:
        return deliver(APP, envelope_of(event, source, event_id), self.deps)

    def sms(self) -> list[dict[str, Any]]:
        return list(self.db.rows("outbox").values())


def booked(**overrides: Any) -> AppointmentBooked:
    fields: dict[str, Any] = {
        "appointment_id": "appt-7f3a", "code": "K7M2QX9P", "session_id": "s-hb3-card-0310-am",
        "hospital_id": "hb3", "department_id": "hb3-card", "doctor_id": "dr-wang",
        "patient_id": "patient-5b1e", "channel": "web", "sequence_number": 7,
        "date": "2025-03-10", "period": "morning", "start": "08:00:00", "fee": "50.00",
    }
    return AppointmentBooked(**{**fields, **overrides})


def cancelled(reason: str = "patient", refund_due: str | None = None) -> AppointmentCancelled:
    return AppointmentCancelled(
        appointment_id="appt-7f3a", session_id="s-hb3-card-0310-am", hospital_id="hb3",
        patient_id="patient-5b1e", channel="web", reason=reason, refund_due=refund_due,
    )


def moved() -> AppointmentMoved:
    return AppointmentMoved(
        appointment_id="appt-7f3a", code="K7M2QX9P", from_session_id="s-hb3-card-0310-am",
        session_id="s-hb3-card-0312-pm", hospital_id="hb3", department_id="hb3-card", doctor_id="dr-wang",
        patient_id="patient-5b1e", channel="web", sequence_number=3, date="2025-03-12",
        period="afternoon", start="14:00:00", fee="50.00",
    )


@pytest.fixture
def svc() -> Notification:
    service = Notification()
    service.deliver(HospitalRegistered(hospital_id="hb3", name="河北医科大学第三医院", level="3A", address="石家庄"),
                    source="schedule")
    service.deliver(DepartmentCreated(department_id="hb3-card", hospital_id="hb3", name="心内科", parent_id=None),
                    source="schedule")
    service.deliver(DoctorRegistered(doctor_id="dr-wang", hospital_id="hb3", department_id="hb3-card",
                                     name="王建国", title="主任医师", specialty="冠心病"), source="schedule")
    return service


def test_a_booking_delivered_twice_queues_one_confirmation_with_the_names_and_the_phone_sealed(svc):
    event_id = uuid.uuid4()
    svc.deliver(booked(), event_id=event_id)
    svc.deliver(booked(), event_id=event_id)

    [sms] = svc.sms()
    assert sms["template"] == "booking_confirmation"
    assert sms["text"] == domain.booking_confirmation(
        booked().model_dump(mode="json"), {"hb3": "河北医科大学第三医院", "hb3-card": "心内科", "dr-wang": "王建国"})
    assert "河北医科大学第三医院心内科王建国医生" in sms["text"]
    assert sms["event_id"] == event_id and sms["patient_id"] == "patient-5b1e"
    assert sms["phone_masked"] == PHONE_MASKED
    assert PHONE not in sms["phone_enc"] and svc.vault.decrypt(sms["phone_enc"]) == PHONE
    assert sms["phone_hash"] == svc.vault.lookup_hash(PHONE)  # the outbox finds one number's messages
    # The redelivery found its claim before asking booking anything.
    assert svc.booking.asked == ["patient-5b1e"]
    assert ("notification.confirm_booking", str(event_id)) in svc.db.claims()
    assert svc.db.rows("appointments")["appt-7f3a"]["code"] == "K7M2QX9P"


def test_an_unknown_name_falls_back_to_its_id():
    service = Notification()
    service.deliver(booked())
    [sms] = service.sms()
    assert "hb3hb3-carddr-wang医生" in sms["text"]


def test_a_cancellation_before_its_booking_is_known_raises_and_queues_nothing_then_succeeds_on_retry(svc):
    body_id = uuid.uuid4()
    with pytest.raises(NotKnownYet, match="appt-7f3a"):
        svc.deliver(cancelled(), event_id=body_id)
    assert svc.sms() == []
    assert all(consumer != "notification.tell_cancelled" for consumer, _ in svc.db.claims())

    svc.deliver(booked())
    svc.deliver(cancelled(), event_id=body_id)  # the retry, after the booking's own message
    assert [s["template"] for s in svc.sms()] == ["booking_confirmation", "cancelled"]
    assert "（预约码K7M2QX9P）已取消" in svc.sms()[1]["text"]


def test_a_doctor_stop_cancellation_says_why_and_the_refund(svc):
    svc.deliver(booked())
    svc.deliver(cancelled(reason="doctor_stop", refund_due="50.00"))
    sms = svc.sms()[-1]
    assert sms["template"] == "cancelled_doctor_stop"
    assert sms["text"].startswith("【河北预约挂号】因王建国医生停诊，")
    assert "挂号费50.00元将退还。" in sms["text"]


def test_a_move_is_told_and_a_later_cancellation_words_the_new_session(svc):
    svc.deliver(booked())
    svc.deliver(moved())
    svc.deliver(cancelled())
    templates = [s["template"] for s in svc.sms()]
    assert templates == ["booking_confirmation", "moved_by_doctor_stop", "cancelled"]
    assert "2025-03-12下午门诊，就诊序号3，预约码K7M2QX9P不变" in svc.sms()[1]["text"]
    assert "2025-03-12下午门诊" in svc.sms()[2]["text"]


def test_when_booking_does_not_know_the_patient_nothing_is_queued_and_the_delivery_can_be_retried(svc):
    svc.booking.missing.add("patient-5b1e")
    event_id = uuid.uuid4()
    with pytest.raises(NotFound):
        svc.deliver(booked(), event_id=event_id)
    assert svc.sms() == []
    assert "appt-7f3a" not in svc.db.rows("appointments")

    svc.booking.missing.clear()
    svc.deliver(booked(), event_id=event_id)
    assert len(svc.sms()) == 1


def test_a_renamed_doctor_is_named_anew_in_later_texts(svc):
    svc.deliver(DoctorRegistered(doctor_id="dr-wang", hospital_id="hb3", department_id="hb3-card",
                                 name="王建民", title="主任医师", specialty="冠心病"), source="schedule")
    svc.deliver(booked())
    assert "王建民医生" in svc.sms()[0]["text"]


def test_a_refused_registration_delivered_twice_tells_the_owner_once_on_the_registered_phone(svc):
    event_id = uuid.uuid4()
    refused = PatientRegistrationRefused(patient_id="patient-5b1e", attempt_phone_masked="139****0000")
    svc.deliver(refused, event_id=event_id)
    svc.deliver(refused, event_id=event_id)

    [sms] = svc.sms()
    assert sms["template"] == "registration_refused" and sms["patient_id"] == "patient-5b1e"
    assert sms["text"] == domain.registration_refused("139****0000")
    assert sms["phone_hash"] == svc.vault.lookup_hash(PHONE) and svc.vault.decrypt(sms["phone_enc"]) == PHONE
    assert svc.booking.asked == ["patient-5b1e"]


def test_a_replaced_password_is_told_to_the_registered_phone(svc):
    svc.deliver(PatientPasswordReplaced(patient_id="patient-5b1e"))
    [sms] = svc.sms()
    assert sms["template"] == "password_replaced" and sms["text"] == domain.password_replaced()
    assert sms["phone_masked"] == PHONE_MASKED


def test_a_security_sms_for_a_patient_booking_does_not_know_is_retried_not_dropped(svc):
    svc.booking.missing.add("patient-5b1e")
    with pytest.raises(NotFound):
        svc.deliver(PatientPasswordReplaced(patient_id="patient-5b1e"))
    assert svc.sms() == [] and all(c != "notification.tell_password_replaced" for c, _ in svc.db.claims())
