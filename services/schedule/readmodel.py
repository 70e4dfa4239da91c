"""The schedule service's own query tables, kept by a projection of its events in the store."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from contracts import Envelope

SCHEMA = """
CREATE TABLE IF NOT EXISTS hospitals (
    hospital_id text PRIMARY KEY, name text NOT NULL, level text NOT NULL, address text NOT NULL
);
CREATE TABLE IF NOT EXISTS departments (
    department_id text PRIMARY KEY, hospital_id text NOT NULL, name text NOT NULL, parent_id text
);
CREATE TABLE IF NOT EXISTS doctors (
    doctor_id text PRIMARY KEY, hospital_id text NOT NULL, department_id text NOT NULL,
    name text NOT NULL, title text NOT NULL, specialty text NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY, hospital_id text NOT NULL, department_id text NOT NULL,
    doctor_id text NOT NULL, day date NOT NULL, period text NOT NULL, data jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_department ON sessions (department_id, day);
"""

TYPES = {"HospitalRegistered", "DepartmentCreated", "DoctorRegistered", "SessionScheduled"}


def apply(cur: Any, ev: Envelope) -> None:
    d = ev.data
    if ev.type == "HospitalRegistered":
        cur.execute(
            "INSERT INTO hospitals VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["hospital_id"], d["name"], d["level"], d["address"]),
        )
    elif ev.type == "DepartmentCreated":
        cur.execute(
            "INSERT INTO departments VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["department_id"], d["hospital_id"], d["name"], d["parent_id"]),
        )
    elif ev.type == "DoctorRegistered":
        cur.execute(
            "INSERT INTO doctors VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["doctor_id"], d["hospital_id"], d["department_id"], d["name"], d["title"], d["specialty"]),
        )
    elif ev.type == "SessionScheduled":
        cur.execute(
            "INSERT INTO sessions VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (d["session_id"], d["hospital_id"], d["department_id"], d["doctor_id"], d["date"], d["period"],
             json.dumps(d, ensure_ascii=False)),
        )


def hospitals(cur: Any) -> list[dict[str, Any]]:
    cur.execute("SELECT hospital_id, name, level, address FROM hospitals ORDER BY hospital_id")
    return [dict(zip(("hospital_id", "name", "level", "address"), r, strict=True)) for r in cur.fetchall()]


def departments(cur: Any, hospital_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT department_id, hospital_id, name, parent_id FROM departments WHERE hospital_id = %s "
        "ORDER BY department_id",
        (hospital_id,),
    )
    return [dict(zip(("department_id", "hospital_id", "name", "parent_id"), r, strict=True))
            for r in cur.fetchall()]


def department_schedule(cur: Any, department_id: str, date_from: date, date_to: date) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT data FROM sessions WHERE department_id = %s AND day BETWEEN %s AND %s "
        "ORDER BY day, data->>'start', doctor_id",
        (department_id, date_from, date_to),
    )
    return [r[0] for r in cur.fetchall()]


def session(cur: Any, session_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT data FROM sessions WHERE session_id = %s", (session_id,))
    row = cur.fetchone()
    return row[0] if row else None
