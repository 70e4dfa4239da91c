"""notification's own tables and every query on them: the only SQL of the service.

- `names`: what hospitals, departments and doctors are called, for the texts.
- `appointments`: each appointment as last booked or moved (infra.memory), to word a cancellation.
- `outbox`: the SMS queued for sending (the default provider port): the text, the phone masked
  for display and encrypted for the sender.

Each surface is an object whose methods take the caller's cursor, so a reaction's writes share
the transaction of its inbox claim; handlers get them injected by name (unit tests pass fakes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from infra.memory import JsonMemory

__all__ = ["APPOINTMENTS", "NAMES", "SCHEMA", "SMS_OUTBOX", "Names", "SmsOutbox"]

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
"""

    def add(self, cur: Any, *, event_id: uuid.UUID, patient_id: str, phone_enc: str, phone_masked: str,
            template: str, text: str) -> None:
        cur.execute(
            "INSERT INTO outbox (message_id, event_id, patient_id, phone_enc, phone_masked, template, text)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (uuid.uuid4(), event_id, patient_id, phone_enc, phone_masked, template, text),
        )

    def latest(self, cur: Any, limit: int) -> list[dict[str, Any]]:
        """The newest messages first, as the `outbox` RPC answers them (no phone in clear)."""
        cur.execute(f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox ORDER BY created_at DESC LIMIT %s", (limit,))
        return [
            {k: (str(v) if k in ("message_id", "created_at") else v) for k, v in zip(_OUTBOX_COLUMNS, row, strict=True)}
            for row in cur.fetchall()
        ]


NAMES = Names()
APPOINTMENTS = JsonMemory("appointments", "appointment_id")
SMS_OUTBOX = SmsOutbox()
SCHEMA = NAMES.schema + APPOINTMENTS.schema + SMS_OUTBOX.schema
