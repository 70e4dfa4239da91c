"""The hospital's desks: the window desk (find, 取号, 退号, the day's list), the doctor's day list, staff
accounts, holidays, the change-password dialog.

Two kinds of test. `*_against_the_spec` drive the real pages and answer the endpoints the pages call
with answers shaped as the gateway's spec says (Playwright routes), so the pages are tested before
those endpoints exist and whatever state the demo data is in; the rest of the page talks to the real
platform. `*_live` use the real endpoints end to end, and skip, saying which path is missing, while the
gateway's OpenAPI document does not list it yet.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.browser.conftest import (
    DEPARTMENT,
    HOSPITAL,
    STAFF,
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


def row(**over: Any) -> dict[str, Any]:
    """A day-list row as the spec gives it."""
    base = {
        "appointment_id": uuid.uuid4().hex,
        "code": "K7M2P9QX",
        "session_id": "s-1",
        "department_id": "hebmu2-xnk",
        "department_name": "心血管内科",
        "doctor_id": "hebmu2-zhang",
        "doctor_name": "张志强",
        "date": today(),
        "period": "morning",
        "start": "08:00",
        "sequence_number": 1,
        "channel": "web",
        "fee": "50.00",
        "paid": False,
        "status": "booked",
        "label": "待取号",
        "id_masked": "130102********1234",
        "phone_masked": "139****5678",
        "name_masked": "周*华",
        "arrival_window": "08:00–08:30",
    }
    return {**base, **over}


DAY = [
    row(),
    row(
        code="A2B3C4D5",
        sequence_number=2,
        channel="phone",
        paid=True,
        status="checked_in",
        label="已取号",
        name_masked="李*",
    ),
    row(code="E6F7G8H9", sequence_number=3, status="refunded", label="已退号", name_masked="王*明"),
    row(
        code="J2K3L4M5",
        session_id="s-2",
        doctor_id="hebmu2-li-wh",
        doctor_name="李文华",
        period="afternoon",
        start="14:00",
        sequence_number=1,
        status="no_show",
        label="爽约",
    ),
    row(
        code="N6P7Q8R9",
        session_id="s-3",
        department_id="hebmu2-gk",
        department_name="骨科",
        doctor_id="hebmu2-yang-f",
        doctor_name="杨帆",
        sequence_number=5,
        status="cancelled",
        label="已取消",
    ),
]


class Routes:
    """Answers for some paths of the page's API, and what the page sent to them."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.sent: list[tuple[str, str, Any]] = []

    def answer(self, pattern: str, respond: Callable[[Any], tuple[int, Any]]) -> None:
        def handle(route: Any) -> None:
            request = route.request
            body = json.loads(request.post_data) if request.post_data else None
            self.sent.append((request.method, request.url, body))
            status, payload = respond(request)
            route.fulfill(status=status, content_type="application/json", body=json.dumps(payload, ensure_ascii=False))

        self.page.route(pattern, handle)

    def posted(self, fragment: str) -> list[Any]:
        return [body for method, url, body in self.sent if method == "POST" and fragment in url]


def not_found(_: Any) -> tuple[int, Any]:
    return 404, {"error": {"code": "not_found", "message": "没有找到 / not found", "field": None}}


# --- against the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_the_window_desk_against_the_spec(new_page: Any, width: str) -> None:
    page = new_page(width)
    api_login(page, *STAFF["clerk"])
    routes = Routes(page)
    day = {"rows": DAY}
    routes.answer(
        "**/api/v1/hospitals/hebmu2/day-list?*",
        lambda _: (
            200,
            {
                "hospital_id": HOSPITAL,
                "hospital_name": "河北医科大学第二医院",
                "date": today(),
                "appointments": day["rows"],
            },
        ),
    )
    routes.answer(
        "**/api/v1/hospitals/hebmu2/patient-bookings?*",
        lambda r: (
            (
                200,
                {
                    "patient": {
                        "patient_id": "p1",
                        "id_masked": "130102********1234",
                        "phone_masked": "139****5678",
                        "name_masked": "李*",
                    },
                    "appointments": [DAY[0], DAY[1]],
                },
            )
            if "id_number=130102198001011234" in r.url
            else not_found(r)
        ),
    )
    routes.answer(
        "**/api/v1/appointments/by-code/*", lambda r: (200, DAY[0]) if r.url.endswith("/K7M2P9QX") else not_found(r)
    )
    routes.answer(
        "**/api/v1/appointments/A2B3C4D5/refund",
        lambda _: (
            200,
            {
                "appointment_id": DAY[1]["appointment_id"],
                "status": "refunded",
                "refund_due": "50.00",
                "place_released": True,
            },
        ),
    )
    page.goto("/clerk")

    # the day's list: by department, one table per doctor and session, the patients masked as given
    listing = page.locator("#daylist")
    listing.locator(".dept-block").first.wait_for()
    assert listing.locator(".dept-block").count() == 2
    assert listing.locator(".doc-sheet").count() == 3  # 张志强 and 李文华 in 心血管内科, 杨帆 in 骨科
    first = listing.locator(".dept-block[data-department-id='hebmu2-xnk']")
    assert "心血管内科" in first.locator("h3").inner_text()
    zhang = first.locator(".doc-sheet[data-doctor-id='hebmu2-zhang']")
    assert (
        "张志强" in zhang.locator("h4").inner_text() and "2 人" in zhang.locator("h4").inner_text()
    )  # the refunded not counted
    assert zhang.locator("tbody tr").all_inner_texts()[0].split()[0] == "1"
    text = listing.inner_text()
    for shown in ("周*华", "130102********1234", "139****5678", "待取号", "已取号", "已退号", "爽约", "已取消"):
        assert shown in text, shown
    for code in ("hebmu2-xnk", "hebmu2-zhang"):
        assert code not in text
    fits(page)
    shoot(page, "clerk-desk")

    # live updates redraw it through window.ClerkDesk.refresh()
    asked = len([s for s in routes.sent if "/day-list" in s[1]])
    day["rows"] = [*DAY, row(code="S2T3U4V5", sequence_number=4, name_masked="赵*")]
    page.evaluate("window.ClerkDesk.refresh()")
    listing.locator("tr[data-code='S2T3U4V5']").wait_for()
    assert len([s for s in routes.sent if "/day-list" in s[1]]) == asked + 1

    # printed: no navigation, no buttons, the hospital and the date on top, every doctor's table
    page.emulate_media(media="print")
    assert page.locator(".topbar").is_hidden() and page.locator("#daylist-print").is_hidden()
    assert page.locator("#checkin-form").is_hidden() and page.locator(".list-refund").first.is_hidden()
    assert "河北医科大学第二医院" in page.inner_text("#print-title")
    assert page.locator("#daylist .daylist-table").first.is_visible()
    page.emulate_media(media="screen")

    # lost code: found by resident ID; a wrong one says so
    page.fill("#find-value", "130102198001019999")
    page.click("#find-submit")
    page.wait_for_selector("#find-error:has-text('本院没有该身份证号的预约')")
    page.fill("#find-value", "130102198001011234")
    page.click("#find-submit")
    page.locator("#found article[data-code='A2B3C4D5']").wait_for()
    assert "李*" in page.inner_text("#found-patient")
    assert page.locator("#found article[data-code='K7M2P9QX'] .found-checkin").count() == 1  # today, not yet checked in

    # 退号 of the paid phone booking: the dialog says what to give back, the answer confirms it
    page.locator("#found article[data-code='A2B3C4D5'] .found-refund").click()
    page.locator("#confirm").wait_for(state="visible")
    assert "¥50.00" in page.inner_text("#confirm-facts") and "请退还患者挂号费 ¥50.00" in page.inner_text(
        "#confirm-note"
    )
    assert "张志强" in page.inner_text("#confirm-facts")
    shoot(page, "clerk-refund-confirm")
    page.fill("#refund-reason", "患者临时有事")
    page.click("#confirm-ok")
    page.locator("#refund-done").wait_for()
    assert "¥50.00" in page.inner_text("#refund-due") and "号源已释放" in page.inner_text("#checkin-result")
    assert routes.posted("/A2B3C4D5/refund") == [{"reason": "患者临时有事"}]

    # by code
    page.click("#find-by-code")
    page.fill("#find-value", "k7m2p9qx")
    page.click("#find-submit")
    page.locator("#found article[data-code='K7M2P9QX']").wait_for()
    page.locator("#found article[data-code='K7M2P9QX'] .found-checkin").click()  # the ID card is still to be checked
    assert page.input_value("#code") == "K7M2P9QX"


@pytest.mark.parametrize("width", WIDTHS)
def test_the_doctors_day_list_against_the_spec(new_page: Any, width: str) -> None:
    page = new_page(width)
    api_login(page, *STAFF["hospital_admin"])
    routes = Routes(page)
    mine = [r for r in DAY if r["doctor_id"] == "hebmu2-zhang"][::-1]  # out of order: the page sorts by number
    routes.answer(
        "**/api/v1/doctors/hebmu2-zhang/day-list?*",
        lambda _: (
            200,
            {"hospital_id": HOSPITAL, "hospital_name": "河北医科大学第二医院", "date": today(), "appointments": mine},
        ),
    )
    page.goto("/doctor")
    page.locator("#doctor-pick option[value='hebmu2-zhang']").wait_for(state="attached")
    page.select_option("#doctor-pick", "hebmu2-zhang")
    page.locator("#doctor-list .doc-sheet").wait_for()
    assert "张志强" in page.inner_text("#doctor-sheet-title")
    assert "河北医科大学第二医院" in page.inner_text("#doctor-sheet-sub")
    seqs = [int(t.strip()) for t in page.locator("#doctor-list td.seq-no").all_inner_texts()]
    assert seqs == sorted(seqs) == [1, 2, 3]
    assert "上午" in page.inner_text("#doctor-list h4") and "周*华" in page.inner_text("#doctor-list")
    fits(page)
    shoot(page, "doctor-list")
    page.emulate_media(media="print")
    assert page.locator("#doctor-print").is_hidden() and page.locator(".topbar").is_hidden()
    assert page.locator("#doctor-sheet-title").is_visible()


def test_a_doctor_sees_their_own_list_against_the_spec(new_page: Any) -> None:
    page = new_page("phone")
    api_login(page, *STAFF["clerk"])  # any staff session; /api/v1/me is answered as a doctor's
    routes = Routes(page)
    routes.answer(
        "**/api/v1/me",
        lambda _: (
            200,
            {
                "role": "doctor",
                "subject": "dr-zhang",
                "name": "张志强",
                "hospital_id": HOSPITAL,
                "hospital_name": "河北医科大学第二医院",
                "doctor_id": "hebmu2-zhang",
                "csrf_token": "x",
            },
        ),
    )
    routes.answer(
        "**/api/v1/doctors/hebmu2-zhang/day-list?*",
        lambda _: (
            200,
            {
                "hospital_id": HOSPITAL,
                "hospital_name": "河北医科大学第二医院",
                "date": today(),
                "appointments": DAY[:2],
            },
        ),
    )
    page.goto("/doctor")
    page.locator("#doctor-list .doc-sheet").wait_for()
    assert page.locator("#doctor-pick-field").is_hidden()
    assert "张志强" in page.inner_text("#doctor-sheet-title")
    assert page.locator("nav a[data-nav='/doctor']").inner_text() == "我的名单"


@pytest.mark.parametrize("width", WIDTHS)
def test_staff_accounts_against_the_spec(new_page: Any, width: str) -> None:
    page = new_page(width)
    api_login(page, *STAFF["hospital_admin"])
    routes = Routes(page)
    staff = [
        {
            "username": "hebmu2-clerk",
            "role": "clerk",
            "hospital_id": HOSPITAL,
            "name": "王敏",
            "disabled": False,
            "doctor_id": None,
        },
        {
            "username": "dr-zhang",
            "role": "doctor",
            "hospital_id": HOSPITAL,
            "name": "张志强",
            "disabled": True,
            "doctor_id": "hebmu2-zhang",
        },
    ]
    routes.answer(
        "**/api/v1/staff", lambda r: (200, {"staff": staff}) if r.method == "GET" else (201, {"username": "dr-li"})
    )
    routes.answer("**/api/v1/staff/*/disable", lambda _: (200, {}))
    routes.answer("**/api/v1/staff/*/enable", lambda _: (200, {}))
    page.goto("/admin#accounts")
    table = page.locator("#staff-table")
    table.locator("tr[data-username='dr-zhang']").wait_for()
    assert "医生" in table.locator("tr[data-username='dr-zhang']").inner_text()
    assert (
        "心血管内科" in table.locator("tr[data-username='dr-zhang']").inner_text()
    )  # the doctor's department, by name
    assert "已停用" in table.locator("tr[data-username='dr-zhang']").inner_text()
    assert page.locator("#staff-role option[value='hospital_admin']").is_disabled()  # only the platform makes admins
    fits(page)
    shoot(page, "admin-accounts-list")

    page.select_option("#staff-role", "doctor")
    page.locator("#staff-doctor option[value='hebmu2-li-wh']").wait_for(state="attached")
    page.select_option("#staff-doctor", "hebmu2-li-wh")
    assert page.input_value("#staff-form input[name='name']") == "李文华"
    page.fill("#staff-form input[name='username']", "dr-li")
    page.fill("#staff-form input[name='password']", "temp-pass-2024")
    page.click("#staff-form button[type='submit']")
    until("the account to be sent", lambda: routes.posted("/api/v1/staff"))
    assert routes.posted("/api/v1/staff")[0] == {
        "username": "dr-li",
        "password": "temp-pass-2024",
        "role": "doctor",
        "hospital_id": HOSPITAL,
        "name": "李文华",
        "doctor_id": "hebmu2-li-wh",
    }
    table.locator("tr[data-username='dr-zhang'] .account-toggle").click()
    until("the account to be enabled", lambda: routes.posted("/api/v1/staff/dr-zhang/enable"))


@pytest.mark.parametrize("width", WIDTHS)
def test_a_holiday_shows_what_it_stops_before_it_is_declared_against_the_spec(new_page: Any, width: str) -> None:
    page = new_page(width)
    api_login(page, *STAFF["hospital_admin"])
    routes = Routes(page)
    day = add_days(today(), 20)

    def hospitals(route_request: Any) -> tuple[int, Any]:
        real = requests.get(route_request.url, timeout=30).json()
        for h in real["hospitals"]:
            if h["hospital_id"] == HOSPITAL:
                h["holidays"] = [{"date": add_days(today(), 30), "name": "国庆节"}]
        return 200, real

    routes.answer("**/api/v1/hospitals", hospitals)
    routes.answer(
        "**/api/v1/hospitals/hebmu2/holiday-preview?*",
        lambda _: (
            200,
            {
                "date": day,
                "bookings": 5,
                "sessions": [
                    {
                        "session_id": "s-1",
                        "doctor_name": "张志强",
                        "department_id": DEPARTMENT,
                        "period": "morning",
                        "start": "08:00",
                        "end": "11:30",
                        "booked": 3,
                    },
                    {
                        "session_id": "s-2",
                        "doctor_name": "李文华",
                        "department_id": DEPARTMENT,
                        "period": "afternoon",
                        "start": "14:00",
                        "end": "17:00",
                        "booked": 2,
                    },
                ],
            },
        ),
    )
    routes.answer("**/api/v1/admin/schedule/declare_holiday", lambda _: (200, {}))
    routes.answer("**/api/v1/admin/schedule/cancel_holiday", lambda _: (200, {}))
    page.goto("/admin#holidays")
    page.locator(f"#holiday-list li[data-date='{add_days(today(), 30)}']").wait_for()
    page.fill("#holiday-form input[name='date']", day)
    page.fill("#holiday-form input[name='name']", "中秋节")
    page.click("#holiday-preview")
    page.locator("#holiday-dialog").wait_for(state="visible")
    assert page.inner_text("#holiday-impact") == "停诊 2 个出诊，影响 5 位已预约患者（将短信通知并取消）"
    assert "心血管内科" in page.inner_text("#holiday-sessions") and "张志强" in page.inner_text("#holiday-sessions")
    shoot(page, "admin-holiday-confirm")
    page.click("#holiday-ok")
    until("the holiday to be declared", lambda: routes.posted("declare_holiday"))
    assert routes.posted("declare_holiday")[0] == {
        "hospital_id": HOSPITAL,
        "date": day,
        "name": "中秋节",
        "confirm_stops": 2,
    }

    page.once("dialog", lambda d: d.accept())
    page.locator(f"#holiday-list li[data-date='{add_days(today(), 30)}'] button").click()
    until("the holiday to be cancelled", lambda: routes.posted("cancel_holiday"))
    assert routes.posted("cancel_holiday")[0] == {"hospital_id": HOSPITAL, "date": add_days(today(), 30)}


def test_the_password_is_changed_from_the_account_menu_against_the_spec(new_page: Any) -> None:
    page = new_page("phone")
    api_login(page, *STAFF["clerk"])
    routes = Routes(page)
    routes.answer("**/api/v1/auth/password", lambda _: (200, {}))
    page.goto("/clerk")
    page.click("#nav-user")
    page.click("#change-password")
    page.locator("#password-dialog").wait_for(state="visible")
    page.fill("#password-form input[name='old_password']", "clerk-pass-2024")
    page.fill("#password-form input[name='new_password']", "new-pass-2024")
    page.fill("#password-form input[name='new_password2']", "new-pass-2025")
    page.click("#password-submit")
    page.wait_for_selector("#password-form .form-error:has-text('两次输入的密码不一致')")
    page.fill("#password-form input[name='new_password2']", "new-pass-2024")
    page.click("#password-submit")
    page.locator("#password-dialog").wait_for(state="hidden")
    assert routes.posted("/api/v1/auth/password") == [
        {"old_password": "clerk-pass-2024", "new_password": "new-pass-2024"}
    ]


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


def test_the_window_desk_live(new_page: Any, base_url: str, phone_booking: dict[str, Any]) -> None:
    session, code = phone_booking["session"], phone_booking["booked"]["code"]
    page = new_page("desktop")
    login(page, *STAFF["clerk"])
    page.wait_for_url(re.compile(r"/clerk$"))
    page.fill("#daylist-date", session["date"])
    page.dispatch_event("#daylist-date", "change")
    listed = page.locator(f"#daylist tr[data-code='{code}']")
    listed.wait_for()
    assert "待取号" in listed.inner_text()
    sheet = page.locator("#daylist .doc-sheet", has=listed)
    assert session["doctor"]["name"] in sheet.locator("h4").inner_text()

    page.fill("#find-value", phone_booking["id_number"])
    page.click("#find-submit")
    page.locator(f"#found article[data-code='{code}'] .found-refund").click()
    fee = f"¥{float(session['fee']):.2f}"
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
