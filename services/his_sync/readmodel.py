"""his_sync's own tables and every query on them: the only SQL of the service.

- `appointments`: each appointment as last booked or moved (infra.memory); the later messages
  (S15, S26, A04) are built from it, since their events carry only what changed.
- `his_messages`: every message the HIS acknowledged with AA, by control id.

Methods take the caller's cursor: the record of an ACK commits with the inbox claim, or not at all.
"""

from __future__ import annotations

import uuid
from typing import Any

from infra.memory import JsonMemory

__all__ = ["APPOINTMENTS", "HIS_MESSAGES", "SCHEMA", "HisMessages"]

_SENT_COLUMNS = ("control_id", "appointment_id", "message_type", "ack_code")


class HisMessages:
    schema = """
CREATE TABLE IF NOT EXISTS his_messages (
    control_id     text PRIMARY KEY,
    event_id       uuid NOT NULL,
    appointment_id text NOT NULL,
    message_type   text NOT NULL,
    ack_code       text NOT NULL,
    sent_at        timestamptz NOT NULL DEFAULT now()
);
"""

    def record(self, cur: Any, *, control_id: str, event_id: uuid.UUID, appointment_id: str, message_type: str,
               ack_code: str) -> None:
        cur.execute(
            "INSERT INTO his_messages (control_id, event_id, appointment_id, message_type, ack_code)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (control_id, event_id, appointment_id, message_type, ack_code),
        )

    def latest(self, cur: Any, limit: int) -> list[dict[str, Any]]:
        """The newest first, as the `sent` RPC answers them."""
        cur.execute(f"SELECT {', '.join(_SENT_COLUMNS)} FROM his_messages ORDER BY sent_at DESC LIMIT %s", (limit,))
        return [dict(zip(_SENT_COLUMNS, row, strict=True)) for row in cur.fetchall()]


APPOINTMENTS = JsonMemory("appointments", "appointment_id")
HIS_MESSAGES = HisMessages()
SCHEMA = APPOINTMENTS.schema + HIS_MESSAGES.schema
