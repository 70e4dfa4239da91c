"""The schedule service's own query tables, kept by a projection of its events in the store.

Answers for the gateway come from here: hospitals, departments (as a tree), doctors, and the
schedule table of a department for a date range. The table gives each session's quota per channel
and its state; what is still free per channel is booking's to say (booking.session_availability).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from contracts import (
    DepartmentCreated,
    DepartmentUpdated,
    DoctorRegistered,
    DoctorStopApproved,
    DoctorStopRejected,
    DoctorStopRequested,
    DoctorStopRetracted,
    DoctorUpdated,
    Envelope,
    FeeChanged,
    HolidayCancelled,
    HolidayDeclared,
    HospitalRegistered,
    HospitalRulesChanged,
    HospitalUpdated,
    SessionQuotaChanged,
    SessionScheduled,
    WeeklyPlanChanged,
)
from infra.projections import Projector
from services.schedule.domain import booking_status

SCHEMA = """
CREATE TABLE IF NOT EXISTS hospitals (
    hospital_id text PRIMARY KEY, name text NOT NULL, level text NOT NULL, address text NOT NULL
);
ALTER TABLE hospitals ADD COLUMN IF NOT EXISTS contact text NOT NULL DEFAULT '';
ALTER TABLE hospitals ADD COLUMN IF NOT EXISTS rules jsonb NOT NULL DEFAULT '{}';
CREATE TABLE IF NOT EXISTS fees (
    hospital_id text NOT NULL, fee_class text NOT NULL, fee numeric(10, 2) NOT NULL,
    changed_at timestamptz NOT NULL, PRIMARY KEY (hospital_id, fee_class)
);
CREATE TABLE IF NOT EXISTS holidays (
    hospital_id text NOT NULL, day date NOT NULL, name text NOT NULL, PRIMARY KEY (hospital_id, day)
);
CREATE TABLE IF NOT EXISTS departments (
    department_id text PRIMARY KEY, hospital_id text NOT NULL, name text NOT NULL, parent_id text
);
CREATE TABLE IF NOT EXISTS doctors (
    doctor_id text PRIMARY KEY, hospital_id text NOT NULL, department_id text NOT NULL,
    name text NOT NULL, title text NOT NULL, specialty text NOT NULL
);
ALTER TABLE doctors ADD COLUMN IF NOT EXISTS bio text NOT NULL DEFAULT '';
ALTER TABLE doctors ADD COLUMN IF NOT EXISTS clinic_type text NOT NULL DEFAULT 'general';
ALTER TABLE doctors ADD COLUMN IF NOT EXISTS plan jsonb NOT NULL DEFAULT '[]';
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY, hospital_id text NOT NULL, department_id text NOT NULL,
    doctor_id text NOT NULL, day date NOT NULL, period text NOT NULL, data jsonb NOT NULL
);
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'scheduled';
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS stop_pending boolean NOT NULL DEFAULT false;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS replaced_by text;
CREATE INDEX IF NOT EXISTS sessions_by_department ON sessions (department_id, day);
CREATE INDEX IF NOT EXISTS sessions_by_doctor ON sessions (doctor_id, day);
CREATE TABLE IF NOT EXISTS doctor_stops (
    stop_id text PRIMARY KEY, session_id text NOT NULL, hospital_id text NOT NULL, state text NOT NULL,
    reason text NOT NULL, requested_by text NOT NULL, requested_at timestamptz NOT NULL,
    decided_by text, decided_at timestamptz, decision_reason text, replacement_session_id text
);
CREATE INDEX IF NOT EXISTS doctor_stops_by_hospital ON doctor_stops (hospital_id, state);
"""

PROJECTOR = Projector("schedule-readmodel")
# JSON columns keep an event's payload as stored (env.data); the other columns take its typed fields.


@PROJECTOR.on(HospitalRegistered)
def _hospital_registered(cur: Any, ev: HospitalRegistered, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO hospitals (hospital_id, name, level, address, contact, rules) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (ev.hospital_id, ev.name, ev.level, ev.address, ev.contact,
         json.dumps(env.data.get("rules") or {}, ensure_ascii=False)),
    )


@PROJECTOR.on(HospitalUpdated)
def _hospital_updated(cur: Any, ev: HospitalUpdated, env: Envelope) -> None:
    cur.execute("UPDATE hospitals SET name = %s, level = %s, address = %s, contact = %s WHERE hospital_id = %s",
                (ev.name, ev.level, ev.address, ev.contact, ev.hospital_id))


@PROJECTOR.on(HospitalRulesChanged)
def _rules_changed(cur: Any, ev: HospitalRulesChanged, env: Envelope) -> None:
    cur.execute("UPDATE hospitals SET rules = %s WHERE hospital_id = %s",
                (json.dumps(env.data["rules"], ensure_ascii=False), ev.hospital_id))


@PROJECTOR.on(FeeChanged)
def _fee_changed(cur: Any, ev: FeeChanged, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO fees VALUES (%s, %s, %s, %s) ON CONFLICT (hospital_id, fee_class) DO UPDATE "
        "SET fee = EXCLUDED.fee, changed_at = EXCLUDED.changed_at",
        (ev.hospital_id, ev.fee_class, ev.fee, env.occurred_at),
    )


@PROJECTOR.on(HolidayDeclared)
def _holiday_declared(cur: Any, ev: HolidayDeclared, env: Envelope) -> None:
    cur.execute("INSERT INTO holidays VALUES (%s, %s, %s) ON CONFLICT (hospital_id, day) DO UPDATE "
                "SET name = EXCLUDED.name", (ev.hospital_id, ev.date, ev.name))


@PROJECTOR.on(HolidayCancelled)
def _holiday_cancelled(cur: Any, ev: HolidayCancelled, env: Envelope) -> None:
    cur.execute("DELETE FROM holidays WHERE hospital_id = %s AND day = %s", (ev.hospital_id, ev.date))


@PROJECTOR.on(DepartmentCreated)
def _department_created(cur: Any, ev: DepartmentCreated, env: Envelope) -> None:
    cur.execute("INSERT INTO departments VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (ev.department_id, ev.hospital_id, ev.name, ev.parent_id))


@PROJECTOR.on(DepartmentUpdated)
def _department_updated(cur: Any, ev: DepartmentUpdated, env: Envelope) -> None:
    cur.execute("UPDATE departments SET name = %s, parent_id = %s WHERE department_id = %s",
                (ev.name, ev.parent_id, ev.department_id))


@PROJECTOR.on(DoctorRegistered)
def _doctor_registered(cur: Any, ev: DoctorRegistered, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO doctors (doctor_id, hospital_id, department_id, name, title, specialty, bio, clinic_type) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (ev.doctor_id, ev.hospital_id, ev.department_id, ev.name, ev.title, ev.specialty, ev.bio, ev.clinic_type),
    )


@PROJECTOR.on(DoctorUpdated)
def _doctor_updated(cur: Any, ev: DoctorUpdated, env: Envelope) -> None:
    cur.execute(
        "UPDATE doctors SET department_id = %s, name = %s, title = %s, specialty = %s, bio = %s, clinic_type = %s"
        " WHERE doctor_id = %s",
        (ev.department_id, ev.name, ev.title, ev.specialty, ev.bio, ev.clinic_type, ev.doctor_id),
    )


@PROJECTOR.on(WeeklyPlanChanged)
def _weekly_plan_changed(cur: Any, ev: WeeklyPlanChanged, env: Envelope) -> None:
    cur.execute("UPDATE doctors SET plan = %s WHERE doctor_id = %s",
                (json.dumps(env.data["slots"], ensure_ascii=False), ev.doctor_id))


@PROJECTOR.on(SessionScheduled)
def _session_scheduled(cur: Any, ev: SessionScheduled, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO sessions (session_id, hospital_id, department_id, doctor_id, day, period, data) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (ev.session_id, ev.hospital_id, ev.department_id, ev.doctor_id, ev.date, ev.period,
         json.dumps(env.data, ensure_ascii=False)),
    )


@PROJECTOR.on(SessionQuotaChanged)
def _quota_changed(cur: Any, ev: SessionQuotaChanged, env: Envelope) -> None:
    cur.execute("UPDATE sessions SET data = jsonb_set(data, '{quota}', %s) WHERE session_id = %s",
                (json.dumps(env.data["quota"]), ev.session_id))


@PROJECTOR.on(DoctorStopRequested)
def _stop_requested(cur: Any, ev: DoctorStopRequested, env: Envelope) -> None:
    cur.execute(
        "INSERT INTO doctor_stops (stop_id, session_id, hospital_id, state, reason, requested_by, requested_at) "
        "VALUES (%s, %s, %s, 'requested', %s, %s, %s) ON CONFLICT DO NOTHING",
        (ev.stop_id, ev.session_id, ev.hospital_id, ev.reason, ev.requested_by, env.occurred_at),
    )
    cur.execute("UPDATE sessions SET stop_pending = true WHERE session_id = %s", (ev.session_id,))


@PROJECTOR.on(DoctorStopApproved)
def _stop_approved(cur: Any, ev: DoctorStopApproved, env: Envelope) -> None:
    replacement = ev.replacement_session_id
    _stop_decided(cur, ev.stop_id, "approved", ev.approved_by, env, None, replacement)
    cur.execute("UPDATE sessions SET stop_pending = false, state = %s, replaced_by = %s WHERE session_id = %s",
                ("replaced" if replacement else "stopped", replacement, ev.session_id))


@PROJECTOR.on(DoctorStopRejected)
def _stop_rejected(cur: Any, ev: DoctorStopRejected, env: Envelope) -> None:
    _stop_decided(cur, ev.stop_id, "rejected", ev.rejected_by, env, ev.reason, None)
    cur.execute("UPDATE sessions SET stop_pending = false WHERE session_id = %s", (ev.session_id,))


@PROJECTOR.on(DoctorStopRetracted)
def _stop_withdrawn(cur: Any, ev: DoctorStopRetracted, env: Envelope) -> None:
    _stop_decided(cur, ev.stop_id, "withdrawn", ev.retracted_by, env, ev.reason, None)
    cur.execute("UPDATE sessions SET stop_pending = false WHERE session_id = %s", (ev.session_id,))


def _stop_decided(cur: Any, stop_id: str, state: str, decided_by: str, env: Envelope, reason: str | None,
                  replacement: str | None) -> None:
    cur.execute(
        "UPDATE doctor_stops SET state = %s, decided_by = %s, decided_at = %s, decision_reason = %s, "
        "replacement_session_id = %s WHERE stop_id = %s",
        (state, decided_by, env.occurred_at, reason, replacement, stop_id),
    )


# --- queries --------------------------------------------------------------------------------------

_HOSPITAL_COLUMNS = ("hospital_id", "name", "level", "address", "contact", "rules")


def hospitals(cur: Any, today: date) -> list[dict[str, Any]]:
    """Every hospital with its booking rules and its holidays from today."""
    cur.execute(f"SELECT {', '.join(_HOSPITAL_COLUMNS)} FROM hospitals ORDER BY hospital_id")
    found = [dict(zip(_HOSPITAL_COLUMNS, r, strict=True)) for r in cur.fetchall()]
    cur.execute("SELECT hospital_id, day, name FROM holidays WHERE day >= %s ORDER BY hospital_id, day", (today,))
    holidays: dict[str, list[dict[str, str]]] = {}
    for hospital_id, day, name in cur.fetchall():
        holidays.setdefault(hospital_id, []).append({"date": day.isoformat(), "name": name})
    return [{**h, "holidays": holidays.get(h["hospital_id"], [])} for h in found]


def hospital(cur: Any, hospital_id: str, today: date) -> dict[str, Any] | None:
    """One hospital with its booking rules, fees by title / clinic type, and holidays from today."""
    cur.execute(f"SELECT {', '.join(_HOSPITAL_COLUMNS)} FROM hospitals WHERE hospital_id = %s", (hospital_id,))
    row = cur.fetchone()
    if row is None:
        return None
    found = dict(zip(_HOSPITAL_COLUMNS, row, strict=True))
    cur.execute("SELECT fee_class, fee FROM fees WHERE hospital_id = %s ORDER BY fee DESC, fee_class", (hospital_id,))
    found["fees"] = {fee_class: f"{fee:.2f}" for fee_class, fee in cur.fetchall()}
    cur.execute("SELECT day, name FROM holidays WHERE hospital_id = %s AND day >= %s ORDER BY day",
                (hospital_id, today))
    found["holidays"] = [{"date": day.isoformat(), "name": name} for day, name in cur.fetchall()]
    return found


def departments(cur: Any, hospital_id: str) -> list[dict[str, Any]]:
    """The hospital's departments in tree order (each parent before its children), with their depth
    and path, e.g. 内科 / 心血管内科."""
    cur.execute(
        "SELECT department_id, hospital_id, name, parent_id FROM departments WHERE hospital_id = %s "
        "ORDER BY department_id",
        (hospital_id,),
    )
    rows = [dict(zip(("department_id", "hospital_id", "name", "parent_id"), r, strict=True)) for r in cur.fetchall()]
    known = {r["department_id"] for r in rows}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        children.setdefault(r["parent_id"] if r["parent_id"] in known else None, []).append(r)
    out: list[dict[str, Any]] = []

    def walk(parent: str | None, depth: int, path: list[str]) -> None:
        for r in children.get(parent, []):
            out.append({**r, "depth": depth, "path": " / ".join([*path, r["name"]])})
            walk(r["department_id"], depth + 1, [*path, r["name"]])

    walk(None, 0, [])
    return out


_DOCTOR_COLUMNS = ("doctor_id", "hospital_id", "department_id", "name", "title", "specialty", "bio", "clinic_type")


def doctors(cur: Any, hospital_id: str, department_id: str | None = None) -> list[dict[str, Any]]:
    """The doctors with their published weekly plan (出诊计划), which the admin pages edit."""
    sql = f"SELECT {', '.join(_DOCTOR_COLUMNS)}, plan FROM doctors WHERE hospital_id = %s"
    params: list[Any] = [hospital_id]
    if department_id:
        sql += " AND department_id = %s"
        params.append(department_id)
    titles = "ARRAY['主任医师', '副主任医师', '主治医师', '医师']"
    cur.execute(f"{sql} ORDER BY department_id, array_position({titles}, title), doctor_id", params)
    return [dict(zip((*_DOCTOR_COLUMNS, "plan"), r, strict=True)) for r in cur.fetchall()]


def doctor(cur: Any, doctor_id: str) -> dict[str, Any] | None:
    cur.execute(f"SELECT {', '.join(_DOCTOR_COLUMNS)}, plan FROM doctors WHERE doctor_id = %s", (doctor_id,))
    row = cur.fetchone()
    return dict(zip((*_DOCTOR_COLUMNS, "plan"), row, strict=True)) if row else None


def planned_doctors(cur: Any, hospital_id: str) -> list[str]:
    cur.execute("SELECT doctor_id FROM doctors WHERE hospital_id = %s AND plan <> '[]'::jsonb ORDER BY doctor_id",
                (hospital_id,))
    return [r[0] for r in cur.fetchall()]


def department_chain(cur: Any, department_id: str, limit: int = 20) -> list[str]:
    """department_id and its parents as the read model knows them: a hint of what a department
    move reads (the decision checks the chain on the store's streams)."""
    cur.execute(
        "WITH RECURSIVE chain(department_id, parent_id, depth) AS ("
        "SELECT department_id, parent_id, 1 FROM departments WHERE department_id = %s "
        "UNION ALL SELECT d.department_id, d.parent_id, c.depth + 1 FROM departments d "
        "JOIN chain c ON d.department_id = c.parent_id WHERE c.depth < %s) "
        "SELECT department_id FROM chain ORDER BY depth",
        (department_id, limit),
    )
    return list(dict.fromkeys(r[0] for r in cur.fetchall()))  # a cycle (refused, but possible in a hint) once


_SESSION_SELECT = "SELECT data, state, stop_pending, replaced_by FROM sessions"


def department_schedule(cur: Any, department_id: str, date_from: date, date_to: date, now: datetime,
                        include_subdepartments: bool = False) -> list[dict[str, Any]]:
    """The schedule table (排班表) of a department: its sessions in the range, by day and time."""
    if include_subdepartments:
        cur.execute(
            "WITH RECURSIVE tree AS (SELECT department_id FROM departments WHERE department_id = %s "
            "UNION SELECT d.department_id FROM departments d JOIN tree t ON d.parent_id = t.department_id) "
            f"{_SESSION_SELECT} WHERE department_id IN (SELECT department_id FROM tree) AND day BETWEEN %s AND %s "
            "ORDER BY day, data->>'start', doctor_id",
            (department_id, date_from, date_to),
        )
    else:
        cur.execute(
            f"{_SESSION_SELECT} WHERE department_id = %s AND day BETWEEN %s AND %s "
            "ORDER BY day, data->>'start', doctor_id",
            (department_id, date_from, date_to),
        )
    return [_session_view(r, now) for r in cur.fetchall()]


def session(cur: Any, session_id: str, now: datetime) -> dict[str, Any] | None:
    cur.execute(f"{_SESSION_SELECT} WHERE session_id = %s", (session_id,))
    row = cur.fetchone()
    return _session_view(row, now) if row else None


def sessions_of_day(cur: Any, hospital_id: str, day: date) -> list[dict[str, Any]]:
    """The hospital's sessions of one day, whatever their state: what a holiday on it would touch."""
    cur.execute(
        "SELECT session_id, doctor_id, data->>'doctor_name', department_id, period, data->>'start', data->>'end', "
        "state FROM sessions WHERE hospital_id = %s AND day = %s ORDER BY data->>'start', session_id",
        (hospital_id, day))
    columns = ("session_id", "doctor_id", "doctor_name", "department_id", "period", "start", "end", "state")
    return [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]


def doctor_stops(cur: Any, hospital_id: str, state: str | None = None) -> list[dict[str, Any]]:
    """停诊 requests of a hospital, newest first (state: requested | approved | rejected)."""
    columns = ("stop_id", "session_id", "hospital_id", "state", "reason", "requested_by", "requested_at",
               "decided_by", "decided_at", "decision_reason", "replacement_session_id")
    sql = f"SELECT {', '.join(columns)} FROM doctor_stops WHERE hospital_id = %s"
    params: list[Any] = [hospital_id]
    if state:
        sql += " AND state = %s"
        params.append(state)
    cur.execute(sql + " ORDER BY requested_at DESC, stop_id", params)
    out = []
    for r in cur.fetchall():
        item = dict(zip(columns, r, strict=True))
        for key in ("requested_at", "decided_at"):
            item[key] = item[key].isoformat() if item[key] else None
        out.append(item)
    return out


def _session_view(row: tuple[Any, ...], now: datetime) -> dict[str, Any]:
    data, state, stop_pending, replaced_by = row
    opens_at = datetime.fromisoformat(data["opens_at"])
    closes_at = datetime.fromisoformat(data["closes_at"])
    return {**data, "state": state, "stop_pending": stop_pending, "replaced_by": replaced_by,
            "booking": booking_status(opens_at, closes_at, now, state)}
