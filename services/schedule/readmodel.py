"""The schedule service's own query tables, kept by a projection of its events in the store.

Answers for the gateway come from here: hospitals, departments (as a tree), doctors, and the
schedule table of a department for a date range. The table gives each session's quota per channel
and its state; what is still free per channel is booking's to say (booking.session_availability).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from contracts import Envelope
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

TYPES = {
    "HospitalRegistered", "HospitalUpdated", "HospitalRulesChanged", "FeeChanged", "HolidayDeclared",
    "DepartmentCreated", "DepartmentUpdated", "DoctorRegistered", "DoctorUpdated", "WeeklyPlanChanged",
    "SessionScheduled", "SessionQuotaChanged", "DoctorStopRequested", "DoctorStopApproved", "DoctorStopRejected",
}


def apply(cur: Any, ev: Envelope) -> None:
    d = ev.data
    if ev.type == "HospitalRegistered":
        cur.execute(
            "INSERT INTO hospitals (hospital_id, name, level, address, contact, rules) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (d["hospital_id"], d["name"], d["level"], d["address"], d.get("contact", ""),
             json.dumps(d.get("rules") or {}, ensure_ascii=False)),
        )
    elif ev.type == "HospitalUpdated":
        cur.execute("UPDATE hospitals SET name = %s, level = %s, address = %s, contact = %s WHERE hospital_id = %s",
                    (d["name"], d["level"], d["address"], d["contact"], d["hospital_id"]))
    elif ev.type == "HospitalRulesChanged":
        cur.execute("UPDATE hospitals SET rules = %s WHERE hospital_id = %s",
                    (json.dumps(d["rules"], ensure_ascii=False), d["hospital_id"]))
    elif ev.type == "FeeChanged":
        cur.execute(
            "INSERT INTO fees VALUES (%s, %s, %s, %s) ON CONFLICT (hospital_id, fee_class) DO UPDATE "
            "SET fee = EXCLUDED.fee, changed_at = EXCLUDED.changed_at",
            (d["hospital_id"], d["fee_class"], d["fee"], ev.occurred_at),
        )
    elif ev.type == "HolidayDeclared":
        cur.execute("INSERT INTO holidays VALUES (%s, %s, %s) ON CONFLICT (hospital_id, day) DO UPDATE "
                    "SET name = EXCLUDED.name", (d["hospital_id"], d["date"], d["name"]))
    elif ev.type == "DepartmentCreated":
        cur.execute(
            "INSERT INTO departments VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["department_id"], d["hospital_id"], d["name"], d["parent_id"]),
        )
    elif ev.type == "DepartmentUpdated":
        cur.execute("UPDATE departments SET name = %s, parent_id = %s WHERE department_id = %s",
                    (d["name"], d["parent_id"], d["department_id"]))
    elif ev.type == "DoctorRegistered":
        cur.execute(
            "INSERT INTO doctors (doctor_id, hospital_id, department_id, name, title, specialty, bio, clinic_type) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["doctor_id"], d["hospital_id"], d["department_id"], d["name"], d["title"], d["specialty"],
             d.get("bio", ""), d.get("clinic_type") or "general"),
        )
    elif ev.type == "DoctorUpdated":
        cur.execute(
            "UPDATE doctors SET department_id = %s, name = %s, title = %s, specialty = %s, bio = %s, clinic_type = %s"
            " WHERE doctor_id = %s",
            (d["department_id"], d["name"], d["title"], d["specialty"], d["bio"], d["clinic_type"], d["doctor_id"]),
        )
    elif ev.type == "WeeklyPlanChanged":
        cur.execute("UPDATE doctors SET plan = %s WHERE doctor_id = %s",
                    (json.dumps(d["slots"], ensure_ascii=False), d["doctor_id"]))
    elif ev.type == "SessionScheduled":
        cur.execute(
            "INSERT INTO sessions (session_id, hospital_id, department_id, doctor_id, day, period, data) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["session_id"], d["hospital_id"], d["department_id"], d["doctor_id"], d["date"], d["period"],
             json.dumps(d, ensure_ascii=False)),
        )
    elif ev.type == "SessionQuotaChanged":
        cur.execute("UPDATE sessions SET data = jsonb_set(data, '{quota}', %s) WHERE session_id = %s",
                    (json.dumps(d["quota"]), d["session_id"]))
    elif ev.type == "DoctorStopRequested":
        cur.execute(
            "INSERT INTO doctor_stops (stop_id, session_id, hospital_id, state, reason, requested_by, requested_at) "
            "VALUES (%s, %s, %s, 'requested', %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["stop_id"], d["session_id"], d["hospital_id"], d["reason"], d["requested_by"], ev.occurred_at),
        )
        cur.execute("UPDATE sessions SET stop_pending = true WHERE session_id = %s", (d["session_id"],))
    elif ev.type in ("DoctorStopApproved", "DoctorStopRejected"):
        approved = ev.type == "DoctorStopApproved"
        replacement = d.get("replacement_session_id") if approved else None
        cur.execute(
            "UPDATE doctor_stops SET state = %s, decided_by = %s, decided_at = %s, decision_reason = %s, "
            "replacement_session_id = %s WHERE stop_id = %s",
            ("approved" if approved else "rejected", d["approved_by"] if approved else d["rejected_by"],
             ev.occurred_at, None if approved else d["reason"], replacement, d["stop_id"]),
        )
        if approved:
            cur.execute("UPDATE sessions SET stop_pending = false, state = %s, replaced_by = %s WHERE session_id = %s",
                        ("replaced" if replacement else "stopped", replacement, d["session_id"]))
        else:
            cur.execute("UPDATE sessions SET stop_pending = false WHERE session_id = %s", (d["session_id"],))


# --- queries --------------------------------------------------------------------------------------

_HOSPITAL_COLUMNS = ("hospital_id", "name", "level", "address", "contact", "rules")


def hospitals(cur: Any) -> list[dict[str, Any]]:
    cur.execute(f"SELECT {', '.join(_HOSPITAL_COLUMNS)} FROM hospitals ORDER BY hospital_id")
    return [dict(zip(_HOSPITAL_COLUMNS, r, strict=True)) for r in cur.fetchall()]


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
