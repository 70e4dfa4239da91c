"""notification's own tables and every query on them: the only SQL of the service.

- `names`: what hospitals, departments and doctors are called, for the texts.
- `appointments`: each appointment as last booked or moved (infra.memory), to word a cancellation.
- `outbox`: the SMS queued for sending (the default provider port): the text, the phone masked
  for display, encrypted for the sender and as a keyed hash to find one number's messages.
- `verification_sends` and `verification_codes`: each number's verification SMS of the last day
  (its limits) and the live code of each (number, purpose), as a keyed hash. They are rows of
  this database, locked while decided on, so the limits hold across several replicas.

Each surface is an object whose methods take the caller's cursor, so a reaction's writes share
the transaction of its inbox claim; handlers get them injected by name (unit tests pass fakes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from infra.memory import JsonMemory
from services.notification.domain import StoredCode

__all__ = ["APPOINTMENTS", "NAMES", "SCHEMA", "SMS_OUTBOX", "VERIFICATION_CODES", "Names", "SmsOutbox",
           "VerificationCodes"]

_OUTBOX_COLUMNS = ("message_id", "patient_id", "phone_masked", "template", "text", "status", "created_at")


class Names:
    schema = """
CREATE TABLE IF NOT EXISTS names (
    id   text PRIMARY KEY,
    name text NOT NULL
);
"""

    def remember(self, cur: Any, id_: str, name: str) -> None:
        cur.execute(
            "INSERT INTO names VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name", (id_, name)
        )

    def of(self, cur: Any, ids: Iterable[str]) -> dict[str, str]:
        """The known names among `ids`; an id not known yet is simply absent."""
        cur.execute("SELECT id, name FROM names WHERE id = ANY(%s)", (list(ids),))
        return dict(cur.fetchall())


class SmsOutbox:
    schema = """
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
-- A verification code is caused by a request, not by an event; it is sent before any patient exists.
ALTER TABLE outbox ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS phone_hash text;
CREATE INDEX IF NOT EXISTS outbox_phone_hash ON outbox (phone_hash, created_at DESC);
"""

    def add(self, cur: Any, *, event_id: uuid.UUID | None, patient_id: str, phone_enc: str, phone_masked: str,
            phone_hash: str, template: str, text: str) -> None:
        cur.execute(
            "INSERT INTO outbox (message_id, event_id, patient_id, phone_enc, phone_masked, phone_hash, template,"
            " text) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (uuid.uuid4(), event_id, patient_id, phone_enc, phone_masked, phone_hash, template, text),
        )

    def latest(self, cur: Any, limit: int, phone_hash: str | None = None) -> list[dict[str, Any]]:
        """The newest messages first (of one number when `phone_hash` is given), as the `outbox`
        RPC answers them (no phone in clear)."""
        where = "WHERE phone_hash = %s " if phone_hash is not None else ""
        params = (phone_hash, limit) if phone_hash is not None else (limit,)
        cur.execute(f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox {where}ORDER BY created_at DESC LIMIT %s",
                    params)
        return [
            {k: (str(v) if k in ("message_id", "created_at") else v) for k, v in zip(_OUTBOX_COLUMNS, row, strict=True)}
            for row in cur.fetchall()
        ]


class VerificationCodes:
    """Rows the verification rules decide on (services.notification.domain), read `FOR UPDATE`:
    two replicas deciding on one number take turns, so neither a limit nor the count of wrong
    tries can be passed by asking at the same moment."""

    schema = """
CREATE TABLE IF NOT EXISTS verification_sends (
    phone_hash text PRIMARY KEY,
    sent_at    timestamptz[] NOT NULL
);
CREATE TABLE IF NOT EXISTS verification_codes (
    phone_hash  text NOT NULL,
    purpose     text NOT NULL,
    code_hash   text NOT NULL,
    expires_at  timestamptz NOT NULL,
    wrong_tries integer NOT NULL DEFAULT 0,
    PRIMARY KEY (phone_hash, purpose)
);
CREATE INDEX IF NOT EXISTS verification_codes_expires_at ON verification_codes (expires_at);
"""

    def lock_sends(self, cur: Any, phone_hash: str) -> list[datetime]:
        """The number's recorded sends, its row locked until the transaction ends (created empty
        first, so that even the first two requests for a number take turns)."""
        cur.execute("INSERT INTO verification_sends VALUES (%s, '{}') ON CONFLICT (phone_hash) DO NOTHING",
                    (phone_hash,))
        cur.execute("SELECT sent_at FROM verification_sends WHERE phone_hash = %s FOR UPDATE", (phone_hash,))
        return list(cur.fetchone()[0])

    def record_sends(self, cur: Any, phone_hash: str, sent: Sequence[datetime]) -> None:
        cur.execute("UPDATE verification_sends SET sent_at = %s WHERE phone_hash = %s", (list(sent), phone_hash))

    def replace(self, cur: Any, phone_hash: str, purpose: str, code_hash: str, expires_at: datetime) -> None:
        """The new live code of (number, purpose): the previous one is gone and its tries with it."""
        cur.execute(
            "INSERT INTO verification_codes (phone_hash, purpose, code_hash, expires_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (phone_hash, purpose) DO UPDATE"
            " SET code_hash = EXCLUDED.code_hash, expires_at = EXCLUDED.expires_at, wrong_tries = 0",
            (phone_hash, purpose, code_hash, expires_at),
        )

    def sweep(self, cur: Any, now: datetime, batch: int = 100) -> None:
        """Forget some expired codes. Rows another transaction holds are skipped, not waited for:
        two sends sweeping at once could otherwise each wait for a row the other has locked."""
        cur.execute(
            "DELETE FROM verification_codes WHERE (phone_hash, purpose) IN (SELECT phone_hash, purpose"
            " FROM verification_codes WHERE expires_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
            (now, batch),
        )

    def lock_code(self, cur: Any, phone_hash: str, purpose: str) -> StoredCode | None:
        """The live code of (number, purpose), locked until the transaction ends; None if never sent."""
        cur.execute(
            "SELECT code_hash, expires_at, wrong_tries FROM verification_codes"
            " WHERE phone_hash = %s AND purpose = %s FOR UPDATE",
            (phone_hash, purpose),
        )
        row = cur.fetchone()
        return None if row is None else StoredCode(*row)

    def count_wrong(self, cur: Any, phone_hash: str, purpose: str) -> None:
        cur.execute("UPDATE verification_codes SET wrong_tries = wrong_tries + 1 WHERE phone_hash = %s"
                    " AND purpose = %s", (phone_hash, purpose))


NAMES = Names()
APPOINTMENTS = JsonMemory("appointments", "appointment_id")
SMS_OUTBOX = SmsOutbox()
VERIFICATION_CODES = VerificationCodes()
SCHEMA = NAMES.schema + APPOINTMENTS.schema + SMS_OUTBOX.schema + VERIFICATION_CODES.schema
