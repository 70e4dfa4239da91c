"""Booking's own tables: the sessions it learned from schedule, patients (PII encrypted), and the
appointments projection of its own events."""

from __future__ import annotations

import json
from typing import Any

from contracts import Envelope
from services.booking.domain import SessionInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY,
    data       jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
    patient_id   text PRIMARY KEY,
    id_hash      text NOT NULL UNIQUE,
    phone_hash   text NOT NULL,
    name_enc     text NOT NULL,
    id_enc       text NOT NULL,
    phone_enc    text NOT NULL,
    id_masked    text NOT NULL,
    phone_masked text NOT NULL,
    birth_date   date NOT NULL,
    sex          text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS patients_by_phone ON patients (phone_hash);
CREATE TABLE IF NOT EXISTS appointments (
    appointment_id  text PRIMARY KEY,
    session_id      text NOT NULL,
    patient_id      text NOT NULL,
    code            text NOT NULL UNIQUE,
    sequence_number integer NOT NULL,
    channel         text NOT NULL,
    status          text NOT NULL,
    data            jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS appointments_by_patient ON appointments (patient_id);
CREATE INDEX IF NOT EXISTS appointments_by_session ON appointments (session_id);
"""

PROJECTED_TYPES = {"AppointmentBooked"}


def apply(cur: Any, ev: Envelope) -> None:
    d = ev.data
    if ev.type == "AppointmentBooked":
        cur.execute(
            "INSERT INTO appointments VALUES (%s, %s, %s, %s, %s, %s, 'booked', %s) ON CONFLICT DO NOTHING",
            (d["appointment_id"], d["session_id"], d["patient_id"], d["code"], d["sequence_number"],
             d["channel"], json.dumps(d, ensure_ascii=False)),
        )


def store_session(cur: Any, data: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO sessions VALUES (%s, %s) ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data",
        (data["session_id"], json.dumps(data, ensure_ascii=False)),
    )


def session_info(cur: Any, session_id: str) -> SessionInfo | None:
    cur.execute("SELECT data FROM sessions WHERE session_id = %s", (session_id,))
    row = cur.fetchone()
    if row is None:
        return None
    d = row[0]
    return SessionInfo(
        session_id=d["session_id"], hospital_id=d["hospital_id"], department_id=d["department_id"],
        doctor_id=d["doctor_id"], date=d["date"], period=d["period"], start=d["start"], fee=str(d["fee"]),
        quota={k: int(v) for k, v in d["quota"].items()},
    )


def patient_exists(cur: Any, patient_id: str) -> bool:
    cur.execute("SELECT 1 FROM patients WHERE patient_id = %s", (patient_id,))
    return cur.fetchone() is not None


def appointments_of(cur: Any, patient_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT data, status FROM appointments WHERE patient_id = %s ORDER BY data->>'date', sequence_number",
        (patient_id,),
    )
    return [{**r[0], "status": r[1]} for r in cur.fetchall()]
