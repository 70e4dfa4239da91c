"""Booking's own tables and the only SQL of the service.

- `PROJECTOR`: the read model, projected from the event store's global order (infra.projections):
  the hospitals' rules and the sessions booking learned from schedule's events, and the
  appointments and bans of its own events. Rows are written only here.
- `patients`: the patients' PII (encrypted, with lookup hashes), written when a patient
  registers; it is the vault behind the PatientRegistered event, which carries masked values only.
- `BookingReadModel`: the queries the handlers and the service use, and `caught_up(position)`,
  the read-your-writes wait. Unit tests replace it with an in-memory fake (tests/unit/booking).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg2.errors

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    BookingRules,
    Conflict,
    Envelope,
    HospitalRegistered,
    HospitalRulesChanged,
    NotFound,
    PatientBanned,
    SessionQuotaChanged,
    SessionScheduled,
    SessionStopApplied,
)
from contracts.envelope import is_backfill
from infra.db import Database
from infra.projections import Projection, Projector
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
ALTER TABLE patients ADD COLUMN IF NOT EXISTS locale text NOT NULL DEFAULT 'zh';
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
-- Booked by a back-fill of past activity (scripts/demo_history.py), which lapses them itself.
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS backfill boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS appointments_by_patient ON appointments (patient_id);
CREATE INDEX IF NOT EXISTS appointments_by_session ON appointments (session_id);
CREATE INDEX IF NOT EXISTS sessions_by_hospital_day ON sessions ((data->>'hospital_id'), (data->>'date'));
CREATE TABLE IF NOT EXISTS bans (
    patient_id text PRIMARY KEY,
    until      date NOT NULL
);
"""

PROJECTOR = Projector("booking-readmodel")
_STATUS = {"AppointmentCancelled": "cancelled", "AppointmentCheckedIn": "checked_in", "AppointmentLapsed": "no_show",
           "AppointmentRefunded": "refunded"}


# --- the projection ---------------------------------------------------------------------------

@PROJECTOR.on(HospitalRegistered, HospitalRulesChanged)
def _hospital_rules(cur: Any, event: HospitalRegistered | HospitalRulesChanged, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO hospitals VALUES (%s, %s) ON CONFLICT (hospital_id) DO UPDATE SET rules = EXCLUDED.rules",
        (event.hospital_id, json.dumps(env.data.get("rules") or {})),
    )


@PROJECTOR.on(SessionScheduled)
def _session_scheduled(cur: Any, event: SessionScheduled, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO sessions (session_id, data, lapse_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data, lapse_at = EXCLUDED.lapse_at",
        (event.session_id, json.dumps(env.data, ensure_ascii=False), env.data.get("lapse_at")),
    )


@PROJECTOR.on(SessionQuotaChanged)
def _quota_changed(cur: Any, event: SessionQuotaChanged, env: Envelope) -> None:
    # The store's order puts a session's SessionScheduled before any change of it.
    cur.execute(
        "UPDATE sessions SET data = jsonb_set(data, '{quota}', %s::jsonb) WHERE session_id = %s",
        (json.dumps(env.data["quota"]), event.session_id),
    )


@PROJECTOR.on(SessionStopApplied)
def _stop_applied(cur: Any, event: SessionStopApplied, env: Envelope) -> None:
    cur.execute("UPDATE sessions SET stopped = true WHERE session_id = %s", (event.session_id,))


@PROJECTOR.on(AppointmentBooked)
def _booked(cur: Any, event: AppointmentBooked, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO appointments (appointment_id, session_id, patient_id, code, sequence_number, channel, status,"
        " data, backfill) VALUES (%s, %s, %s, %s, %s, %s, 'booked', %s, %s) ON CONFLICT DO NOTHING",
        (event.appointment_id, event.session_id, event.patient_id, event.code, event.sequence_number,
         event.channel, json.dumps(env.data, ensure_ascii=False), is_backfill(env)),
    )


@PROJECTOR.on(AppointmentMoved)
def _moved(cur: Any, event: AppointmentMoved, env: Envelope) -> None:
    cur.execute(
        "UPDATE appointments SET session_id = %s, sequence_number = %s, status = 'moved', data = %s "
        "WHERE appointment_id = %s",
        (event.session_id, event.sequence_number, json.dumps(env.data, ensure_ascii=False), event.appointment_id),
    )


@PROJECTOR.on(AppointmentCancelled, AppointmentCheckedIn, AppointmentLapsed, AppointmentRefunded)
def _closed(cur: Any, event: AppointmentCancelled | AppointmentCheckedIn | AppointmentLapsed | AppointmentRefunded,
            env: Envelope) -> None:
    detail: dict[str, Any] = {}
    if isinstance(event, AppointmentCancelled):
        detail = {"cancel_reason": event.reason, "refund_due": event.refund_due}
    elif isinstance(event, AppointmentCheckedIn):
        detail = {"fee_taken": event.fee_taken, "clerk_id": event.clerk_id}
    elif isinstance(event, AppointmentRefunded):
        detail = {"refund_due": event.refund_due, "refund_reason": event.reason, "refunded_by": event.clerk_id,
                  "place_released": event.place_released}
    cur.execute(
        "UPDATE appointments SET status = %s, data = data || %s WHERE appointment_id = %s",
        (_STATUS[env.type], json.dumps(detail, ensure_ascii=False), event.appointment_id),
    )


@PROJECTOR.on(PatientBanned)
def _banned(cur: Any, event: PatientBanned, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO bans VALUES (%s, %s) ON CONFLICT (patient_id) DO UPDATE "
        "SET until = GREATEST(bans.until, EXCLUDED.until)",
        (event.patient_id, event.until),
    )


# --- queries ----------------------------------------------------------------------------------

class BookingReadModel:
    """What booking's handlers and entrypoints read, and the patients vault they write."""

    def __init__(self, db: Database, projection: Projection | None = None) -> None:
        self.db = db
        self.projection = projection
        # One instance per worker (ProjectionRunner.get_dependency), so this memo lasts one
        # request: a batch of bookings (book_appointments) reads each of its sessions once, not
        # once to sort out the sold-out ones and again in every booking.
        self._sessions: dict[str, tuple[SessionInfo | None, BookingRules]] = {}

    def caught_up(self, position: int, timeout: float = 10.0) -> bool:
        """Read-your-writes: wait until the projection has applied `position`."""
        return self.projection is None or position <= 0 or self.projection.wait_for(position, timeout)

    # sessions and hospitals

    def session_and_rules(self, session_id: str) -> tuple[SessionInfo | None, BookingRules]:
        known = self._sessions.get(session_id)
        if known is not None:
            return known
        rows = self.db.fetchall(
            "SELECT s.data, s.stopped, h.rules FROM sessions s LEFT JOIN hospitals h "
            "ON h.hospital_id = s.data->>'hospital_id' WHERE s.session_id = %s", (session_id,))
        if not rows:
            return None, BookingRules()  # not remembered: it may be projected in a moment
        data, stopped, rules = rows[0]
        found = SessionInfo.from_event(data, stopped=stopped), BookingRules.model_validate(rules or {})
        self._sessions[session_id] = found
        return found

    def session_info(self, session_id: str) -> SessionInfo | None:
        return self.session_and_rules(session_id)[0]

    def sessions_info(self, session_ids: list[str]) -> dict[str, SessionInfo]:
        rows = self.db.fetchall("SELECT data, stopped FROM sessions WHERE session_id = ANY (%s)", (session_ids,))
        return {r[0]["session_id"]: SessionInfo.from_event(r[0], stopped=r[1]) for r in rows}

    def hospital_rules(self, hospital_id: str) -> BookingRules:
        row = self.db.fetchone("SELECT rules FROM hospitals WHERE hospital_id = %s", (hospital_id,))
        return BookingRules.model_validate(row[0]) if row else BookingRules()

    def hospitals(self) -> list[str]:
        return [r[0] for r in self.db.fetchall("SELECT hospital_id FROM hospitals ORDER BY 1")]

    # appointments

    def appointment(self, appointment_id: str) -> dict[str, Any] | None:
        row = self.db.fetchone("SELECT session_id, patient_id FROM appointments WHERE appointment_id = %s",
                               (appointment_id,))
        return {"session_id": row[0], "patient_id": row[1]} if row else None

    def appointment_by_code(self, code: str) -> dict[str, Any] | None:
        row = self.db.fetchone(
            "SELECT a.appointment_id, a.session_id, a.patient_id, p.id_hash FROM appointments a "
            "LEFT JOIN patients p USING (patient_id) WHERE a.code = %s", (code.upper(),))
        return {"appointment_id": row[0], "session_id": row[1], "patient_id": row[2], "id_hash": row[3]} \
            if row else None

    def appointments_of(self, patient_id: str) -> list[dict[str, Any]]:
        rows = self.db.fetchall(
            "SELECT data, status FROM appointments WHERE patient_id = %s "
            "ORDER BY data->>'date', data->>'start', sequence_number",
            (patient_id,),
        )
        return [{**r[0], "status": r[1]} for r in rows]

    def session_list(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.db.fetchall(
            "SELECT a.data, a.status, p.id_masked, p.phone_masked FROM appointments a "
            "JOIN patients p USING (patient_id) WHERE a.session_id = %s ORDER BY a.sequence_number",
            (session_id,),
        )
        return [{**r[0], "status": r[1], "id_masked": r[2], "phone_masked": r[3]} for r in rows]

    # what the window sees (handlers mask the name; PII never leaves here in clear)

    _WINDOW = ("SELECT a.data, a.status, s.data->>'doctor_name', p.id_masked, p.phone_masked, p.name_enc "
               "FROM appointments a JOIN sessions s USING (session_id) LEFT JOIN patients p USING (patient_id) ")

    def window_row_by_code(self, code: str) -> dict[str, Any] | None:
        rows = self.db.fetchall(self._WINDOW + "WHERE a.code = %s", (code.upper(),))
        return _window(rows[0]) if rows else None

    def window_rows_of_patient(self, patient_id: str, hospital_id: str) -> list[dict[str, Any]]:
        """Newest first: the latest visit day and time, then the latest number."""
        rows = self.db.fetchall(
            self._WINDOW + "WHERE a.patient_id = %s AND a.data->>'hospital_id' = %s "
            "ORDER BY a.data->>'date' DESC, a.data->>'start' DESC, a.sequence_number DESC",
            (patient_id, hospital_id))
        return [_window(r) for r in rows]

    def hospital_day_rows(self, hospital_id: str, day: str, department_id: str | None = None,
                          doctor_id: str | None = None) -> list[dict[str, Any]]:
        rows = self.db.fetchall(
            self._WINDOW + "WHERE s.data->>'hospital_id' = %s AND s.data->>'date' = %s "
            "AND (%s::text IS NULL OR s.data->>'department_id' = %s) "
            "AND (%s::text IS NULL OR s.data->>'doctor_id' = %s) "
            "ORDER BY s.data->>'department_id', s.data->>'doctor_id', "
            "CASE s.data->>'period' WHEN 'morning' THEN 1 WHEN 'afternoon' THEN 2 ELSE 3 END, "
            "s.data->>'start', a.sequence_number",
            (hospital_id, day, department_id, department_id, doctor_id, doctor_id))
        return [_window(r) for r in rows]

    def due_for_lapse(self, now: datetime, limit: int = 500, backfill: bool = False) -> list[tuple[str, str]]:
        """Bookings still to come whose session's lapse time has passed. A back-fill's own bookings
        (`backfill`) are lapsed by the back-fill at its simulated time, never by the live timer:
        while it runs, its bookings of past sessions wait for their check-ins, not for a lapse."""
        rows = self.db.fetchall(
            "SELECT a.appointment_id, a.session_id FROM appointments a JOIN sessions s USING (session_id) "
            "WHERE a.status IN ('booked', 'moved') AND s.lapse_at <= %s AND a.backfill = %s "
            "ORDER BY s.lapse_at LIMIT %s",
            (now, backfill, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def paid_phone_bookings(self, hospital_id: str, visit_date: str) -> list[dict[str, Any]]:
        rows = self.db.fetchall(
            "SELECT data FROM appointments WHERE channel = 'phone' AND status IN ('booked', 'moved') "
            "AND data->>'hospital_id' = %s AND data->>'date' = %s AND (data->>'paid')::boolean "
            "ORDER BY data->>'session_id', sequence_number",
            (hospital_id, visit_date),
        )
        return [r[0] for r in rows]

    def ban_of(self, patient_id: str) -> str | None:
        row = self.db.fetchone("SELECT until FROM bans WHERE patient_id = %s", (patient_id,))
        return row[0].isoformat() if row else None

    # patients (the PII vault)

    def add_patient(self, row: dict[str, Any], phone_max_patients: int) -> bool:
        """Store a new patient's row; False when the resident ID is registered already. At most
        `phone_max_patients` patients per phone: registrations of one phone are serialised."""
        try:
            with self.db.transaction() as cur:
                if row["guardian_id"] is not None:
                    cur.execute("SELECT 1 FROM patients WHERE patient_id = %s", (row["guardian_id"],))
                    if cur.fetchone() is None:
                        raise NotFound("监护人不存在 / unknown guardian", field="guardian_patient_id")
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (row["phone_hash"],))
                cur.execute("SELECT count(*) FROM patients WHERE phone_hash = %s AND id_hash <> %s",
                            (row["phone_hash"], row["id_hash"]))
                if cur.fetchone()[0] >= phone_max_patients:
                    raise Conflict(f"该手机号已绑定 {phone_max_patients} 位就诊人 / this mobile number already serves "
                                   f"{phone_max_patients} patients", field="phone", code="phone_limit")
                cur.execute(
                    "INSERT INTO patients (patient_id, id_hash, phone_hash, name_enc, id_enc, phone_enc, id_masked,"
                    " phone_masked, birth_date, sex, password_hash, guardian_id, locale)"
                    " VALUES (%(patient_id)s, %(id_hash)s, %(phone_hash)s, %(name_enc)s, %(id_enc)s, %(phone_enc)s,"
                    " %(id_masked)s, %(phone_masked)s, %(birth_date)s, %(sex)s, %(password_hash)s, %(guardian_id)s,"
                    " %(locale)s)",
                    row,
                )
        except psycopg2.errors.UniqueViolation:
            return False
        return True

    def login_candidates(self, lookup_hash: str) -> list[tuple[str, str | None, str, str]]:
        """(patient_id, password_hash, id_masked, name_enc) of a resident ID or a login phone."""
        rows = self.db.fetchall(
            "SELECT patient_id, password_hash, id_masked, name_enc FROM patients WHERE id_hash = %s "
            "UNION ALL SELECT patient_id, password_hash, id_masked, name_enc FROM patients "
            "WHERE phone_hash = %s AND guardian_id IS NULL AND password_hash IS NOT NULL",
            (lookup_hash, lookup_hash),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def patient_by_id_hash(self, id_hash: str) -> dict[str, Any] | None:
        row = self.db.fetchone(
            "SELECT patient_id, id_masked, phone_masked, name_enc, phone_hash FROM patients WHERE id_hash = %s",
            (id_hash,))
        return {"patient_id": row[0], "id_masked": row[1], "phone_masked": row[2], "name_enc": row[3],
                "phone_hash": row[4]} if row else None

    def has_booking_at(self, patient_id: str, hospital_id: str) -> bool:
        """Whether the patient has (or had) any booking at this hospital: what a clerk may look up."""
        return self.db.fetchone(
            "SELECT 1 FROM appointments WHERE patient_id = %s AND data->>'hospital_id' = %s LIMIT 1",
            (patient_id, hospital_id)) is not None

    def password_hash(self, patient_id: str) -> str | None:
        row = self.db.fetchone("SELECT password_hash FROM patients WHERE patient_id = %s", (patient_id,))
        return row[0] if row else None

    def set_password(self, patient_id: str, password_hash: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE patients SET password_hash = %s WHERE patient_id = %s", (password_hash, patient_id))

    # the key rotation (services/booking/rekey.py)

    def patients_after(self, after: str, limit: int) -> list[dict[str, Any]]:
        """The next `limit` patients' ciphertexts in patient_id order, for a rekey in batches."""
        rows = self.db.fetchall(
            "SELECT patient_id, name_enc, id_enc, phone_enc FROM patients WHERE patient_id > %s "
            "ORDER BY patient_id LIMIT %s", (after, limit))
        return [{"patient_id": r[0], "name_enc": r[1], "id_enc": r[2], "phone_enc": r[3]} for r in rows]

    def other_sessions(self) -> int:
        """Other sessions connected to this database (a running booking holds some)."""
        row = self.db.fetchone("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()")
        return int(row[0]) if row else 0

    def count_patients(self) -> int:
        row = self.db.fetchone("SELECT count(*) FROM patients")
        return int(row[0]) if row else 0

    def rekey_patients(self, rows: list[dict[str, Any]]) -> int:
        """Write re-encrypted rows in one transaction (a batch is all or nothing). A row changed
        since it was read (its old id_enc no longer there) is left alone; the count says how many
        were written."""
        written = 0
        with self.db.transaction() as cur:
            for row in rows:
                cur.execute(
                    "UPDATE patients SET name_enc = %(name_enc)s, id_enc = %(id_enc)s, phone_enc = %(phone_enc)s, "
                    "id_hash = %(id_hash)s, phone_hash = %(phone_hash)s "
                    "WHERE patient_id = %(patient_id)s AND id_enc = %(old_id_enc)s", row)
                written += cur.rowcount
        return written

    def patient_identity(self, patient_id: str) -> dict[str, Any] | None:
        """The sealed real-name fields of a patient, for the hospital's own HIS."""
        row = self.db.fetchone("SELECT name_enc, id_enc, phone_enc, sex, birth_date FROM patients"
                               " WHERE patient_id = %s", (patient_id,))
        if row is None:
            return None
        return {"name_enc": row[0], "id_enc": row[1], "phone_enc": row[2], "sex": row[3],
                "birth_date": row[4].isoformat()}

    def patient_phone(self, patient_id: str) -> tuple[str, str, str] | None:
        """(phone_enc, phone_masked, locale)."""
        row = self.db.fetchone("SELECT phone_enc, phone_masked, locale FROM patients WHERE patient_id = %s",
                               (patient_id,))
        return (row[0], row[1], row[2]) if row else None


def _window(row: Any) -> dict[str, Any]:
    data, status, doctor_name, id_masked, phone_masked, name_enc = row
    return {**data, "status": status, "doctor_name": doctor_name, "id_masked": id_masked,
            "phone_masked": phone_masked, "name_enc": name_enc}
