"""notification and his_sync as real nameko containers on the real broker and PostgreSQL: the
entrypoints generated from their handlers.APP tables receive relay-format events, their read
models' SQL runs for real, and a redelivered event has its effect once.

Each service is started under a name unique to the test (its queues are this session's alone);
notification asks a fake booking service, also uniquely named, for the patient's phone; his_sync
talks MLLP to the HIS simulator as a subprocess.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from nameko.rpc import RpcProxy, rpc
from nameko.testing.services import entrypoint_hook

from contracts import AppointmentBooked, AppointmentCancelled, Envelope, Event, HospitalRegistered
from infra.providers import ServiceDatabase
from services.his_sync.service import HisSyncService
from services.notification.service import NotificationService

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BOOKED = AppointmentBooked(
    appointment_id="appt-n1", code="K7M2QX9P", session_id="s-hb3-card-0310-am", hospital_id="hb3",
    department_id="hb3-card", doctor_id="dr-wang", patient_id="patient-5b1e", channel="web",
    sequence_number=7, date="2025-03-10", period="morning", start="08:00:00", fee="50.00",
)
CANCELLED = AppointmentCancelled(
    appointment_id="appt-n1", session_id="s-hb3-card-0310-am", hospital_id="hb3", patient_id="patient-5b1e",
    channel="web", reason="patient",
)


def body(event: Event, source: str) -> dict[str, Any]:
    env = Envelope(type=event.type_name(), stream=f"{source}-1", source=source, correlation_id="corr-svc",
                   data=event.model_dump(mode="json"))
    return env.model_dump(mode="json")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def rows(container: Any, sql: str) -> list[tuple[Any, ...]]:
    provider = next(e for e in container.extensions if isinstance(e, ServiceDatabase))
    return provider.db.fetchall(sql)


def test_notification_queues_one_sms_for_a_redelivered_booking(
    container_factory, rabbit_config, broker, unique_name, wait_for
):
    booking_name = unique_name("booking")

    class FakeBooking:
        name = booking_name

        @rpc
        def patient_contact(self, patient_id):
            return {"phone": "13812345678", "phone_masked": "138****5678"}

    class Notification(NotificationService):
        name = unique_name("notification")
        booking = RpcProxy(booking_name)

    container_factory(FakeBooking, rabbit_config).start()
    notification = container_factory(Notification, rabbit_config)
    notification.start()

    broker.publish_event("schedule", body(HospitalRegistered(hospital_id="hb3", name="河北医科大学第三医院",
                                                             level="3A", address="石家庄"), "schedule"))
    wait_for(lambda: len(rows(notification, "SELECT id FROM names")) == 1, 30, "the hospital's name")
    # No quiet hours (21:00-08:00 in Hebei by default), whatever the hour the test runs at: the
    # confirmation would otherwise wait for 08:00 and the dispatcher check below time out.
    provider = next(e for e in notification.extensions if isinstance(e, ServiceDatabase))
    with provider.db.transaction() as cur:
        cur.execute("INSERT INTO hospitals (hospital_id, quiet_start, quiet_end) VALUES ('hb3', '00:00', '00:00')"
                    " ON CONFLICT (hospital_id) DO UPDATE SET quiet_start = '00:00', quiet_end = '00:00'")
    booked = body(BOOKED, "booking")
    broker.publish_event("booking", booked, copies=2)
    wait_for(lambda: len(rows(notification, "SELECT event_id FROM inbox")) == 2, 30, "the booking to be claimed")
    time.sleep(0.5)  # an absence check: give the second copy time to (wrongly) queue a second SMS

    with entrypoint_hook(notification, "outbox") as outbox:
        [sms] = outbox(10)
    assert sms["template"] == "booking_confirmation" and sms["phone_masked"] == "138****5678"
    assert "河北医科大学第三医院" in sms["text"] and "预约码K7M2QX9P" in sms["text"]
    assert "13812345678" not in json.dumps(sms, ensure_ascii=False)
    consumers = sorted(c for (c,) in rows(notification, "SELECT consumer FROM inbox"))
    assert consumers == ["notification.confirm_booking", "notification.remember_hospital_name"]
    [(data,)] = rows(notification, "SELECT data FROM appointments")
    assert {k: v for k, v in data.items() if k not in ("status", "contact")} == BOOKED.model_dump(mode="json")
    assert data["status"] == "active" and "13812345678" not in json.dumps(data)

    # The dispatcher's timer hands it to the provider (the outbox adapter: `make run`'s default).
    wait_for(lambda: rows(notification, "SELECT status FROM outbox") == [("sent",)], 30, "the dispatcher to send it")
    # The operator's reminder run for the visit day: one reminder; a second run, nothing new.
    with entrypoint_hook(notification, "run_reminders") as run:
        assert run("2025-03-10", "hb3")["queued"] == 1
        assert run("2025-03-10", "hb3")["queued"] == 0
    with entrypoint_hook(notification, "messages") as messages:
        assert sorted(m["template"] for m in messages()) == ["booking_confirmation", "reminder"]


def test_his_sync_sends_a_booking_and_its_cancellation_once_each(
    container_factory, rabbit_config, broker, unique_name, wait_for, tmp_path
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = tmp_path / "his.jsonl"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "services.his_sync.simulator", "--host", "127.0.0.1", "--port", str(port),
         "--log", str(log)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listening(port), 10, "the simulator to listen")
        booking_name = unique_name("booking")

        class FakeBooking:
            name = booking_name

            @rpc
            def patient_for_his(self, patient_id):
                return {"name": "王小明", "id_number": "130105199001011237", "sex": "M", "birth_date": "1990-01-01",
                        "phone": "13812345678"}

        class HisSync(HisSyncService):
            name = unique_name("his_sync")
            booking = RpcProxy(booking_name)

        container_factory(FakeBooking, rabbit_config).start()
        with socket.socket() as probe:  # its HTTP entrypoints (FHIR, visit totals) need a port of their own
            probe.bind(("127.0.0.1", 0))
            web = int(probe.getsockname()[1])
        his_sync = container_factory(HisSync, {**rabbit_config, "HIS_HOST": "127.0.0.1", "HIS_PORT": port,
                                               "WEB_SERVER_ADDRESS": f"127.0.0.1:{web}"})
        his_sync.start()
        # The hospital registered: the deployment's default HIS becomes its endpoint.
        broker.publish_event("schedule", body(HospitalRegistered(hospital_id="hb3", name="河北医科大学第三医院",
                                                                 level="3A", address="石家庄"), "schedule"))
        wait_for(lambda: rows(his_sync, "SELECT 1 FROM his_endpoints"), 30, "the hospital's endpoint")
        booked = body(BOOKED, "booking")
        broker.publish_event("booking", booked, copies=2)
        wait_for(lambda: rows(his_sync, "SELECT status FROM his_outbox") == [("acked",)], 30, "the S12 acknowledged")
        broker.publish_event("booking", body(CANCELLED, "booking"))
        wait_for(lambda: sorted(rows(his_sync, "SELECT status FROM his_outbox")) == [("acked",), ("acked",)], 30,
                 "the S15 acknowledged")
        time.sleep(0.5)  # an absence check: the second copy of the booking must not reach the HIS

        with entrypoint_hook(his_sync, "sent") as sent:
            answered = sent(10)
        assert sorted(m["message_type"] for m in answered) == ["SIU^S12", "SIU^S15"]
        assert {m["control_id"] for m in answered if m["message_type"] == "SIU^S12"} == {
            uuid.UUID(booked["event_id"]).hex[:20]}
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        assert [(r["message_type"], r["ack_code"]) for r in records] == [("SIU^S12", "AA"), ("SIU^S15", "AA")]
        assert "AIP|1||dr-wang" in records[1]["raw"]  # the cancellation is built from the booking as booked
        assert "130105199001011237" not in log.read_text(encoding="utf-8")  # the simulator's log masks it
        [(raw_enc,)] = rows(his_sync, "SELECT raw_enc FROM his_outbox LIMIT 1")
        assert "王小明" not in raw_enc  # encrypted at rest
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
