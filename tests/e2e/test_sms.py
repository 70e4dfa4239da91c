"""SMS end to end, the platform as real processes with two notification replicas (each running
the dispatcher and the timers): a booking gives the patient's confirmation and the doctor's
notice; the reminder run for the visit day gives exactly one reminder per booking still active,
none for a cancelled one, and a second run nothing new; every message is handed to the provider
(the outbox adapter) once; a hospital admin sets the SMS hours and the doctor's contact, another
hospital's admin may not."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import pytest
import requests

from services.gateway.staff import ApiClient
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "hebmu2-zhang-d3-am"
DOCTOR = "hebmu2-zhang"
DOCTOR_PHONE = "13911112222"


def rid(n: int) -> str:
    return with_check_digit(f"13040519600101{n:03d}")


class Sms:
    def __init__(self, platform: Any) -> None:
        self.base = f"http://{platform.gateway_address}"
        self.admin = ApiClient(self.base).login("admin", "admin-pass-2024")
        self.hadmin = ApiClient(self.base).login("hebmu2-admin", "admin-pass-2024")

    def patient(self, n: int) -> tuple[ApiClient, str]:
        phone = f"137{n:08d}"
        code = self.admin.sms_code(phone, operator=self.admin)
        status, answer = ApiClient(self.base).call("POST", "/api/v1/patients", {
            "name": f"赵{n}敏", "id_number": rid(n), "phone": phone, "password": "good-pass-77", "sms_code": code})
        assert status == 201, answer
        return ApiClient(self.base, answer["token"]), phone

    def book(self, patient: ApiClient) -> dict[str, Any]:
        r = requests.post(self.base + "/api/v1/appointments", json={"session_id": SESSION}, timeout=30,
                          headers={"Authorization": f"Bearer {patient.token}", "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def outbox(self, phone: str) -> list[dict[str, Any]]:
        status, answer = self.admin.call("GET", f"/api/v1/dev/sms?phone={phone}")
        assert status == 200, answer
        return list(answer["messages"])

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := check():
                return found
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    def session_date(self) -> str:
        def opened() -> str | None:
            _, answer = ApiClient(self.base).call("GET", "/api/v1/departments/hebmu2-xnk/schedule")
            return next((str(s["date"]) for s in (answer or {}).get("sessions", [])
                         if s["session_id"] == SESSION and s["state"] in ("open", "full")), None)
        return str(self.wait_for("the demo session to open", opened))


@pytest.fixture(scope="module")
def sms() -> Any:
    env = {"SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000", "RATE_BURST_CLIENT": "5000"}
    with running_platform("sms", ["demo/walking-skeleton.json"], env=env, replicas={"notification": 2}) as p:
        s = Sms(p)
        status, answer = s.hadmin.call("POST", "/api/v1/admin/schedule/change_session_quota",
                                       {"session_id": SESSION, "quota": {"web": 20, "phone": 5, "window": 5}})
        assert status == 200, answer
        yield s


def test_booking_confirms_tells_the_doctor_and_the_reminder_run_reminds_each_active_booking_once(sms):
    # No quiet hours for this hospital, whatever the hour the test runs at: everything goes at once.
    status, settings = sms.hadmin.call("PUT", "/api/v1/hospitals/hebmu2/sms-settings", {
        "quiet_start": "00:00", "quiet_end": "00:00", "window_location": "门诊楼一层预约窗口"})
    assert status == 200 and settings["window_location"] == "门诊楼一层预约窗口", settings
    status, contact = sms.hadmin.call("PUT", f"/api/v1/doctors/{DOCTOR}/contact",
                                      {"phone": DOCTOR_PHONE, "notice": "each"})
    assert status == 200 and contact["phone_masked"] == "139****2222" and contact["notice"] == "each", contact
    assert DOCTOR_PHONE not in str(contact)

    day = sms.session_date()
    patients = [sms.patient(n) for n in range(1, 4)]
    booked = [sms.book(client) for client, _ in patients]

    for (_, phone), answer in zip(patients, booked, strict=True):
        [confirmation] = sms.wait_for(f"the confirmation to {phone}", lambda p=phone: [
            m for m in sms.outbox(p) if m["template"] == "booking_confirmation"])
        assert f"预约码{answer['code']}" in confirmation["text"]
        assert f"就诊序号{answer['sequence_number']}" in confirmation["text"]
        assert "门诊楼一层预约窗口" in confirmation["text"]
    doctor = sms.wait_for("the doctor's three notices", lambda: (
        found if len(found := [m for m in sms.outbox(DOCTOR_PHONE) if m["template"] == "doctor_booking"]) == 3
        else None))
    numbers = sorted(a["sequence_number"] for a in booked)
    assert sorted(int(m["text"].split("就诊序号")[1].rstrip("。")) for m in doctor) == numbers
    assert all("赵" not in m["text"] and "137" not in m["text"] for m in doctor)  # no patient detail

    # The third cancels before the reminders.
    third, third_phone = patients[2]
    r = requests.post(f"{sms.base}/api/v1/appointments/{booked[2]['appointment_id']}/cancel", json={}, timeout=30,
                      headers={"Authorization": f"Bearer {third.token}", "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 200, r.text
    sms.wait_for("the cancellation SMS", lambda: [m for m in sms.outbox(third_phone) if m["template"] == "cancelled"])

    status, run = sms.hadmin.call("POST", "/api/v1/sms/reminders", {"visit_date": day})
    assert status == 200 and run == {"visit_date": day, "queued": 2}, run
    status, again = sms.hadmin.call("POST", "/api/v1/sms/reminders", {"visit_date": day})
    assert status == 200 and again["queued"] == 0, again
    for _, phone in patients[:2]:
        [reminder] = [m for m in sms.outbox(phone) if m["template"] == "reminder"]
        assert "就诊提醒" in reminder["text"]
    assert not [m for m in sms.outbox(third_phone) if m["template"] == "reminder"]

    # Every message of this hospital is handed to the provider, once, by one of the two replicas.
    def all_sent() -> list[dict[str, Any]] | None:
        _, answer = sms.hadmin.call("GET", "/api/v1/sms/messages?limit=500")
        mine = answer["messages"]
        return mine if mine and all(m["status"] == "sent" for m in mine) else None

    messages = sms.wait_for("every message to be sent", all_sent)
    assert Counter(m["template"] for m in messages) == {
        "booking_confirmation": 3, "doctor_booking": 3, "cancelled": 1, "reminder": 2}
    assert all(m["attempts"] == 1 and m["provider"] == "outbox" for m in messages)
    assert not any(DOCTOR_PHONE in str(m) or "137000000" in str(m) for m in messages)  # masked only

    analyst = ApiClient(sms.base).login("analyst", "analyst-pass-2024")
    status, counts = analyst.call("GET", f"/api/v1/sms/counts?from={day[:8]}01&to={day}&hospital_id=hebmu2")
    assert status == 200, counts
    by_template = Counter({c["template"]: c["count"] for c in counts["counts"] if c["status"] == "sent"})
    assert by_template["reminder"] == 2 and by_template["booking_confirmation"] == 3


def test_settings_and_contacts_belong_to_the_hospitals_own_admin(sms):
    clerk = ApiClient(sms.base).login("hebmu2-clerk", "clerk-pass-2024")
    status, _ = clerk.call("PUT", "/api/v1/hospitals/hebmu2/sms-settings", {"reminder_time": "17:00"})
    assert status == 403
    status, _ = sms.hadmin.call("PUT", "/api/v1/hospitals/other-hospital/sms-settings", {"reminder_time": "17:00"})
    assert status == 403
    status, answer = sms.hadmin.call("PUT", "/api/v1/hospitals/hebmu2/sms-settings",
                                     {"reminder_time": "22:00", "quiet_start": "21:00", "quiet_end": "08:00"})
    assert status == 400 and answer["error"]["field"] == "reminder_time", answer
    status, answer = sms.hadmin.call("PUT", f"/api/v1/doctors/{DOCTOR}/contact", {"phone": "", "notice": "each"})
    assert status == 400 and answer["error"]["field"] == "phone", answer
    doctor = ApiClient(sms.base).login("hebmu2-zhang", "doctor-pass-2024")
    status, own = doctor.call("GET", f"/api/v1/doctors/{DOCTOR}/contact")
    assert status == 200 and own["doctor_id"] == DOCTOR, own
    status, _ = doctor.call("PUT", f"/api/v1/doctors/{DOCTOR}/contact", {"phone": "13900000000", "notice": "each"})
    assert status == 403
