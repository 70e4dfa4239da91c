"""notification: turns events into SMS in the outbox (the default provider port)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from nameko.rpc import RpcProxy, rpc

from contracts import Envelope, from_wire
from infra.db import Database
from infra.handling import claim, reliable_event_handler
from infra.providers import LogContext, ServiceDatabase, Vault, contract
from services.notification import domain

SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    id   text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE IF NOT EXISTS appointments (
    appointment_id text PRIMARY KEY,
    data           jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    message_id   uuid PRIMARY KEY,
    event_id     uuid NOT NULL,
    patient_id   text NOT NULL,
    phone_enc    text NOT NULL,
    phone_masked text NOT NULL,
    template     text NOT NULL,
    text         text NOT NULL,
    status       text NOT NULL DEFAULT 'queued',
    created_at   timestamptz NOT NULL DEFAULT now()
);
"""


def _remember_name(db: Database, consumer: str, env: Envelope, id_key: str, name: str) -> None:
    with db.transaction() as cur:
        if claim(cur, consumer, env.event_id):
            cur.execute(
                "INSERT INTO names VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
                (env.data[id_key], name),
            )


class NotificationService:
    name = "notification"

    log = LogContext()
    db = ServiceDatabase(SCHEMA)
    vault = Vault()
    booking = RpcProxy("booking")

    @reliable_event_handler("booking", "AppointmentBooked")
    def on_appointment_booked(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._queue(env, "booking_confirmation", env.data, domain.booking_confirmation, remember=True)

    @reliable_event_handler("booking", "AppointmentMoved")
    def on_appointment_moved(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._queue(env, "moved_by_doctor_stop", env.data, domain.moved, remember=True)

    @reliable_event_handler("booking", "AppointmentCancelled")
    def on_appointment_cancelled(self, body: dict[str, Any]) -> None:
        """The cancellation SMS; for a doctor stop it is the warning the patient must not miss."""
        env = Envelope.model_validate(body)
        with self.db.transaction() as cur:
            cur.execute("SELECT data FROM appointments WHERE appointment_id = %s", (env.data["appointment_id"],))
            row = cur.fetchone()
        if row is None:  # its booking's confirmation has not been handled yet: retried after it
            raise LookupError(f"appointment {env.data['appointment_id']} not known yet")
        reason, refund = env.data["reason"], env.data.get("refund_due")
        template = "cancelled_doctor_stop" if reason == "doctor_stop" else "cancelled"
        self._queue(env, template, dict(row[0]),
                    lambda appt, names: domain.cancellation(appt, names, reason, refund))

    def _queue(self, env: Envelope, template: str, appt: dict[str, Any], render: Any, remember: bool = False) -> None:
        contact = self.booking.patient_contact(appt["patient_id"])
        if (err := from_wire(contact)) is not None:
            raise err
        with self.db.transaction() as cur:
            if not claim(cur, f"notification.{template}", env.event_id):
                return
            cur.execute(
                "SELECT id, name FROM names WHERE id IN (%s, %s, %s)",
                (appt["hospital_id"], appt["department_id"], appt["doctor_id"]),
            )
            names = dict(cur.fetchall())
            cur.execute(
                "INSERT INTO outbox (message_id, event_id, patient_id, phone_enc, phone_masked, template, text)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (uuid.uuid4(), env.event_id, appt["patient_id"], self.vault.encrypt(contact["phone"]),
                 contact["phone_masked"], template, render(appt, names)),
            )
            if remember:
                cur.execute(
                    "INSERT INTO appointments VALUES (%s, %s) ON CONFLICT (appointment_id) DO UPDATE "
                    "SET data = EXCLUDED.data",
                    (appt["appointment_id"], json.dumps(appt, ensure_ascii=False)),
                )
        self.log.info("sms_queued", template=template, appointment_id=appt["appointment_id"])

    @reliable_event_handler("schedule", "HospitalRegistered")
    def on_hospital_registered(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        _remember_name(self.db, "notification.on_hospital_registered", env, "hospital_id", env.data["name"])

    @reliable_event_handler("schedule", "DepartmentCreated")
    def on_department_created(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        _remember_name(self.db, "notification.on_department_created", env, "department_id", env.data["name"])

    @reliable_event_handler("schedule", "DoctorRegistered")
    def on_doctor_registered(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        _remember_name(self.db, "notification.on_doctor_registered", env, "doctor_id", env.data["name"])

    @rpc
    @contract()
    def outbox(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT message_id, patient_id, phone_masked, template, text, status, created_at FROM outbox "
                "ORDER BY created_at DESC LIMIT %s",
                (limit,),
            )
            cols = ("message_id", "patient_id", "phone_masked", "template", "text", "status", "created_at")
            return [{k: (str(v) if k in ("message_id", "created_at") else v) for k, v in zip(cols, r, strict=True)}
                    for r in cur.fetchall()]
