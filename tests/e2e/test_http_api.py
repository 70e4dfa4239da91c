"""The HTTP API end to end: every endpoint's success and refusal paths, who may do what, CSRF,
rate limits, masking and the audit log, against the whole platform as real processes."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from scripts.launcher import Platform
from services.gateway.staff import ApiClient
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "hebmu2-zhang-d3-am"


def rid(n: int) -> str:
    body = f"13010519{70 + n % 30:02d}0{1 + n % 9}1{n % 10}{n % 1000:03d}"[:17]
    return with_check_digit(body)


@pytest.fixture(scope="module")
def api() -> Any:
    with running_platform("api", ["demo/walking-skeleton.json"], env={
            "LOGIN_FAILURES": "3", "LOGIN_CLIENT_FAILURES": "1000", "SMS_PER_CLIENT": "100",
            "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000", "RATE_BURST_CLIENT": "5000"}) as p:
        client = Client(p)
        client.wait_bookable()
        # More room than the demo's 2 web places, through the admin API: every test books here.
        admin = client.login("hebmu2-admin", "admin-pass-2024")
        r = client.post("/api/v1/admin/schedule/change_session_quota",
                        {"session_id": SESSION, "quota": {"web": 30, "phone": 5, "window": 5}}, admin)
        assert r.status_code == 200, r.text
        client.wait_bookable(web=30)
        yield client


class Client:
    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self.base = f"http://{platform.gateway_address}"
        self._codes: dict[str, str] = {}
        self._admin: str | None = None

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        return requests.get(self.url(path), headers=self._auth(token), timeout=30, **kw)

    def post(self, path: str, body: Any = None, token: str | None = None, headers: dict[str, str] | None = None,
             **kw: Any) -> requests.Response:
        return requests.post(self.url(path), json=body, headers={**self._auth(token), **(headers or {})},
                             timeout=30, **kw)

    @staticmethod
    def _auth(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def login(self, username: str, password: str) -> str:
        r = self.post("/api/v1/auth/login", {"username": username, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def sms_code(self, phone: str) -> str:
        """A code to `phone`, read from the outbox as the platform admin; kept, as it stays good 5 minutes."""
        if phone not in self._codes:
            self._admin = self._admin or self.login("admin", "admin-pass-2024")
            client = ApiClient(self.base, self._admin)
            self._codes[phone] = client.sms_code(phone, operator=client)
        return self._codes[phone]

    def register(self, n: int, password: str = "secret-pw-1") -> dict[str, Any]:
        phone = f"137{n:08d}"
        r = self.post("/api/v1/patients", {"name": f"患者{n}", "id_number": rid(n), "phone": phone,
                                           "password": password, "sms_code": self.sms_code(phone)})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def book(self, token: str, key: str | None = None, body: dict[str, Any] | None = None) -> requests.Response:
        return self.post("/api/v1/appointments", body or {"session_id": SESSION}, token,
                         {"Idempotency-Key": key or uuid.uuid4().hex})

    def wait_bookable(self, web: int = 1) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sessions = self.get("/api/v1/departments/hebmu2-xnk/schedule").json().get("sessions", [])
            if any(s["session_id"] == SESSION and s["state"] == "open" and s["remaining"]["web"] >= web
                   for s in sessions):
                return
            time.sleep(0.3)
        raise AssertionError("the demo session never became bookable")


def error(r: requests.Response) -> str:
    return str(r.json()["error"]["code"])


def test_public_reads_and_their_refusals(api):
    hospitals = api.get("/api/v1/hospitals").json()["hospitals"]
    assert [h["hospital_id"] for h in hospitals] == ["hebmu2"]
    departments = api.get("/api/v1/hospitals/hebmu2/departments").json()["departments"]
    assert {d["department_id"] for d in departments} == {"hebmu2-nk", "hebmu2-xnk"}
    doctor = api.get("/api/v1/hospitals/hebmu2/doctors").json()["doctors"][0]
    assert doctor["name"] == "张建国" and doctor["plan"] == [], "the weekly plan is published with the doctor"
    table = api.get("/api/v1/departments/hebmu2-xnk/schedule").json()["sessions"]
    entry = next(s for s in table if s["session_id"] == SESSION)
    assert entry["doctor"]["title"] == "主任医师" and entry["fee"] == "50.00"
    assert set(entry["remaining"]) == {"web", "phone", "window"}
    bad = api.get("/api/v1/departments/hebmu2-xnk/schedule", params={"from": "2026-13-01"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "from"
    wide = api.get("/api/v1/departments/hebmu2-xnk/schedule", params={"from": "2026-01-01", "to": "2026-06-01"})
    assert wide.status_code == 400
    doc = api.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/api/v1/appointments" in doc["paths"]
    assert api.get("/healthz").json()["status"] == "ok"


def test_registration_login_logout_and_bad_input(api):
    me = api.register(1)
    assert me["id_masked"] == rid(1)[:6] + "********" + rid(1)[-4:] and me["phone_masked"] == "137****0001"
    assert rid(1) not in str(me)
    code = api.sms_code("13700000001")
    again = api.post("/api/v1/patients", {"name": "又来", "id_number": rid(1), "phone": "13700000001",
                                          "password": "secret-pw-1", "sms_code": code})
    assert again.status_code == 409 and error(again) == "already_registered"
    assert "137****0001" in again.json()["error"]["message"], "a caller who proved a phone learns the masked one"
    unproved = api.post("/api/v1/patients", {"name": "x", "id_number": rid(2), "phone": "13700000002",
                                             "password": "secret-pw-1"})
    assert unproved.status_code == 400 and unproved.json()["error"]["field"] == "sms_code"
    assert error(api.post("/api/v1/patients", {"name": "x", "id_number": rid(2)[:17] + "Y", "phone": "13700000001",
                                               "password": "secret-pw-1", "sms_code": code})) == "invalid_input"
    assert api.post("/api/v1/patients", {"name": "x", "id_number": rid(3), "phone": "13700000001",
                                         "sms_code": code}).status_code == 400, "self-registration needs a password"
    extra = api.post("/api/v1/patients", {"name": "x", "id_number": rid(4), "phone": "13700000001",
                                          "password": "secret-pw-1", "sms_code": code, "admin": True})
    assert extra.status_code == 400 and extra.json()["error"]["field"] == "admin"
    garbage = requests.post(api.url("/api/v1/patients"), data=b"{not json", timeout=30,
                            headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400 and "error" in garbage.json()

    by_phone = api.login("13700000001", "secret-pw-1")
    by_id = api.login(rid(1), "secret-pw-1")
    assert api.get("/api/v1/me", by_phone).json()["subject"] == me["patient_id"]
    assert api.get("/api/v1/me", by_id).json()["role"] == "patient"
    assert api.get("/api/v1/me", by_id).json()["name"] == "患者1", "a patient sees their own name"
    assert api.post("/api/v1/auth/login", {"username": "13700000001", "password": "wrong-pw"}).status_code == 401
    assert api.post("/api/v1/auth/logout", token=by_phone).status_code == 204
    time.sleep(0.1)
    assert api.get("/api/v1/me", by_phone).status_code == 401
    assert api.get("/api/v1/me").status_code == 401


def test_login_throttling_answers_429_with_retry_after(api):
    api.post("/api/v1/staff", {"username": "victim-op", "password": "victim-pass-1", "role": "operator"},
             api.login("admin", "admin-pass-2024"))
    for _ in range(3):
        assert api.post("/api/v1/auth/login", {"username": "victim-op", "password": "nope"}).status_code == 401
    blocked = api.post("/api/v1/auth/login", {"username": "victim-op", "password": "victim-pass-1"})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert api.post("/api/v1/auth/login", {"username": "op-12580", "password": "op-pass-2024"}).status_code == 200


def test_patient_books_reads_own_booking_only_and_cancels(api):
    alice, bob = api.register(10), api.register(11)
    first = api.book(alice["token"], "alice-key-0001")
    assert first.status_code == 201, first.text
    booking = first.json()
    assert booking["sequence_number"] >= 1 and len(booking["code"]) == 8
    assert api.book(alice["token"], "alice-key-0001").json() == booking, "same key, same answer"
    assert error(api.book(alice["token"], "alice-key-0002")) == "already_booked"
    assert api.book(alice["token"], "short").status_code == 400
    assert api.post("/api/v1/appointments", {"session_id": SESSION}).status_code == 401

    mine = api.get(f"/api/v1/appointments/{booking['appointment_id']}", alice["token"])
    assert mine.status_code == 200 and mine.json()["code"] == booking["code"]
    theirs = api.get(f"/api/v1/appointments/{booking['appointment_id']}", bob["token"])
    assert theirs.status_code == 404, "another patient's booking does not exist for bob"
    listed = api.get("/api/v1/appointments", alice["token"]).json()
    assert [a["appointment_id"] for a in listed["appointments"]] == [booking["appointment_id"]]
    assert listed["banned_until"] is None

    assert api.post(f"/api/v1/appointments/{booking['appointment_id']}/cancel", token=bob["token"]).status_code \
        == 404
    done = api.post(f"/api/v1/appointments/{booking['appointment_id']}/cancel", token=alice["token"])
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert api.post("/api/v1/appointments/nope/cancel", token=alice["token"]).status_code == 404


def test_cookie_sessions_need_the_csrf_token(api):
    carol = api.register(20)
    browser = requests.Session()
    r = browser.post(api.url("/api/v1/auth/login"), json={"username": "13700000020", "password": "secret-pw-1"},
                     timeout=30)
    assert r.status_code == 200 and "appt_session" in browser.cookies
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    csrf = r.json()["csrf_token"]
    forged = browser.post(api.url("/api/v1/appointments"), json={"session_id": SESSION},
                          headers={"Idempotency-Key": uuid.uuid4().hex}, timeout=30)
    assert forged.status_code == 403 and forged.json()["error"]["field"] == "X-CSRF-Token"
    assert browser.get(api.url("/api/v1/me"), timeout=30).json()["subject"] == carol["patient_id"]
    real = browser.post(api.url("/api/v1/appointments"), json={"session_id": SESSION},
                        headers={"Idempotency-Key": uuid.uuid4().hex, "X-CSRF-Token": csrf}, timeout=30)
    assert real.status_code in (201, 409), real.text


def test_operator_finds_registers_and_books_for_a_caller_audited(api):
    op = api.login("op-12580", "op-pass-2024")
    caller = api.post("/api/v1/patients", {"name": "来电患者", "id_number": rid(30), "phone": "13700000030",
                                           "sms_code": api.sms_code("13700000030")}, token=op)
    assert caller.status_code == 201, caller.text
    found = api.get("/api/v1/patients", op, params={"id_number": rid(30)})
    assert found.status_code == 200 and found.json()["patient_id"] == caller.json()["patient_id"]
    assert rid(30) not in found.text and "13700000030" not in found.text
    assert api.get("/api/v1/patients", op, params={"id_number": rid(31)}).status_code == 404
    patient = api.register(32)
    assert api.get("/api/v1/patients", patient["token"], params={"id_number": rid(30)}).status_code == 403
    booked = api.book(op, body={"session_id": SESSION, "patient_id": caller.json()["patient_id"]})
    assert booked.status_code == 201, booked.text
    assert booked.json()["channel"] == "phone" and booked.json()["paid"] is True
    assert api.book(op, body={"session_id": SESSION}).status_code == 400
    cancelled = api.post(f"/api/v1/appointments/{booked.json()['appointment_id']}/cancel", token=op)
    assert cancelled.json()["refund_due"] == "50.00"
    admin = api.login("admin", "admin-pass-2024")
    entries = api.get("/api/v1/audit", admin).json()["entries"]
    assert any(e["action"] == "find_patient" and e["actor"] == "op-12580" for e in entries)
    assert api.get("/api/v1/audit", op).status_code == 403


def test_staff_see_only_their_hospital_and_reads_are_audited(api):
    clerk = api.login("hebmu2-clerk", "clerk-pass-2024")
    other_admin = api.login("hbph-admin", "admin-pass-2024")
    patient = api.register(40)
    api.book(patient["token"])
    day_list = api.get(f"/api/v1/sessions/{SESSION}/appointments", clerk)
    assert day_list.status_code == 200
    rows = day_list.json()["appointments"]
    assert rows and all("********" in r["id_masked"] and "****" in r["phone_masked"] for r in rows)
    assert rid(40) not in day_list.text
    assert api.get(f"/api/v1/sessions/{SESSION}/appointments", other_admin).status_code == 403
    assert api.get(f"/api/v1/sessions/{SESSION}/appointments", patient["token"]).status_code == 403
    assert api.get("/api/v1/hospitals/hebmu2/phone-list", clerk).status_code == 200
    assert api.get("/api/v1/hospitals/hebmu2/phone-list", other_admin).status_code == 403
    admin = api.login("admin", "admin-pass-2024")
    entries = api.get("/api/v1/audit", admin).json()["entries"]
    assert any(e["action"] == "read_session_list" and e["actor"] == "hebmu2-clerk" for e in entries)


def test_clerk_checks_in_only_with_the_right_id_and_hospital(api):
    clerk = api.login("hebmu2-clerk", "clerk-pass-2024")
    patient = api.register(50)
    booked = api.book(patient["token"]).json()
    wrong_id = api.post(f"/api/v1/appointments/{booked['code']}/check-in", {"id_number": rid(51)}, clerk)
    assert wrong_id.status_code == 422 and error(wrong_id) == "id_mismatch"
    not_today = api.post(f"/api/v1/appointments/{booked['code']}/check-in", {"id_number": rid(50)}, clerk)
    assert not_today.status_code == 422 and error(not_today) == "not_visit_day"  # the session is in 3 days
    assert api.post(f"/api/v1/appointments/{booked['code']}/check-in", {"id_number": rid(50)},
                    patient["token"]).status_code == 403
    assert api.post("/api/v1/appointments/ZZZZZZZZ/check-in", {"id_number": rid(50)}, clerk).status_code == 404


def test_admin_commands_are_scoped_to_their_hospital(api):
    admin = api.login("hebmu2-admin", "admin-pass-2024")
    other = api.login("hbph-admin", "admin-pass-2024")
    stop = api.post("/api/v1/admin/schedule/request_doctor_stop",
                    {"session_id": SESSION, "reason": "外出会诊", "requested_by": "hebmu2-zhang"}, admin)
    assert stop.status_code == 200, stop.text
    stop_id = stop.json()["stop_id"]
    pending = api.get("/api/v1/hospitals/hebmu2/stops", admin).json()["stops"]
    assert any(s["stop_id"] == stop_id for s in pending)
    assert api.get("/api/v1/hospitals/hebmu2/stops", other).status_code == 403
    foreign = api.post("/api/v1/admin/schedule/approve_doctor_stop", {"session_id": SESSION, "stop_id": stop_id},
                       other)
    assert foreign.status_code == 403, foreign.text
    clerk = api.login("hebmu2-clerk", "clerk-pass-2024")
    assert api.post("/api/v1/admin/schedule/approve_doctor_stop", {"session_id": SESSION, "stop_id": stop_id},
                    clerk).status_code == 403
    assert api.post("/api/v1/admin/schedule/drop_tables", {}, admin).status_code == 404
    rejected = api.post("/api/v1/admin/schedule/reject_doctor_stop",
                        {"session_id": SESSION, "stop_id": stop_id, "reason": "无替班医生"}, admin)
    assert rejected.status_code == 200, rejected.text
    quota = api.post("/api/v1/admin/schedule/change_session_quota",
                     {"session_id": SESSION, "quota": {"web": 500, "phone": 0, "window": 0}}, admin)
    assert quota.status_code in (400, 409, 422), "a quota above capacity is refused"


def test_analyst_reads_statistics_others_do_not(api):
    analyst = api.login("analyst", "analyst-pass-2024")
    assert "metrics" in api.get("/api/v1/stats/summary", analyst).json()
    patient = api.register(60)
    assert api.get("/api/v1/stats/summary", patient["token"]).status_code == 403


def test_rate_limit_per_patient_answers_429(api):
    patient = api.register(70)
    codes = [api.book(patient["token"], body={"session_id": f"nope-{i}"}).status_code for i in range(14)]
    assert 429 in codes, codes
    limited = api.book(patient["token"], body={"session_id": "nope"})
    if limited.status_code == 429:
        assert int(limited.headers["Retry-After"]) >= 1


def test_unknown_paths_and_wrong_methods_answer_the_json_error_shape(api):
    patient = api.register(80)
    for path in ("/api/v1/no-such-thing", "/api/v1/appointments/a/b/c", "/api/v2/hospitals"):
        missing = api.get(path, patient["token"])
        assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("application/json")
        assert missing.json()["error"]["code"] == "not_found" and missing.json()["error"]["field"] == "path"
    wrong = requests.delete(api.url("/api/v1/me"), headers={"Authorization": f"Bearer {patient['token']}"},
                            timeout=30)
    assert wrong.status_code == 405 and wrong.headers["Content-Type"].startswith("application/json")
    assert wrong.json()["error"]["code"] == "method_not_allowed" and "GET" in wrong.headers["Allow"]
    assert api.post("/api/v1/openapi.json", {}).status_code == 405
    page = requests.get(api.url("/no/such/page"), timeout=30)
    assert page.status_code == 404 and page.headers["Content-Type"].startswith("text/html")
    assert "页面不存在" in page.text


def test_bodies_are_validated_by_their_model_naming_the_field(api):
    patient = api.register(81)
    long_session = api.book(patient["token"], body={"session_id": "s" * 81})
    assert long_session.status_code == 400 and long_session.json()["error"]["field"] == "session_id"
    staff = api.post("/api/v1/staff", {"username": "x", "password": "short", "role": "operator"},
                     api.login("admin", "admin-pass-2024"))
    assert staff.status_code == 400 and staff.json()["error"]["field"] == "username"
    admin = api.login("hebmu2-admin", "admin-pass-2024")
    quota = api.post("/api/v1/admin/schedule/change_session_quota", {"session_id": SESSION, "quota": {"web": -1}},
                     admin)
    assert quota.status_code == 400 and quota.json()["error"]["field"].startswith("quota")
