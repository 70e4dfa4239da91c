"""The hospital side through the HTTP API, the platform as real processes: staff accounts (created,
disabled, never deleted), doctors' own lists, password changes, onboarding a hospital, holidays
that stop published sessions, and the window desk's lookups and day lists."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from services.gateway.staff import ApiClient
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "hebmu2-zhang-d3-am"


def rid(n: int) -> str:
    body = f"13040519{50 + n % 40:02d}0{1 + n % 9}1{n % 10}{n % 1000:03d}"[:17]
    return with_check_digit(body)


class Desk:
    def __init__(self, platform: Any) -> None:
        self.base = f"http://{platform.gateway_address}"
        self.admin = ApiClient(self.base).login("admin", "admin-pass-2024")

    def as_(self, username: str, password: str) -> ApiClient:
        return ApiClient(self.base).login(username, password)

    def patient(self, n: int) -> ApiClient:
        phone = f"136{n:08d}"
        code = self.admin.sms_code(phone, operator=self.admin)
        status, answer = ApiClient(self.base).call("POST", "/api/v1/patients", {
            "name": f"王{n}芳", "id_number": rid(n), "phone": phone, "password": "good-pass-77", "sms_code": code})
        assert status == 201, answer
        return ApiClient(self.base, answer["token"])

    def book(self, patient: ApiClient) -> dict[str, Any]:
        r = requests.post(self.base + "/api/v1/appointments", json={"session_id": SESSION}, timeout=30,
                          headers={"Authorization": f"Bearer {patient.token}", "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def session_date(self) -> str:
        for _ in range(120):
            status, answer = ApiClient(self.base).call("GET", "/api/v1/departments/hebmu2-xnk/schedule")
            for s in (answer or {}).get("sessions", []):
                if s["session_id"] == SESSION and s["state"] in ("open", "full"):
                    return str(s["date"])
            time.sleep(0.5)
        raise AssertionError("the demo session never opened")


@pytest.fixture(scope="module")
def desk() -> Any:
    env = {"SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000", "RATE_BURST_CLIENT": "5000"}
    with running_platform("hospital", ["demo/walking-skeleton.json"], env=env) as p:
        desk = Desk(p)
        # more room than the demo's 2 web places: several tests book here
        hadmin = desk.as_("hebmu2-admin", "admin-pass-2024")
        status, answer = hadmin.call("POST", "/api/v1/admin/schedule/change_session_quota",
                                     {"session_id": SESSION, "quota": {"web": 20, "phone": 5, "window": 5}})
        assert status == 200, answer
        yield desk


def test_staff_accounts_are_managed_by_role_and_a_disable_ends_sessions_at_once(desk):
    hadmin = desk.as_("hebmu2-admin", "admin-pass-2024")
    made, answer = hadmin.call("POST", "/api/v1/staff", {"username": "clerk-li", "password": "window-pass-31",
                                                          "role": "clerk", "name": "李窗口"})
    assert made == 201 and answer["hospital_id"] == "hebmu2", answer
    for role in ("hospital_admin", "operator"):
        refused, _ = hadmin.call("POST", "/api/v1/staff", {"username": f"x-{role}", "password": "window-pass-31",
                                                          "role": role})
        assert refused == 403, role
    other, _ = hadmin.call("POST", "/api/v1/staff", {"username": "clerk-x", "password": "window-pass-31",
                                                    "role": "clerk", "hospital_id": "hbph"})
    assert other == 403, "not at another hospital"
    assert desk.admin.call("POST", "/api/v1/staff", {"username": "hbph-admin2", "password": "window-pass-31",
                                                     "role": "hospital_admin", "hospital_id": "hbph"})[0] == 201
    listed = hadmin.call("GET", "/api/v1/staff")[1]["staff"]
    assert {a["hospital_id"] for a in listed} == {"hebmu2"} and "clerk-li" in {a["username"] for a in listed}

    clerk = desk.as_("clerk-li", "window-pass-31")
    assert clerk.call("GET", "/api/v1/me")[0] == 200
    assert hadmin.call("POST", "/api/v1/staff/clerk-li/disable")[0] == 200
    assert clerk.call("GET", "/api/v1/me")[0] == 401, "its session ended at once"
    status, _ = ApiClient(desk.base).call("POST", "/api/v1/auth/login", {"username": "clerk-li",
                                                                          "password": "window-pass-31"})
    assert status == 401
    assert any(a["username"] == "clerk-li" and a["disabled"] for a in hadmin.call("GET", "/api/v1/staff")[1]["staff"])
    assert desk.as_("hbph-admin", "admin-pass-2024").call("POST", "/api/v1/staff/clerk-li/enable")[0] == 403
    assert hadmin.call("POST", "/api/v1/staff/clerk-li/enable")[0] == 200
    assert desk.as_("clerk-li", "window-pass-31").call("GET", "/api/v1/me")[0] == 200


def test_every_account_changes_its_password(desk):
    desk.admin.call("POST", "/api/v1/staff", {"username": "op-chen", "password": "hotline-pass-9", "role": "operator"})
    op = desk.as_("op-chen", "hotline-pass-9")
    assert op.call("POST", "/api/v1/auth/password", {"old_password": "nope", "new_password": "hotline-pass-10"})[0] \
        == 401
    weak, answer = op.call("POST", "/api/v1/auth/password", {"old_password": "hotline-pass-9",
                                                             "new_password": "password123"})
    assert weak == 400 and answer["error"]["code"] == "weak_password"
    assert op.call("POST", "/api/v1/auth/password", {"old_password": "hotline-pass-9",
                                                     "new_password": "hotline-pass-10"})[0] == 204
    assert ApiClient(desk.base).call("POST", "/api/v1/auth/login", {"username": "op-chen",
                                                                    "password": "hotline-pass-9"})[0] == 401
    desk.as_("op-chen", "hotline-pass-10")
    patient = desk.patient(40)
    assert patient.call("POST", "/api/v1/auth/password", {"old_password": "wrong-pass-1",
                                                          "new_password": "fresh-pass-41"})[0] == 401
    assert patient.call("POST", "/api/v1/auth/password", {"old_password": "good-pass-77",
                                                          "new_password": "fresh-pass-41"})[0] == 204
    desk.as_("13600000040", "fresh-pass-41")


def test_a_hospital_is_registered_by_the_platform_admin_only(desk):
    body = {"hospital_id": "hbcz", "name": "沧州市中心医院", "level": "三级甲等", "address": "沧州市运河区新华西路16号"}
    assert desk.as_("hebmu2-admin", "admin-pass-2024").call("POST", "/api/v1/hospitals", body)[0] == 403
    made, answer = desk.admin.call("POST", "/api/v1/hospitals", body)
    assert made == 201, answer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        hospitals = ApiClient(desk.base).call("GET", "/api/v1/hospitals")[1]["hospitals"]
        if any(h["hospital_id"] == "hbcz" for h in hospitals):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the new hospital is not listed")


def test_the_window_finds_bookings_by_id_and_lists_the_day_with_names(desk):
    day = desk.session_date()
    patient = desk.patient(10)
    booked = desk.book(patient)
    clerk = desk.as_("hebmu2-clerk", "clerk-pass-2024")
    me = clerk.call("GET", "/api/v1/me")[1]
    assert me["hospital_name"] == "河北医科大学第二医院", "names, not codes"

    status, found = clerk.call("GET", f"/api/v1/hospitals/hebmu2/patient-bookings?id_number={rid(10)}")
    assert status == 200, found
    assert [a["code"] for a in found["appointments"]] == [booked["code"]]
    assert rid(10) not in str(found) and found["patient"]["name_masked"].startswith("王")
    assert clerk.call("GET", f"/api/v1/hospitals/hbph/patient-bookings?id_number={rid(10)}")[0] == 403
    assert clerk.call("GET", f"/api/v1/hospitals/hebmu2/patient-bookings?id_number={rid(11)}")[0] == 404
    status, row = clerk.call("GET", f"/api/v1/appointments/by-code/{booked['code']}")
    assert status == 200 and row["appointment_id"] == booked["appointment_id"]
    assert desk.as_("hbph-admin", "admin-pass-2024").call("GET", f"/api/v1/appointments/by-code/{booked['code']}")[0] \
        == 404, "another hospital's booking is unknown there"

    status, listed = clerk.call("GET", f"/api/v1/hospitals/hebmu2/day-list?date={day}")
    assert status == 200 and listed["hospital_name"] == "河北医科大学第二医院"
    mine = next(r for r in listed["appointments"] if r["code"] == booked["code"])
    assert (mine["label"], mine["department_name"], mine["doctor_name"]) == ("待取号", "心血管内科", "张建国")
    assert "****" in mine["phone_masked"] and rid(10) not in str(listed)
    unpaid = clerk.call("POST", f"/api/v1/appointments/{booked['code']}/refund", {"reason": "患者要求"})
    assert unpaid[0] == 422 and unpaid[1]["error"]["code"] == "not_refundable", "a web booking was never paid"
    entries = desk.admin.call("GET", "/api/v1/audit")[1]["entries"]
    assert {"find_bookings", "read_day_list"} <= {e["action"] for e in entries if e["actor"] == "hebmu2-clerk"}


def test_a_doctor_sees_their_own_list_only(desk):
    day = desk.session_date()
    desk.book(desk.patient(20))
    doctor = desk.as_("hebmu2-zhang", "doctor-pass-2024")
    status, listed = doctor.call("GET", f"/api/v1/doctors/hebmu2-zhang/day-list?date={day}")
    assert status == 200 and listed["appointments"] and all(r["doctor_id"] == "hebmu2-zhang"
                                                            for r in listed["appointments"])
    assert doctor.call("GET", f"/api/v1/hospitals/hebmu2/day-list?date={day}")[0] == 403
    assert doctor.call("GET", "/api/v1/doctors/hebmu2-other/day-list")[0] in (403, 404)
    assert desk.as_("hbph-admin", "admin-pass-2024").call(
        "GET", f"/api/v1/doctors/hebmu2-zhang/day-list?date={day}")[0] == 403


def test_a_holiday_over_published_sessions_stops_them_after_confirmation(desk):
    day = desk.session_date()
    patient = desk.patient(30)
    booked = desk.book(patient)
    hadmin = desk.as_("hebmu2-admin", "admin-pass-2024")
    status, preview = hadmin.call("GET", f"/api/v1/hospitals/hebmu2/holiday-preview?date={day}")
    assert status == 200 and [s["session_id"] for s in preview["sessions"]] == [SESSION]
    assert preview["bookings"] >= 1
    holiday = {"hospital_id": "hebmu2", "date": day, "name": "临时停诊日"}
    unconfirmed = hadmin.call("POST", "/api/v1/admin/schedule/declare_holiday", holiday)
    assert unconfirmed[0] == 409 and unconfirmed[1]["error"]["code"] == "confirm_holiday_stops"
    done = hadmin.call("POST", "/api/v1/admin/schedule/declare_holiday", {**holiday, "confirm_stops": 1})
    assert done[0] == 200, done

    def cancelled() -> bool:
        mine = patient.call("GET", f"/api/v1/appointments/{booked['appointment_id']}")[1]
        return bool(mine.get("status") == "cancelled")
    deadline = time.monotonic() + 30
    while not cancelled():
        assert time.monotonic() < deadline, "the holiday's stop never reached the booking"
        time.sleep(0.3)
    assert hadmin.call("POST", "/api/v1/admin/schedule/cancel_holiday", {"hospital_id": "hebmu2", "date": day})[0] \
        == 200
