"""The gateway's own tables and their only SQL (database appt_gateway): staff accounts, login sessions
and the audit log of staff reads of patient data. Patients' credentials stay with booking."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from contracts import Conflict, InvalidInput
from infra.blocking import off_hub
from infra.db import Database
from services.gateway.auth import ROLES, Principal, new_token, token_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS staff (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL,
    hospital_id   text,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS login_sessions (
    token_hash  text PRIMARY KEY,
    role        text NOT NULL,
    subject     text NOT NULL,
    hospital_id text,
    name        text NOT NULL,
    csrf        text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS login_sessions_expiry ON login_sessions (expires_at);
CREATE TABLE IF NOT EXISTS audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    role        text NOT NULL,
    actor       text NOT NULL,
    hospital_id text,
    action      text NOT NULL,
    subject     text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
"""

SESSION_HOURS = 12
# OWASP's argon2id minimum (19 MiB, t=2, p=1): ~15 ms a hash, run off the eventlet hub.
_passwords = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def create_staff(db: Database, username: str, password: str, role: str, hospital_id: str | None, name: str,
                 exist_ok: bool = False) -> dict[str, Any]:
    if role not in ROLES or role == "patient":
        raise InvalidInput(f"未知的工作人员角色 / unknown staff role {role}", field="role")
    if role in ("clerk", "hospital_admin") and not hospital_id:
        raise InvalidInput("医院工作人员须指定医院 / hospital staff need a hospital", field="hospital_id")
    if len(password) < 8:
        raise InvalidInput("密码至少8位 / password needs at least 8 characters", field="password")
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO staff (username, password_hash, role, hospital_id, name) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (username) DO NOTHING",
            (username, off_hub(_passwords.hash, password), role, hospital_id, name),
        )
        created = cur.rowcount == 1
    if not created and not exist_ok:
        raise Conflict("用户名已存在 / username taken", field="username")
    return {"username": username, "role": role, "hospital_id": hospital_id, "created": created}


def verify_staff(db: Database, username: str, password: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute("SELECT password_hash, role, hospital_id, name FROM staff WHERE username = %s", (username,))
        row = cur.fetchone()
    if row is None:
        off_hub(_passwords.hash, password)  # the same work for an unknown user: no timing oracle
        return None
    try:
        off_hub(_passwords.verify, row[0], password)
    except (VerifyMismatchError, InvalidHashError):
        return None
    return {"role": row[1], "hospital_id": row[2], "name": row[3]}


def open_session(db: Database, role: str, subject: str, hospital_id: str | None, name: str) -> tuple[str, str]:
    """A new login session: (token, csrf token). Only the token's hash is stored."""
    token, csrf = new_token(), new_token()
    with db.transaction() as cur:
        cur.execute("DELETE FROM login_sessions WHERE expires_at < now()")
        cur.execute(
            "INSERT INTO login_sessions VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (token_hash(token), role, subject, hospital_id, name, csrf,
             datetime.now(UTC) + timedelta(hours=SESSION_HOURS)),
        )
    return token, csrf


def session_principal(db: Database, token: str, via_cookie: bool) -> Principal | None:
    with db.transaction() as cur:
        cur.execute(
            "SELECT role, subject, hospital_id, name, csrf FROM login_sessions "
            "WHERE token_hash = %s AND expires_at > now()",
            (token_hash(token),),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return Principal(role=row[0], subject=row[1], hospital_id=row[2], name=row[3], csrf=row[4],
                     via_cookie=via_cookie)


def close_session(db: Database, token: str) -> None:
    with db.transaction() as cur:
        cur.execute("DELETE FROM login_sessions WHERE token_hash = %s", (token_hash(token),))


def audit(db: Database, principal: Principal, action: str, subject: str, **detail: Any) -> None:
    """Every read of patient data by staff is written down: who, when, what, whose."""
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO audit_log (role, actor, hospital_id, action, subject, detail) VALUES (%s, %s, %s, %s, %s, %s)",
            (principal.role, principal.subject, principal.hospital_id, action, subject,
             json.dumps(detail, ensure_ascii=False, default=str)),
        )


def audit_entries(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT at, role, actor, hospital_id, action, subject, detail FROM audit_log "
                    "ORDER BY id DESC LIMIT %s", (limit,))
        cols = ("at", "role", "actor", "hospital_id", "action", "subject", "detail")
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
