"""notification: turns events into SMS in the outbox (the default provider port)."""

from __future__ import annotations

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
        appt = env.data
        contact = self.booking.patient_contact(appt["patient_id"])
        if (err := from_wire(contact)) is not None:
            raise err
        with self.db.transaction() as cur:
            if not claim(cur, "notification.on_appointment_booked", env.event_id):
                return
            cur.execute(
                "SELECT id, name FROM names WHERE id IN (%s, %s, %s)",
                (appt["hospital_id"], appt["department_id"], appt["doctor_id"]),
            )
            names = dict(cur.fetchall())
            text = domain.booking_confirmation(appt, names)
            cur.execute(
                "INSERT INTO outbox (message_id, event_id, patient_id, phone_enc, phone_masked, template, text)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (uuid.uuid4(), env.event_id, appt["patient_id"], self.vault.encrypt(contact["phone"]),
                 contact["phone_masked"], "booking_confirmation", text),
            )
        self.log.info("sms_queued", template="booking_confirmation", appointment_id=appt["appointment_id"])

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
