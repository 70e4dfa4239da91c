"""Booking's application layer: every command and reaction in the `APP` table, each run through
the kernel's unit of work (infra.unit_of_work): load → decide (domain.py) → append → answer.

Every lifecycle change is one atomic append to two streams: the session's ledger (its expected
version guards the quota) and the patient's own stream (its expected version guards the
per-patient limits). A version conflict means someone else changed one of them in between: the
kernel decides again on the new state. Dependencies come in by parameter name: `store`,
`readmodel` (readmodel.BookingReadModel, or a fake in unit tests), `vault`, `cache`, `now`,
`settings`, `passwords` (infra.passwords.Passwords).
"""

from __future__ import annotations

import hmac
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from contracts import (
    Actor,
    AppointmentBooked,
    BookAppointment,
    BookingAnswer,
    BookingRules,
    CancelAppointment,
    CheckInAppointment,
    Conflict,
    DoctorStopApproved,
    DomainError,
    Envelope,
    Event,
    Forbidden,
    HandOverPhoneBookings,
    LapseDueAppointments,
    NotFound,
    PatientPasswordReplaced,
    PatientRegistered,
    PatientRegistrationRefused,
    PhoneBookingsHandedOver,
    RefundAtWindow,
    RegisterPatient,
    ResetPatientPassword,
    SessionFull,
    invalid_from_validation,
    to_wire,
)
from infra.application import Application, dependency
from infra.decisions import World
from infra.eventstore import EventStore, idempotent_event_id
from infra.logging import mask_id, mask_phone
from infra.passwords import Passwords, check_password, patient_login
from infra.pii import PiiVault
from infra.unit_of_work import Outcome, execute, repeat_or_raise, repeat_or_refuse
from services.booking import domain

SOURCE = "booking"
APP = Application(SOURCE)
_PATIENT_NS = uuid.UUID("2b8f1c52-9a0e-4f7d-8a61-3c5e0b9d4f27")
FULL_ANSWER_FRESH_SECONDS = 0.5
_Item = tuple[int, BookAppointment]  # a batch's command and its place in the batch
_Answered = tuple[int, dict[str, Any]]


class ReadModel(Protocol):
    """What the handlers read (readmodel.BookingReadModel; a fake in unit tests)."""

    def caught_up(self, position: int, timeout: float = 10.0) -> bool: ...
    def session_and_rules(self, session_id: str) -> tuple[domain.SessionInfo | None, BookingRules]: ...
    def session_info(self, session_id: str) -> domain.SessionInfo | None: ...
    def sessions_info(self, session_ids: list[str]) -> dict[str, domain.SessionInfo]: ...
    def appointment(self, appointment_id: str) -> dict[str, Any] | None: ...
    def appointment_by_code(self, code: str) -> dict[str, Any] | None: ...
    def due_for_lapse(self, now: datetime, limit: int = 500, backfill: bool = False) -> list[tuple[str, str]]: ...
    def paid_phone_bookings(self, hospital_id: str, visit_date: str) -> list[dict[str, Any]]: ...
    def session_list(self, session_id: str) -> list[dict[str, Any]]: ...
    def add_patient(self, row: dict[str, Any], phone_max_patients: int) -> bool: ...
    def login_candidates(self, lookup_hash: str) -> list[tuple[str, str | None, str, str]]: ...
    def patient_by_id_hash(self, id_hash: str) -> dict[str, Any] | None: ...
    def has_booking_at(self, patient_id: str, hospital_id: str) -> bool: ...
    def password_hash(self, patient_id: str) -> str | None: ...
    def set_password(self, patient_id: str, password_hash: str) -> None: ...
    def patient_phone(self, patient_id: str) -> tuple[str, str, str] | None: ...

    def patient_identity(self, patient_id: str) -> dict[str, Any] | None: ...
    def window_row_by_code(self, code: str) -> dict[str, Any] | None: ...
    def window_rows_of_patient(self, patient_id: str, hospital_id: str) -> list[dict[str, Any]]: ...
    def hospital_day_rows(self, hospital_id: str, day: str, department_id: str | None = None,
                          doctor_id: str | None = None) -> list[dict[str, Any]]: ...


@dataclass
class _Cached:
    events: list[Envelope] = field(default_factory=list)
    ledger: domain.Ledger = field(default_factory=domain.Ledger)
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

    def events(self, store: EventStore, session_id: str) -> list[Envelope]:
        cached = self._ledgers.setdefault(session_id, _Cached())
        return self._take(session_id, store.read_stream(domain.ledger_stream(session_id), cached.ledger.version + 1))

    def _next_version(self, session_id: str) -> int:
        return self._ledgers.setdefault(session_id, _Cached()).ledger.version + 1

    def _take(self, session_id: str, tail: Sequence[Envelope]) -> list[Envelope]:
        """Add a ledger's events read from the version after the cached head."""
        cached = self._ledgers.setdefault(session_id, _Cached())
        for ev in tail:
            # Two refreshes of one session may interleave (availability reads without the lock):
            # each event is taken once, in version order.
            if ev.version == cached.ledger.version + 1:
                cached.events.append(ev)
                cached.ledger.apply(ev)
        cached.refreshed = time.monotonic()
        return cached.events  # the World copies what it loads; callers do not change this list

    def refresh(self, store: EventStore, session_id: str) -> domain.Ledger:
        self.events(store, session_id)
        return self._ledgers[session_id].ledger

    def fresh(self, session_id: str) -> bool:
        cached = self._ledgers.get(session_id)
        return cached is not None and time.monotonic() - cached.refreshed <= FULL_ANSWER_FRESH_SECONDS

    def known_full(self, session_id: str, channel: str, quota: dict[str, int]) -> bool:
        cached = self._ledgers.get(session_id)
        if cached is None or time.monotonic() - cached.refreshed > FULL_ANSWER_FRESH_SECONDS:
            return False
        return cached.ledger.booked(channel) >= quota.get(channel, 0)

    def freed(self, session_id: str) -> None:
        """A place may have been freed here: the next booking reads the ledger, not the cache."""
        cached = self._ledgers.get(session_id)
        if cached is not None:
            cached.refreshed = 0.0

    def loader(self, store: EventStore) -> Any:
        """The unit of work's `load`: all streams in one read, the ledgers only from their cached
        head on (a booking read its ledger's tail and the patient's stream in two round trips)."""
        def load(streams: Sequence[str]) -> Mapping[str, Sequence[Any]]:
            ledgers = {stream: stream[len("ledger-"):] for stream in streams if stream.startswith("ledger-")}
            got = store.read_streams(list(streams), from_versions={
                stream: self._next_version(session_id) for stream, session_id in ledgers.items()})
            return {stream: self._take(ledgers[stream], got[stream]) if stream in ledgers else got[stream]
                    for stream in streams}
        return load


# --- patients ---------------------------------------------------------------------------------

@APP.command(RegisterPatient)
def register_patient(cmd: RegisterPatient, store: EventStore, readmodel: ReadModel, vault: PiiVault,
                     settings: Any, passwords: Passwords) -> dict[str, Any]:
    rid = domain.parse_resident_id(cmd.id_number)
    validate_password(cmd.password)
    id_hash = vault.lookup_hash(rid.number)
    key_id = idempotent_event_id("register_patient", cmd.idempotency_key)
    # A new patient's id comes from the ID's lookup hash (concurrent registrations of one ID meet on
    # it); an existing patient keeps the id stored with the row, which a key rotation never changes.
    existing = readmodel.patient_by_id_hash(id_hash)
    patient_id = existing["patient_id"] if existing else str(uuid.uuid5(_PATIENT_NS, id_hash))
    event = PatientRegistered(
        patient_id=patient_id, id_masked=mask_id(rid.number), phone_masked=mask_phone(cmd.phone),
        birth_date=rid.birth_date.isoformat(), sex=rid.sex, guardian_patient_id=cmd.guardian_patient_id,
    )
    created = False
    if existing is None:
        password_hash = passwords.hash(cmd.password) if cmd.password else None
        created = readmodel.add_patient({
            "patient_id": patient_id, "id_hash": id_hash, "phone_hash": vault.lookup_hash(cmd.phone),
            "name_enc": vault.encrypt(cmd.name), "id_enc": vault.encrypt(rid.number),
            "phone_enc": vault.encrypt(cmd.phone), "id_masked": event.id_masked, "phone_masked": event.phone_masked,
            "birth_date": rid.birth_date, "sex": rid.sex, "password_hash": password_hash,
            "guardian_id": cmd.guardian_patient_id,
            "locale": cmd.locale,
        }, settings.phone_max_patients)
        if not created:  # a concurrent registration of the same ID stored its row first
            existing = readmodel.patient_by_id_hash(id_hash)
            patient_id = existing["patient_id"] if existing else patient_id
            event = event.model_copy(update={"patient_id": patient_id})
    stream = domain.patient_stream(patient_id)
    if not created and existing is not None:
        prior = store.get_event(key_id)
        repeat = prior is not None and prior.type == "PatientRegistered" and prior.data["patient_id"] == patient_id
        # A row whose stream is still empty is a registration cut short (a crash between the
        # row and the event): it is completed below. Anything else is someone else's account.
        if not repeat and store.stream_version(stream) > 0:
            _refuse_registration(cmd, store, patient_id, existing["phone_masked"])

    def decide(w: World) -> Event | None:
        return w.stage(stream, event) if w.version(stream) == 0 else None

    execute(store, decide, key_id=key_id, source=SOURCE, correlation_id=cmd.correlation_id, actor=cmd.actor,
            check_first=False)
    # `created` is False for a repeat of the command: the same patient, but the caller proved
    # nothing new, so the gateway opens no login session on it.
    return {"patient_id": patient_id, "id_masked": event.id_masked,
            "phone_masked": existing["phone_masked"] if existing else event.phone_masked, "created": created}


def _refuse_registration(cmd: RegisterPatient, store: EventStore, patient_id: str, phone_masked: str) -> None:
    """Tell the owner (PatientRegistrationRefused on their stream: notification texts them) and
    tell the caller how the owner gets back in. The event's id comes from the command's key: a
    retry of this registration is refused again and appends nothing."""
    stream = domain.patient_stream(patient_id)
    refused = PatientRegistrationRefused(patient_id=patient_id, attempt_phone_masked=mask_phone(cmd.phone))
    execute(store, lambda w: w.stage(stream, refused),
            key_id=idempotent_event_id(f"register_patient_refused:{patient_id}", cmd.idempotency_key),
            source=SOURCE, correlation_id=cmd.correlation_id, actor=cmd.actor)
    raise domain.already_registered(phone_masked)


@APP.command(ResetPatientPassword)
def reset_patient_password(cmd: ResetPatientPassword, store: EventStore, readmodel: ReadModel,
                           vault: PiiVault, passwords: Passwords) -> dict[str, Any]:
    """A new password for the patient whose resident ID has exactly this mobile number registered
    (the gateway has proved the phone with an SMS code). An unknown ID and a wrong phone get the
    same answer after the same work (one look-up, no password hash)."""
    rid = domain.parse_resident_id(cmd.id_number)
    validate_password(cmd.password)
    phone_hash = vault.lookup_hash(cmd.phone)
    found = readmodel.patient_by_id_hash(vault.lookup_hash(rid.number))
    if found is None or not hmac.compare_digest(found["phone_hash"], phone_hash):
        raise domain.no_such_account()
    patient_id = found["patient_id"]
    answer = {"patient_id": patient_id, "phone_masked": found["phone_masked"]}
    key_id = idempotent_event_id(f"reset_password:{patient_id}", cmd.idempotency_key)
    if store.get_event(key_id) is not None:
        return answer  # a repeat: the password was stored before the event was
    readmodel.set_password(patient_id, passwords.hash(cmd.password))
    stream = domain.patient_stream(patient_id)
    execute(store, lambda w: w.stage(stream, PatientPasswordReplaced(patient_id=patient_id)), key_id=key_id,
            source=SOURCE, correlation_id=cmd.correlation_id, actor=cmd.actor, check_first=False)
    return answer


def change_patient_password(store: EventStore, readmodel: ReadModel, passwords: Passwords, patient_id: str,
                            old: str, new: str) -> dict[str, Any]:
    """A logged-in patient's new password, given the current one (the owner is told by SMS)."""
    if not passwords.verify(readmodel.password_hash(patient_id), old):
        raise Forbidden("原密码错误 / the current password is wrong", field="old_password",
                        code="wrong_password")
    validate_password(new)
    readmodel.set_password(patient_id, passwords.hash(new))
    stream = domain.patient_stream(patient_id)
    execute(store, lambda w: w.stage(stream, PatientPasswordReplaced(patient_id=patient_id)),
            key_id=idempotent_event_id(f"change_password:{patient_id}", uuid.uuid4().hex), source=SOURCE,
            actor=Actor(kind="patient", id=patient_id[:64]), check_first=False)
    return {"patient_id": patient_id}


def authenticate_patient(readmodel: ReadModel, vault: PiiVault, passwords: Passwords, username: str,
                         password: str) -> dict[str, Any]:
    """Login by mobile number or resident ID. The same answer for an unknown user and a wrong
    password, after the same work: one argon2 verification, against a dummy hash when nobody with
    a password has that phone or ID (a patient registered by the hotline without one included).
    A phone that several patients log in with is checked against each of theirs."""
    login = patient_login(username)
    found = readmodel.login_candidates(vault.lookup_hash(login)) if login else []
    candidates = [candidate for candidate in found if candidate[1]]
    for patient_id, password_hash, id_masked, name_enc in candidates:
        if passwords.verify(password_hash, password):
            return {"patient_id": patient_id, "id_masked": id_masked, "name": vault.decrypt(name_enc)}
    if not candidates:
        passwords.verify(None, password)
    raise NotFound("用户名或密码错误 / wrong username or password", field="username", code="bad_credentials")


def find_patient(readmodel: ReadModel, vault: PiiVault, id_number: str, actor: Actor | None) -> dict[str, Any]:
    """A patient by resident ID, masked: province-wide for the hotline and the platform's admins; for
    a clerk or hospital admin only a patient with a booking at their hospital (anyone else is
    answered as an unknown ID)."""
    hospital_id = domain.patient_lookup_scope(actor)
    found = readmodel.patient_by_id_hash(vault.lookup_hash(id_number.strip().upper()))
    if found is None or (hospital_id is not None and not readmodel.has_booking_at(found["patient_id"], hospital_id)):
        raise NotFound(domain.NO_SUCH_PATIENT, field="id_number")
    return {"patient_id": found["patient_id"], "id_masked": found["id_masked"],
            "phone_masked": found["phone_masked"], "name": vault.decrypt(found["name_enc"])}


def patient_contact(readmodel: ReadModel, vault: PiiVault, patient_id: str) -> dict[str, str]:
    """The clear phone number, for the SMS sender only."""
    found = readmodel.patient_phone(patient_id)
    if found is None:
        raise NotFound("患者不存在 / unknown patient", field="patient_id")
    return {"phone": vault.decrypt(found[0]), "phone_masked": found[1], "locale": found[2]}


def patient_for_his(readmodel: ReadModel, vault: PiiVault, patient_id: str) -> dict[str, str]:
    """The real-name fields the hospital's HIS needs to register the patient (name, resident ID,
    sex, birth date, phone), for his_sync only: it passes them to the hospital's own HIS."""
    found = readmodel.patient_identity(patient_id)
    if found is None:
        raise NotFound("患者不存在 / unknown patient", field="patient_id")
    return {"name": vault.decrypt(found["name_enc"]), "id_number": vault.decrypt(found["id_enc"]),
            "phone": vault.decrypt(found["phone_enc"]), "sex": found["sex"], "birth_date": found["birth_date"]}


# --- the lifecycle ----------------------------------------------------------------------------

@APP.command(BookAppointment)
def book_appointment(cmd: BookAppointment, store: EventStore, readmodel: ReadModel, cache: LedgerCache,
                     now: datetime) -> BookingAnswer:
    domain.authorize_booking(cmd.actor, cmd.patient_id)
    key_id = idempotent_event_id(f"book:{cmd.patient_id}", cmd.idempotency_key)
    session, rules = readmodel.session_and_rules(cmd.session_id)
    # The sold-out fast path: no store read, no lock wait (see LedgerCache). A repeat of a
    # command that succeeded is recognised by its key event, looked up only on a refusal.
    if session is not None and cache.known_full(cmd.session_id, cmd.channel, session.quota):
        return _answer(repeat_or_raise(store, key_id, SessionFull("该出诊已约满 / this session is full",
                                                                  field="session_id")))
    if session is None:
        return _answer(repeat_or_raise(store, key_id, NotFound(f"出诊 {cmd.session_id} 不存在 / unknown session",
                                                               field="session_id")))
    ledger_name, patient_name = domain.ledger_stream(cmd.session_id), domain.patient_stream(cmd.patient_id)

    def decide(w: World) -> Event:
        booked, change = domain.book(cmd, session, domain.Ledger.fold(w.events(ledger_name)),
                                     domain.PatientRecord.fold(w.events(patient_name)), rules, now,
                                     appointment_id=str(uuid.uuid4()), code=domain.new_code())
        w.stage(ledger_name, booked)
        w.stage(patient_name, change)
        return booked

    with cache.lock(cmd.session_id):
        outcome = execute(store, decide, key_id=key_id, source=SOURCE, correlation_id=cmd.correlation_id,
                          actor=cmd.actor, prefetch=[ledger_name, patient_name], load=cache.loader(store),
                          check_first=False, attempts=50)
    readmodel.caught_up(outcome.position)
    return _answer(outcome)


def book_many(payloads: Sequence[Any], deps: Any,
              run_all: Callable[[Callable[[_Item], _Answered], Sequence[_Item]], Iterable[_Answered]]
              ) -> list[dict[str, Any]]:
    """Many bookings in one call, each answered as `book_appointment` answers it (its
    BookingAnswer, or its refusal as on the wire), in the order given.

    Why: under a flash crowd the gateway sends what has queued up in one message instead of one
    RPC each (the RPC round trip, not the decision, was the cost of a "full" answer). The sold-out
    ones are answered together: one ledger refresh per session and one key lookup for all of them
    (a repeat of a booking that succeeded is still answered with its booking). The others are
    single bookings, `run_all` running them concurrently (each session's lock makes its own take
    turns)."""
    answers: list[dict[str, Any] | None] = [None] * len(payloads)
    commands: list[_Item] = []
    for i, payload in enumerate(payloads):
        try:
            commands.append((i, BookAppointment.model_validate(payload)))
        except ValidationError as exc:
            answers[i] = to_wire(invalid_from_validation(exc))
    store, readmodel, cache = (dependency(deps, name) for name in ("store", "readmodel", "cache"))
    rest = _answer_sold_out(commands, answers, store, readmodel, cache)

    def one(item: _Item) -> _Answered:
        i, cmd = item
        try:
            return i, APP.handle(cmd, deps).model_dump(mode="json")
        except DomainError as err:
            return i, to_wire(err)

    for i, answer in run_all(one, rest):
        answers[i] = answer
    return [a if a is not None else to_wire(DomainError("not answered")) for a in answers]


def _answer_sold_out(commands: Sequence[_Item], answers: list[dict[str, Any] | None], store: EventStore,
                     readmodel: ReadModel, cache: LedgerCache) -> list[_Item]:
    """Answer the commands whose channel is known full (as book_appointment's fast path does);
    return the others."""
    sessions: dict[str, domain.SessionInfo | None] = {}
    full: list[tuple[int, uuid.UUID]] = []
    rest: list[_Item] = []
    for i, cmd in commands:
        if cmd.session_id not in sessions:
            session = sessions[cmd.session_id] = readmodel.session_info(cmd.session_id)
            if session is not None and not cache.fresh(cmd.session_id):
                cache.refresh(store, cmd.session_id)  # once for the batch, not once per command
        session = sessions[cmd.session_id]
        if session is None or not cache.known_full(cmd.session_id, cmd.channel, session.quota):
            rest.append((i, cmd))
            continue
        try:
            domain.authorize_booking(cmd.actor, cmd.patient_id)
        except DomainError as err:
            answers[i] = to_wire(err)
            continue
        full.append((i, idempotent_event_id(f"book:{cmd.patient_id}", cmd.idempotency_key)))
    priors = store.get_events([key for _, key in full])
    for i, key in full:
        try:
            outcome = repeat_or_refuse(priors.get(key), SessionFull("该出诊已约满 / this session is full",
                                                                    field="session_id"))
            answers[i] = _answer(outcome).model_dump(mode="json")
        except DomainError as err:
            answers[i] = to_wire(err)
    return rest


@APP.command(CancelAppointment)
def cancel_appointment(cmd: CancelAppointment, store: EventStore, readmodel: ReadModel, cache: LedgerCache,
                       now: datetime) -> dict[str, Any]:
    def decide(session: domain.SessionInfo, ledger: domain.Ledger) -> tuple[Event, Event]:
        booking = ledger.bookings.get(cmd.appointment_id)
        if booking is None and cmd.actor.kind == "patient":
            raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
        return domain.cancel(booking, session, cmd.actor, now)

    outcome = _change_appointment(store, readmodel, cache, cmd.appointment_id,
                                  idempotent_event_id(f"cancel:{cmd.appointment_id}", cmd.idempotency_key),
                                  cmd.correlation_id, cmd.actor,
                                  lambda found, session: domain.authorize_cancel(cmd.actor, found["patient_id"]),
                                  decide)
    return {"appointment_id": cmd.appointment_id, "status": "cancelled", "refund_due": outcome.data.get("refund_due")}


@APP.command(CheckInAppointment)
def check_in(cmd: CheckInAppointment, store: EventStore, readmodel: ReadModel, vault: PiiVault, cache: LedgerCache,
             now: datetime) -> dict[str, Any]:
    found = readmodel.appointment_by_code(cmd.code)
    if found is None:
        raise NotFound("预约码不存在 / unknown booking code", field="code")
    matches = found["id_hash"] is not None and found["id_hash"] == vault.lookup_hash(cmd.id_number.strip().upper())

    def decide(session: domain.SessionInfo, ledger: domain.Ledger) -> tuple[Event, Event]:
        return domain.check_in(ledger.bookings.get(found["appointment_id"]), session, cmd.actor, matches, now)

    outcome = _change_appointment(store, readmodel, cache, found["appointment_id"],
                                  idempotent_event_id(f"check_in:{found['appointment_id']}", cmd.idempotency_key),
                                  cmd.correlation_id, cmd.actor,
                                  lambda _, session: domain.authorize_check_in(cmd.actor, session.hospital_id),
                                  decide)
    d = outcome.data
    return {"appointment_id": d["appointment_id"], "status": "checked_in", "fee_taken": d["fee_taken"]}


@APP.command(RefundAtWindow)
def refund_at_window(cmd: RefundAtWindow, store: EventStore, readmodel: ReadModel, cache: LedgerCache,
                     now: datetime) -> dict[str, Any]:
    """退号 at the window (domain.refund_at_window). A released place is bookable again at once:
    the ledger cache of this process forgets its sold-out answer (other replicas' expire within
    FULL_ANSWER_FRESH_SECONDS)."""
    found = readmodel.appointment_by_code(cmd.code)
    if found is None:
        raise NotFound(domain.UNKNOWN_CODE, field="code")

    def decide(session: domain.SessionInfo, ledger: domain.Ledger) -> tuple[Event, Event]:
        return domain.refund_at_window(ledger.bookings.get(found["appointment_id"]), session, cmd.actor, cmd.reason,
                                       now)

    outcome = _change_appointment(store, readmodel, cache, found["appointment_id"],
                                  idempotent_event_id(f"refund:{found['appointment_id']}", cmd.idempotency_key),
                                  cmd.correlation_id, cmd.actor,
                                  lambda _, session: domain.authorize_refund(cmd.actor, session.hospital_id),
                                  decide)
    d = outcome.data
    return {"appointment_id": d["appointment_id"], "status": "refunded", "refund_due": d["refund_due"],
            "place_released": d["place_released"]}


@APP.command(LapseDueAppointments)
def lapse_due(cmd: LapseDueAppointments, store: EventStore, readmodel: ReadModel, cache: LedgerCache,
              settings: Any) -> int:
    """The no-show timer: every active booking past its lapse time becomes no_show (once, even
    with several replicas running the timer: the key event id comes from the appointment id)."""
    lapsed = 0
    rules: domain.NoShowRules = settings.no_show_rules()
    for appointment_id, session_id in readmodel.due_for_lapse(cmd.now):
        session = readmodel.session_info(session_id)
        if session is None:
            continue
        try:
            lapsed += _lapse_one(store, cache, appointment_id, session, cmd.now, rules, cmd.correlation_id)
        except Conflict:
            continue  # picked up again on the next tick
    return lapsed


def _lapse_one(store: EventStore, cache: LedgerCache, appointment_id: str, session: domain.SessionInfo,
               now: datetime, rules: domain.NoShowRules, correlation_id: str | None = None) -> int:
    ledger_name = domain.ledger_stream(session.session_id)

    def decide(w: World) -> Event | None:
        booking = domain.Ledger.fold(w.events(ledger_name)).bookings.get(appointment_id)
        decided = domain.lapse(booking, session, now) if booking else None
        if decided is None:
            return None
        lapsed, change = decided
        patient_name = domain.patient_stream(lapsed.patient_id)
        patient = domain.PatientRecord.fold(w.events(patient_name))
        today = now.astimezone(domain.HOSPITAL_TZ).date()
        ban = domain.ban_after_no_show(lapsed.patient_id, patient, date.fromisoformat(session.date), today, rules)
        w.stage(ledger_name, lapsed)
        w.stage(patient_name, change)
        if ban is not None:
            w.stage(patient_name, ban)
        return lapsed

    with cache.lock(session.session_id):
        outcome = execute(store, decide, key_id=idempotent_event_id("lapse", appointment_id), source=SOURCE,
                          correlation_id=correlation_id, prefetch=[ledger_name], load=cache.loader(store),
                          check_first=False)
    return 0 if outcome.key is None or outcome.duplicate else 1


@APP.command(HandOverPhoneBookings)
def hand_over_phone_bookings(cmd: HandOverPhoneBookings, store: EventStore, readmodel: ReadModel) -> dict[str, Any]:
    """The next day's paid phone bookings of one hospital, as one event for the HIS side (once)."""
    day = cmd.visit_date.isoformat()
    rows = readmodel.paid_phone_bookings(cmd.hospital_id, day)
    stream = f"handover-{cmd.hospital_id}-{day}"

    def decide(w: World) -> Event | None:
        if w.version(stream) > 0:
            return None
        return w.stage(stream, PhoneBookingsHandedOver(
            hospital_id=cmd.hospital_id, visit_date=day,
            appointments=[{"appointment_id": r["appointment_id"], "code": r["code"], "session_id": r["session_id"],
                           "sequence_number": r["sequence_number"], "patient_id": r["patient_id"], "fee": r["fee"]}
                          for r in rows]))

    outcome = execute(store, decide, key_id=idempotent_event_id("handover", stream), source=SOURCE,
                      correlation_id=cmd.correlation_id, actor=cmd.actor)
    if outcome.key is None or outcome.duplicate:
        return {"hospital_id": cmd.hospital_id, "visit_date": day, "already": True}
    return {"hospital_id": cmd.hospital_id, "visit_date": day, "count": len(rows), "position": outcome.position}


# --- queries ----------------------------------------------------------------------------------

def session_list(readmodel: ReadModel, session_id: str, actor: Actor | None) -> list[dict[str, Any]]:
    """The day's list of one session, for staff of its hospital (masked ID and phone)."""
    info = readmodel.session_info(session_id)
    if info is None:
        raise NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")
    domain.authorize_staff(actor, info.hospital_id)
    return readmodel.session_list(session_id)


def patient_bookings_at(readmodel: ReadModel, vault: PiiVault, id_number: str, hospital_id: str,
                        actor: Actor | None) -> dict[str, Any]:
    """For a patient who lost the code: their bookings at this hospital, any status, newest first,
    masked. Nobody found and no booking there are the same answer."""
    domain.authorize_hospital_read(actor, hospital_id)
    rid = domain.parse_resident_id(str(id_number))  # an RPC caller may send anything
    found = readmodel.patient_by_id_hash(vault.lookup_hash(rid.number))
    rows = readmodel.window_rows_of_patient(found["patient_id"], hospital_id) if found else []
    if found is None or not rows:
        raise NotFound(domain.NO_SUCH_PATIENT + "（本院无预约 / no booking at this hospital）", field="id_number")
    name = vault.decrypt(found["name_enc"])
    return {"patient": {"patient_id": found["patient_id"], "id_masked": found["id_masked"],
                        "phone_masked": found["phone_masked"], "name_masked": domain.mask_name(name)},
            "appointments": [_window_row(vault, r) for r in rows]}


def appointment_by_code(readmodel: ReadModel, vault: PiiVault, code: str, actor: Actor | None) -> dict[str, Any]:
    """One appointment by its code, for staff of its hospital (another hospital: unknown code)."""
    row = readmodel.window_row_by_code(domain.valid_code(str(code)))
    if row is None:
        raise NotFound(domain.UNKNOWN_CODE, field="code")
    domain.authorize_read_by_code(actor, row["hospital_id"])
    return _window_row(vault, row)


def hospital_day_list(readmodel: ReadModel, vault: PiiVault, hospital_id: str, day: str, actor: Actor | None,
                      department_id: str | None = None, doctor_id: str | None = None) -> list[dict[str, Any]]:
    """Every booking of the hospital's sessions on one day, by department, doctor, period and number."""
    domain.authorize_hospital_read(actor, hospital_id)
    return [_window_row(vault, r) for r in readmodel.hospital_day_rows(hospital_id, domain.valid_day(str(day)),
                                                                        department_id, doctor_id)]


def _window_row(vault: PiiVault, row: dict[str, Any]) -> dict[str, Any]:
    name = vault.decrypt(row["name_enc"]) if row.get("name_enc") else None
    return domain.window_row(row, row["status"], row.get("doctor_name") or "", row.get("id_masked"),
                             row.get("phone_masked"), name)


def availability(store: EventStore, readmodel: ReadModel, cache: LedgerCache,
                 session_ids: list[str]) -> dict[str, dict[str, Any]]:
    known = readmodel.sessions_info(session_ids)
    out: dict[str, dict[str, Any]] = {}
    for session_id in session_ids:
        info = known.get(session_id)
        if info is None:
            out[session_id] = {"session_id": session_id, "known": False}
            continue
        ledger = cache.refresh(store, session_id)
        out[session_id] = {"session_id": session_id, "known": True, "stopped": info.stopped or ledger.stopped,
                           "remaining": ledger.remaining(info.quota), "opens_at": info.opens_at.isoformat(),
                           "closes_at": info.closes_at.isoformat()}
    return out


# --- reactions to schedule --------------------------------------------------------------------

@APP.decides(DoctorStopApproved, backfill=False)
def on_doctor_stop_approved(event: DoctorStopApproved, env: Envelope, store: EventStore, readmodel: ReadModel,
                            cache: LedgerCache) -> dict[str, Any]:
    """Move the stopped session's bookings to the replacement or cancel them: one atomic append
    whose key event id comes from the stop id, so a redelivery (or a replica racing this one)
    finds it stored and changes nothing, and a crash half-way leaves nothing half-done."""
    # The replacement's SessionScheduled precedes the approval in the store's order.
    readmodel.caught_up(env.position or 0)
    session = readmodel.session_info(event.session_id)
    replacement = readmodel.session_info(event.replacement_session_id) if event.replacement_session_id else None
    if session is None:
        raise LookupError(f"doctor stop for session {event.session_id} arrived before the session")
    if event.replacement_session_id and replacement is None:
        raise LookupError(f"replacement session {event.replacement_session_id} not known yet")  # retried
    old = domain.ledger_stream(session.session_id)
    new = domain.ledger_stream(replacement.session_id) if replacement else None

    def decide(w: World) -> Event:
        w.need(old, *([new] if new else []))
        ledger = domain.Ledger.fold(w.events(old))
        repl_ledger = domain.Ledger.fold(w.events(new)) if new else None
        outcome = domain.apply_stop(event.stop_id, session, ledger, replacement, repl_ledger)
        w.need(*(domain.patient_stream(c.patient_id) for c in outcome.patient_changes))
        for e in outcome.stopped_events:
            w.stage(old, e)
        if new is not None:
            for e in outcome.replacement_events:
                w.stage(new, e)
        for change in outcome.patient_changes:
            w.stage(domain.patient_stream(change.patient_id), change)
        return outcome.stopped_events[0]  # type: ignore[no-any-return]

    with cache.lock(session.session_id):
        outcome = execute(store, decide, key_id=idempotent_event_id("doctor_stop", event.stop_id), source=SOURCE,
                          correlation_id=env.correlation_id, causation_id=str(env.event_id),
                          load=cache.loader(store), on_busy=lambda: Conflict(
                              "停诊处理冲突过多 / doctor stop kept conflicting", code="busy"))
    readmodel.caught_up(outcome.position)
    return {"duplicate": outcome.duplicate, "moved": outcome.data.get("moved"),
            "cancelled": outcome.data.get("cancelled")}


# --- helpers ------------------------------------------------------------------------------------

def _change_appointment(store: EventStore, readmodel: ReadModel, cache: LedgerCache, appointment_id: str,
                        key_id: uuid.UUID, correlation_id: str | None, actor: Actor, authorize: Any,
                        decide: Any) -> Outcome:
    """Cancel, check in or refund: one event on the ledger and its mirror on the patient's stream.

    `authorize(found, session)` checks the actor's scope before anything is answered: a repeat
    (the key event found) is answered only to whoever may act on this appointment, or a stranger
    posting the same default key would be handed the first caller's answer."""
    found = readmodel.appointment(appointment_id)
    session = readmodel.session_info(found["session_id"]) if found else None
    if found is None or session is None:
        raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
    authorize(found, session)
    if (prior := store.get_event(key_id)) is not None:
        return Outcome(prior, [prior], prior.position or 0, True)
    ledger_name = domain.ledger_stream(session.session_id)
    patient_name = domain.patient_stream(found["patient_id"])

    def run(w: World) -> Event:
        event, change = decide(session, domain.Ledger.fold(w.events(ledger_name)))
        w.stage(ledger_name, event)
        w.stage(domain.patient_stream(change.patient_id), change)
        return event  # type: ignore[no-any-return]

    with cache.lock(session.session_id):
        outcome = execute(store, run, key_id=key_id, source=SOURCE, correlation_id=correlation_id, actor=actor,
                          prefetch=[ledger_name, patient_name], load=cache.loader(store), check_first=False)
    cache.freed(session.session_id)
    readmodel.caught_up(outcome.position)
    return outcome


def _answer(outcome: Outcome) -> BookingAnswer:
    booked = AppointmentBooked.model_validate(outcome.data)
    return BookingAnswer(
        appointment_id=booked.appointment_id, code=booked.code, sequence_number=booked.sequence_number,
        session_id=booked.session_id, arrival_window=booked.arrival_window, channel=booked.channel,
        paid=booked.paid,
    )


def validate_password(password: str | None) -> None:
    """The platform's one password policy (infra.passwords), for the patients' passwords too."""
    if password is not None:
        check_password(password)
