"""The admin page's HIS interface (/admin#his) and the phone tab's hand-over card: the platform admin
sets the demo hospital's connection (the HIS simulator), the hospital's admin sees the messages a
booking sends and what the HIS answered, resends or skips a parked one. Driven in Chromium against
the whole platform; what the page shows is checked against the API too."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime
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
ENDPOINT = f"/api/v1/hospitals/{HOSPITAL}/his"
SETTABLE = (
    "host",
    "port",
    "receiving_application",
    "receiving_facility",
    "sending_facility",
    "charset",
    "rate_per_s",
    "inbound_facility",
    "enabled",
)


def put(api: Api, path: str, body: dict[str, Any]) -> requests.Response:
    return api.http.put(api.base + path, json=body, headers={"X-CSRF-Token": api.csrf}, timeout=30)


def endpoint(api: Api) -> dict[str, Any] | None:
    return next((e for e in api.get("/api/v1/his/endpoints")["endpoints"] if e["hospital_id"] == HOSPITAL), None)


def messages(api: Api, status: str | None = None) -> list[dict[str, Any]]:
    query = f"?hospital_id={HOSPITAL}&limit=100" + (f"&status={status}" if status else "")
    return api.get("/api/v1/his/messages" + query)["messages"]  # type: ignore[no-any-return]


def fits(page: Any) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url}: the page is {scroll}px wide in a {inner}px window"


def open_tab(page: Any, who: str, tab: str, refused: list[str] | None = None) -> None:
    """Log in, open the tab with the demo hospital chosen; `refused` collects the API's refusals from then on."""
    login(page, *STAFF[who])
    page.wait_for_url(re.compile(r"/admin$"))
    if refused is not None:
        page.on(
            "response", lambda r: refused.append(f"{r.request.method} {r.url} {r.status}") if r.status >= 400 else None
        )
    page.goto(f"/admin#{tab}")
    page.locator(f"#panel-{tab}").wait_for()
    choose_hospital(page)


def choose_hospital(page: Any) -> None:
    """The demo hospital in the header's select (a platform admin's page opens on the first hospital)."""
    page.locator("#admin-hospital option").first.wait_for(state="attached")
    if page.locator("#admin-hospital").input_value() != HOSPITAL:
        page.select_option("#admin-hospital", HOSPITAL)


def reload(page: Any) -> None:
    page.reload()
    choose_hospital(page)


def show_connection(page: Any) -> None:
    """The platform admin's view of the demo hospital's connection, once drawn and its form filled."""
    page.locator(f"#his-endpoint-state[data-hospital-id='{HOSPITAL}'] .his-address").wait_for()
    page.locator(f"#his-endpoint-form[data-hospital-id='{HOSPITAL}']").wait_for()


@pytest.fixture(scope="module")
def platform_api(base_url: str) -> Api:
    api = Api(base_url)
    api.login(*STAFF["platform_admin"])
    return api


@pytest.fixture
def endpoint_restored(platform_api: Api) -> Iterator[dict[str, Any]]:
    """The demo hospital's connection as it was (its key is write-only: once set it stays set)."""
    before = endpoint(platform_api)
    assert before is not None, "the demo hospital has no HIS endpoint: his_sync's default HIS is not set"
    yield before
    r = put(platform_api, ENDPOINT, {k: before[k] for k in SETTABLE})
    assert r.status_code == 200, r.text


@pytest.fixture
def booked(base_url: str, admin_api: Api) -> dict[str, Any]:
    """A new patient's web booking of a demo session from tomorrow on."""
    sessions = admin_api.schedule(DEPARTMENT, add_days(today(), 1), 7)
    found = next((s for s in sessions if s["state"] == "open" and s["remaining"].get("web", 0) > 0), None)
    if found is None:
        pytest.fail("no demo session open for web booking in the coming week: the demo import publishes one "
                    "(demo/walking-skeleton.json); its absence is a fault, not a reason to skip")
    patient = Api(base_url)
    patient.register("卫玉珍", new_id_number(), new_phone())
    return patient.book(found["session_id"])


def s12_of(api: Api, appointment_id: str) -> dict[str, Any] | None:
    return next(
        (m for m in messages(api) if m["appointment_id"] == appointment_id and m["message_type"] == "SIU^S12"), None
    )


def acked_s12(api: Api, appointment_id: str) -> dict[str, Any]:
    def acked() -> dict[str, Any] | None:
        m = s12_of(api, appointment_id)
        return m if m and m["status"] == "acked" else None

    return until("the booking's SIU^S12 to be acknowledged", acked, timeout=30)  # type: ignore[no-any-return]


def test_the_platform_admin_sets_the_connection_and_the_key_is_never_shown(
    new_page: Any, platform_api: Api, endpoint_restored: dict[str, Any]
) -> None:
    page = new_page("desktop")
    open_tab(page, "platform_admin", "his")
    show_connection(page)
    assert page.locator("#his-circuit").inner_text() == "正常"
    assert page.locator("#his-circuit").get_attribute("data-circuit") == "closed"
    assert page.locator("#his-endpoint-facts .his-address").inner_text().startswith("127.0.0.1:")
    form = page.locator("#his-endpoint-form")
    assert form.locator("[name=host]").input_value() == "127.0.0.1"
    assert form.locator("[name=inbound_facility]").input_value() == "HEBMU2-HIS"
    assert form.locator("[name=inbound_secret]").input_value() == ""

    secret = "k-" + secrets.token_hex(12)
    form.locator("[name=rate_per_s]").fill("5")
    form.locator("[name=inbound_secret]").fill(secret)
    form.locator("button[type=submit]").click()
    saved = page.locator("#his-endpoint-saved")
    saved.wait_for(state="visible")
    assert "已保存" in saved.inner_text() and "5" in saved.inner_text()
    assert page.locator("#his-secret-state").inner_text() == "已设置"
    assert form.locator("[name=inbound_secret]").input_value() == ""
    assert secret not in page.content()
    answer = endpoint(platform_api)
    assert answer is not None and answer["rate_per_s"] == 5 and answer["host"] == endpoint_restored["host"]

    reload(page)
    show_connection(page)
    assert form.locator("[name=rate_per_s]").input_value() == "5"
    assert form.locator("[name=inbound_secret]").input_value() == ""
    assert secret not in page.content()

    # refused in the page: the field is marked and named, nothing is sent
    refusals = (("port", "0", "端口应为1-65535的整数"), ("rate_per_s", "0.05", "速率应在0.1到1000条/秒之间"))
    for field, value, text in refusals:
        show_connection(page)
        form.locator(f"[name={field}]").fill(value)
        form.locator("button[type=submit]").click()
        error = form.locator(".form-error")
        error.wait_for(state="visible")
        assert error.inner_text() == text
        assert form.locator(f"[name={field}]").get_attribute("aria-invalid") == "true"
        assert page.locator("#his-endpoint-saved").is_hidden()
        shoot(page, f"admin-his-refused-{field}")
        reload(page)

    # refused by the platform: the sender code of hebmu4 (imported at the start, connected like every hospital)
    other = next(e for e in platform_api.get("/api/v1/his/endpoints")["endpoints"] if e["hospital_id"] == "hebmu4")
    show_connection(page)
    form.locator("[name=inbound_facility]").fill(other["inbound_facility"])
    form.locator("button[type=submit]").click()
    form.locator(".form-error:has-text('该发送方代码已被其他医院使用')").wait_for()
    assert form.locator("[name=inbound_facility]").get_attribute("aria-invalid") == "true"
    answer = endpoint(platform_api)
    assert answer is not None and (answer["port"], answer["rate_per_s"], answer["inbound_facility"]) == (
        endpoint_restored["port"],
        5,
        "HEBMU2-HIS",
    )


def test_the_key_is_shown_as_set_after_a_reload(
    new_page: Any, platform_api: Api, endpoint_restored: dict[str, Any]
) -> None:
    r = put(
        platform_api,
        ENDPOINT,
        {**{k: endpoint_restored[k] for k in SETTABLE}, "inbound_secret": "k-" + secrets.token_hex(12)},
    )
    assert r.status_code == 200 and r.json()["inbound_secret_set"] is True, r.text
    page = new_page("desktop")
    open_tab(page, "platform_admin", "his")
    show_connection(page)
    state = page.locator("#his-secret-state")
    assert state.is_visible() and state.inner_text() == "已设置"


def test_the_hospital_admin_sees_a_bookings_message_acknowledged_but_not_the_connection(
    new_page: Any, admin_api: Api, booked: dict[str, Any]
) -> None:
    page = new_page("phone")
    refused: list[str] = []
    open_tab(page, "hospital_admin", "his", refused)
    page.locator("#his-table tbody tr").first.wait_for()
    assert page.locator("#his-endpoint-card").is_hidden()
    assert page.locator("#his-endpoint-form").is_hidden()
    assert page.locator("#his-table").is_visible()

    appointment_id = booked["appointment_id"]
    row = page.locator(f"#his-table tr[data-appointment-id='{appointment_id}'][data-type='SIU^S12']")

    def shown_acked() -> bool:
        page.click("#his-refresh")
        page.wait_for_load_state("networkidle")
        return row.count() == 1 and row.get_attribute("data-status") == "acked"

    until("the booking's SIU^S12 shown as 已接收", shown_acked, timeout=30, every=1.0)
    text = row.inner_text()
    assert "预约" in text and "已接收" in text and "AA" in text, text
    assert row.locator("button").count() == 0
    shoot(page, "admin-his-messages")
    fits(page)
    assert not refused, refused


def test_a_parked_message_is_sent_again_or_skipped(
    new_page: Any, platform: Platform, admin_api: Api, booked: dict[str, Any]
) -> None:
    message = acked_s12(admin_api, booked["appointment_id"])
    page = new_page("desktop")
    open_tab(page, "hospital_admin", "his")
    page.locator("#his-table tbody tr").first.wait_for()

    park_as_refused(platform, message["message_id"])
    page.select_option("#his-status", "failed")
    row = page.locator(f"#his-table tr[data-message-id='{message['message_id']}'][data-status='failed']")
    row.wait_for()
    assert "被拒/搁置" in row.inner_text() and "AE" in row.inner_text() and "排班不存在" in row.inner_text()
    shoot(page, "admin-his-failed")
    row.locator("button.his-retry").click()
    row.wait_for(state="detached")
    until(
        "the resent message to be acknowledged again",
        lambda: (s12_of(admin_api, booked["appointment_id"]) or {}).get("status") == "acked",
        timeout=30,
    )

    park_as_refused(platform, message["message_id"])
    page.click("#his-refresh")
    row.wait_for()
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    row.locator("button.his-skip").click()
    until("the confirm dialog", lambda: asked, timeout=5)
    assert "跳过后该预约的后续消息将继续发送" in asked[0]
    assert (s12_of(admin_api, booked["appointment_id"]) or {}).get("status") == "failed"
    page.once("dialog", lambda d: d.accept())
    row.locator("button.his-skip").click()
    row.wait_for(state="detached")
    assert (s12_of(admin_api, booked["appointment_id"]) or {}).get("status") == "skipped"
    page.select_option("#his-status", "skipped")
    skipped = page.locator(f"#his-table tr[data-message-id='{message['message_id']}'][data-status='skipped']")
    skipped.wait_for()
    assert "已跳过" in skipped.inner_text()

    again = admin_api.http.post(
        f"{admin_api.base}/api/v1/his/messages/{message['message_id']}/retry",
        headers={"X-CSRF-Token": admin_api.csrf},
        json={},
        timeout=30,
    )
    assert again.status_code == 400 and again.json()["error"]["code"] == "not_parked", again.text


@pytest.fixture
def handed_over(base_url: str, platform_api: Api) -> dict[str, Any]:
    """A hospital of the test's own (connected to the simulator, as every new one is) with two paid
    phone bookings for tomorrow, handed over to the HIS: its hand-over time moved to 00:00 so that
    booking's timer (every minute) hands the next day over now."""
    now = datetime.now(TZ)
    if now.hour == 23 and now.minute >= 50:
        pytest.skip("within ten minutes of midnight in Hebei: 'tomorrow' would change during the test")
    tomorrow = add_days(today(), 1)
    tag = uuid.uuid4().hex[:5]
    hospital, department, doctor = f"h{tag}", f"h{tag}-nk", f"h{tag}-wang"
    rules = {"cutoff_days_before": 0, "cutoff_time": "23:59", "phone_handover_time": "23:59"}
    admin = platform_api
    admin.post(
        "/api/v1/hospitals",
        {"hospital_id": hospital, "name": "测试市交接医院", "rules": rules},
        expect=201,
        key=uuid.uuid4().hex,
    )
    admin.command("create_department", {"department_id": department, "hospital_id": hospital, "name": "内科"})
    admin.command(
        "register_doctor",
        {
            "doctor_id": doctor,
            "hospital_id": hospital,
            "department_id": department,
            "name": "王医生",
            "title": "主治医师",
        },
    )
    session_id = f"{doctor}-tomorrow"
    admin.command(
        "schedule_session",
        {
            "session_id": session_id,
            "doctor_id": doctor,
            "date": tomorrow,
            "period": "morning",
            "start": "08:00",
            "end": "11:30",
            "capacity": 10,
            "quota": {"web": 4, "phone": 4, "window": 2},
            "fee": "30.00",
        },
    )
    until(
        "the new hospital's HIS endpoint",
        lambda: any(e["hospital_id"] == hospital for e in admin.get("/api/v1/his/endpoints")["endpoints"]),
        timeout=60,
    )
    until(
        "tomorrow's session to take phone bookings",
        lambda: any(
            s["session_id"] == session_id and s["remaining"].get("phone", 0) > 0
            for s in admin.schedule(department, tomorrow, 1)
        ),
        timeout=60,
    )
    operator = Api(base_url)
    operator.login(*STAFF["operator"])
    booked = [
        operator.book(session_id, Api(base_url).register(name, new_id_number(), new_phone())["patient_id"])
        for name in ("褚桂英", "蒋建国")
    ]
    admin.command("change_booking_rules", {"hospital_id": hospital, "rules": {**rules, "phone_handover_time": "00:00"}})

    def acknowledged() -> list[dict[str, Any]] | None:
        rows = admin.get(f"/api/v1/hospitals/{hospital}/handover?date={tomorrow}")["messages"]
        return rows if len(rows) == 2 and all(m["status"] == "acked" for m in rows) else None

    rows = until("the hand-over to be acknowledged", acknowledged, timeout=150, every=1.0)
    return {"hospital_id": hospital, "date": tomorrow, "booked": booked, "messages": rows}


def test_the_handover_card_shows_what_the_his_answered_for_each_phone_booking(
    new_page: Any, platform: Platform, handed_over: dict[str, Any]
) -> None:
    page = new_page("phone")
    open_tab(page, "platform_admin", "phone")
    page.select_option("#admin-hospital", handed_over["hospital_id"])
    page.locator("#phone-date").fill(handed_over["date"])
    page.locator("#phone-date").dispatch_event("change")
    summary = page.locator("#handover-summary")
    summary.wait_for()
    page.locator("#handover-table tbody tr[data-status='acked']").nth(1).wait_for()
    assert summary.inner_text() == "已接收 2 / 被拒 0 / 待发送 0"
    for appointment in handed_over["booked"]:
        row = page.locator(f"#handover-table tr[data-appointment-id='{appointment['appointment_id']}']")
        text = row.inner_text()
        # joined with the phone list above: the booking's number and code, not only its id
        assert f"{appointment['sequence_number']}号 · {appointment['code']}" in text, text
        assert "已接收" in text and "AA" in text, text
        assert row.locator("button").count() == 0
    shoot(page, "admin-handover")
    fits(page)

    # a refused ADT^A05 is offered 重发 in the card; sent again, the HIS takes it
    message = handed_over["messages"][0]
    park_as_refused(platform, message["message_id"])
    page.locator("#phone-date").dispatch_event("change")
    failed = page.locator(f"#handover-table tr[data-message-id='{message['message_id']}'][data-status='failed']")
    failed.wait_for()
    assert summary.inner_text() == "已接收 1 / 被拒 1 / 待发送 0"
    assert "被拒/搁置" in failed.inner_text() and "排班不存在" in failed.inner_text()
    shoot(page, "admin-handover-failed")
    failed.locator("button.his-retry").click()
    failed.wait_for(state="detached")
    page.locator(f"#handover-table tr[data-message-id='{message['message_id']}']").wait_for()
    fits(page)


def park_as_refused(platform: Platform, message_id: str) -> None:
    """What the dispatcher does when the HIS answers AR (the simulator in the test platform always says
    AA): failed, with the HIS's words."""
    dsn = pg_dsn("his_sync").rsplit("/", 1)[0] + f"/{platform.env['APPT_DB_PREFIX']}_his_sync"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE his_outbox SET status = 'failed', attempts = 1, ack_code = 'AE', ack_text = '排班不存在',"
            " last_error = 'HIS answered AE: 排班不存在', acked_at = NULL WHERE message_id = %s AND status = 'acked'",
            (message_id,),
        )
        assert cur.rowcount == 1, "the message was not acknowledged"


@pytest.mark.parametrize("width", ["phone", "desktop"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_handover_card_and_the_his_tab_fit_and_are_translated(new_page: Any, width: str, lang: str) -> None:
    page = new_page(width, lang)
    refused: list[str] = []
    open_tab(page, "platform_admin", "phone", refused)
    # far enough ahead that no 16:00 hand-over has run for it
    page.locator("#phone-date").fill(add_days(today(), 20))
    page.locator("#phone-date").dispatch_event("change")
    expected = {
        "zh": "该日尚未交接（每天16:00交接次日已付费电话预约）",
        "en": "No hand-over for this day yet (each day at 16:00 the next day's paid phone bookings are handed over)",
    }
    # The table first shows the default day (tomorrow: after 16:00 Beijing its hand-over has run, and
    # it says so); wait for the chosen day's answer, not for whichever empty row is there first.
    empty = page.locator("#handover-table tbody td.muted").filter(has_text=expected[lang])
    empty.wait_for()
    assert empty.inner_text() == expected[lang]
    assert page.locator("#handover-summary").is_hidden()
    text = page.inner_text("#panel-phone")
    assert "admin.his." not in text and "admin.handover." not in text, "a text without its translation"
    fits(page)
    shoot(page, f"admin-handover-empty-{lang}")

    page.goto("/admin#his")
    page.select_option("#admin-hospital", HOSPITAL)
    show_connection(page)
    page.locator("#his-table tbody tr").first.wait_for()
    text = page.inner_text("#panel-his")
    assert "admin.his." not in text, "a text without its translation"
    if lang == "en":
        assert "HIS connection" in text and "Messages to the HIS" in text and "Working" in text
    fits(page)
    shoot(page, f"admin-his-tab-{lang}")
    assert not refused, refused
