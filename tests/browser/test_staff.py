"""Staff at work: the 12580 operator books for a caller and reads the code back; the window clerk
checks a patient in; the hospital admin's pages show their data."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import (
    DEPARTMENT,
    HOSPITAL,
    STAFF,
    TZ,
    Api,
    login,
    new_id_number,
    new_phone,
    shoot,
    sms_code,
    today,
    until,
)

pytestmark = pytest.mark.browser


def test_an_operator_books_for_a_caller_and_reads_the_code_back(new_page: Any, base_url: str) -> None:
    page = new_page("desktop")
    login(page, *STAFF["operator"])
    page.wait_for_url(re.compile(r"/operator$"))
    id_number = new_id_number()

    # the caller is not registered yet: register them with name and mobile
    page.fill("#caller-id", id_number)
    page.click("#find-caller")
    page.locator("#caller-register").wait_for()
    page.fill("#new-name", "孙桂兰")
    caller_phone = new_phone()
    page.fill("#new-phone", caller_phone)
    page.click("#new-send-code")  # the caller reads the code out
    page.fill("#new-code", sms_code(base_url, caller_phone))
    page.click("#register-caller")
    page.locator("#caller").wait_for()
    assert page.inner_text("#caller-masked") == id_number[:6] + "********" + id_number[-4:]

    # hospital → department → a session with phone slots left
    page.select_option("#op-hospital", HOSPITAL)
    page.wait_for_selector(f"#op-department option[value='{DEPARTMENT}']", state="attached")
    page.select_option("#op-department", DEPARTMENT)
    slot = page.locator("#schedule button.slot.s-open").first
    slot.wait_for()
    slot.click()
    page.locator("#confirm").wait_for(state="visible")
    assert "电话" in page.inner_text("#confirm-facts") and "扣取挂号费" in page.inner_text("#confirm-note")
    page.click("#confirm-ok")

    # the code, large and character by character, to read back
    readback = page.locator("#readback")
    readback.wait_for(state="visible")
    code = page.get_attribute("#readback-code", "data-code")
    assert code and re.fullmatch(r"[2-9A-Z]{8}", code)
    assert "".join(page.locator("#readback-code .code-char b").all_inner_texts()) == code
    assert "已扣费" in page.inner_text("#readback-facts")
    shoot(page, "operator-readback")
    page.click("#readback-close")

    # the caller's bookings list it; the operator cancels it for the caller
    card = page.locator(f"#caller-bookings article[data-code='{code}']")
    card.wait_for()
    shoot(page, "operator-caller-bookings")
    card.locator("button.cancel-booking").click()
    page.click("#cancel-yes")
    page.locator(f"#caller-bookings article[data-code='{code}'] [data-status='cancelled']").wait_for()


def test_a_clerk_checks_a_patient_in(new_page: Any, base_url: str, admin_api: Api) -> None:
    now = datetime.now(TZ)
    if now.hour == 23 and now.minute >= 30:
        pytest.skip("a session on the visit day must still start today: not in the last half hour before midnight")
    # A session today that can still be booked: booking closes at the session's start.
    default_rules = next(h for h in admin_api.get("/api/v1/hospitals")["hospitals"]
                         if h["hospital_id"] == HOSPITAL)["rules"]
    admin_api.command("change_booking_rules", {"hospital_id": HOSPITAL, "rules": {
        **default_rules, "cutoff_days_before": 0, "cutoff_time": "23:59", "lapse_minutes_before_end": 0}})
    try:
        begins = (now + timedelta(minutes=20)).strftime("%H:%M")
        sid = f"hebmu2-zhang-today-{uuid.uuid4().hex[:6]}"
        admin_api.command("schedule_session", {
            "session_id": sid, "doctor_id": "hebmu2-zhang", "date": today(), "period": "evening",
            "start": begins, "end": "23:59", "capacity": 10, "quota": {"web": 4, "phone": 3, "window": 3}})
    finally:
        admin_api.command("change_booking_rules", {"hospital_id": HOSPITAL, "rules": default_rules})
    session = until("today's session to be bookable", lambda: next(
        (s for s in admin_api.schedule(DEPARTMENT, today(), 1) if s["session_id"] == sid and s["state"] == "open"),
        None))
    patient = Api(base_url)
    id_number = new_id_number()
    patient.register("周建华", id_number, new_phone())
    booked = patient.book(sid)

    page = new_page("desktop")
    login(page, *STAFF["clerk"])
    page.wait_for_url(re.compile(r"/clerk$"))

    # the wrong ID number is refused
    page.fill("#code", booked["code"].lower())
    page.fill("#id-number", new_id_number())
    page.click("#checkin-submit")
    page.wait_for_selector("#checkin-error:has-text('身份证号与预约人不符')")

    page.fill("#code", booked["code"])
    page.fill("#id-number", id_number)
    page.click("#checkin-submit")
    page.locator("#checkin-done").wait_for()
    assert f"¥{float(session['fee']):.2f}" in page.inner_text("#fee-taken")  # a web booking pays at the window
    assert booked["code"] in page.inner_text("#recent")
    shoot(page, "clerk-checked-in")
    mine = patient.get("/api/v1/appointments")["appointments"]
    assert next(a for a in mine if a["code"] == booked["code"])["status"] == "checked_in"


def test_a_hospital_admin_adds_a_department_and_approves_a_doctor_stop(new_page: Any, admin_api: Api) -> None:
    page = new_page("desktop")
    login(page, *STAFF["hospital_admin"])
    page.wait_for_url(re.compile(r"/admin$"))

    # a new department under 内科: its code is derived from the hospital's, nobody types one
    name = f"老年医学科{uuid.uuid4().hex[:3]}"
    assert page.locator("#dept-form input[name='department_id']").count() == 0
    page.fill("#dept-form input[name='name']", name)
    page.select_option("#dept-form select[name='parent_id']", "hebmu2-nk")
    page.click("#dept-form button[type='submit']")
    row = page.locator("#dept-table tr", has_text=name)
    row.wait_for()
    dept = row.get_attribute("data-department-id")
    assert dept and re.fullmatch(r"hebmu2-d\d+", dept), dept
    assert "内科" in row.inner_text() and dept not in page.inner_text("#dept-table")

    # a new doctor in it, likewise without a code
    page.goto("/admin#doctors")
    assert page.locator("#doc-form input[name='doctor_id']").count() == 0
    page.fill("#doc-form input[name='name']", "韩秀英")
    page.select_option("#doc-form select[name='title']", "主治医师")
    page.select_option("#doc-form select[name='department_id']", dept)
    page.click("#doc-form button[type='submit']")
    doctor_row = page.locator("#doc-table tr", has_text="韩秀英")
    doctor_row.wait_for()
    doctor_id = doctor_row.get_attribute("data-doctor-id")
    assert doctor_id and re.fullmatch(r"hebmu2-[a-z2-9]{6}", doctor_id), doctor_id
    assert name in doctor_row.inner_text()

    # a doctor asks to stop a session; the admin approves it with a replacement a week later
    session = [s for s in admin_api.schedule(DEPARTMENT, today()) if s["state"] != "stopped"][-1]
    sid = session["session_id"]
    page.goto("/admin#quota")
    page.select_option("#quota-dept", DEPARTMENT)
    row = page.locator(f"#quota-table tbody tr[data-session-id='{sid}']")
    row.wait_for()
    row.locator("button", has_text="申请停诊").click()
    page.fill("#stop-form input[name='reason']", "外出会诊")
    page.click("#stop-form button[type='submit']")
    page.wait_for_url(re.compile(r"#stops$"))
    stop = page.locator(f"#stops .stop[data-session-id='{sid}']").first
    stop.wait_for()
    # the stop names the doctor and the day, not the session's code
    assert session["doctor"]["name"] in stop.locator(".stop-session").inner_text()
    assert sid not in page.inner_text("#stops")
    shoot(page, "admin-stop-requested")
    stop.locator("button", has_text="批准").click()
    page.locator("#approve-dialog").wait_for(state="visible")
    page.click("#approve-form button[type='submit']")
    approved = page.locator(f"#stops .stop[data-session-id='{sid}']:has(.badge:text-is('已批准'))")
    approved.wait_for()
    # the moved patients keep the fee they booked at
    assert f"按原挂号费 ¥{float(session['fee']):.2f}" in approved.locator(".replacement-line").inner_text()
    until("the stopped session to show as stopped", lambda: any(
        s["session_id"] == sid and s["state"] == "stopped" for s in admin_api.schedule(DEPARTMENT, today(), 14)))
