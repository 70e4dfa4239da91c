"""The hospital admin's SMS tab (/admin#sms): the reminder and quiet hours, a doctor's mobile and
notice, the delivery list with its filter and 重发, the reminders run now. Driven in Chromium
against the whole platform; what the page shows is checked against the API too."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg2
import pytest
import requests

from infra.settings import pg_dsn
from scripts.launcher import Platform
from tests.browser.conftest import (
    DEPARTMENT,
    HOSPITAL,
    STAFF,
    TZ,
    Api,
    add_days,
    login,
    new_id_number,
    new_phone,
    shoot,
    today,
    until,
)

pytestmark = pytest.mark.browser
SETTINGS = f"/api/v1/hospitals/{HOSPITAL}/sms-settings"


def put(api: Api, path: str, body: dict[str, Any]) -> requests.Response:
    return api.http.put(api.base + path, json=body, headers={"X-CSRF-Token": api.csrf}, timeout=30)


def masked(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


def messages(api: Api, status: str | None = None) -> list[dict[str, Any]]:
    query = f"?hospital_id={HOSPITAL}&limit=100" + (f"&status={status}" if status else "")
    return api.get("/api/v1/sms/messages" + query)["messages"]  # type: ignore[no-any-return]


def settled(api: Api, message_id: str) -> str | None:
    """The message's state once it stays put for a while: sent, or held for the quiet hours."""
    m = next(m for m in messages(api) if m["message_id"] == message_id)
    held = m["status"] == "queued" and datetime.fromisoformat(m["not_before"]) > datetime.now(TZ) + timedelta(minutes=1)
    return m["status"] if m["status"] in ("sent", "delivered", "failed") or held else None


def open_sms_tab(page: Any, refused: list[str] | None = None) -> None:
    """Log in as the demo hospital's admin and open the tab; `refused` collects the API's refusals from then on."""
    login(page, *STAFF["hospital_admin"])
    page.wait_for_url(re.compile(r"/admin$"))
    if refused is not None:
        page.on(
            "response", lambda r: refused.append(f"{r.request.method} {r.url} {r.status}") if r.status >= 400 else None
        )
    page.goto("/admin#sms")
    page.locator("#panel-sms").wait_for()
    # the settings are drawn once their answer is in
    page.wait_for_function("() => document.querySelector('#sms-settings-form [name=reminder_time]').value !== ''")


def fits(page: Any) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url}: the page is {scroll}px wide in a {inner}px window"


@pytest.fixture
def settings_restored(admin_api: Api) -> Iterator[dict[str, Any]]:
    """The demo hospital's SMS settings as they were: other tests' messages keep their timing."""
    before = admin_api.get(SETTINGS)
    yield before
    keep = {k: before[k] for k in ("reminder_time", "quiet_start", "quiet_end", "window_location")}
    r = put(admin_api, SETTINGS, keep)
    assert r.status_code == 200, r.text


@pytest.fixture
def open_session(admin_api: Api) -> dict[str, Any]:
    """A demo session from tomorrow on that a patient can still book on the web."""
    sessions = admin_api.schedule(DEPARTMENT, add_days(today(), 1), 7)
    found = next((s for s in sessions if s["state"] == "open" and s["remaining"].get("web", 0) > 0), None)
    if found is None:
        pytest.fail("no demo session open for web booking in the coming week: the demo import publishes one "
                    "(demo/walking-skeleton.json); its absence is a fault, not a reason to skip")
    return found


@pytest.fixture
def doctor_restored(admin_api: Api, open_session: dict[str, Any]) -> Iterator[str]:
    doctor_id = str(open_session["doctor"]["doctor_id"])
    yield doctor_id
    r = put(admin_api, f"/api/v1/doctors/{doctor_id}/contact", {"phone": "", "notice": "none", "digest_time": "07:00"})
    assert r.status_code == 200, r.text


def test_the_reminder_hour_and_window_are_kept_and_quiet_hours_refuse_it(
    new_page: Any, admin_api: Api, settings_restored: dict[str, Any]
) -> None:
    page = new_page("desktop")
    open_sms_tab(page)
    form = page.locator("#sms-settings-form")
    assert form.locator("[name=window_location]").get_attribute("placeholder") == "门诊大厅预约挂号窗口"
    assert "次日停诊通知立即发送" in page.inner_text("#panel-sms")

    window = f"门诊楼一层东侧{uuid.uuid4().hex[:4]}号窗口"
    form.locator("[name=reminder_time]").fill("17:30")
    form.locator("[name=window_location]").fill(window)
    form.locator("button[type=submit]").click()
    saved = page.locator("#sms-settings-saved")
    saved.wait_for(state="visible")
    assert "已保存" in saved.inner_text() and "17:30" in saved.inner_text()
    answer = admin_api.get(SETTINGS)
    assert (answer["reminder_time"], answer["window_location"]) == ("17:30", window)
    assert (answer["quiet_start"], answer["quiet_end"]) == (
        settings_restored["quiet_start"],
        settings_restored["quiet_end"],
    )

    page.reload()
    page.wait_for_function("() => document.querySelector('#sms-settings-form [name=reminder_time]').value !== ''")
    assert form.locator("[name=reminder_time]").input_value() == "17:30"
    assert form.locator("[name=window_location]").input_value() == window

    # quiet hours 17:00–08:00 would swallow a reminder at 18:00: refused, the field marked, nothing kept
    form.locator("[name=quiet_start]").fill("17:00")
    form.locator("[name=quiet_end]").fill("08:00")
    form.locator("[name=reminder_time]").fill("18:00")
    form.locator("button[type=submit]").click()
    error = form.locator(".form-error")
    error.wait_for(state="visible")
    assert error.inner_text() == "提醒时间不能在免打扰时段内"
    assert form.locator("[name=reminder_time]").get_attribute("aria-invalid") == "true"
    assert page.locator("#sms-settings-saved").is_hidden()
    shoot(page, "admin-sms-settings-refused")
    answer = admin_api.get(SETTINGS)
    assert (answer["reminder_time"], answer["quiet_start"]) == ("17:30", settings_restored["quiet_start"])


def test_a_doctors_notice_the_delivery_list_a_resend_and_the_reminders_run(
    new_page: Any, base_url: str, platform: Platform, admin_api: Api, open_session: dict[str, Any], doctor_restored: str
) -> None:
    doctor_id = doctor_restored
    page = new_page("phone")
    open_sms_tab(page)

    # the doctor's mobile, typed in full once, is shown masked and never in full
    row = page.locator(f"#sms-doctor-table tr[data-doctor-id='{doctor_id}']")
    row.locator("button.sms-doctor-edit").click()
    dialog = page.locator("#sms-doctor-dialog")
    dialog.wait_for(state="visible")
    dialog.locator("[name=notice]").select_option("each")
    assert dialog.locator("#sms-digest-field").is_hidden()
    dialog.locator("button[type=submit]").click()
    dialog.locator(".form-error:has-text('发送通知需要手机号')").wait_for()
    shoot(page, "admin-sms-doctor-dialog")
    doctor_phone = "139" + new_phone()[3:]
    dialog.locator("[name=phone]").fill(doctor_phone)
    dialog.locator("button[type=submit]").click()
    dialog.wait_for(state="hidden")
    page.locator(
        f"#sms-doctor-table tr[data-doctor-id='{doctor_id}'] .doctor-phone:text-is('{masked(doctor_phone)}')"
    ).wait_for()
    assert "每个预约发一条" in row.locator(".doctor-notice").inner_text()
    assert doctor_phone not in page.content()
    contact = admin_api.get(f"/api/v1/doctors/{doctor_id}/contact")
    assert (contact["phone_masked"], contact["notice"]) == (masked(doctor_phone), "each")

    # a booking with that doctor: the patient's confirmation and the doctor's notice are listed
    patient_phone = new_phone()
    patient = Api(base_url)
    patient.register("冯秀兰", new_id_number(), patient_phone)
    patient.book(open_session["session_id"])

    def both_queued() -> dict[str, dict[str, Any]] | None:
        found = {
            m["template"]: m
            for m in messages(admin_api)
            if (m["template"], m["phone_masked"])
            in {("booking_confirmation", masked(patient_phone)), ("doctor_booking", masked(doctor_phone))}
        }
        return found if len(found) == 2 else None

    sent = until("the booking's two messages", both_queued)
    assert sent["doctor_booking"]["recipient"] == "doctor"
    page.click("#sms-refresh")
    to_doctor = page.locator(f"#sms-table tr[data-message-id='{sent['doctor_booking']['message_id']}']")
    to_doctor.wait_for()
    assert "医生新预约通知" in to_doctor.inner_text() and masked(doctor_phone) in to_doctor.inner_text()
    assert doctor_phone not in page.content() and patient_phone not in page.content()

    # the filter asks for one state: every row is in it; the outbox delivers nothing, so 已送达 is empty
    state = until("the doctor's message to settle", lambda: settled(admin_api, sent["doctor_booking"]["message_id"]))
    page.select_option("#sms-status", state)
    page.wait_for_function(
        """([id, state]) => {
            const rows = Array.from(document.querySelectorAll('#sms-table tbody tr'));
            return rows.some((r) => r.dataset.messageId === id) && rows.every((r) => r.dataset.status === state);
        }""",
        arg=[sent["doctor_booking"]["message_id"], state],
    )
    page.select_option("#sms-status", "delivered")
    page.locator("#sms-table tbody td:text-is('没有短信')").wait_for()

    # a message the carrier refused (the outbox never does: parked here by hand) is sent again
    confirmation = sent["booking_confirmation"]["message_id"]
    park_as_failed(platform, confirmation)
    page.select_option("#sms-status", "failed")
    failed = page.locator(f"#sms-table tr[data-message-id='{confirmation}']")
    failed.wait_for()
    assert "预约成功" in failed.inner_text() and "carrier refused: 4011" in failed.inner_text()
    shoot(page, "admin-sms-failed")
    failed.locator("button.sms-retry").click()
    failed.wait_for(state="detached")
    assert next(m for m in messages(admin_api) if m["message_id"] == confirmation)["status"] in (
        "queued",
        "sending",
        "sent",
    )
    again = admin_api.http.post(
        f"{base_url}/api/v1/sms/messages/{confirmation}/retry",
        headers={"X-CSRF-Token": admin_api.csrf},
        json={},
        timeout=30,
    )
    assert again.status_code in (400, 422) and again.json()["error"]["code"] == "not_failed", again.text

    # reminders for the booked day, now: the first run queues the booking's, a second one nothing
    run = page.locator("#reminder-run-form")
    assert run.locator("[name=visit_date]").input_value() == add_days(today(), 1)
    run.locator("[name=visit_date]").fill(open_session["date"])
    run.locator("button[type=submit]").click()
    result = page.locator("#reminder-run-result")
    result.wait_for(state="visible")
    first = result.inner_text()
    assert re.fullmatch(r"已排队 \d+ 条提醒", first) and int(result.get_attribute("data-queued") or 0) >= 1, first
    run.locator("button[type=submit]").click()
    page.locator("#reminder-run-result[data-queued='0']").wait_for()
    assert "没有新的提醒" in result.inner_text()
    page.select_option("#sms-status", "")
    shoot(page, "admin-sms")
    fits(page)


def park_as_failed(platform: Platform, message_id: str) -> None:
    """What the dispatcher does after the last refused attempt: failed, with the carrier's words."""
    dsn = pg_dsn("notification").rsplit("/", 1)[0] + f"/{platform.env['APPT_DB_PREFIX']}_notification"

    def parked() -> bool:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE outbox SET status = 'failed', attempts = 6, failed_at = now(),"
                " last_error = 'carrier refused: 4011' WHERE message_id = %s AND status <> 'sending'",
                (message_id,),
            )
            return bool(cur.rowcount)

    until("the message to be parked", parked)


@pytest.mark.parametrize("width", ["phone", "desktop"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_sms_tab_fits_and_is_translated(new_page: Any, width: str, lang: str) -> None:
    page = new_page(width, lang)
    refused: list[str] = []
    open_sms_tab(page, refused)
    page.locator("#sms-doctor-table tbody tr").first.wait_for()
    page.locator("#sms-table tbody tr").first.wait_for()
    text = page.inner_text("#panel-sms")
    assert "admin.sms." not in text, "a text without its translation"
    if lang == "en":
        assert "Quiet hours from" in text and "SMS delivery" in text
    fits(page)
    shoot(page, f"admin-sms-tab-{lang}")
    assert not refused, refused


def test_a_platform_admin_sees_the_sms_of_the_hospital_chosen(new_page: Any) -> None:
    page = new_page("desktop")
    login(page, *STAFF["platform_admin"])
    page.wait_for_url(re.compile(r"/admin$"))
    page.goto("/admin#sms")
    page.locator("#sms-doctor-table tbody tr[data-doctor-id]").first.wait_for()
    for hospital in (HOSPITAL, "hebmu4"):
        page.select_option("#admin-hospital", hospital)
        page.locator(f"#sms-doctor-table tbody tr[data-doctor-id^='{hospital}-']").first.wait_for()
    page.locator("#sms-doctor-table tbody tr[data-doctor-id^='hebmu4-']").first.wait_for()
    ids = page.locator("#sms-doctor-table tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.doctorId)")
    assert ids and all(i.startswith("hebmu4-") for i in ids), ids
    page.wait_for_function("() => document.querySelector('#sms-settings-form [name=reminder_time]').value !== ''")
    assert page.locator("#sms-settings-form .form-error").is_hidden()
