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
from datetime import date, datetime
from typing import Any

from infra.memory import JsonMemory
from services.notification.domain import DoctorNotice, HospitalSms, StoredCode

__all__ = ["APPOINTMENTS", "CONTACTS", "DOCTORS", "HOSPITALS", "NAMES", "SCHEMA", "SMS_OUTBOX", "VERIFICATION_CODES",
           "Appointments", "Doctors", "Hospitals", "Names", "SmsOutbox", "VerificationCodes"]

_OUTBOX_COLUMNS = ("message_id", "patient_id", "phone_masked", "template", "text", "status", "created_at",
                  "recipient", "not_before", "last_error")


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


class Hospitals:
    """Each hospital's SMS settings (domain.HospitalSms) and its address, from its registration."""

    schema = """
CREATE TABLE IF NOT EXISTS hospitals (
    hospital_id     text PRIMARY KEY,
    address         text NOT NULL DEFAULT '',
    reminder_time   time NOT NULL DEFAULT '18:00',
    quiet_start     time NOT NULL DEFAULT '21:00',
    quiet_end       time NOT NULL DEFAULT '08:00',
    window_location text NOT NULL DEFAULT '',
    reminders_done  date          -- the last visit day whose reminders were all queued
);
"""

    def remember_address(self, cur: Any, hospital_id: str, address: str) -> None:
        cur.execute("INSERT INTO hospitals (hospital_id, address) VALUES (%s, %s)"
                    " ON CONFLICT (hospital_id) DO UPDATE SET address = EXCLUDED.address", (hospital_id, address))

    def settings(self, cur: Any, hospital_id: str) -> HospitalSms:
        cur.execute("SELECT reminder_time, quiet_start, quiet_end, window_location, address FROM hospitals"
                    " WHERE hospital_id = %s", (hospital_id,))
        row = cur.fetchone()
        if row is None:
            return HospitalSms()
        return HospitalSms(row[0], row[1], row[2], row[3] or HospitalSms.window_location, row[4])

    def change(self, cur: Any, hospital_id: str, sms: HospitalSms) -> None:
        cur.execute(
            "INSERT INTO hospitals (hospital_id, reminder_time, quiet_start, quiet_end, window_location)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (hospital_id) DO UPDATE SET"
            " reminder_time = EXCLUDED.reminder_time, quiet_start = EXCLUDED.quiet_start,"
            " quiet_end = EXCLUDED.quiet_end, window_location = EXCLUDED.window_location",
            (hospital_id, sms.reminder_time, sms.quiet_start, sms.quiet_end, sms.window_location),
        )

    def all(self, cur: Any) -> list[tuple[str, HospitalSms, date | None]]:
        cur.execute("SELECT hospital_id, reminder_time, quiet_start, quiet_end, window_location, address,"
                    " reminders_done FROM hospitals ORDER BY hospital_id")
        return [(r[0], HospitalSms(r[1], r[2], r[3], r[4] or HospitalSms.window_location, r[5]), r[6])
                for r in cur.fetchall()]

    def lock_reminders(self, cur: Any, hospital_id: str) -> date | None:
        """The hospital's row locked while its reminders are queued: replicas take turns."""
        cur.execute("SELECT reminders_done FROM hospitals WHERE hospital_id = %s FOR UPDATE", (hospital_id,))
        row = cur.fetchone()
        return None if row is None else row[0]

    def reminders_queued(self, cur: Any, hospital_id: str, day: date) -> None:
        cur.execute("UPDATE hospitals SET reminders_done = %s WHERE hospital_id = %s"
                    " AND (reminders_done IS NULL OR reminders_done < %s)", (day, hospital_id, day))


class Doctors:
    """Each doctor's hospital (from the registration), mobile (encrypted like a patient's, masked,
    keyed hash) and SMS choice (domain.DoctorNotice), set by the hospital's admin."""

    schema = """
CREATE TABLE IF NOT EXISTS doctors (
    doctor_id    text PRIMARY KEY,
    hospital_id  text NOT NULL,
    phone_enc    text,
    phone_masked text,
    phone_hash   text,
    notice       text NOT NULL DEFAULT 'none',
    digest_time  time NOT NULL DEFAULT '07:00',
    digest_done  date           -- the last day a digest was queued
);
"""

    def remember(self, cur: Any, doctor_id: str, hospital_id: str) -> None:
        cur.execute("INSERT INTO doctors (doctor_id, hospital_id) VALUES (%s, %s)"
                    " ON CONFLICT (doctor_id) DO UPDATE SET hospital_id = EXCLUDED.hospital_id",
                    (doctor_id, hospital_id))

    def hospital_of(self, cur: Any, doctor_id: str) -> str | None:
        cur.execute("SELECT hospital_id FROM doctors WHERE doctor_id = %s", (doctor_id,))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def set_contact(self, cur: Any, doctor_id: str, phone: tuple[str, str, str] | None, notice: DoctorNotice) -> None:
        enc, masked, hashed = phone if phone is not None else (None, None, None)
        cur.execute("UPDATE doctors SET phone_enc = %s, phone_masked = %s, phone_hash = %s, notice = %s,"
                    " digest_time = %s WHERE doctor_id = %s",
                    (enc, masked, hashed, notice.notice, notice.digest_time, doctor_id))

    def contact(self, cur: Any, doctor_id: str) -> dict[str, Any] | None:
        """{doctor_id, hospital_id, phone_enc, phone_masked, phone_hash, notice, digest_time}."""
        cur.execute("SELECT doctor_id, hospital_id, phone_enc, phone_masked, phone_hash, notice, digest_time"
                    " FROM doctors WHERE doctor_id = %s", (doctor_id,))
        row = cur.fetchone()
        keys = ("doctor_id", "hospital_id", "phone_enc", "phone_masked", "phone_hash", "notice", "digest_time")
        return None if row is None else dict(zip(keys, row, strict=True))

    def of_hospital(self, cur: Any, hospital_id: str) -> list[dict[str, Any]]:
        cur.execute("SELECT doctor_id, hospital_id, phone_masked, notice, digest_time FROM doctors"
                    " WHERE hospital_id = %s ORDER BY doctor_id", (hospital_id,))
        keys = ("doctor_id", "hospital_id", "phone_masked", "notice", "digest_time")
        return [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]

    def digest_due(self, cur: Any) -> list[dict[str, Any]]:
        """Doctors who chose the digest and have a phone: the ones whose hour may have come."""
        cur.execute("SELECT doctor_id, hospital_id, digest_time, digest_done FROM doctors"
                    " WHERE notice = 'digest' AND phone_enc IS NOT NULL")
        return [dict(zip(("doctor_id", "hospital_id", "digest_time", "digest_done"), r, strict=True))
                for r in cur.fetchall()]

    def lock_digest(self, cur: Any, doctor_id: str) -> date | None:
        cur.execute("SELECT digest_done FROM doctors WHERE doctor_id = %s FOR UPDATE", (doctor_id,))
        row = cur.fetchone()
        return None if row is None else row[0]

    def digest_queued(self, cur: Any, doctor_id: str, day: date) -> None:
        cur.execute("UPDATE doctors SET digest_done = %s WHERE doctor_id = %s", (day, doctor_id))


class Appointments(JsonMemory):
    """Each appointment as last booked or moved (infra.memory), with what became of it since
    (`status`: active, cancelled, checked_in, refunded, no_show) and the patient's contact as
    booking gave it (encrypted phone, masked, hash, locale): the reminders need no RPC."""

    def __init__(self) -> None:
        super().__init__("appointments", "appointment_id")

    @property
    def schema(self) -> str:
        return super().schema + (
            "CREATE INDEX IF NOT EXISTS appointments_visit ON appointments"
            " ((data->>'hospital_id'), (data->>'date'));\n"
            "CREATE INDEX IF NOT EXISTS appointments_doctor ON appointments ((data->>'doctor_id'), (data->>'date'));\n"
        )

    def active_on(self, cur: Any, hospital_id: str, day: date) -> list[dict[str, Any]]:
        cur.execute("SELECT data FROM appointments WHERE data->>'hospital_id' = %s AND data->>'date' = %s"
                    " AND coalesce(data->>'status', 'active') = 'active' ORDER BY appointment_id",
                    (hospital_id, day.isoformat()))
        return [dict(r[0]) for r in cur.fetchall()]

    def of_doctor(self, cur: Any, doctor_id: str, from_day: date) -> list[dict[str, Any]]:
        cur.execute("SELECT data FROM appointments WHERE data->>'doctor_id' = %s AND data->>'date' >= %s"
                    " AND coalesce(data->>'status', 'active') = 'active'", (doctor_id, from_day.isoformat()))
        return [dict(r[0]) for r in cur.fetchall()]


MESSAGE_STATES = ("queued", "sending", "sent", "delivered", "failed", "withdrawn")
_MESSAGE_COLUMNS = ("message_id", "patient_id", "recipient", "hospital_id", "phone_masked", "template", "status",
                    "urgent", "attempts", "last_error", "provider", "created_at", "not_before", "next_attempt_at",
                    "sent_at", "delivered_at", "failed_at", "receipt_status")


class SmsOutbox:
    """Every SMS, one row per intent (`intent_key`: the triggering event, the template and the
    recipient; or the reminder's appointment and day): queued → sending → sent → delivered, or
    failed (parked after its attempts, with the reason; the operator may queue it again), or
    withdrawn (a ban-lift notice a longer ban made wrong). The dispatcher claims due rows with
    `FOR UPDATE SKIP LOCKED` and a lease: replicas never take the same row, and a row whose
    sender died goes again after the lease."""

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
-- Delivery (issue 11): one row per intent, its state, its attempts.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS intent_key text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS recipient text NOT NULL DEFAULT 'patient';
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS hospital_id text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS urgent boolean NOT NULL DEFAULT false;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS not_before timestamptz NOT NULL DEFAULT now();
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS lease_until timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS provider text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS provider_ids text[] NOT NULL DEFAULT '{}';
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS sent_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS delivered_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS receipt_status text;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_intent ON outbox (intent_key);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE status IN ('queued', 'sending');
CREATE INDEX IF NOT EXISTS outbox_provider_ids ON outbox USING gin (provider_ids);
CREATE INDEX IF NOT EXISTS outbox_status_created ON outbox (status, created_at DESC);
-- Receipts as they come (one per part): kept even when one overtakes the answer that named it.
CREATE TABLE IF NOT EXISTS sms_receipts (
    provider_id text PRIMARY KEY,
    delivered   boolean NOT NULL,
    status      text NOT NULL,
    at          timestamptz NOT NULL
);
"""

    def add(self, cur: Any, *, event_id: uuid.UUID | None, patient_id: str, phone_enc: str, phone_masked: str,
            phone_hash: str, template: str, text: str, intent_key: str | None = None, recipient: str = "patient",
            hospital_id: str | None = None, urgent: bool = False, not_before: datetime | None = None) -> bool:
        """Queue one message; False when its intent was queued before (nothing is added)."""
        message_id = uuid.uuid4()
        cur.execute(
            "INSERT INTO outbox (message_id, event_id, patient_id, phone_enc, phone_masked, phone_hash, template,"
            " text, intent_key, recipient, hospital_id, urgent, not_before, next_attempt_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), coalesce(%s, now()))"
            " ON CONFLICT (intent_key) DO NOTHING",
            (message_id, event_id, patient_id, phone_enc, phone_masked, phone_hash, template, text,
             intent_key or f"message:{message_id}", recipient, hospital_id, urgent, not_before, not_before),
        )
        return bool(cur.rowcount)

    def withdraw(self, cur: Any, patient_id: str, template: str, before: datetime) -> None:
        """Queued messages of `template` to the patient, due before `before`, are not to be sent."""
        cur.execute("UPDATE outbox SET status = 'withdrawn' WHERE patient_id = %s AND template = %s"
                    " AND status = 'queued' AND not_before < %s", (patient_id, template, before))

    # --- the dispatcher ----------------------------------------------------------------------

    def claim_due(self, cur: Any, now: datetime, limit: int, lease_s: int) -> list[tuple[str, str, str]]:
        """Due messages, urgent first, marked `sending` with a lease: (message_id, phone_enc, text).
        A row another replica holds is skipped; a `sending` row whose lease ran out is due again."""
        cur.execute(
            "UPDATE outbox SET status = 'sending', lease_until = %s + make_interval(secs => %s)"
            " WHERE message_id IN (SELECT message_id FROM outbox"
            "  WHERE status IN ('queued', 'sending') AND next_attempt_at <= %s AND not_before <= %s"
            "   AND (status = 'queued' OR lease_until < %s)"
            "  ORDER BY urgent DESC, next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING message_id, phone_enc, text, urgent, next_attempt_at",
            (now, lease_s, now, now, now, limit),
        )
        # RETURNING keeps no order: urgent first, then the longest waiting.
        rows = sorted(cur.fetchall(), key=lambda r: (not r[3], r[4]))
        return [(str(r[0]), r[1], r[2]) for r in rows]

    def sent(self, cur: Any, message_id: str, provider: str, provider_ids: Sequence[str], now: datetime) -> None:
        """Taken by the provider; a receipt that overtook this answer is applied at once."""
        cur.execute("UPDATE outbox SET status = 'sent', provider = %s, provider_ids = %s, sent_at = %s,"
                    " attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE message_id = %s",
                    (provider, list(provider_ids), now, message_id))
        self._apply_receipts(cur, "message_id = %s", (message_id,))

    def retry_later(self, cur: Any, message_id: str, reason: str, at: datetime, counted: bool) -> None:
        cur.execute("UPDATE outbox SET status = 'queued', next_attempt_at = %s, last_error = %s, lease_until = NULL,"
                    " attempts = attempts + %s WHERE message_id = %s", (at, reason[:500], int(counted), message_id))

    def park(self, cur: Any, message_id: str, reason: str, now: datetime) -> None:
        cur.execute("UPDATE outbox SET status = 'failed', failed_at = %s, last_error = %s, lease_until = NULL,"
                    " attempts = attempts + 1 WHERE message_id = %s", (now, reason[:500], message_id))

    def attempts_of(self, cur: Any, message_id: str) -> int:
        cur.execute("SELECT attempts FROM outbox WHERE message_id = %s", (message_id,))
        row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def requeue(self, cur: Any, message_id: str, now: datetime, not_before: datetime) -> bool:
        """The operator sends a failed message again: queued with a fresh count of attempts."""
        cur.execute("UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = %s, not_before = %s,"
                    " failed_at = NULL WHERE message_id = %s AND status = 'failed'", (now, not_before, message_id))
        return bool(cur.rowcount)

    def hospital_of(self, cur: Any, message_id: str) -> tuple[bool, str | None, bool]:
        """(found, its hospital, urgent)."""
        cur.execute("SELECT hospital_id, urgent FROM outbox WHERE message_id = %s", (message_id,))
        row = cur.fetchone()
        return (False, None, False) if row is None else (True, row[0], bool(row[1]))

    # --- receipts ----------------------------------------------------------------------------

    def receipt(self, cur: Any, provider_id: str, delivered: bool, status: str, at: datetime) -> None:
        cur.execute("INSERT INTO sms_receipts VALUES (%s, %s, %s, %s) ON CONFLICT (provider_id) DO UPDATE"
                    " SET delivered = EXCLUDED.delivered, status = EXCLUDED.status, at = EXCLUDED.at",
                    (provider_id, delivered, status, at))
        self._apply_receipts(cur, "provider_ids @> ARRAY[%s]::text[]", (provider_id,))

    def _apply_receipts(self, cur: Any, where: str, params: tuple[Any, ...]) -> None:
        """A sent message is delivered when every part's receipt says so; failed when one says
        it was not (undeliverable, expired, rejected)."""
        cur.execute(
            "WITH m AS (SELECT message_id, provider_ids FROM outbox WHERE status = 'sent' AND " + where + "),"
            " r AS (SELECT m.message_id, count(s.*) AS got, bool_and(s.delivered) AS ok, max(s.at) AS at,"
            "  cardinality(m.provider_ids) AS parts, string_agg(DISTINCT s.status, ',') AS statuses"
            "  FROM m JOIN sms_receipts s ON s.provider_id = ANY(m.provider_ids) GROUP BY m.message_id, m.provider_ids)"
            " UPDATE outbox o SET status = CASE WHEN r.ok THEN 'delivered' ELSE 'failed' END,"
            "  delivered_at = CASE WHEN r.ok THEN r.at END, failed_at = CASE WHEN r.ok THEN NULL ELSE r.at END,"
            "  receipt_status = r.statuses,"
            "  last_error = CASE WHEN r.ok THEN NULL ELSE 'receipt: ' || r.statuses END"
            " FROM r WHERE o.message_id = r.message_id AND (NOT r.ok OR r.got >= r.parts)",
            params,
        )

    # --- reading -----------------------------------------------------------------------------

    def latest(self, cur: Any, limit: int, phone_hash: str | None = None) -> list[dict[str, Any]]:
        """The newest messages first (of one number when `phone_hash` is given), with their text,
        for the development outbox page (no phone in clear)."""
        where = "WHERE phone_hash = %s " if phone_hash is not None else ""
        params = (phone_hash, limit) if phone_hash is not None else (limit,)
        cur.execute(f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox {where}ORDER BY created_at DESC LIMIT %s",
                    params)
        return [{k: _plain(k, v) for k, v in zip(_OUTBOX_COLUMNS, row, strict=True)} for row in cur.fetchall()]

    def messages(self, cur: Any, limit: int, status: str | None = None,
                 hospital_id: str | None = None) -> list[dict[str, Any]]:
        """Delivery states for the operator (no text: it may hold a code; no phone in clear)."""
        clauses, params = [], []
        if status:
            clauses.append("status = %s")
            params.append(status)
        if hospital_id:
            clauses.append("hospital_id = %s")
            params.append(hospital_id)
        where = ("WHERE " + " AND ".join(clauses) + " ") if clauses else ""
        cur.execute(f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM outbox {where}ORDER BY created_at DESC LIMIT %s",
                    (*params, limit))
        return [{k: _plain(k, v) for k, v in zip(_MESSAGE_COLUMNS, row, strict=True)} for row in cur.fetchall()]

    def backlog(self, cur: Any, now: datetime) -> dict[str, Any]:
        """For the health RPC: messages due and not sent yet (waiting; a reminder for tomorrow
        or a message held by quiet hours is not due), those given up (parked, failed in the last
        day), and the age of the oldest waiting one since it became due. Counts only."""
        cur.execute(
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'sending') AND not_before <= %s),"
            " count(*) FILTER (WHERE status = 'failed' AND failed_at > %s - interval '1 day'),"
            " extract(epoch FROM %s - min(greatest(created_at, not_before))"
            "   FILTER (WHERE status IN ('queued', 'sending') AND not_before <= %s))"
            " FROM outbox WHERE status IN ('queued', 'sending', 'failed')", (now, now, now, now))
        waiting, parked, oldest = cur.fetchone()
        return {"waiting": int(waiting), "parked": int(parked),
                "oldest_waiting_s": round(max(0.0, float(oldest or 0)), 1)}

    def counts(self, cur: Any, since: datetime, until: datetime,
               hospital_id: str | None = None) -> list[dict[str, Any]]:
        """Messages created in [since, until) by template and state, for the analyst."""
        extra = " AND hospital_id = %s" if hospital_id else ""
        cur.execute("SELECT template, status, count(*) FROM outbox WHERE created_at >= %s AND created_at < %s"
                    + extra + " GROUP BY template, status ORDER BY template, status",
                    (since, until, hospital_id) if hospital_id else (since, until))
        return [{"template": t, "status": s, "count": int(n)} for t, s, n in cur.fetchall()]


def _plain(key: str, value: Any) -> Any:
    """A column as an RPC answer carries it: times as ISO strings, the id as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if key == "message_id" else value


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
HOSPITALS = Hospitals()
DOCTORS = Doctors()
APPOINTMENTS = Appointments()
# Each patient's contact as booking gave it, sealed (encrypted phone, masked, keyed hash, locale):
# asked once per patient, not once per booking (handlers._contact).
CONTACTS = JsonMemory("patient_contacts", "patient_id")
SMS_OUTBOX = SmsOutbox()
VERIFICATION_CODES = VerificationCodes()
SCHEMA = (NAMES.schema + HOSPITALS.schema + DOCTORS.schema + APPOINTMENTS.schema + SMS_OUTBOX.schema
          + VERIFICATION_CODES.schema + CONTACTS.schema)
