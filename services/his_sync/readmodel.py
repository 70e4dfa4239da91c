"""his_sync's own tables and every query on them: the only SQL of the service.

- `appointments`: each appointment as last booked or moved (infra.memory), with the patient's
  real-name fields sealed (`patient_enc`, encrypted with PII_KEY): the later messages (S15, S26,
  A04, A11, A05) are built from it, since their events carry only what changed.
- `his_endpoints`: each hospital's own HIS (host, port, facility codes, character set, rate),
  set by the platform admin, and the state of its circuit breaker and its dispatch lease.
- `his_outbox`: every message for a HIS, one row per (event, message type), in the order it was
  queued (`seq`); its HL7 text encrypted (it carries the patient's name and resident ID); its
  state queued → sending → acked, or failed (parked, with the HIS's answer) or skipped by an
  operator.
- `his_inbound`: every message a HIS sent us, by (hospital, control id), with the answer given:
  a duplicate is answered the same without a second effect.
- `his_messages`: the acknowledged messages of before the outbox (kept, read by nothing new).

Methods take the caller's cursor.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from infra.memory import JsonMemory

__all__ = ["APPOINTMENTS", "HIS_ENDPOINTS", "HIS_HANDOVERS", "HIS_INBOUND", "HIS_OUTBOX", "IDENTITIES", "SCHEMA",
           "HisEndpoints", "HisHandovers", "HisInbound", "HisOutbox"]

ENDPOINT_COLUMNS = ("hospital_id", "host", "port", "receiving_application", "receiving_facility",
                    "sending_facility", "charset", "rate_per_s", "inbound_facility", "enabled", "circuit",
                    "open_until", "failures", "last_error", "updated_at", "inbound_secret_set")
# Every column as selected; the key itself is never read out, only whether there is one.
_ENDPOINT_SELECT = ", ".join(ENDPOINT_COLUMNS[:-1]) + ", inbound_secret_enc IS NOT NULL"
MESSAGE_STATES = ("queued", "sending", "acked", "failed", "skipped")
_MESSAGE_COLUMNS = ("message_id", "seq", "hospital_id", "appointment_id", "control_id", "message_type", "status",
                    "attempts", "next_attempt_at", "last_error", "ack_code", "ack_text", "created_at", "acked_at",
                    "handover_date")

LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS his_messages (
    control_id     text PRIMARY KEY,
    event_id       uuid NOT NULL,
    appointment_id text NOT NULL,
    message_type   text NOT NULL,
    ack_code       text NOT NULL,
    sent_at        timestamptz NOT NULL DEFAULT now()
);
"""


class HisEndpoints:
    schema = """
CREATE TABLE IF NOT EXISTS his_endpoints (
    hospital_id           text PRIMARY KEY,
    host                  text NOT NULL,
    port                  integer NOT NULL,
    receiving_application text NOT NULL DEFAULT 'HIS',
    receiving_facility    text NOT NULL,
    sending_facility      text NOT NULL DEFAULT 'HEBEI-APPT',
    charset               text NOT NULL DEFAULT 'UNICODE UTF-8',
    rate_per_s            real NOT NULL DEFAULT 20,
    inbound_facility      text NOT NULL,          -- MSH-4 the hospital's HIS sends from
    enabled               boolean NOT NULL DEFAULT true,
    circuit               text NOT NULL DEFAULT 'closed',   -- closed / open
    open_until            timestamptz,
    failures              integer NOT NULL DEFAULT 0,       -- consecutive connection failures
    last_error            text,
    lease_owner           text,
    lease_until           timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
-- The key the hospital's HIS signs its HTTP requests with (FHIR bundles, visit totals), encrypted.
ALTER TABLE his_endpoints ADD COLUMN IF NOT EXISTS inbound_secret_enc text;
"""

    def put(self, cur: Any, row: dict[str, Any]) -> None:
        cur.execute(
            "INSERT INTO his_endpoints (hospital_id, host, port, receiving_application, receiving_facility,"
            " sending_facility, charset, rate_per_s, inbound_facility, enabled)"
            " VALUES (%(hospital_id)s, %(host)s, %(port)s, %(receiving_application)s, %(receiving_facility)s,"
            " %(sending_facility)s, %(charset)s, %(rate_per_s)s, %(inbound_facility)s, %(enabled)s)"
            " ON CONFLICT (hospital_id) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port,"
            " receiving_application = EXCLUDED.receiving_application,"
            " receiving_facility = EXCLUDED.receiving_facility, sending_facility = EXCLUDED.sending_facility,"
            " charset = EXCLUDED.charset, rate_per_s = EXCLUDED.rate_per_s,"
            " inbound_facility = EXCLUDED.inbound_facility, enabled = EXCLUDED.enabled, circuit = 'closed',"
            " open_until = NULL, failures = 0, updated_at = now()",
            row,
        )

    def add_default(self, cur: Any, hospital_id: str, host: str, port: int) -> None:
        """A newly registered hospital's endpoint when the deployment names a default HIS (the
        development simulator); a hospital with its own endpoint keeps it."""
        cur.execute(
            "INSERT INTO his_endpoints (hospital_id, host, port, receiving_facility, inbound_facility)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (hospital_id) DO NOTHING",
            (hospital_id, host, port, hospital_id.upper(), f"{hospital_id.upper()}-HIS"),
        )

    def set_secret(self, cur: Any, hospital_id: str, secret_enc: str) -> None:
        cur.execute("UPDATE his_endpoints SET inbound_secret_enc = %s WHERE hospital_id = %s",
                    (secret_enc, hospital_id))

    def secret_of(self, cur: Any, hospital_id: str) -> str | None:
        cur.execute("SELECT inbound_secret_enc FROM his_endpoints WHERE hospital_id = %s", (hospital_id,))
        row = cur.fetchone()
        return None if row is None else row[0]

    def remove(self, cur: Any, hospital_id: str) -> bool:
        cur.execute("DELETE FROM his_endpoints WHERE hospital_id = %s", (hospital_id,))
        return bool(cur.rowcount)

    def of(self, cur: Any, hospital_id: str) -> dict[str, Any] | None:
        cur.execute(f"SELECT {_ENDPOINT_SELECT} FROM his_endpoints WHERE hospital_id = %s",
                    (hospital_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip(ENDPOINT_COLUMNS, row, strict=True))

    def all(self, cur: Any) -> list[dict[str, Any]]:
        cur.execute(f"SELECT {_ENDPOINT_SELECT} FROM his_endpoints ORDER BY hospital_id")
        return [dict(zip(ENDPOINT_COLUMNS, row, strict=True)) for row in cur.fetchall()]

    def by_inbound_facility(self, cur: Any, facility: str) -> dict[str, Any] | None:
        cur.execute(f"SELECT {_ENDPOINT_SELECT} FROM his_endpoints WHERE inbound_facility = %s",
                    (facility,))
        row = cur.fetchone()
        return None if row is None else dict(zip(ENDPOINT_COLUMNS, row, strict=True))

    def take_lease(self, cur: Any, hospital_id: str, owner: str, now: datetime, seconds: float) -> bool:
        """One dispatcher per hospital at a time, whichever replica: the rate and the order hold."""
        cur.execute(
            "UPDATE his_endpoints SET lease_owner = %s, lease_until = %s + make_interval(secs => %s)"
            " WHERE hospital_id = %s AND (lease_until IS NULL OR lease_until < %s OR lease_owner = %s)",
            (owner, now, seconds, hospital_id, now, owner))
        return bool(cur.rowcount)

    def drop_lease(self, cur: Any, hospital_id: str, owner: str) -> None:
        cur.execute("UPDATE his_endpoints SET lease_owner = NULL, lease_until = NULL"
                    " WHERE hospital_id = %s AND lease_owner = %s", (hospital_id, owner))

    def circuit_closed(self, cur: Any, hospital_id: str) -> bool:
        """True when the breaker was open (the HIS is back): the caller logs the recovery once."""
        cur.execute("UPDATE his_endpoints SET circuit = 'closed', open_until = NULL, failures = 0, last_error = NULL"
                    " WHERE hospital_id = %s AND (circuit <> 'closed' OR failures > 0) RETURNING failures",
                    (hospital_id,))
        return cur.fetchone() is not None

    def circuit_opened(self, cur: Any, hospital_id: str, until: datetime, reason: str) -> int:
        """The HIS did not answer: the breaker opens until `until`; answers the consecutive failures."""
        cur.execute("UPDATE his_endpoints SET circuit = 'open', open_until = %s, failures = failures + 1,"
                    " last_error = %s WHERE hospital_id = %s RETURNING failures", (until, reason[:300], hospital_id))
        row = cur.fetchone()
        return 0 if row is None else int(row[0])


class HisOutbox:
    schema = """
CREATE TABLE IF NOT EXISTS his_outbox (
    message_id      uuid PRIMARY KEY,
    seq             bigserial UNIQUE,
    hospital_id     text NOT NULL,
    appointment_id  text NOT NULL,         -- the order key: an appointment's messages go in order
    control_id      text NOT NULL UNIQUE,  -- MSH-10, derived from the event: a resend carries it
    event_id        uuid,
    message_type    text NOT NULL,
    raw_enc         text NOT NULL,         -- the HL7 text, encrypted: PID holds name and resident ID
    status          text NOT NULL DEFAULT 'queued',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    ack_code        text,
    ack_text        text,
    handover_date   date,                  -- an ADT^A05 of the 16:00 hand-over: its visit day
    created_at      timestamptz NOT NULL DEFAULT now(),
    acked_at        timestamptz
);
CREATE INDEX IF NOT EXISTS his_outbox_due ON his_outbox (hospital_id, seq) WHERE status IN ('queued', 'sending');
CREATE INDEX IF NOT EXISTS his_outbox_appointment ON his_outbox (appointment_id, seq);
CREATE INDEX IF NOT EXISTS his_outbox_handover ON his_outbox (hospital_id, handover_date)
    WHERE handover_date IS NOT NULL;
CREATE INDEX IF NOT EXISTS his_outbox_status ON his_outbox (status, created_at DESC);
"""

    def add(self, cur: Any, *, hospital_id: str, appointment_id: str, control_id: str, event_id: uuid.UUID | None,
            message_type: str, raw_enc: str, now: datetime, handover_date: date | None = None) -> bool:
        cur.execute(
            "INSERT INTO his_outbox (message_id, hospital_id, appointment_id, control_id, event_id, message_type,"
            " raw_enc, next_attempt_at, created_at, handover_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (control_id) DO NOTHING",
            (uuid.uuid4(), hospital_id, appointment_id, control_id, event_id, message_type, raw_enc, now, now,
             handover_date))
        return bool(cur.rowcount)

    def due_hospitals(self, cur: Any, now: datetime) -> list[str]:
        """Hospitals with a due message whose HIS is not known to be down (its breaker open):
        no dispatcher is started just to find it down again."""
        cur.execute("SELECT DISTINCT m.hospital_id FROM his_outbox m JOIN his_endpoints e USING (hospital_id)"
                    " WHERE m.status = 'queued' AND m.next_attempt_at <= %s AND e.enabled"
                    " AND (e.circuit = 'closed' OR e.open_until IS NULL OR e.open_until <= %s)", (now, now))
        return [r[0] for r in cur.fetchall()]

    def claim_next(self, cur: Any, hospital_id: str, now: datetime) -> dict[str, Any] | None:
        """The oldest due message of the hospital whose appointment has nothing earlier still
        unfinished (an S15 never overtakes its S12, a parked S12 holds its S15 back), marked
        `sending` in the caller's transaction."""
        # One statement: the queue idiom UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED).
        cur.execute(
            "UPDATE his_outbox SET status = 'sending' WHERE message_id = ("
            " SELECT m.message_id FROM his_outbox m"
            " WHERE m.hospital_id = %s AND m.status = 'queued' AND m.next_attempt_at <= %s"
            " AND NOT EXISTS (SELECT 1 FROM his_outbox e WHERE e.appointment_id = m.appointment_id"
            "  AND e.seq < m.seq AND e.status NOT IN ('acked', 'skipped'))"
            " ORDER BY m.seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING message_id, control_id, message_type, raw_enc, attempts, appointment_id",
            (hospital_id, now))
        row = cur.fetchone()
        if row is None:
            return None
        keys = ("message_id", "control_id", "message_type", "raw_enc", "attempts", "appointment_id")
        return dict(zip(keys, row, strict=True))

    def release_stale(self, cur: Any, hospital_id: str) -> None:
        """`sending` rows left by a dispatcher that died: queued again (the lease made it ours)."""
        cur.execute("UPDATE his_outbox SET status = 'queued' WHERE hospital_id = %s AND status = 'sending'",
                    (hospital_id,))

    def acked(self, cur: Any, message_id: str, code: str, text: str, now: datetime) -> None:
        cur.execute("UPDATE his_outbox SET status = 'acked', ack_code = %s, ack_text = %s, acked_at = %s,"
                    " attempts = attempts + 1, last_error = NULL WHERE message_id = %s",
                    (code, text[:500], now, message_id))

    def retry_later(self, cur: Any, message_id: str, reason: str, at: datetime, counted: bool,
                    code: str | None = None, text: str | None = None) -> None:
        cur.execute("UPDATE his_outbox SET status = 'queued', next_attempt_at = %s, last_error = %s,"
                    " attempts = attempts + %s, ack_code = coalesce(%s, ack_code), ack_text = coalesce(%s, ack_text)"
                    " WHERE message_id = %s", (at, reason[:500], int(counted), code, text, message_id))

    def park(self, cur: Any, message_id: str, reason: str, code: str | None, text: str | None) -> None:
        cur.execute("UPDATE his_outbox SET status = 'failed', last_error = %s, ack_code = %s, ack_text = %s,"
                    " attempts = attempts + 1 WHERE message_id = %s", (reason[:500], code, text, message_id))

    def requeue(self, cur: Any, message_id: str, now: datetime) -> str | None:
        """A parked message sent again: answers its hospital, None if it was not parked."""
        cur.execute("UPDATE his_outbox SET status = 'queued', attempts = 0, next_attempt_at = %s"
                    " WHERE message_id = %s AND status = 'failed' RETURNING hospital_id", (now, message_id))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def skip(self, cur: Any, message_id: str) -> str | None:
        """A parked message given up by an operator: the appointment's later messages may go."""
        cur.execute("UPDATE his_outbox SET status = 'skipped' WHERE message_id = %s AND status = 'failed'"
                    " RETURNING hospital_id", (message_id,))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def hospital_of(self, cur: Any, message_id: str) -> str | None:
        cur.execute("SELECT hospital_id FROM his_outbox WHERE message_id = %s", (message_id,))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def messages(self, cur: Any, limit: int, status: str | None = None, hospital_id: str | None = None,
                 handover_date: date | None = None) -> list[dict[str, Any]]:
        clauses, params = [], []
        for column, value in (("status", status), ("hospital_id", hospital_id), ("handover_date", handover_date)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses) + " ") if clauses else ""
        cur.execute(f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM his_outbox {where}ORDER BY seq DESC LIMIT %s",
                    (*params, limit))
        return [{k: _plain(v) for k, v in zip(_MESSAGE_COLUMNS, row, strict=True)} for row in cur.fetchall()]

    def of_day(self, cur: Any, hospital_id: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The hospital's messages queued in [since, until), in queue order (the reconciliation)."""
        cur.execute(f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM his_outbox WHERE hospital_id = %s"
                    " AND created_at >= %s AND created_at < %s ORDER BY seq", (hospital_id, since, until))
        return [{k: _plain(v) for k, v in zip(_MESSAGE_COLUMNS, row, strict=True)} for row in cur.fetchall()]

    def backlog(self, cur: Any) -> dict[str, dict[str, int]]:
        """Per hospital: messages waiting (queued, sending) and parked (failed)."""
        cur.execute("SELECT hospital_id, status, count(*) FROM his_outbox WHERE status IN ('queued', 'sending',"
                    " 'failed') GROUP BY hospital_id, status")
        found: dict[str, dict[str, int]] = {}
        for hospital_id, status, n in cur.fetchall():
            found.setdefault(hospital_id, {"waiting": 0, "parked": 0})
            found[hospital_id]["parked" if status == "failed" else "waiting"] += int(n)
        return found

    def health(self, cur: Any, now: datetime) -> list[dict[str, Any]]:
        """Per hospital with an endpoint or a message not acknowledged: messages waiting (queued,
        sending), parked (failed), the age of the oldest waiting one, and the HIS breaker. For
        the health RPC: counts and connection errors only, never a message's text."""
        cur.execute(
            "SELECT coalesce(e.hospital_id, m.hospital_id), coalesce(m.waiting, 0), coalesce(m.parked, 0),"
            " extract(epoch FROM %s - m.oldest), e.circuit, coalesce(e.failures, 0), e.last_error, e.enabled"
            " FROM his_endpoints e FULL JOIN ("
            "  SELECT hospital_id, count(*) FILTER (WHERE status IN ('queued', 'sending')) AS waiting,"
            "   count(*) FILTER (WHERE status = 'failed') AS parked,"
            "   min(created_at) FILTER (WHERE status IN ('queued', 'sending')) AS oldest"
            "  FROM his_outbox WHERE status IN ('queued', 'sending', 'failed') GROUP BY hospital_id"
            " ) m USING (hospital_id) ORDER BY 1", (now,))
        keys = ("hospital_id", "waiting", "parked", "oldest_waiting_s", "circuit", "failures", "last_error", "enabled")
        rows = [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]
        for row in rows:
            row["oldest_waiting_s"] = round(max(0.0, float(row["oldest_waiting_s"] or 0)), 1)
            row["waiting"], row["parked"] = int(row["waiting"]), int(row["parked"])
        return rows

    def sent(self, cur: Any, limit: int) -> list[dict[str, Any]]:
        """The newest acknowledged messages (the `sent` RPC: as before the outbox)."""
        cur.execute("SELECT control_id, appointment_id, message_type, ack_code FROM his_outbox WHERE status = 'acked'"
                    " ORDER BY acked_at DESC LIMIT %s", (limit,))
        keys = ("control_id", "appointment_id", "message_type", "ack_code")
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


class HisHandovers:
    """Each 16:00 hand-over his_sync received: a day handed over with no paid phone booking is not
    a day not handed over yet."""

    schema = """
CREATE TABLE IF NOT EXISTS his_handovers (
    hospital_id    text NOT NULL,
    visit_date     date NOT NULL,
    bookings       integer NOT NULL,
    handed_over_at timestamptz NOT NULL,
    PRIMARY KEY (hospital_id, visit_date)
);
"""

    def record(self, cur: Any, hospital_id: str, visit_date: date, bookings: int, at: datetime) -> None:
        cur.execute("INSERT INTO his_handovers VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (hospital_id, visit_date, bookings, at))

    def of(self, cur: Any, hospital_id: str, visit_date: date) -> dict[str, Any] | None:
        cur.execute("SELECT bookings, handed_over_at FROM his_handovers WHERE hospital_id = %s AND visit_date = %s",
                    (hospital_id, visit_date))
        row = cur.fetchone()
        return None if row is None else {"bookings": int(row[0]), "handed_over_at": row[1].isoformat()}


class HisInbound:
    schema = """
CREATE TABLE IF NOT EXISTS his_inbound (
    hospital_id  text NOT NULL,
    control_id   text NOT NULL,
    message_type text NOT NULL,
    ack_code     text NOT NULL,
    answer       text NOT NULL,      -- the ACK we sent, replayed to a duplicate
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hospital_id, control_id)
);
"""

    def lock(self, cur: Any, hospital_id: str, control_id: str) -> str | None:
        """The answer given to this message before, None if it is new. Two copies arriving at once
        take turns on an advisory lock of (hospital, control id)."""
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"his-in:{hospital_id}:{control_id}",))
        cur.execute("SELECT answer FROM his_inbound WHERE hospital_id = %s AND control_id = %s",
                    (hospital_id, control_id))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def record(self, cur: Any, hospital_id: str, control_id: str, message_type: str, code: str, answer: str) -> None:
        cur.execute("INSERT INTO his_inbound (hospital_id, control_id, message_type, ack_code, answer)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (hospital_id, control_id, message_type, code, answer))

    def latest(self, cur: Any, limit: int, hospital_id: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE hospital_id = %s " if hospital_id else ""
        cur.execute("SELECT hospital_id, control_id, message_type, ack_code, received_at FROM his_inbound "
                    + where + "ORDER BY received_at DESC LIMIT %s", (hospital_id, limit) if hospital_id else (limit,))
        keys = ("hospital_id", "control_id", "message_type", "ack_code", "received_at")
        return [{k: _plain(v) for k, v in zip(keys, row, strict=True)} for row in cur.fetchall()]


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


APPOINTMENTS = JsonMemory("appointments", "appointment_id")
HIS_ENDPOINTS = HisEndpoints()
HIS_OUTBOX = HisOutbox()
HIS_INBOUND = HisInbound()
HIS_HANDOVERS = HisHandovers()
# Each patient's real-name fields for PID as booking gave them, encrypted: asked once per patient,
# not once per booking (handlers._sealed_identity).
IDENTITIES = JsonMemory("patient_identities", "patient_id")
SCHEMA = (APPOINTMENTS.schema + LEGACY_SCHEMA + HIS_ENDPOINTS.schema + HIS_OUTBOX.schema + HIS_INBOUND.schema
          + HIS_HANDOVERS.schema + IDENTITIES.schema)
