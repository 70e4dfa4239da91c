"""Health, metrics and dead letters on the whole platform as processes (issue 14): /healthz tells
what the sources say (a parked message, a stalled projection), the requeue empties a dead-letter
queue, every process serves /metrics whose counters move with a booking, and the compose health
check command answers for each service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from scripts.launcher import ROOT, Platform
from tests.conftest import free_port, until
from tests.e2e.conftest import running_platform
from tests.e2e.test_http_api import SESSION, Client

pytestmark = pytest.mark.e2e

REMEMBER_HOSPITAL = "evt-schedule-HospitalRegistered--notification.remember_hospital_name"
CONNECT_HOSPITAL = "evt-schedule-HospitalRegistered--his_sync.connect_new_hospital"
CONFIRM_BOOKING = "evt-booking-AppointmentBooked--notification.confirm_booking"
STATS = "stats.figures.v1"


@pytest.fixture(scope="module")
def ops() -> Iterator[Ops]:
    with running_platform("ops", ["demo/walking-skeleton.json"], env={
            "RETRY_ATTEMPTS": "2", "RETRY_BASE_DELAY_MS": "50", "HEALTH_PROJECTION_LAG_S": "2",
            "SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000",
            "RATE_BURST_CLIENT": "5000"}) as p:
        client = Client(p)
        client.wait_bookable()
        yield Ops(p, client)


class Ops:
    def __init__(self, platform: Platform, client: Client) -> None:
        self.p = platform
        self.client = client
        self.amqp = platform.env["AMQP_URI"]
        self.admin = client.login("admin", "admin-pass-2024")

    def health(self) -> dict[str, Any]:
        r = requests.get(self.client.url("/healthz"), timeout=10)
        body: dict[str, Any] = r.json()
        assert r.status_code == (200 if body["status"] == "ok" else 503)
        return body

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any]) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.amqp))
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.basic_publish(exchange, routing_key, json.dumps(body).encode(),
                                  pika.BasicProperties(content_type="application/json", delivery_mode=2))
        finally:
            conn.close()

    def purge(self, queue: str) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.amqp))
        try:
            conn.channel().queue_purge(queue)
        finally:
            conn.close()

    def metric(self, component: str, name: str, **labels: str) -> float:
        text = requests.get(f"http://{self.p.metrics_addresses()[component]}/metrics", timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def envelope(type_: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
    event_id = str(uuid.uuid4())
    return {"event_id": event_id, "type": type_, "schema_version": 1, "stream": f"test-{event_id[:8]}",
            "source": source, "occurred_at": "2026-01-05T08:00:00+00:00", "correlation_id": event_id, "data": data}


def test_healthz_reports_every_fact_with_numbers(ops):
    started = time.monotonic()
    health = ops.health()
    assert time.monotonic() - started < 3.0
    assert health["status"] == "ok", health["reasons"]
    assert set(health["services"]) == {"gateway", "schedule", "booking", "notification", "his_sync", "stats"}
    assert health["relay"]["lock_held"] is True and health["relay"]["behind"] == 0 and health["relay"]["head"] > 0
    assert set(health["projections"]) == {"schedule-readmodel", "booking-readmodel", STATS}
    assert all(p["pending"] == 0 for p in health["projections"].values())
    assert health["dead_letters"] == {"total": 0, "queues": {}}
    assert health["backlogs"]["his"]["waiting"] == 0 and "hebmu2" in health["backlogs"]["his"]["hospitals"]
    assert health["backlogs"]["sms"]["status"] == "ok"
    assert "details" not in health  # each process's report (addresses, counters) is for the platform admin
    details = ops.client.get("/api/v1/ops/health", ops.admin).json()["details"]
    assert set(details) == set(health["services"])
    for name, report in details.items():
        for check in ("eventstore", "broker", "relay", "database"):
            assert report["checks"][check]["status"] == "ok", (name, check, report["checks"][check])
    assert details["notification"]["checks"]["dead_letters"]["watched"] >= 10
    assert details["booking"]["metrics_address"] == ops.p.metrics_addresses()["booking"]
    assert "000000" not in json.dumps(health)  # no resident ID or phone anywhere (the demo's are masked elsewhere)


def test_the_compose_health_check_command_exits_0_for_each_service(ops):
    env = ops.p.process_env()
    for service in ("schedule", "booking", "notification", "his_sync", "stats", "relay", "gateway"):
        done = subprocess.run([sys.executable, "-m", "infra.health", "check", "--service", service, "--quiet",
                               "--gateway", ops.p.gateway_address], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, (service, done.stdout, done.stderr)
    missing = subprocess.run([sys.executable, "-m", "infra.health", "check", "--service", "nosuch", "--timeout", "2"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no answer" in missing.stderr


def test_a_parked_message_is_counted_and_the_requeue_empties_its_queue(ops):
    # 1. poison: notification's and his_sync's handlers park it after RETRY_ATTEMPTS; health counts
    # it, with the reason.
    poison = envelope("HospitalRegistered", "schedule", {"hospital_id": "x"})  # no name, level, address
    ops.publish("schedule.events", "HospitalRegistered", poison)
    dead, his_dead = REMEMBER_HOSPITAL + ".dead", CONNECT_HOSPITAL + ".dead"
    health = until("the poison message to be parked twice",
                   lambda: (h := ops.health())["dead_letters"]["total"] == 2 and h)
    assert health["status"] == "degraded"
    assert health["services"]["notification"] == health["services"]["his_sync"] == "degraded"
    assert health["services"]["booking"] == "ok"
    assert health["dead_letters"]["queues"] == {dead: 1, his_dead: 1}
    assert any(r.startswith("notification: dead_letters: ") and dead in r for r in health["reasons"])
    assert ops.metric("notification", "appt_dead_letters", queue=dead) == 1
    assert ops.metric("notification", "appt_events_handled_total", queue=REMEMBER_HOSPITAL, outcome="parked") == 1
    assert ops.metric("notification", "appt_events_handled_total", queue=REMEMBER_HOSPITAL, outcome="retry") == 1
    listed = ops.client.get("/api/v1/ops/dead-letters", ops.admin).json()
    assert listed["total"] == 2
    queue = next(q for q in listed["queues"] if q["queue"] == dead)
    assert queue["service"] == "notification" and queue["count"] == 1
    assert queue["messages"][0]["event_id"] == poison["event_id"]
    assert "ValidationError" in queue["messages"][0]["error"] and "input_value=…" in queue["messages"][0]["error"]
    ops.purge(his_dead)
    ops.purge(dead)
    assert until("health ok again", lambda: ops.health()["status"] == "ok")

    # 2. a message parked while a cause lasted (here: put there directly) goes back and succeeds.
    good = envelope("HospitalRegistered", "schedule", {"hospital_id": "ops-test", "name": "运维测试医院",
                                                       "level": "三级甲等", "address": "石家庄"})
    ops.publish("", dead, good)
    assert until("the parked message to be counted", lambda: ops.health()["dead_letters"]["total"] == 1)
    handled = ops.metric("notification", "appt_events_handled_total", queue=REMEMBER_HOSPITAL, outcome="ok")
    r = ops.client.post(f"/api/v1/ops/dead-letters/{dead}/requeue", None, ops.admin)
    assert r.status_code == 200 and r.json() == {"queue": dead, "moved": 1}
    health = until("health ok after the requeue", lambda: (h := ops.health())["status"] == "ok" and h)
    assert health["dead_letters"]["total"] == 0
    until("the requeued message to be handled", lambda: ops.metric(
        "notification", "appt_events_handled_total", queue=REMEMBER_HOSPITAL, outcome="ok") == handled + 1)
    assert ops.client.post("/api/v1/ops/dead-letters/evt-x-Y--z.w.dead/requeue", None, ops.admin).status_code == 404
    assert ops.client.post("/api/v1/ops/dead-letters/booking.rpc/requeue", None, ops.admin).status_code == 400


def test_health_turns_degraded_while_a_projection_stalls_and_ok_after(ops):
    assert ops.health()["status"] == "ok"
    base = os.environ.get("PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
    conn = psycopg2.connect(f"{base}/{ops.p.env['APPT_DB_PREFIX']}_stats")
    try:
        with conn.cursor() as cur:  # the projection's next batch waits for this row lock
            cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s FOR UPDATE", (STATS,))
        hospital = ops.client.login("hebmu2-admin", "admin-pass-2024")
        r = ops.client.post("/api/v1/admin/schedule/change_session_quota",
                            {"session_id": SESSION, "quota": {"web": 9, "phone": 5, "window": 5}}, hospital,
                            {"Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 200, r.text
        health = until("the stalled projection to show", lambda: (h := ops.health())["status"] == "degraded" and h,
                       timeout=20)
        stats = health["projections"][STATS]
        assert stats["status"] == "degraded" and stats["pending"] >= 1 and stats["seconds_behind"] > 2
        assert any(r.startswith(f"stats: projection:{STATS}: ") and "not applied" in r for r in health["reasons"])
        assert health["projections"]["booking-readmodel"]["status"] == "ok"
        assert ops.metric("stats", "appt_projection_lag_events", projection=STATS) >= 1
    finally:
        conn.rollback()
        conn.close()
    health = until("the projection to catch up", lambda: (h := ops.health())["status"] == "ok" and h, timeout=20)
    assert health["projections"][STATS]["pending"] == 0


def test_metrics_count_a_booking_in_every_process_it_crosses(ops):
    ops.client.register(41)
    token = ops.client.login("13700000041", "secret-pw-1")
    rpc = dict(service="booking", method="book_appointments", outcome="ok")  # the gateway batches (batching.py)
    http = dict(service="gateway", route="/api/v1/appointments", method="POST", status="201")
    confirmed = dict(service="notification", queue=CONFIRM_BOOKING, outcome="ok")
    before = (ops.metric("booking", "appt_rpc_total", **rpc), ops.metric("gateway", "appt_http_requests_total", **http),
              ops.metric("notification", "appt_events_handled_total", **confirmed),
              ops.metric("relay", "appt_relay_published_total"))
    r = ops.client.book(token)
    assert r.status_code == 201, r.text
    # nameko counts a worker once it has answered: the counters may lag the answer by a moment.
    until("booking to count the RPC", lambda: ops.metric("booking", "appt_rpc_total", **rpc) == before[0] + 1)
    assert ops.metric("booking", "appt_rpc_seconds_count", service="booking", method="book_appointments") >= 1
    until("the gateway to count the request",
          lambda: ops.metric("gateway", "appt_http_requests_total", **http) == before[1] + 1)
    until("notification to handle the booking", lambda: ops.metric(
        "notification", "appt_events_handled_total", **confirmed) == before[2] + 1)
    assert ops.metric("relay", "appt_relay_published_total") > before[3]
    ops.health()  # the health report sets the gauges (as the refresh does every METRICS_REFRESH_S)
    assert ops.metric("booking", "appt_projection_lag_events", projection="booking-readmodel") == 0
    assert ops.metric("his_sync", "appt_his_backlog", hospital_id="hebmu2", state="parked") == 0
    assert ops.metric("gateway", "appt_health_ok", check="relay") == 1


def test_a_down_his_degrades_health_with_the_reason_and_its_backlog_clears_after(ops):
    closed = free_port()

    def endpoint(port: int) -> None:
        r = requests.put(ops.client.url("/api/v1/hospitals/hebmu2/his"), json={"host": "127.0.0.1", "port": port},
                         headers={"Authorization": f"Bearer {ops.admin}"}, timeout=30)
        assert r.status_code == 200, r.text

    endpoint(closed)
    try:
        ops.client.register(42)
        r = ops.client.book(ops.client.login("13700000042", "secret-pw-1"))
        assert r.status_code == 201, r.text
        health = until("the HIS backlog to show", lambda: (h := ops.health())["status"] == "degraded" and h)
        his = health["backlogs"]["his"]
        assert his["status"] == "degraded" and his["hospitals"]["hebmu2"]["waiting"] >= 1
        assert health["services"]["his_sync"] == "degraded" and health["services"]["booking"] == "ok"
        [reason] = [r for r in health["reasons"] if r.startswith("his_sync: his_backlog: ")]
        assert "hebmu2" in reason and "the HIS does not answer" in reason
        assert ops.metric("his_sync", "appt_his_backlog", hospital_id="hebmu2", state="waiting") >= 1
    finally:
        endpoint(ops.p.his_port)
    # The new endpoint closes the breaker at once: ok again while the message still waits its turn.
    assert until("health ok with the HIS back", lambda: ops.health()["status"] == "ok", timeout=30)
    until("the backlog to clear", lambda: ops.health()["backlogs"]["his"]["hospitals"]["hebmu2"]["waiting"] == 0,
          timeout=60)
