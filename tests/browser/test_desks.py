"""The hospital's desks: the window desk (find, 取号, 退号, the day's list), the doctor's day list, staff
accounts, holidays, the change-password dialog.

Every test drives the real pages against the whole platform (no stubbed answers): a hospital of
the test's own with a session later today for 退号, which is for the visit day.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from tests.browser.conftest import (
    DEPARTMENT,
    STAFF,
    TZ,
    Api,
    add_days,
    api_login,
    login,
    new_id_number,
    new_phone,
    shoot,
    today,
    until,
)

pytestmark = pytest.mark.browser
WIDTHS = ("phone", "desktop")


def fits(page: Any) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url}: the page is {scroll}px wide in a {inner}px window"


# --- live: the real endpoints ---------------------------------------------------------------------


@pytest.fixture
def phone_booking(base_url: str) -> dict[str, Any]:
    """A caller booked by the hotline (paid) into a session of the demo department."""
    operator = Api(base_url)
    operator.login(*STAFF["operator"])
    id_number = new_id_number()
    patient = Api(base_url).register("郑淑芬", id_number, new_phone())
    session = next(
        s
        for s in operator.schedule(DEPARTMENT, today(), 8)
        if s["state"] == "open" and s["remaining"].get("phone", 0) > 0
    )
    booked = operator.book(session["session_id"], patient["patient_id"])
    return {"id_number": id_number, "session": session, "booked": booked}


def today_session(base_url: str) -> dict[str, Any] | None:
    """A hospital of the test's own, open for booking on the day, with a session starting 15 minutes
    from now, a clerk, and a paid phone booking in it: 退号 is for the visit day. None in the last
    half hour of the day (Asia/Shanghai), when no session can start and end later today."""
    now = datetime.now(TZ)
    start = (now + timedelta(minutes=15)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=15)
    if end.date() != now.date():
        return None
    tag = uuid.uuid4().hex[:5]
    hospital, department, doctor = f"t{tag}", f"t{tag}-nk", f"t{tag}-li"
    admin = Api(base_url)
    admin.login(*STAFF["platform_admin"])
    admin.post("/api/v1/hospitals", {"hospital_id": hospital, "name": "测试市第一医院",
                                     "rules": {"cutoff_days_before": 0, "cutoff_time": "23:59",
                                               "lapse_minutes_before_end": 0}}, expect=201,
               key=uuid.uuid4().hex)
    admin.command("create_department", {"department_id": department, "hospital_id": hospital, "name": "内科"})
    admin.command("register_doctor", {"doctor_id": doctor, "hospital_id": hospital, "department_id": department,
                                      "name": "李医生", "title": "主治医师"})
    session_id = f"{doctor}-today"
    admin.command("schedule_session", {"session_id": session_id, "doctor_id": doctor, "date": today(),
                                       "period": "afternoon" if start.hour >= 12 else "morning",
                                       "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
                                       "capacity": 10, "quota": {"web": 5, "phone": 3, "window": 2}, "fee": "25.00"})
    clerk = f"{hospital}-clerk"
    admin.post("/api/v1/staff", {"username": clerk, "password": "window-pass-2024", "role": "clerk",
                                 "hospital_id": hospital, "name": "测试窗口"}, expect=201)
    until("the session of today to be bookable", lambda: any(
        s["session_id"] == session_id and s["remaining"].get("phone", 0) > 0
        for s in admin.schedule(department, today(), 1)), timeout=60)
    operator = Api(base_url)
    operator.login(*STAFF["operator"])
    id_number = new_id_number()
    patient = Api(base_url).register("郑淑芬", id_number, new_phone())
    booked = operator.book(session_id, patient["patient_id"])
    return {"clerk": clerk, "id_number": id_number, "booked": booked, "fee": "25.00", "doctor": "李医生"}


def test_the_window_desk_live(new_page: Any, base_url: str) -> None:
    made = today_session(base_url)
    if made is None:
        pytest.skip("the last half hour of the day (Asia/Shanghai): no session can start later today for 退号")
    code = made["booked"]["code"]
    page = new_page("desktop")
    login(page, made["clerk"], "window-pass-2024")
    page.wait_for_url(re.compile(r"/clerk$"))
    listed = page.locator(f"#daylist tr[data-code='{code}']")
    listed.wait_for()
    assert "待取号" in listed.inner_text()
    sheet = page.locator("#daylist .doc-sheet", has=page.locator(f"tr[data-code='{code}']"))
    assert made["doctor"] in sheet.locator("h4").inner_text()
    assert made["id_number"] not in page.content() and "郑淑芬" not in page.content(), "masked"
    # printed: no navigation, no buttons, the hospital and the date on top, every doctor's table
    page.emulate_media(media="print")
    assert page.locator(".topbar").is_hidden() and page.locator("#daylist-print").is_hidden()
    assert page.locator("#checkin-form").is_hidden() and page.locator(".list-refund").first.is_hidden()
    assert "测试市第一医院" in page.inner_text("#print-title")
    assert page.locator("#daylist .daylist-table").first.is_visible()
    page.emulate_media(media="screen")

    page.fill("#find-value", made["id_number"])
    page.click("#find-submit")
    page.locator(f"#found article[data-code='{code}'] .found-refund").click()
    fee = f"¥{float(made['fee']):.2f}"
    assert fee in page.inner_text("#confirm-facts")  # a phone booking was paid: all of it goes back
    page.click("#confirm-ok")
    page.locator("#refund-done").wait_for()
    assert fee in page.inner_text("#refund-due")
    page.locator(f"#daylist tr[data-code='{code}'][data-status='refunded']").wait_for()
    shoot(page, "clerk-desk-live")


def test_the_doctors_day_list_live(new_page: Any, base_url: str, phone_booking: dict[str, Any]) -> None:
    session, code = phone_booking["session"], phone_booking["booked"]["code"]
    page = new_page("desktop")
    api_login(page, *STAFF["hospital_admin"])
    page.goto(f"/doctor?doctor={session['doctor']['doctor_id']}&date={session['date']}")
    page.locator(f"#doctor-list tr[data-code='{code}']").wait_for()
    assert session["doctor"]["name"] in page.inner_text("#doctor-sheet-title")
    fits(page)
    page.emulate_media(media="print")
    assert page.locator("#doctor-print").is_hidden() and page.locator(".topbar").is_hidden()
    assert page.locator("#doctor-sheet-title").is_visible()


def test_accounts_and_the_password_live(new_page: Any, base_url: str) -> None:
    page = new_page("desktop")
    login(page, *STAFF["hospital_admin"])
    page.goto("/admin#accounts")
    username = f"clerk-{uuid.uuid4().hex[:6]}"
    page.fill("#staff-form input[name='name']", "刘芳")
    page.fill("#staff-form input[name='username']", username)
    page.fill("#staff-form input[name='password']", "first-pass-2024")
    page.click("#staff-form button[type='submit']")
    created = page.locator(f"#staff-table tr[data-username='{username}']")
    created.wait_for()
    assert "窗口人员" in created.inner_text() and "河北医科大学第二医院" in created.inner_text()

    clerk = new_page("phone")
    login(clerk, username, "first-pass-2024")
    clerk.click("#nav-user")
    clerk.click("#change-password")
    clerk.fill("#password-form input[name='old_password']", "first-pass-2024")
    clerk.fill("#password-form input[name='new_password']", "second-pass-2024")
    clerk.fill("#password-form input[name='new_password2']", "second-pass-2024")
    clerk.click("#password-submit")
    clerk.locator("#password-dialog").wait_for(state="hidden")
    Api(base_url).login(username, "second-pass-2024")

    created.locator(".account-toggle").click()
    page.locator(f"#staff-table tr[data-username='{username}'] [data-state='disabled']").wait_for()
    r = requests.post(
        base_url + "/api/v1/auth/login", json={"username": username, "password": "second-pass-2024"}, timeout=30
    )
    assert r.status_code >= 400


def test_a_holiday_is_declared_and_cancelled_live(new_page: Any, base_url: str) -> None:
    day = add_days(today(), 60)  # no session is published that far ahead: nobody is affected
    page = new_page("desktop")
    login(page, *STAFF["hospital_admin"])
    page.goto("/admin#holidays")
    page.fill("#holiday-form input[name='date']", day)
    page.fill("#holiday-form input[name='name']", "测试假日")
    page.click("#holiday-preview")
    page.locator("#holiday-dialog").wait_for(state="visible")
    assert "不影响已预约患者" in page.inner_text("#holiday-impact")
    page.click("#holiday-ok")
    listed = page.locator(f"#holiday-list li[data-date='{day}']")
    listed.wait_for()  # the holidays come back in GET /api/v1/hospitals (field `holidays`)
    page.once("dialog", lambda d: d.accept())
    listed.locator("button").click()
    listed.wait_for(state="detached")
