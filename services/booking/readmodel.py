"""Booking's own tables: the hospitals and sessions it learned from schedule, patients (PII
encrypted), and the appointments projection of its own events."""

from __future__ import annotations

import json
from typing import Any

from contracts import BookingRules, Envelope
from services.booking.domain import SessionInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS hospitals (
    hospital_id text PRIMARY KEY,
    rules       jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY,
    data       jsonb NOT NULL,
    lapse_at   timestamptz,
    stopped    boolean NOT NULL DEFAULT false
);
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS lapse_at timestamptz;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS stopped boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS patients (
    patient_id    text PRIMARY KEY,
    id_hash       text NOT NULL UNIQUE,
    phone_hash    text NOT NULL,
    name_enc      text NOT NULL,
    id_enc        text NOT NULL,
    phone_enc     text NOT NULL,
    id_masked     text NOT NULL,
    phone_masked  text NOT NULL,
    birth_date    date NOT NULL,
    sex           text NOT NULL,
    password_hash text,
    guardian_id   text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE patients ADD COLUMN IF NOT EXISTS password_hash text;
ALTER TABLE patients ADD COLUMN IF NOT EXISTS guardian_id text;
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
CREATE TABLE IF NOT EXISTS bans (
    patient_id text PRIMARY KEY,
    until      date NOT NULL
);
"""

PROJECTED_TYPES = {
    "AppointmentBooked", "AppointmentMoved", "AppointmentCancelled", "AppointmentCheckedIn", "AppointmentLapsed",
    "SessionStopApplied", "PatientBanned",
}
_STATUS = {"AppointmentCancelled": "cancelled", "AppointmentCheckedIn": "checked_in", "AppointmentLapsed": "no_show"}


def apply(cur: Any, ev: Envelope) -> None:
    d = ev.data
    if ev.type == "AppointmentBooked":
        record_booked(cur, d)
    elif ev.type == "AppointmentMoved":
        cur.execute(
            "UPDATE appointments SET session_id = %s, sequence_number = %s, status = 'moved', data = %s "
            "WHERE appointment_id = %s",
            (d["session_id"], d["sequence_number"], json.dumps(d, ensure_ascii=False), d["appointment_id"]),
        )
    elif ev.type in _STATUS:
        cur.execute(
            "UPDATE appointments SET status = %s, data = data || %s WHERE appointment_id = %s",
            (_STATUS[ev.type], json.dumps(_status_detail(ev.type, d), ensure_ascii=False), d["appointment_id"]),
        )
    elif ev.type == "SessionStopApplied":
        cur.execute("UPDATE sessions SET stopped = true WHERE session_id = %s", (d["session_id"],))
    elif ev.type == "PatientBanned":
        cur.execute(
            "INSERT INTO bans VALUES (%s, %s) ON CONFLICT (patient_id) DO UPDATE "
            "SET until = GREATEST(bans.until, EXCLUDED.until)",
            (d["patient_id"], d["until"]),
        )


def _status_detail(event_type: str, d: dict[str, Any]) -> dict[str, Any]:
    if event_type == "AppointmentCancelled":
        return {"cancel_reason": d["reason"], "refund_due": d.get("refund_due")}
    if event_type == "AppointmentCheckedIn":
        return {"fee_taken": d["fee_taken"], "clerk_id": d["clerk_id"]}
    return {}


def record_booked(cur: Any, d: dict[str, Any]) -> None:
    """Also called right after a booking is appended, so that a cancel that follows at once finds
    it; the projection's later insert of the same row does nothing."""
    cur.execute(
        "INSERT INTO appointments VALUES (%s, %s, %s, %s, %s, %s, 'booked', %s) ON CONFLICT DO NOTHING",
        (d["appointment_id"], d["session_id"], d["patient_id"], d["code"], d["sequence_number"], d["channel"],
         json.dumps(d, ensure_ascii=False)),
    )


def store_session(cur: Any, data: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO sessions (session_id, data, lapse_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data, lapse_at = EXCLUDED.lapse_at",
        (data["session_id"], json.dumps(data, ensure_ascii=False), data.get("lapse_at")),
    )


def change_quota(cur: Any, session_id: str, quota: dict[str, int]) -> bool:
    cur.execute(
        "UPDATE sessions SET data = jsonb_set(data, '{quota}', %s::jsonb) WHERE session_id = %s",
        (json.dumps(quota), session_id),
    )
    return bool(cur.rowcount)


def store_hospital_rules(cur: Any, hospital_id: str, rules: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO hospitals VALUES (%s, %s) ON CONFLICT (hospital_id) DO UPDATE SET rules = EXCLUDED.rules",
        (hospital_id, json.dumps(rules)),
    )


def hospital_rules(cur: Any, hospital_id: str) -> BookingRules:
    cur.execute("SELECT rules FROM hospitals WHERE hospital_id = %s", (hospital_id,))
    row = cur.fetchone()
    return BookingRules.model_validate(row[0]) if row else BookingRules()


def session_info(cur: Any, session_id: str) -> SessionInfo | None:
    cur.execute("SELECT data, stopped FROM sessions WHERE session_id = %s", (session_id,))
    row = cur.fetchone()
    return SessionInfo.from_event(row[0], stopped=row[1]) if row else None


def appointment(cur: Any, appointment_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT session_id, patient_id FROM appointments WHERE appointment_id = %s", (appointment_id,))
    row = cur.fetchone()
    return {"session_id": row[0], "patient_id": row[1]} if row else None


def appointment_by_code(cur: Any, code: str) -> dict[str, Any] | None:
    cur.execute("SELECT appointment_id, session_id, patient_id FROM appointments WHERE code = %s", (code.upper(),))
    row = cur.fetchone()
    return {"appointment_id": row[0], "session_id": row[1], "patient_id": row[2]} if row else None


def appointments_of(cur: Any, patient_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT data, status FROM appointments WHERE patient_id = %s "
        "ORDER BY data->>'date', data->>'start', sequence_number",
        (patient_id,),
    )
    return [{**r[0], "status": r[1]} for r in cur.fetchall()]


def session_list(cur: Any, session_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT a.data, a.status, p.id_masked, p.phone_masked FROM appointments a "
        "JOIN patients p USING (patient_id) WHERE a.session_id = %s ORDER BY a.sequence_number",
        (session_id,),
    )
    return [{**r[0], "status": r[1], "id_masked": r[2], "phone_masked": r[3]} for r in cur.fetchall()]


def due_for_lapse(cur: Any, now: Any, limit: int = 500) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT a.appointment_id, a.session_id FROM appointments a JOIN sessions s USING (session_id) "
        "WHERE a.status IN ('booked', 'moved') AND s.lapse_at <= %s ORDER BY s.lapse_at LIMIT %s",
        (now, limit),
    )
    return [(r[0], r[1]) for r in cur.fetchall()]


def paid_phone_bookings(cur: Any, hospital_id: str, visit_date: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT data FROM appointments WHERE channel = 'phone' AND status IN ('booked', 'moved') "
        "AND data->>'hospital_id' = %s AND data->>'date' = %s AND (data->>'paid')::boolean "
        "ORDER BY data->>'session_id', sequence_number",
        (hospital_id, visit_date),
    )
    return [r[0] for r in cur.fetchall()]


def ban_of(cur: Any, patient_id: str) -> str | None:
    cur.execute("SELECT until FROM bans WHERE patient_id = %s", (patient_id,))
    row = cur.fetchone()
    return row[0].isoformat() if row else None
