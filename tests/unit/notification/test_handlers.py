"""notification's reactions through the kernel (APP.react), with fakes at the edges: the service
database as dicts (inbox claim included), the read model's surfaces over it, booking's RPC."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
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
    DepartmentCreated,
    DoctorRegistered,
    HospitalRegistered,
    NotFound,
    PatientBanned,
    PatientPasswordReplaced,
    PatientRegistered,
    PatientRegistrationRefused,
    to_wire,
)
from contracts.envelope import BACKFILL_PREFIX
from infra.memory import NotKnownYet
from infra.pii import PiiVault
from services.notification import domain
from services.notification.handlers import APP
from tests.unit.fakes import FakeCursor, FakeDb, FakeMemory, deliver, envelope_of

pytestmark = pytest.mark.unit

NOON = datetime(2025, 3, 5, 12, 0, tzinfo=domain.HOSPITAL_TZ)  # a Wednesday, outside the quiet hours
PHONE = "13812345678"
PHONE_MASKED = "138****5678"


class FakeNames:
    def remember(self, cur: FakeCursor, id_: str, name: str) -> None:
        cur.table("names")[id_] = name

    def of(self, cur: FakeCursor, ids: Any) -> dict[str, str]:
        names = cur.table("names")
        return {i: names[i] for i in ids if i in names}


class FakeOutbox:
    """The outbox's queueing surface: one row per intent key, as the unique index keeps it."""

    def add(self, cur: FakeCursor, **row: Any) -> bool:
        rows = cur.table("outbox")
        key = row.get("intent_key") or f"message:{len(rows)}"
        if any(r.get("intent_key") == key for r in rows.values()):
            return False
        rows[len(rows)] = {"status": "queued", **row}
        return True

    def withdraw(self, cur: FakeCursor, patient_id: str, template: str, before: Any) -> None:
        for r in cur.table("outbox").values():
            if r["patient_id"] == patient_id and r["template"] == template and r["status"] == "queued" \
                    and r["not_before"] < before:
                r["status"] = "withdrawn"


class FakeHospitals:
    def __init__(self) -> None:
        self.sms: dict[str, domain.HospitalSms] = {}

    def remember_address(self, cur: FakeCursor, hospital_id: str, address: str) -> None:
        cur.table("hospitals")[hospital_id] = address

    def settings(self, cur: FakeCursor, hospital_id: str) -> domain.HospitalSms:
        base = self.sms.get(hospital_id, domain.HospitalSms())
        return replace(base, address=cur.table("hospitals").get(hospital_id, ""))


class FakeDoctors:
    def remember(self, cur: FakeCursor, doctor_id: str, hospital_id: str) -> None:
        cur.table("doctors").setdefault(doctor_id, {"doctor_id": doctor_id, "notice": "none", "phone_enc": None})
        cur.table("doctors")[doctor_id]["hospital_id"] = hospital_id

    def contact(self, cur: FakeCursor, doctor_id: str) -> dict[str, Any] | None:
        return cur.table("doctors").get(doctor_id)


class FakeBooking:
    """booking's RPC: patient_contact answers the clear phone, or a domain error on the wire."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.missing: set[str] = set()
        self.locale = "zh"

    def patient_contact(self, patient_id: str) -> dict[str, Any]:
        self.asked.append(patient_id)
        if patient_id in self.missing:
            return to_wire(NotFound(f"no patient {patient_id}"))
        return {"phone": PHONE, "phone_masked": PHONE_MASKED, "locale": self.locale}


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
            "hospitals": FakeHospitals(),
            "doctors": FakeDoctors(),
            "sms_outbox": FakeOutbox(),
            "appointments": FakeMemory("appointments", "appointment_id"),
            "contacts": FakeMemory("patient_contacts", "patient_id"),
            "now": NOON,
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
        booked().model_dump(mode="json"), {"hb3": "河北医科大学第三医院", "hb3-card": "心内科", "dr-wang": "王建国"},
        sms=domain.HospitalSms(address="石家庄"))
    assert "医院地址：石家庄" in sms["text"]  # the address from the hospital's registration
    assert sms["not_before"] == NOON and sms["urgent"] is False
    assert "河北医科大学第三医院心内科王建国医生" in sms["text"]
    assert sms["event_id"] == event_id and sms["patient_id"] == "patient-5b1e"
    assert sms["phone_masked"] == PHONE_MASKED
    assert PHONE not in sms["phone_enc"] and svc.vault.decrypt(sms["phone_enc"]) == PHONE
    assert sms["phone_hash"] == svc.vault.lookup_hash(PHONE)  # the outbox finds one number's messages
    # The redelivery found its claim before asking booking anything.
    assert svc.booking.asked == ["patient-5b1e"]
    assert ("notification.confirm_booking", str(event_id)) in svc.db.claims()
    remembered = svc.db.rows("appointments")["appt-7f3a"]
    assert remembered["code"] == "K7M2QX9P" and remembered["status"] == "active"
    assert PHONE not in str(remembered) and svc.vault.decrypt(remembered["contact"]["phone_enc"]) == PHONE


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
    assert "2025-03-12下午门诊，就诊序号3。预约码K7M2QX9P不变，挂号费50.00元不变" in svc.sms()[1]["text"]
    assert "改由" not in svc.sms()[1]["text"]  # the same doctor: no word of another
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


# --- issue 11: quiet hours, urgency, the doctor, bans, the window ----------------------------------

def test_a_confirmation_queued_in_the_quiet_hours_waits_for_the_morning(svc):
    svc.deps["now"] = datetime(2025, 3, 5, 22, 30, tzinfo=domain.HOSPITAL_TZ)
    svc.deliver(booked())
    [sms] = svc.sms()
    assert sms["not_before"] == datetime(2025, 3, 6, 8, 0, tzinfo=domain.HOSPITAL_TZ) and not sms["urgent"]


def test_a_doctor_stop_for_tomorrow_goes_at_once_even_at_night_and_one_next_week_waits(svc):
    night = datetime(2025, 3, 9, 23, 0, tzinfo=domain.HOSPITAL_TZ)  # the visit is on 2025-03-10
    svc.deps["now"] = night
    svc.deliver(booked())
    svc.deliver(cancelled(reason="doctor_stop", refund_due="50.00"))
    stop = svc.sms()[-1]
    assert stop["urgent"] is True and stop["not_before"] == night

    later = Notification()
    later.deps["now"] = datetime(2025, 3, 1, 23, 0, tzinfo=domain.HOSPITAL_TZ)
    later.deliver(booked())
    later.deliver(cancelled(reason="doctor_stop"))
    assert later.sms()[-1]["urgent"] is False
    assert later.sms()[-1]["not_before"] == datetime(2025, 3, 2, 8, 0, tzinfo=domain.HOSPITAL_TZ)


def test_a_patient_cancelling_at_night_for_tomorrow_is_not_urgent(svc):
    svc.deps["now"] = datetime(2025, 3, 9, 23, 0, tzinfo=domain.HOSPITAL_TZ)
    svc.deliver(booked())
    svc.deliver(cancelled(reason="patient"))
    assert svc.sms()[-1]["urgent"] is False


def test_a_replacement_with_another_doctor_names_both(svc):
    svc.deliver(DoctorRegistered(doctor_id="dr-li", hospital_id="hb3", department_id="hb3-card",
                                 name="李红", title="副主任医师", specialty="高血压"), source="schedule")
    svc.deliver(booked())
    svc.deliver(moved().model_copy(update={"doctor_id": "dr-li"}))
    text = svc.sms()[-1]["text"]
    assert "原王建国医生停诊，改由李红医生接诊。" in text and "李红医生2025-03-12下午门诊" in text


def _doctor_wants(svc: Notification, notice: str, phone: str = "13900001111") -> None:
    with svc.db.transaction() as cur:
        cur.table("doctors")["dr-wang"].update({
            "notice": notice, "phone_enc": svc.vault.encrypt(phone), "phone_masked": "139****1111",
            "phone_hash": svc.vault.lookup_hash(phone)})


def test_a_doctor_who_wants_each_booking_gets_one_sms_without_patient_detail(svc):
    _doctor_wants(svc, "each")
    event_id = uuid.uuid4()
    svc.deliver(booked(), event_id=event_id)
    svc.deliver(booked(), event_id=event_id)  # redelivered: still one each
    patient, doctor = svc.sms()
    assert patient["template"] == "booking_confirmation"
    assert doctor["template"] == "doctor_booking" and doctor["recipient"] == "doctor"
    assert svc.vault.decrypt(doctor["phone_enc"]) == "13900001111"
    assert doctor["text"] == "【河北预约挂号】王建国医生：您2025-03-10上午门诊新增预约，就诊序号7。"
    assert "patient" not in doctor["text"] and PHONE_MASKED not in doctor["text"] and "K7M2QX9P" not in doctor["text"]


def test_a_doctor_on_the_digest_or_without_a_choice_gets_nothing_per_booking(svc):
    _doctor_wants(svc, "digest")
    svc.deliver(booked())
    assert [s["template"] for s in svc.sms()] == ["booking_confirmation"]


def test_a_ban_is_told_with_its_end_and_its_lift_is_queued_for_the_morning_after(svc):
    svc.deliver(PatientBanned(patient_id="patient-5b1e", until="2025-06-03", no_shows=3))
    ban, lift = svc.sms()
    assert ban["template"] == "patient_banned" and "暂停至2025-06-03" in ban["text"] and "爽约3次" in ban["text"]
    assert lift["template"] == "ban_lifted"
    assert lift["not_before"] == datetime(2025, 6, 4, 8, 0, tzinfo=domain.HOSPITAL_TZ)

    # A longer ban before the first ends: the first lift notice would be wrong and is withdrawn.
    svc.deliver(PatientBanned(patient_id="patient-5b1e", until="2025-09-01", no_shows=4))
    states = [(s["template"], s["status"]) for s in svc.sms()]
    assert states == [("patient_banned", "queued"), ("ban_lifted", "withdrawn"),
                      ("patient_banned", "queued"), ("ban_lifted", "queued")]


def test_a_refund_at_the_window_is_told_and_checked_in_or_lapsed_bookings_are_marked(svc):
    svc.deliver(booked())
    svc.deliver(AppointmentRefunded(appointment_id="appt-7f3a", session_id="s-hb3-card-0310-am", hospital_id="hb3",
                                    patient_id="patient-5b1e", channel="web", clerk_id="c1", refund_due="50.00",
                                    reason="patient ill", place_released=True))
    assert "已在窗口退号，挂号费50.00元将退还" in svc.sms()[-1]["text"]
    assert svc.db.rows("appointments")["appt-7f3a"]["status"] == "refunded"

    other = booked(appointment_id="appt-2", code="ABCDEFGH")
    svc.deliver(other)
    svc.deliver(AppointmentCheckedIn(appointment_id="appt-2", session_id="s-hb3-card-0310-am", hospital_id="hb3",
                                     patient_id="patient-5b1e", channel="web", clerk_id="c1", fee_taken="50.00"))
    assert svc.db.rows("appointments")["appt-2"]["status"] == "checked_in"
    with pytest.raises(NotKnownYet):  # an outcome before its booking: retried after it
        svc.deliver(AppointmentLapsed(appointment_id="appt-3", session_id="s", hospital_id="hb3",
                                      patient_id="patient-5b1e", channel="web"))


def test_an_english_speaking_patient_gets_english_texts(svc):
    svc.booking.locale = "en"
    svc.deliver(booked())
    assert svc.sms()[0]["text"].startswith("[Hebei Appointments] Booked:")
    svc.deliver(cancelled())
    assert svc.sms()[1]["text"].startswith("[Hebei Appointments] your booking")


def test_security_messages_are_urgent(svc):
    svc.deps["now"] = datetime(2025, 3, 5, 23, 0, tzinfo=domain.HOSPITAL_TZ)
    svc.deliver(PatientPasswordReplaced(patient_id="patient-5b1e"))
    assert svc.sms()[0]["urgent"] is True and svc.sms()[0].get("not_before") is None



def test_a_backfilled_history_sends_no_sms_and_asks_booking_nothing(svc):
    """Weeks of past activity appended by scripts/demo_history.py (correlation `backfill:`): no
    confirmation, no cancellation notice, no ban SMS for visits long over."""
    def past(event: Any) -> dict[str, Any]:
        return {**envelope_of(event, "booking"), "correlation_id": f"{BACKFILL_PREFIX}demo:1"}

    for event in (booked(), cancelled(), PatientBanned(patient_id="patient-5b1e", until="2025-06-01", no_shows=3),
                  PatientRegistrationRefused(patient_id="patient-5b1e", attempt_phone_masked="139****0000")):
        deliver(APP, past(event), svc.deps)
    assert svc.sms() == [] and svc.booking.asked == []
    assert "appt-7f3a" not in svc.db.rows("appointments")
    svc.deliver(booked())  # the live one still is told
    assert [s["template"] for s in svc.sms()] == ["booking_confirmation"]


def test_a_patient_s_contact_is_asked_of_booking_once_and_kept_sealed(svc):
    registered = PatientRegistered(patient_id="patient-5b1e", id_masked="130102********1234",
                                   phone_masked=PHONE_MASKED, birth_date="1980-01-01", sex="F")
    svc.deliver(registered)
    assert svc.booking.asked == ["patient-5b1e"]  # learnt at registration
    kept = svc.db.rows("patient_contacts")["patient-5b1e"]
    assert PHONE not in str(kept) and svc.vault.decrypt(kept["phone_enc"]) == PHONE
    svc.deliver(booked())
    svc.deliver(booked(appointment_id="appt-2", code="K7M2QX9Q", session_id="s-hb3-card-0311-am", date="2025-03-11"))
    sent = svc.sms()
    assert len(sent) == 2 and all(svc.vault.decrypt(m["phone_enc"]) == PHONE for m in sent)
    assert svc.booking.asked == ["patient-5b1e"]  # neither booking asked again


def test_a_patient_registered_before_contacts_were_kept_is_asked_at_the_first_booking_only():
    service = Notification()
    service.deliver(booked())
    service.deliver(booked(appointment_id="appt-2", code="K7M2QX9Q", session_id="s-hb3-card-0311-am"))
    assert service.booking.asked == ["patient-5b1e"]
    assert len(service.sms()) == 2
