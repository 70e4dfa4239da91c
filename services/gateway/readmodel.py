"""The gateway's own tables and their only SQL (database appt_gateway): staff accounts, login sessions
and the audit log of staff reads of patient data. Patients' credentials stay with booking."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken

from contracts import Conflict, InvalidInput, TooManyRequests
from infra.db import Database
from infra.passwords import PASSWORDS, Passwords, check_password, check_staff_username
from infra.pii import PiiVault
from services.gateway.auth import (
    HOSPITAL_SCOPED,
    ROLES,
    Backoff,
    Principal,
    StaffCredentials,
    new_token,
    staff_login,
    token_hash,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS staff (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL,
    hospital_id   text,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE staff ADD COLUMN IF NOT EXISTS doctor_id text;
ALTER TABLE staff ADD COLUMN IF NOT EXISTS disabled_at timestamptz;
CREATE TABLE IF NOT EXISTS login_sessions (
    token_hash  text PRIMARY KEY,
    role        text NOT NULL,
    subject     text NOT NULL,
    hospital_id text,
    name_enc    text NOT NULL,
    csrf        text NOT NULL,
    expires_at  timestamptz NOT NULL
);
-- Names were kept in clear before; those sessions end (their holders log in again).
DELETE FROM login_sessions WHERE EXISTS (SELECT 1 FROM information_schema.columns
    WHERE table_name = 'login_sessions' AND column_name = 'name' AND table_schema = current_schema());
ALTER TABLE login_sessions DROP COLUMN IF EXISTS name;
ALTER TABLE login_sessions ADD COLUMN IF NOT EXISTS name_enc text NOT NULL DEFAULT '';
ALTER TABLE login_sessions ADD COLUMN IF NOT EXISTS doctor_id text;
CREATE INDEX IF NOT EXISTS login_sessions_expiry ON login_sessions (expires_at);
-- Failed-login back-off (auth.Backoff): keys are keyed hashes, never a phone or ID in clear.
CREATE TABLE IF NOT EXISTS login_backoff (
    key_hash text PRIMARY KEY,
    failures integer NOT NULL,
    last_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS login_backoff_age ON login_backoff (last_at);
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
_STAFF_COLUMNS = ("username", "role", "hospital_id", "name", "doctor_id", "disabled")


def create_staff(db: Database, username: str, password: str, role: str, hospital_id: str | None, name: str,
                 exist_ok: bool = False, doctor_id: str | None = None,
                 passwords: Passwords = PASSWORDS) -> dict[str, Any]:
    if role not in ROLES or role == "patient":
        raise InvalidInput(f"未知的工作人员角色 / unknown staff role {role}", field="role")
    if role in HOSPITAL_SCOPED and not hospital_id:
        raise InvalidInput("医院工作人员须指定医院 / hospital staff need a hospital", field="hospital_id")
    if (role == "doctor") != bool(doctor_id):
        raise InvalidInput("医生账号须关联一位医生（且只有医生账号）/ a doctor account (only) names its doctor",
                           field="doctor_id")
    check_staff_username(username)
    check_password(password)
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO staff (username, password_hash, role, hospital_id, name, doctor_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username) DO NOTHING",
            (username, passwords.hash(password), role, hospital_id if role in HOSPITAL_SCOPED else None,
             name, doctor_id),
        )
        created = cur.rowcount == 1
    if not created and not exist_ok:
        raise Conflict("用户名已存在 / username taken", field="username")
    return {"username": username, "role": role, "hospital_id": hospital_id, "doctor_id": doctor_id,
            "created": created}


def staff_credentials(db: Database, username: str) -> StaffCredentials | None:
    """What a login checks of a staff account (auth.staff_login), or None when there is none."""
    with db.transaction() as cur:
        cur.execute("SELECT username, password_hash, role, hospital_id, name, doctor_id, disabled_at IS NOT NULL "
                    "FROM staff WHERE username = %s", (username,))
        row = cur.fetchone()
    return StaffCredentials(*row) if row else None


def staff_accounts(db: Database, hospital_id: str | None) -> list[dict[str, Any]]:
    """Every staff account (of one hospital when given), disabled ones included."""
    with db.transaction() as cur:
        cur.execute("SELECT username, role, hospital_id, name, doctor_id, disabled_at IS NOT NULL FROM staff "
                    "WHERE %s::text IS NULL OR hospital_id = %s ORDER BY hospital_id NULLS FIRST, role, username",
                    (hospital_id, hospital_id))
        return [dict(zip(_STAFF_COLUMNS, r, strict=True)) for r in cur.fetchall()]


def staff_account(db: Database, username: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute("SELECT username, role, hospital_id, name, doctor_id, disabled_at IS NOT NULL FROM staff "
                    "WHERE username = %s", (username,))
        row = cur.fetchone()
    return dict(zip(_STAFF_COLUMNS, row, strict=True)) if row else None


def set_staff_disabled(db: Database, username: str, disabled: bool) -> None:
    """Disable (its sessions end at once) or enable again; an account is never deleted."""
    with db.transaction() as cur:
        cur.execute("UPDATE staff SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END "
                    "WHERE username = %s", (disabled, username))
        if disabled:
            cur.execute("DELETE FROM login_sessions WHERE subject = %s AND role <> 'patient'", (username,))


def change_staff_password(db: Database, username: str, old: str, new: str,
                          passwords: Passwords = PASSWORDS) -> bool:
    """False when `old` is not the account's password; the policy refuses a weak `new`."""
    if staff_login(staff_credentials(db, username), old, passwords) is None:
        return False
    check_password(new)
    with db.transaction() as cur:
        cur.execute("UPDATE staff SET password_hash = %s WHERE username = %s", (passwords.hash(new), username))
    return True


def open_session(db: Database, vault: PiiVault, role: str, subject: str, hospital_id: str | None,
                 name: str, doctor_id: str | None = None) -> tuple[str, str]:
    """A new login session: (token, csrf token). Only the token's hash is stored, and the name
    (a patient's real name) encrypted."""
    token, csrf = new_token(), new_token()
    with db.transaction() as cur:
        cur.execute("DELETE FROM login_sessions WHERE expires_at < now()")
        cur.execute(
            "INSERT INTO login_sessions (token_hash, role, subject, hospital_id, name_enc, csrf, expires_at, "
            "doctor_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (token_hash(token), role, subject, hospital_id, vault.encrypt(name), csrf,
             datetime.now(UTC) + timedelta(hours=SESSION_HOURS), doctor_id),
        )
    return token, csrf


def session_principal(db: Database, vault: PiiVault, token: str, via_cookie: bool) -> Principal | None:
    row = db.fetchone("SELECT role, subject, hospital_id, name_enc, csrf, doctor_id FROM login_sessions "
                      "WHERE token_hash = %s AND expires_at > now()", (token_hash(token),))
    if row is None:
        return None
    return Principal(role=row[0], subject=row[1], hospital_id=row[2], name=_decrypted(vault, row[3]),
                     csrf=row[4], via_cookie=via_cookie, doctor_id=row[5])


def _decrypted(vault: PiiVault, value: str) -> str:
    try:
        return vault.decrypt(value) if value else ""
    except InvalidToken:  # written under a key since retired: the name is only for display
        return ""


def reserve_login(db: Database, vault: PiiVault, keys: list[tuple[str, Backoff]]) -> list[str]:
    """Count a login attempt as failed for each key before the password is checked, or refuse it
    (TooManyRequests, nothing counted) when a key must still wait. The keys are locked in one order,
    so concurrent attempts at one account are counted one after another, on every gateway replica.
    Answers the key hashes in the order given, for `login_succeeded`."""
    given = [vault.lookup_hash(key) for key, _ in keys]
    hashes = sorted(zip(given, (backoff for _, backoff in keys), strict=True), key=lambda kb: kb[0])
    with db.transaction() as cur:
        if secrets.randbelow(100) == 0:  # now and then, forget the quiet keys
            cur.execute("DELETE FROM login_backoff WHERE last_at < now() - %s * interval '1 second'",
                        (max(b.cap for _, b in hashes),))
        planned: list[tuple[str, int]] = []
        waits: list[float] = []
        for key_hash, backoff in hashes:
            # The row must exist to be locked: a SELECT … FOR UPDATE of no row locks nothing, and
            # concurrent first attempts would all count from zero.
            cur.execute("INSERT INTO login_backoff VALUES (%s, 0, now()) ON CONFLICT (key_hash) DO NOTHING",
                        (key_hash,))
            cur.execute("SELECT failures, extract(epoch FROM now() - last_at) FROM login_backoff "
                        "WHERE key_hash = %s FOR UPDATE", (key_hash,))
            failures, since_last = cur.fetchone()
            failures, wait = backoff.reserve(failures, float(since_last))
            planned.append((key_hash, failures))
            waits.append(wait)
        if max(waits) > 0:
            raise TooManyRequests("登录失败次数过多，请稍后再试 / too many failed logins, try again later", max(waits))
        for key_hash, failures in planned:
            cur.execute("UPDATE login_backoff SET failures = %s, last_at = now() WHERE key_hash = %s",
                        (failures, key_hash))
    return given


def login_succeeded(db: Database, attempt: list[str]) -> None:
    """A right password gives its reserved attempt back: the first key (the account on this client)
    starts afresh, the others lose this attempt only (succeeding at one's own account does not
    wipe what an address did to other accounts)."""
    first, *rest = attempt
    with db.transaction() as cur:
        cur.execute("DELETE FROM login_backoff WHERE key_hash = %s", (first,))
        cur.execute("UPDATE login_backoff SET failures = greatest(failures - 1, 0) WHERE key_hash = ANY(%s)",
                    (rest,))


def close_sessions_of(db: Database, role: str, subject: str) -> int:
    """End every login session of one account (after its password was reset)."""
    with db.transaction() as cur:
        cur.execute("DELETE FROM login_sessions WHERE role = %s AND subject = %s", (role, subject))
        return int(cur.rowcount)


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
