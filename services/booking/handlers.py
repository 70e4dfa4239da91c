"""Booking handlers: load -> decide -> append, and reactions to other services' events.

Every lifecycle change is one atomic append to two streams: the session's ledger (its expected
version guards the quota) and the patient's own stream (its expected version guards the
per-patient limits). A version conflict means someone else changed one of them in between: the
decision is taken again on the new state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg2.errors
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from contracts import (
    SYSTEM,
    Actor,
    AppointmentBooked,
    BookAppointment,
    BookingAnswer,
    CancelAppointment,
    CheckInAppointment,
    Conflict,
    DomainError,
    Envelope,
    Event,
    InvalidInput,
    NotFound,
    PatientRegistered,
    PhoneBookingsHandedOver,
    RegisterPatient,
    SessionFull,
)
from infra.blocking import off_hub
from infra.db import Database
from infra.eventstore import EventStore, WrongExpectedVersion, idempotent_event_id, new_envelope
from infra.handling import claim
from infra.logging import mask_id, mask_phone
from infra.pii import PiiVault
from services.booking import domain, readmodel

SOURCE = "booking"
_PATIENT_NS = uuid.UUID("2b8f1c52-9a0e-4f7d-8a61-3c5e0b9d4f27")
# OWASP's argon2id minimum (19 MiB, t=2, p=1): ~15 ms a hash, run off the eventlet hub.
_passwords = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
FULL_ANSWER_FRESH_SECONDS = 0.5


@dataclass
class _Cached:
    ledger: domain.Ledger
    refreshed: float = 0.0


class LedgerCache:
    """The ledgers this process has seen, refreshed from the store by reading only what is new.

    A per-session lock makes the attempts of one process take turns, so its own requests do not
    conflict with each other; other replicas are kept out by the expected-version check. A
    ledger read less than FULL_ANSWER_FRESH_SECONDS ago that shows the channel full answers
    "full" without a database round trip: staleness can only hide a slot freed in that instant,
    never create one, so it cannot overbook.
    """

    def __init__(self) -> None:
        self._ledgers: dict[str, _Cached] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def lock(self, session_id: str) -> threading.Lock:
        return self._locks[session_id]

    def refresh(self, store: EventStore, session_id: str) -> domain.Ledger:
        cached = self._ledgers.setdefault(session_id, _Cached(domain.Ledger()))
        for ev in store.read_stream(domain.ledger_stream(session_id), cached.ledger.version + 1):
            cached.ledger.apply(ev)
        cached.refreshed = time.monotonic()
        return cached.ledger

    def known_full(self, session_id: str, channel: str, quota: dict[str, int]) -> bool:
        cached = self._ledgers.get(session_id)
        if cached is None or time.monotonic() - cached.refreshed > FULL_ANSWER_FRESH_SECONDS:
            return False
        return cached.ledger.booked(channel) >= quota.get(channel, 0)


def load_patient(store: EventStore, patient_id: str) -> domain.PatientRecord:
    record = domain.PatientRecord()
    for ev in store.read_stream(domain.patient_stream(patient_id)):
        record.apply(ev)
    return record


# --- patients ---------------------------------------------------------------------------------

def register_patient(store: EventStore, db: Database, vault: PiiVault, cmd: RegisterPatient,
                     phone_max_patients: int = 3) -> dict[str, Any]:
    rid = domain.parse_resident_id(cmd.id_number)
    validate_password(cmd.password)
    patient_id = str(uuid.uuid5(_PATIENT_NS, vault.lookup_hash(rid.number)))
    event = PatientRegistered(
        patient_id=patient_id, id_masked=mask_id(rid.number), phone_masked=mask_phone(cmd.phone),
        birth_date=rid.birth_date.isoformat(), sex=rid.sex, guardian_patient_id=cmd.guardian_patient_id,
    )
    password_hash = off_hub(_passwords.hash, cmd.password) if cmd.password else None
    created = False
    try:
        with db.transaction() as cur:
            if cmd.guardian_patient_id is not None:
                cur.execute("SELECT phone_hash FROM patients WHERE patient_id = %s", (cmd.guardian_patient_id,))
                if cur.fetchone() is None:
                    raise NotFound("监护人不存在 / unknown guardian", field="guardian_patient_id")
            # Serialise registrations of one phone number, then count: at most K patients per phone.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (vault.lookup_hash(cmd.phone),))
            cur.execute("SELECT count(*) FROM patients WHERE phone_hash = %s AND id_hash <> %s",
                        (vault.lookup_hash(cmd.phone), vault.lookup_hash(rid.number)))
            if cur.fetchone()[0] >= phone_max_patients:
                raise Conflict(f"该手机号已绑定 {phone_max_patients} 位就诊人 / this mobile number already serves "
                               f"{phone_max_patients} patients", field="phone", code="phone_limit")
            cur.execute(
                "INSERT INTO patients (patient_id, id_hash, phone_hash, name_enc, id_enc, phone_enc, id_masked,"
                " phone_masked, birth_date, sex, password_hash, guardian_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (patient_id, vault.lookup_hash(rid.number), vault.lookup_hash(cmd.phone), vault.encrypt(cmd.name),
                 vault.encrypt(rid.number), vault.encrypt(cmd.phone), event.id_masked, event.phone_masked,
                 rid.birth_date, rid.sex, password_hash, cmd.guardian_patient_id),
            )
        created = True
    except psycopg2.errors.UniqueViolation:
        # Registered before: either a repeat of this command (answer the same) or someone else.
        if store.get_event(idempotent_event_id("register_patient", cmd.idempotency_key)) is None:
            if store.stream_version(domain.patient_stream(patient_id)) > 0:
                raise Conflict("该身份证号已注册 / this resident ID is already registered",
                               field="id_number", code="already_registered") from None
    stream = domain.patient_stream(patient_id)
    if store.stream_version(stream) == 0:
        env = new_envelope(event, stream, SOURCE, cmd.correlation_id, actor=cmd.actor,
                           event_id=idempotent_event_id("register_patient", cmd.idempotency_key))
        try:
            store.append_to(stream, 0, env)
        except WrongExpectedVersion:
            pass  # a concurrent repeat stored it
    # `created` is False for a repeat of the command: the same patient, but the caller proved
    # nothing new, so the gateway opens no login session on it.
    return {"patient_id": patient_id, "id_masked": event.id_masked, "phone_masked": event.phone_masked,
            "created": created}


def authenticate_patient(db: Database, vault: PiiVault, username: str, password: str) -> dict[str, Any]:
    """Login by mobile number or resident ID. The same answer for an unknown user and a wrong password."""
    key = vault.lookup_hash(username.strip())
    with db.transaction() as cur:
        cur.execute(
            "SELECT patient_id, password_hash, id_masked, name_enc FROM patients WHERE id_hash = %s "
            "UNION ALL SELECT patient_id, password_hash, id_masked, name_enc FROM patients "
            "WHERE phone_hash = %s AND guardian_id IS NULL AND password_hash IS NOT NULL",
            (key, key),
        )
        rows = cur.fetchall()
    for patient_id, password_hash, id_masked, name_enc in rows:
        if not password_hash:
            continue
        try:
            off_hub(_passwords.verify, password_hash, password)
        except (VerifyMismatchError, InvalidHashError):
            continue
        return {"patient_id": patient_id, "id_masked": id_masked, "name": vault.decrypt(name_enc)}
    raise NotFound("用户名或密码错误 / wrong username or password", field="username", code="bad_credentials")


def find_patient(db: Database, vault: PiiVault, id_number: str) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute("SELECT patient_id, id_masked, phone_masked, name_enc FROM patients WHERE id_hash = %s",
                    (vault.lookup_hash(id_number.strip().upper()),))
        row = cur.fetchone()
    if row is None:
        raise NotFound("未找到该身份证号的患者 / no patient with this resident ID", field="id_number")
    return {"patient_id": row[0], "id_masked": row[1], "phone_masked": row[2], "name": vault.decrypt(row[3])}


def patient_contact(db: Database, vault: PiiVault, patient_id: str) -> dict[str, str]:
    """The clear phone number, for the SMS sender only."""
    with db.transaction() as cur:
        cur.execute("SELECT phone_enc, phone_masked FROM patients WHERE patient_id = %s", (patient_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFound("患者不存在 / unknown patient", field="patient_id")
    return {"phone": vault.decrypt(row[0]), "phone_masked": row[1]}


# --- the lifecycle ----------------------------------------------------------------------------

def book_appointment(store: EventStore, db: Database, cache: LedgerCache, cmd: BookAppointment, now: datetime,
                     attempts: int = 50) -> BookingAnswer:
    event_id = idempotent_event_id(f"book:{cmd.patient_id}", cmd.idempotency_key)
    with db.transaction() as cur:
        session = readmodel.session_info(cur, cmd.session_id)
        rules = readmodel.hospital_rules(cur, session.hospital_id) if session else None
    # A repeated command is recognised by its event id: looked up only when the decision says
    # no (a repeat of a success finds its patient already booked), or found by the append.
    def repeat_or(error: DomainError) -> BookingAnswer:
        if (prior := store.get_event(event_id)) is not None:
            return _answer(prior.data)
        raise error

    # The sold-out fast path: no store read, no lock wait (see LedgerCache).
    if session is not None and cache.known_full(cmd.session_id, cmd.channel, session.quota):
        return repeat_or(SessionFull("该出诊已约满 / this session is full", field="session_id"))
    if session is None or rules is None:
        return repeat_or(NotFound(f"出诊 {cmd.session_id} 不存在 / unknown session", field="session_id"))
    ledger_name = domain.ledger_stream(cmd.session_id)
    patient_name = domain.patient_stream(cmd.patient_id)
    with cache.lock(cmd.session_id):
        for _ in range(attempts):
            ledger = cache.refresh(store, cmd.session_id)
            patient = load_patient(store, cmd.patient_id)
            try:
                booked, change = domain.book(cmd, session, ledger, patient, rules, now,
                                             appointment_id=str(uuid.uuid4()), code=domain.new_code())
            except DomainError as refusal:
                return repeat_or(refusal)
            try:
                result = store.append({
                    ledger_name: (ledger.version, [_env(booked, ledger_name, cmd.correlation_id, cmd.actor,
                                                        event_id)]),
                    patient_name: (patient.version, [_env(change, patient_name, cmd.correlation_id, cmd.actor,
                                                          uuid.uuid5(event_id, "patient"))]),
                })
            except WrongExpectedVersion:
                continue  # another replica, or this patient elsewhere, changed a stream: decide again
            stored = next(e for e in result.events if e.type == "AppointmentBooked")
            with db.transaction() as cur:
                readmodel.record_booked(cur, stored.data)
            return _answer(stored.data)
    raise Conflict("系统繁忙，请重试 / too much contention, try again", code="busy")


def cancel_appointment(store: EventStore, db: Database, cache: LedgerCache, cmd: CancelAppointment,
                       now: datetime) -> dict[str, Any]:
    def decide(session: domain.SessionInfo, ledger: domain.Ledger) -> list[Event]:
        booking = ledger.bookings.get(cmd.appointment_id)
        if booking is None and cmd.actor.kind == "patient":
            raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
        return list(domain.cancel(booking, session, cmd.actor, now))

    events = _change_appointment(store, db, cache, cmd.appointment_id, cmd.idempotency_key, "cancel",
                                 cmd.correlation_id, cmd.actor, decide)
    cancelled = events[0].data
    return {"appointment_id": cmd.appointment_id, "status": "cancelled", "refund_due": cancelled.get("refund_due")}


def check_in(store: EventStore, db: Database, vault: PiiVault, cache: LedgerCache, cmd: CheckInAppointment,
             now: datetime) -> dict[str, Any]:
    with db.transaction() as cur:
        found = readmodel.appointment_by_code(cur, cmd.code)
        id_hash = None
        if found is not None:
            cur.execute("SELECT id_hash FROM patients WHERE patient_id = %s", (found["patient_id"],))
            row = cur.fetchone()
            id_hash = row[0] if row else None
    if found is None:
        raise NotFound("预约码不存在 / unknown booking code", field="code")
    matches = id_hash is not None and id_hash == vault.lookup_hash(cmd.id_number.strip().upper())

    def decide(session: domain.SessionInfo, ledger: domain.Ledger) -> list[Event]:
        return list(domain.check_in(ledger.bookings.get(found["appointment_id"]), session, cmd.actor, matches, now))

    events = _change_appointment(store, db, cache, found["appointment_id"], cmd.idempotency_key, "check_in",
                                 cmd.correlation_id, cmd.actor, decide)
    d = events[0].data
    return {"appointment_id": d["appointment_id"], "status": "checked_in", "fee_taken": d["fee_taken"]}


def lapse_due(store: EventStore, db: Database, cache: LedgerCache, now: datetime,
              no_show_rules: domain.NoShowRules) -> int:
    """The no-show timer: every active booking past its lapse time becomes no_show (once, even
    with several replicas running the timer: the event id comes from the appointment id)."""
    with db.transaction() as cur:
        due = readmodel.due_for_lapse(cur, now)
    lapsed = 0
    for appointment_id, session_id in due:
        try:
            lapsed += _lapse_one(store, db, cache, appointment_id, session_id, now, no_show_rules)
        except WrongExpectedVersion:
            continue  # picked up again on the next tick
    return lapsed


def _lapse_one(store: EventStore, db: Database, cache: LedgerCache, appointment_id: str, session_id: str,
               now: datetime, rules: domain.NoShowRules) -> int:
    with db.transaction() as cur:
        session = readmodel.session_info(cur, session_id)
    if session is None:
        return 0
    with cache.lock(session_id):
        ledger = cache.refresh(store, session_id)
        booking = ledger.bookings.get(appointment_id)
        decided = domain.lapse(booking, session, now) if booking else None
        if decided is None:
            return 0
        lapsed, change = decided
        patient = load_patient(store, booking.patient_id)  # type: ignore[union-attr]
        today = now.astimezone(domain.HOSPITAL_TZ).date()
        ban = domain.ban_after_no_show(lapsed.patient_id, patient, date.fromisoformat(session.date), today, rules)
        eid = idempotent_event_id("lapse", appointment_id)
        patient_events = [_env(change, domain.patient_stream(lapsed.patient_id), None, SYSTEM, uuid.uuid5(eid, "p"))]
        if ban is not None:
            patient_events.append(_env(ban, domain.patient_stream(lapsed.patient_id), None, SYSTEM,
                                       uuid.uuid5(eid, "ban")))
        result = store.append({
            domain.ledger_stream(session_id): (ledger.version, [_env(lapsed, domain.ledger_stream(session_id), None,
                                                                      SYSTEM, eid)]),
            domain.patient_stream(lapsed.patient_id): (patient.version, patient_events),
        })
    return 0 if result.duplicate else 1


def hand_over_phone_bookings(store: EventStore, db: Database, hospital_id: str, visit_date: date) -> dict[str, Any]:
    """The next day's paid phone bookings of one hospital, as one event for the HIS side (once)."""
    with db.transaction() as cur:
        rows = readmodel.paid_phone_bookings(cur, hospital_id, visit_date.isoformat())
    event = PhoneBookingsHandedOver(
        hospital_id=hospital_id, visit_date=visit_date.isoformat(),
        appointments=[{"appointment_id": r["appointment_id"], "code": r["code"], "session_id": r["session_id"],
                       "sequence_number": r["sequence_number"], "patient_id": r["patient_id"], "fee": r["fee"]}
                      for r in rows],
    )
    stream = f"handover-{hospital_id}-{visit_date.isoformat()}"
    try:
        result = store.append_to(stream, 0, _env(event, stream, None, SYSTEM, None))
    except WrongExpectedVersion:
        return {"hospital_id": hospital_id, "visit_date": visit_date.isoformat(), "already": True}
    return {"hospital_id": hospital_id, "visit_date": visit_date.isoformat(), "count": len(rows),
            "position": result.last_position}


# --- reactions to schedule --------------------------------------------------------------------

def on_session_scheduled(db: Database, consumer: str, env: Envelope) -> bool:
    with db.transaction() as cur:
        if not claim(cur, consumer, env.event_id):
            return False
        readmodel.store_session(cur, env.data)
    return True


def on_session_quota_changed(db: Database, consumer: str, env: Envelope) -> None:
    with db.transaction() as cur:
        if not claim(cur, consumer, env.event_id):
            return
        if not readmodel.change_quota(cur, env.data["session_id"], env.data["quota"]):
            raise LookupError(f"quota change for session {env.data['session_id']} arrived before the session")


def on_hospital_rules(db: Database, consumer: str, env: Envelope) -> None:
    with db.transaction() as cur:
        if claim(cur, consumer, env.event_id):
            readmodel.store_hospital_rules(cur, env.data["hospital_id"], env.data.get("rules") or {})


def on_doctor_stop_approved(store: EventStore, db: Database, cache: LedgerCache, env: Envelope) -> dict[str, Any]:
    """Move the stopped session's bookings to the replacement or cancel them: one atomic append
    whose first event id comes from the stop id, so a redelivery (or a replica racing this one)
    finds it stored and changes nothing, and a crash half-way leaves nothing half-done."""
    d = env.data
    marker_id = idempotent_event_id("doctor_stop", d["stop_id"])
    if store.get_event(marker_id) is not None:
        return {"already": True}
    with db.transaction() as cur:
        session = readmodel.session_info(cur, d["session_id"])
        replacement = readmodel.session_info(cur, d["replacement_session_id"]) if d.get("replacement_session_id") \
            else None
    if session is None:
        raise LookupError(f"doctor stop for session {d['session_id']} arrived before the session")
    if d.get("replacement_session_id") and replacement is None:
        raise LookupError(f"replacement session {d['replacement_session_id']} not known yet")  # retried
    for _ in range(20):
        with cache.lock(session.session_id):
            ledger = cache.refresh(store, session.session_id)
            repl_ledger = cache.refresh(store, replacement.session_id) if replacement else None
            outcome = domain.apply_stop(d["stop_id"], session, ledger, replacement, repl_ledger)
            old = domain.ledger_stream(session.session_id)
            appends: dict[str, tuple[int | None, list[Envelope]]] = {
                old: (ledger.version, [_env(e, old, env.correlation_id, SYSTEM, marker_id if i == 0 else None,
                                            causation=str(env.event_id))
                                       for i, e in enumerate(outcome.stopped_events)]),
            }
            if replacement is not None and repl_ledger is not None and outcome.replacement_events:
                new = domain.ledger_stream(replacement.session_id)
                appends[new] = (repl_ledger.version, [_env(e, new, env.correlation_id, SYSTEM, None,
                                                           causation=str(env.event_id))
                                                      for e in outcome.replacement_events])
            for change in outcome.patient_changes:
                ps = domain.patient_stream(change.patient_id)
                appends.setdefault(ps, (None, []))[1].append(
                    _env(change, ps, env.correlation_id, SYSTEM, None, causation=str(env.event_id)))
            try:
                result = store.append(appends)
            except WrongExpectedVersion:
                continue
        with db.transaction() as cur:
            cur.execute("UPDATE sessions SET stopped = true WHERE session_id = %s", (session.session_id,))
        marker = outcome.stopped_events[0]
        return {"duplicate": result.duplicate, "moved": marker.moved, "cancelled": marker.cancelled}
    raise Conflict("停诊处理冲突过多 / doctor stop kept conflicting", code="busy")


# --- helpers ------------------------------------------------------------------------------------

def _change_appointment(store: EventStore, db: Database, cache: LedgerCache, appointment_id: str, key: str,
                        scope: str, correlation_id: str | None, actor: Actor, decide: Any) -> list[Envelope]:
    event_id = idempotent_event_id(f"{scope}:{appointment_id}", key)
    if (prior := store.get_event(event_id)) is not None:
        return [prior]
    with db.transaction() as cur:
        found = readmodel.appointment(cur, appointment_id)
        session = readmodel.session_info(cur, found["session_id"]) if found else None
    if found is None or session is None:
        raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
    ledger_name = domain.ledger_stream(session.session_id)
    for _ in range(20):
        with cache.lock(session.session_id):
            ledger = cache.refresh(store, session.session_id)
            event, change = decide(session, ledger)
            patient = load_patient(store, change.patient_id)
            patient_name = domain.patient_stream(change.patient_id)
            try:
                result = store.append({
                    ledger_name: (ledger.version, [_env(event, ledger_name, correlation_id, actor, event_id)]),
                    patient_name: (patient.version, [_env(change, patient_name, correlation_id, actor,
                                                          uuid.uuid5(event_id, "patient"))]),
                })
            except WrongExpectedVersion:
                continue
        return [e for e in result.events if e.stream == ledger_name]
    raise Conflict("系统繁忙，请重试 / too much contention, try again", code="busy")


def _env(event: Event, stream: str, correlation_id: str | None, actor: Actor, event_id: uuid.UUID | None,
         causation: str | None = None) -> Envelope:
    return new_envelope(event, stream, SOURCE, correlation_id, causation_id=causation, actor=actor,
                        event_id=event_id)


def _answer(data: dict[str, Any]) -> BookingAnswer:
    booked = AppointmentBooked.model_validate(data)
    return BookingAnswer(
        appointment_id=booked.appointment_id, code=booked.code, sequence_number=booked.sequence_number,
        session_id=booked.session_id, arrival_window=booked.arrival_window, channel=booked.channel,
        paid=booked.paid,
    )


def validate_password(password: str | None) -> None:
    if password is not None and (password.isdigit() or len(set(password)) < 4):
        raise InvalidInput("密码过于简单 / password is too simple", field="password")
