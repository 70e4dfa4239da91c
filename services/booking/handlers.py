"""Booking handlers: load -> decide -> append, and reactions to other services' events."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from typing import Any

import psycopg2.errors

from contracts import (
    AppointmentBooked,
    BookAppointment,
    BookingAnswer,
    Conflict,
    Envelope,
    NotFound,
    PatientRegistered,
    RegisterPatient,
)
from infra.db import Database
from infra.eventstore import EventStore, WrongExpectedVersion, idempotent_event_id, new_envelope
from infra.handling import claim
from infra.logging import mask_id, mask_phone
from infra.pii import PiiVault
from services.booking import domain, readmodel

SOURCE = "booking"
_PATIENT_NS = uuid.UUID("2b8f1c52-9a0e-4f7d-8a61-3c5e0b9d4f27")


class LedgerCache:
    """The ledgers this process has seen, refreshed from the store by reading only what is new.

    A per-session lock makes the attempts of one process take turns, so its own requests do not
    conflict with each other; other replicas are kept out by the expected-version check.
    """

    def __init__(self) -> None:
        self._ledgers: dict[str, domain.Ledger] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def lock(self, session_id: str) -> threading.Lock:
        return self._locks[session_id]

    def refresh(self, store: EventStore, session_id: str) -> domain.Ledger:
        ledger = self._ledgers.setdefault(session_id, domain.Ledger())
        for ev in store.read_stream(domain.ledger_stream(session_id), ledger.version + 1):
            ledger.apply(ev)
        return ledger


def register_patient(store: EventStore, db: Database, vault: PiiVault, cmd: RegisterPatient) -> dict[str, Any]:
    rid = domain.parse_resident_id(cmd.id_number)
    patient_id = str(uuid.uuid5(_PATIENT_NS, vault.lookup_hash(rid.number)))
    event = PatientRegistered(
        patient_id=patient_id, id_masked=mask_id(rid.number), phone_masked=mask_phone(cmd.phone),
        birth_date=rid.birth_date.isoformat(), sex=rid.sex,
    )
    try:
        with db.transaction() as cur:
            cur.execute(
                "INSERT INTO patients (patient_id, id_hash, phone_hash, name_enc, id_enc, phone_enc, id_masked,"
                " phone_masked, birth_date, sex) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (patient_id, vault.lookup_hash(rid.number), vault.lookup_hash(cmd.phone), vault.encrypt(cmd.name),
                 vault.encrypt(rid.number), vault.encrypt(cmd.phone), event.id_masked, event.phone_masked,
                 rid.birth_date, rid.sex),
            )
    except psycopg2.errors.UniqueViolation:
        # Registered before: either a repeat of this command (answer the same) or someone else.
        if store.get_event(idempotent_event_id("register_patient", cmd.idempotency_key)) is None:
            if store.stream_version(f"patient-{patient_id}") > 0:
                raise Conflict("该身份证号已注册 / this resident ID is already registered",
                               field="id_number", code="already_registered") from None
    stream = f"patient-{patient_id}"
    if store.stream_version(stream) == 0:
        env = new_envelope(event, stream, SOURCE, cmd.correlation_id, actor=cmd.actor,
                           event_id=idempotent_event_id("register_patient", cmd.idempotency_key))
        try:
            store.append_to(stream, 0, env)
        except WrongExpectedVersion:
            pass  # a concurrent repeat stored it
    return {"patient_id": patient_id, "id_masked": event.id_masked, "phone_masked": event.phone_masked}


def book_appointment(store: EventStore, db: Database, cache: LedgerCache, cmd: BookAppointment,
                     attempts: int = 50) -> BookingAnswer:
    event_id = idempotent_event_id(f"book:{cmd.patient_id}", cmd.idempotency_key)
    if (prior := store.get_event(event_id)) is not None:
        return _answer(prior.data)
    with db.transaction() as cur:
        session = readmodel.session_info(cur, cmd.session_id)
        known_patient = readmodel.patient_exists(cur, cmd.patient_id)
    if not known_patient:
        raise NotFound("患者不存在 / unknown patient", field="patient_id")
    stream = domain.ledger_stream(cmd.session_id)
    with cache.lock(cmd.session_id):
        for _ in range(attempts):
            ledger = cache.refresh(store, cmd.session_id)
            event = domain.book(cmd, session, ledger, appointment_id=str(uuid.uuid4()), code=domain.new_code())
            env = new_envelope(event, stream, SOURCE, cmd.correlation_id, actor=cmd.actor, event_id=event_id)
            try:
                result = store.append_to(stream, ledger.version, env)
            except WrongExpectedVersion:
                continue  # another replica booked in between: read the news and decide again
            stored = result.events[0]
            return _answer(stored.data)
    raise Conflict("系统繁忙，请重试 / too much contention, try again", code="busy")


def on_session_scheduled(db: Database, consumer: str, env: Envelope) -> bool:
    with db.transaction() as cur:
        if not claim(cur, consumer, env.event_id):
            return False
        readmodel.store_session(cur, env.data)
    return True


def _answer(data: dict[str, Any]) -> BookingAnswer:
    booked = AppointmentBooked.model_validate(data)
    return BookingAnswer(
        appointment_id=booked.appointment_id, code=booked.code, sequence_number=booked.sequence_number,
        session_id=booked.session_id,
    )


def patient_contact(db: Database, vault: PiiVault, patient_id: str) -> dict[str, str]:
    """The clear phone number, for the SMS sender only."""
    with db.transaction() as cur:
        cur.execute("SELECT phone_enc, phone_masked FROM patients WHERE patient_id = %s", (patient_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFound("患者不存在 / unknown patient", field="patient_id")
    return {"phone": vault.decrypt(row[0]), "phone_masked": row[1]}
