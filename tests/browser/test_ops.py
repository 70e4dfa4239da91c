"""The operator page (/ops) in Chromium: the platform admin sees every service's health and a
parked message (type, event id, never its data) and requeues it with the button; anyone else
is refused, page and API alike."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pika
import pika.exceptions
import pytest
import requests

from tests.browser.conftest import STAFF, Api, login, shoot, until

pytestmark = pytest.mark.browser

DEAD = "evt-schedule-HospitalRegistered--notification.remember_hospital_name.dead"


def park(amqp_uri: str) -> str:
    """A message parked while its cause lasted (put into the .dead queue directly): it succeeds
    once requeued."""
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "type": "HospitalRegistered", "schema_version": 1,
            "stream": f"hospital-t{event_id[:6]}", "source": "schedule",
            "occurred_at": "2026-01-05T08:00:00+00:00", "correlation_id": event_id,
            "data": {"hospital_id": f"t{event_id[:6]}", "name": "页面测试医院", "level": "三级甲等", "address": "保定"}}
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        try:  # declared by the handler when it first parked something, as the handler declares it
            channel.queue_declare(DEAD, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.queue_declare(DEAD, durable=True)
        channel.basic_publish("", DEAD, json.dumps(body).encode(),
                              pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                   headers={"x-appt-error": "OperationalError: the database was gone",
                                                            "x-appt-attempt": 5}))
    finally:
        conn.close()
    return event_id


def test_the_platform_admin_sees_a_dead_letter_and_requeues_it(platform: Any, base_url: str, new_page: Any) -> None:
    admin = Api(base_url)
    admin.login(*STAFF["platform_admin"])
    event_id = park(platform.env["AMQP_URI"])
    until("the parked message in health", lambda: admin.get("/api/v1/ops/health")["dead_letters"]["total"] == 1)

    page = new_page("desktop")
    login(page, *STAFF["platform_admin"], next_path="/ops")
    assert page.url.endswith("/ops")
    page.wait_for_selector("body[data-loaded='1']")
    assert page.locator("#ops-overall").get_attribute("data-status") == "degraded"
    assert "dead_letters" in page.locator("#ops-reasons").inner_text()
    for service in ("gateway", "schedule", "booking", "notification", "his_sync", "stats"):
        assert page.locator(f"#ops-services tr[data-service='{service}']").count() == 1
    assert page.locator("#ops-services tr[data-service='notification'] [data-status]").get_attribute(
        "data-status") == "degraded"
    assert page.locator("#ops-services tr[data-service='booking'] [data-status]").get_attribute("data-status") == "ok"
    assert page.locator("#ops-projections tr[data-projection='stats.figures.v1']").count() == 1
    row = page.locator(f"#ops-dead tr[data-queue='{DEAD}']")
    assert row.locator(".dead-count").inner_text() == "1"
    assert event_id in row.inner_text() and "HospitalRegistered" in row.inner_text()
    assert "OperationalError" in row.inner_text()
    assert "页面测试医院" not in page.content(), "an event's data is never shown"
    shoot(page, "ops")

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.requeue").click()
    page.wait_for_selector(f"#ops-dead tr[data-queue='{DEAD}']", state="detached")
    assert "1" in page.locator("#toast").inner_text()
    health = until("health ok after the requeue",
                   lambda: (h := admin.get("/api/v1/ops/health"))["status"] == "ok" and h)
    assert health["dead_letters"] == {"total": 0, "queues": {}}
    page.click("#ops-refresh")
    page.wait_for_function("document.querySelector('#ops-overall').dataset.status === 'ok'")


@pytest.mark.parametrize("role", ["hospital_admin", "operator"])
def test_ops_refuses_anyone_but_the_platform_admin(base_url: str, new_page: Any, role: str) -> None:
    staff = Api(base_url)
    staff.login(*STAFF[role])
    for path in ("/api/v1/ops/health", "/api/v1/ops/dead-letters"):
        staff.get(path, expect=403)
    r = staff.http.post(base_url + f"/api/v1/ops/dead-letters/{DEAD}/requeue", headers={"X-CSRF-Token": staff.csrf},
                        timeout=30)
    assert r.status_code == 403 and r.json()["error"]["field"] == "role"
    assert requests.get(base_url + "/api/v1/ops/health", timeout=30).status_code == 401

    page = new_page("phone")
    login(page, *STAFF[role], next_path="/ops")
    banner = page.wait_for_selector(".banner-danger")
    assert re.search("无权", banner.inner_text())
    assert page.locator("#ops-dead").count() == 0
