"""notification's reactions: booking events become SMS, schedule events give names and places.
Its command paths: verification codes that prove who holds a mobile number; each hospital's SMS
settings and each doctor's contact; and the three loops the timers drive: the dispatcher that
hands due messages to the provider, the reminders of the next day's visits and the doctors'
digests.

Each reaction runs inside one transaction of the service database that has already claimed the
event in the inbox (infra.application): a redelivered event queues nothing twice, and any failure
rolls the claim back so that the delivery is retried. Each message also has an intent key (the
event, the template, the recipient; a reminder's appointment and day), unique in the outbox: a
second run of a timer, or a second replica running it, queues nothing new.

The patient's phone is asked of booking over RPC inside that transaction, after the inbox claim,
once per patient (when the patient registers, or at the first event that needs it) and
remembered sealed: a redelivery, and a patient's later bookings, ask nothing. It is kept
encrypted with the message (and with the appointment, for its reminder) and decrypted only by the
dispatcher, for the send.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from contracts import (
    Actor,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    CheckVerificationCode,
    DepartmentCreated,
    DoctorRegistered,
    Envelope,
    Forbidden,
    HospitalRegistered,
    HospitalUpdated,
    InvalidInput,
    NotFound,
    PatientBanned,
    PatientPasswordReplaced,
    PatientRegistered,
    PatientRegistrationRefused,
    SendVerificationCode,
    VerificationSent,
    from_wire,
)
from infra.application import Application
from infra.db import Database
from infra.logging import get_logger, mask_phone
from infra.memory import JsonMemory, NotKnownYet
from infra.pii import PiiVault
from services.notification import domain
from services.notification.providers import Outgoing, Receipt, SendFailed, SmsProvider, Unavailable
from services.notification.readmodel import (
    CONTACTS,
    Appointments,
    Doctors,
    Hospitals,
    Names,
    SmsOutbox,
    VerificationCodes,
)

APP = Application("notification")

_log = get_logger(__name__)
Render = Callable[[dict[str, Any], dict[str, str]], str]


# --- reactions: an appointment's life -----------------------------------------------------------

@APP.on(AppointmentBooked, backfill=False)
def confirm_booking(cur: Any, event: AppointmentBooked, envelope: Envelope, booking: Any,
                    contacts: JsonMemory, vault: PiiVault,
                    names: Names, hospitals: Hospitals, doctors: Doctors, sms_outbox: SmsOutbox,
                    appointments: Appointments, now: datetime) -> None:
    """The patient's confirmation (time band, address, window); the doctor's notice when the
    doctor asked for one per booking. The appointment is remembered with the patient's contact."""
    appt = event.model_dump(mode="json")
    contact = _contact(cur, contacts, booking, event.patient_id, vault)
    sms = hospitals.settings(cur, event.hospital_id)
    known = _names(cur, names, appt)
    text = domain.booking_confirmation(appt, known, contact["locale"], sms)
    _to_patient(cur, sms_outbox, envelope, "booking_confirmation", appt, contact, text, sms, now, urgent=False)
    appointments.remember(cur, event.appointment_id, {**appt, "status": "active", "contact": contact})
    _tell_doctor(cur, doctors, vault, sms_outbox, envelope, appt, known, sms, now, moved_here=False)


@APP.on(AppointmentMoved, backfill=False)
def tell_moved(cur: Any, event: AppointmentMoved, envelope: Envelope, booking: Any,
               contacts: JsonMemory, vault: PiiVault,
               names: Names, hospitals: Hospitals, doctors: Doctors, sms_outbox: SmsOutbox,
               appointments: Appointments, now: datetime) -> None:
    """A doctor stop moved the booking: the new time and number, the fee kept, and the other
    doctor named when the replacement is someone else's. Urgent when the visit is soon."""
    appt = event.model_dump(mode="json")
    previous = appointments.recall(cur, event.appointment_id)
    contact = previous.get("contact") or _contact(cur, contacts, booking, event.patient_id, vault)
    sms = hospitals.settings(cur, event.hospital_id)
    known = _names(cur, names, appt, previous.get("doctor_id"))
    text = domain.moved(appt, known, contact.get("locale", "zh"), previous)
    urgent = domain.visit_is_soon(previous.get("date", ""), now) or domain.visit_is_soon(appt["date"], now)
    _to_patient(cur, sms_outbox, envelope, "moved_by_doctor_stop", appt, contact, text, sms, now, urgent=urgent)
    appointments.remember(cur, event.appointment_id, {**appt, "status": "active", "contact": contact})
    _tell_doctor(cur, doctors, vault, sms_outbox, envelope, appt, known, sms, now, moved_here=True)


@APP.on(AppointmentCancelled, backfill=False)
def tell_cancelled(cur: Any, event: AppointmentCancelled, envelope: Envelope, booking: Any,
                   contacts: JsonMemory, vault: PiiVault,
                   names: Names, hospitals: Hospitals, sms_outbox: SmsOutbox, appointments: Appointments,
                   now: datetime) -> None:
    """The cancellation SMS; for a doctor stop it is the warning the patient must not miss (urgent
    for a visit today or tomorrow). Its booking not handled yet: NotKnownYet, retried after it."""
    appt = appointments.recall(cur, event.appointment_id)
    contact = appt.get("contact") or _contact(cur, contacts, booking, event.patient_id, vault)
    template = "cancelled_doctor_stop" if event.reason == "doctor_stop" else "cancelled"
    sms = hospitals.settings(cur, appt["hospital_id"])
    text = domain.cancellation(appt, _names(cur, names, appt), event.reason, event.refund_due,
                               contact.get("locale", "zh"))
    urgent = event.reason == "doctor_stop" and domain.visit_is_soon(appt["date"], now)
    _to_patient(cur, sms_outbox, envelope, template, appt, contact, text, sms, now, urgent=urgent)
    appointments.remember(cur, event.appointment_id, {**appt, "status": "cancelled", "contact": contact})


@APP.on(AppointmentRefunded, backfill=False)
def tell_refunded(cur: Any, event: AppointmentRefunded, envelope: Envelope, booking: Any,
                  contacts: JsonMemory, vault: PiiVault,
                  names: Names, hospitals: Hospitals, sms_outbox: SmsOutbox, appointments: Appointments,
                  now: datetime) -> None:
    """退号 at the window: the patient gets the refund in writing."""
    appt = appointments.recall(cur, event.appointment_id)
    contact = appt.get("contact") or _contact(cur, contacts, booking, event.patient_id, vault)
    text = domain.refunded(appt, _names(cur, names, appt), event.refund_due, contact.get("locale", "zh"))
    sms = hospitals.settings(cur, appt["hospital_id"])
    _to_patient(cur, sms_outbox, envelope, "refunded", appt, contact, text, sms, now, urgent=False)
    appointments.remember(cur, event.appointment_id, {**appt, "status": "refunded", "contact": contact})


@APP.on(AppointmentCheckedIn, AppointmentLapsed, backfill=False)
def note_outcome(cur: Any, event: AppointmentCheckedIn | AppointmentLapsed, envelope: Envelope,
                 appointments: Appointments) -> None:
    """Checked in or lapsed: no reminder, no digest counts it any more."""
    appt = appointments.recall(cur, event.appointment_id)
    status = "checked_in" if isinstance(event, AppointmentCheckedIn) else "no_show"
    appointments.remember(cur, event.appointment_id, {**appt, "status": status})


@APP.on(PatientRegistered, backfill=False)
def learn_contact(cur: Any, event: PatientRegistered, envelope: Envelope, booking: Any, contacts: JsonMemory,
                  vault: PiiVault) -> None:
    """A new patient's contact, sealed, before the first booking needs it (see `_contact`)."""
    _contact(cur, contacts, booking, event.patient_id, vault)


@APP.on(PatientBanned, backfill=False)
def tell_banned(cur: Any, event: PatientBanned, envelope: Envelope, booking: Any, contacts: JsonMemory, vault: PiiVault,
                sms_outbox: SmsOutbox, now: datetime) -> None:
    """The ban with its end date now, and its lift queued for the morning after it ends. A longer
    ban withdraws the lift notices it made wrong."""
    contact = _contact(cur, contacts, booking, event.patient_id, vault)
    locale = contact["locale"]
    lift_at = domain.ban_lift_at(event.until)
    sms_outbox.withdraw(cur, event.patient_id, "ban_lifted", lift_at)
    _add(cur, sms_outbox, envelope, event.patient_id, contact, "patient_banned",
         domain.banned(event.until, event.no_shows, locale), urgent=False,
         not_before=domain.release_at(now, domain.HospitalSms(), urgent=False))
    _add(cur, sms_outbox, envelope, event.patient_id, contact, "ban_lifted", domain.ban_lifted(locale), urgent=False,
         not_before=lift_at)
    _log.info("sms_queued", template="patient_banned", patient_id=event.patient_id)


@APP.on(PatientRegistrationRefused, backfill=False)
def warn_registration_refused(cur: Any, event: PatientRegistrationRefused, envelope: Envelope, booking: Any,
                              contacts: JsonMemory,
                              vault: PiiVault, sms_outbox: SmsOutbox) -> None:
    """The owner of the resident ID hears that another mobile tried to register it (at once:
    someone may be trying to take the account over)."""
    contact = _contact(cur, contacts, booking, event.patient_id, vault)
    _add(cur, sms_outbox, envelope, event.patient_id, contact, "registration_refused",
         domain.registration_refused(event.attempt_phone_masked), urgent=True)
    _log.info("sms_queued", template="registration_refused", patient_id=event.patient_id)


@APP.on(PatientPasswordReplaced)
def tell_password_replaced(cur: Any, event: PatientPasswordReplaced, envelope: Envelope, booking: Any,
                           contacts: JsonMemory,
                           vault: PiiVault, sms_outbox: SmsOutbox) -> None:
    contact = _contact(cur, contacts, booking, event.patient_id, vault)
    _add(cur, sms_outbox, envelope, event.patient_id, contact, "password_replaced", domain.password_replaced(),
         urgent=True)
    _log.info("sms_queued", template="password_replaced", patient_id=event.patient_id)


# --- reactions: names and places ----------------------------------------------------------------

# One reaction per event class where a reaction existed before: its queue and inbox consumer keep
# their names (a handler of two classes gets a queue per class, named anew, and the old queue
# would be left bound to the exchange, filling up).
@APP.on(HospitalRegistered)
def remember_hospital_name(cur: Any, event: HospitalRegistered, envelope: Envelope, names: Names,
                           hospitals: Hospitals) -> None:
    names.remember(cur, event.hospital_id, event.name)
    hospitals.remember_address(cur, event.hospital_id, event.address)


@APP.on(HospitalUpdated)
def remember_hospital_change(cur: Any, event: HospitalUpdated, envelope: Envelope, names: Names,
                             hospitals: Hospitals) -> None:
    names.remember(cur, event.hospital_id, event.name)
    hospitals.remember_address(cur, event.hospital_id, event.address)


@APP.on(DepartmentCreated)
def remember_department_name(cur: Any, event: DepartmentCreated, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.department_id, event.name)


@APP.on(DoctorRegistered)
def remember_doctor_name(cur: Any, event: DoctorRegistered, envelope: Envelope, names: Names,
                         doctors: Doctors) -> None:
    names.remember(cur, event.doctor_id, event.name)
    doctors.remember(cur, event.doctor_id, event.hospital_id)


# --- verification codes (RPC, through service.py) ---------------------------------------------

def send_verification_code(cmd: SendVerificationCode, db: Database, vault: PiiVault,
                           verification_codes: VerificationCodes, sms_outbox: SmsOutbox, now: datetime,
                           rules: domain.VerificationRules = domain.RULES) -> VerificationSent:
    """A new code for (phone, purpose) by SMS, replacing the previous one; TooManyRequests beyond
    the number's limits. The number's row is locked while its limits are decided on."""
    phone_hash = vault.lookup_hash(cmd.phone)
    with db.transaction() as cur:
        sent = domain.admit_send(verification_codes.lock_sends(cur, phone_hash), now, rules)
        code = domain.new_code()
        verification_codes.record_sends(cur, phone_hash, sent)
        verification_codes.replace(cur, phone_hash, cmd.purpose, _code_hash(vault, cmd.phone, cmd.purpose, code),
                                   now + rules.ttl)
        verification_codes.sweep(cur, now)
        # No patient yet (registration) or not known here (reset): the message belongs to the number.
        sms_outbox.add(cur, event_id=None, patient_id="", phone_enc=vault.encrypt(cmd.phone),
                       phone_masked=mask_phone(cmd.phone), phone_hash=phone_hash, template="verification_code",
                       text=domain.verification_code(code, cmd.purpose, cmd.locale, _minutes(rules)))
    _log.info("verification_code_sent", purpose=cmd.purpose, phone_masked=mask_phone(cmd.phone))
    return VerificationSent(expires_in=int(rules.ttl.total_seconds()),
                            resend_after=int(rules.resend_after.total_seconds()))


def check_verification_code(cmd: CheckVerificationCode, db: Database, vault: PiiVault,
                            verification_codes: VerificationCodes, now: datetime,
                            rules: domain.VerificationRules = domain.RULES) -> dict[str, bool]:
    """{"verified": True}, or InvalidInput wrong_sms_code / sms_code_expired. A wrong try is
    counted in the transaction that read the code under its lock, so concurrent guesses are
    counted one after the other and no more than `max_wrong` of them are ever judged."""
    phone_hash = vault.lookup_hash(cmd.phone)
    with db.transaction() as cur:
        verdict = domain.check_code(verification_codes.lock_code(cur, phone_hash, cmd.purpose),
                                    _code_hash(vault, cmd.phone, cmd.purpose, cmd.code), now, rules)
        if verdict.counted:
            verification_codes.count_wrong(cur, phone_hash, cmd.purpose)
    if verdict.refusal is not None:  # raised after the commit: the wrong try stays counted
        _log.info("verification_code_refused", purpose=cmd.purpose, reason=verdict.refusal.code)
        raise verdict.refusal
    return {"verified": True}


def _code_hash(vault: PiiVault, phone: str, purpose: str, code: str) -> str:
    return vault.lookup_hash(f"{phone}:{purpose}:{code}")


def _minutes(rules: domain.VerificationRules) -> int:
    return int(rules.ttl.total_seconds() // 60)


# --- each hospital's settings, each doctor's contact (RPC, through service.py) ---------------------

MOBILE = re.compile(r"^1[3-9]\d{9}$")  # as the gateway's bodies and booking's registration


def _may_manage(actor: Actor, hospital_id: str) -> None:
    """The hospital's own admin, or a platform admin."""
    if actor.kind == "platform_admin" or (actor.kind == "hospital_admin" and actor.hospital_id == hospital_id):
        return
    raise Forbidden("只有本院管理员可以修改 / only this hospital's admin may change this", field="hospital_id")


def _clock(value: str, field: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"时间格式应为 HH:MM / {field} must be HH:MM", field=field) from None


def sms_settings(db: Database, hospitals: Hospitals, hospital_id: str) -> dict[str, Any]:
    with db.transaction() as cur:
        sms = hospitals.settings(cur, hospital_id)
    return _settings_answer(hospital_id, sms)


def set_sms_settings(payload: dict[str, Any], actor: Actor, db: Database, hospitals: Hospitals) -> dict[str, Any]:
    hospital_id = str(payload.get("hospital_id") or "")
    _may_manage(actor, hospital_id)
    given = payload.get("window_location")  # absent: kept; empty: back to the default
    window = None if given is None else (str(given).strip() or domain.DEFAULT_WINDOW)
    if window is not None and len(window) > 60:
        raise InvalidInput("取号地点最多60字 / window_location: at most 60 characters", field="window_location")
    with db.transaction() as cur:
        current = hospitals.settings(cur, hospital_id)
        sms = domain.HospitalSms(
            reminder_time=_clock(payload["reminder_time"], "reminder_time") if payload.get("reminder_time")
            else current.reminder_time,
            quiet_start=_clock(payload["quiet_start"], "quiet_start") if payload.get("quiet_start")
            else current.quiet_start,
            quiet_end=_clock(payload["quiet_end"], "quiet_end") if payload.get("quiet_end") else current.quiet_end,
            window_location=current.window_location if window is None else window, address=current.address)
        if domain.in_quiet_hours(datetime.combine(date(2026, 1, 5), sms.reminder_time, domain.HOSPITAL_TZ), sms):
            raise InvalidInput("提醒时间不能在免打扰时段内 / the reminder hour falls in the quiet hours",
                               field="reminder_time")
        hospitals.change(cur, hospital_id, sms)
    _log.info("sms_settings_changed", hospital_id=hospital_id, actor=actor.id)
    return _settings_answer(hospital_id, sms)


def _settings_answer(hospital_id: str, sms: domain.HospitalSms) -> dict[str, Any]:
    return {"hospital_id": hospital_id, "reminder_time": sms.reminder_time.strftime("%H:%M"),
            "quiet_start": sms.quiet_start.strftime("%H:%M"), "quiet_end": sms.quiet_end.strftime("%H:%M"),
            "window_location": sms.window_location, "address": sms.address}


def doctor_contact(doctor_id: str, actor: Actor, db: Database, doctors: Doctors) -> dict[str, Any]:
    with db.transaction() as cur:
        found = doctors.contact(cur, doctor_id)
    if found is None:
        raise NotFound("医生不存在 / unknown doctor", field="doctor_id")
    if not (actor.kind == "doctor" and actor.id == doctor_id):
        _may_manage(actor, found["hospital_id"])
    return _contact_answer(found)


def doctor_contacts(hospital_id: str, actor: Actor, db: Database, doctors: Doctors) -> list[dict[str, Any]]:
    """Every doctor's contact (masked) and choice at one hospital, for its admin's page."""
    _may_manage(actor, hospital_id)
    with db.transaction() as cur:
        return [_contact_answer(found) for found in doctors.of_hospital(cur, hospital_id)]


def set_doctor_contact(payload: dict[str, Any], actor: Actor, db: Database, vault: PiiVault,
                       doctors: Doctors) -> dict[str, Any]:
    """The doctor's mobile (encrypted at rest), and the SMS choice: none, each or digest (at an
    hour). An empty phone removes it."""
    doctor_id = str(payload.get("doctor_id") or "")
    notice = str(payload.get("notice") or "none")
    if notice not in domain.DOCTOR_NOTICES:
        raise InvalidInput("通知方式应为 none、each 或 digest / notice: none, each or digest", field="notice")
    phone = str(payload.get("phone") or "").strip()
    if phone and not MOBILE.match(phone):
        raise InvalidInput("请输入11位手机号 / phone: an 11-digit mainland mobile number", field="phone")
    if notice != "none" and not phone:
        raise InvalidInput("需要手机号才能发送通知 / a phone is needed for notices", field="phone")
    digest_time = _clock(str(payload.get("digest_time") or "07:00"), "digest_time")
    with db.transaction() as cur:
        found = doctors.contact(cur, doctor_id)
        if found is None:
            raise NotFound("医生不存在 / unknown doctor", field="doctor_id")
        _may_manage(actor, found["hospital_id"])
        sealed = (vault.encrypt(phone), mask_phone(phone), vault.lookup_hash(phone)) if phone else None
        doctors.set_contact(cur, doctor_id, sealed, domain.DoctorNotice(notice, digest_time))
        found = doctors.contact(cur, doctor_id)
    _log.info("doctor_contact_changed", doctor_id=doctor_id, notice=notice, actor=actor.id)
    return _contact_answer(found or {})


def _contact_answer(found: dict[str, Any]) -> dict[str, Any]:
    digest = found.get("digest_time")
    return {"doctor_id": found.get("doctor_id"), "hospital_id": found.get("hospital_id"),
            "phone_masked": found.get("phone_masked"), "notice": found.get("notice", "none"),
            "digest_time": digest.strftime("%H:%M") if isinstance(digest, time) else digest}


# --- the timers: reminders and digests ----------------------------------------------------------

def run_reminders(db: Database, vault: PiiVault, booking: Any, names: Names, hospitals: Hospitals,
                  appointments: Appointments, sms_outbox: SmsOutbox, now: datetime,
                  visit_day: date | None = None, hospital_id: str | None = None) -> int:
    """Queue the reminders due at `now` (each hospital's hour come: tomorrow's visits), or, when
    `visit_day` is given, that day's at once (the operator's run). Exactly once per booking and
    day: each hospital's day is queued in one transaction that holds the hospital's row (replicas
    take turns; a restart in the middle rolls back and the next run does it all), each
    reminder's intent is unique, and the day is marked done with it. Answers how many were queued."""
    with db.transaction() as cur:
        plan = [(h, sms, done) for h, sms, done in hospitals.all(cur) if hospital_id in (None, h)]
    queued = 0
    for hid, sms, done in plan:
        day = visit_day or domain.reminder_day(now, sms)
        if day is None or (visit_day is None and done is not None and done >= day):
            continue
        with db.transaction() as cur:
            hospitals.lock_reminders(cur, hid)
            due = [a for a in appointments.active_on(cur, hid, day) if domain.reminder_wanted(a, day)]
            for appt in due:
                contact = appt.get("contact") or _contact(cur, CONTACTS, booking, appt["patient_id"], vault)
                text = domain.reminder(appt, _names(cur, names, appt), contact.get("locale", "zh"), sms)
                if sms_outbox.add(cur, event_id=None, patient_id=appt["patient_id"], phone_enc=contact["phone_enc"],
                                  phone_masked=contact["phone_masked"], phone_hash=contact["phone_hash"],
                                  template="reminder", text=text, hospital_id=hid,
                                  intent_key=f"reminder:{appt['appointment_id']}:{day.isoformat()}",
                                  not_before=domain.release_at(now, sms, urgent=False)):
                    queued += 1
            if visit_day is None:
                hospitals.reminders_queued(cur, hid, day)
    if queued:
        _log.info("reminders_queued", count=queued)
    return queued


def run_digests(db: Database, vault: PiiVault, names: Names, hospitals: Hospitals, doctors: Doctors,
                appointments: Appointments, sms_outbox: SmsOutbox, now: datetime) -> int:
    """Each doctor who chose the digest gets, once a day at the chosen hour, the next session's
    count and sequence numbers (nothing when no booking is ahead)."""
    today = domain.local(now).date()
    queued = 0
    with db.transaction() as cur:
        due = [d for d in doctors.digest_due(cur) if domain.local(now).time() >= d["digest_time"]
               and (d["digest_done"] is None or d["digest_done"] < today)]
    for d in due:
        with db.transaction() as cur:
            done = doctors.lock_digest(cur, d["doctor_id"])
            if done is not None and done >= today:
                continue
            contact = doctors.contact(cur, d["doctor_id"]) or {}
            digest = domain.next_session_digest(appointments.of_doctor(cur, d["doctor_id"], today), now)
            if digest is not None and contact.get("phone_enc"):
                doctor = names.of(cur, (d["doctor_id"],)).get(d["doctor_id"], d["doctor_id"])
                sms = hospitals.settings(cur, d["hospital_id"])
                if sms_outbox.add(cur, event_id=None, patient_id="", phone_enc=contact["phone_enc"],
                                  phone_masked=contact["phone_masked"], phone_hash=contact["phone_hash"],
                                  template="doctor_digest", text=domain.doctor_digest(doctor, digest),
                                  intent_key=f"digest:{d['doctor_id']}:{today.isoformat()}", recipient="doctor",
                                  hospital_id=d["hospital_id"], not_before=domain.release_at(now, sms, urgent=False)):
                    queued += 1
            doctors.digest_queued(cur, d["doctor_id"], today)
    return queued


# --- the dispatcher -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    """How the dispatcher retries: `max_attempts` sends that fail (the provider said no) before a
    message is parked as failed; the wait doubles from `base_delay_s` up to `max_delay_s`. A
    provider that is not connected costs no attempt: the message waits `unavailable_delay_s`."""

    max_attempts: int = 6
    base_delay_s: float = 5.0
    max_delay_s: float = 600.0
    unavailable_delay_s: float = 2.0
    batch: int = 50
    lease_s: int = 60


def dispatch(db: Database, vault: PiiVault, sms_outbox: SmsOutbox, provider: SmsProvider, now: datetime,
             delivery: Delivery = Delivery(), clock: Callable[[], datetime] | None = None) -> int:
    """Hand the due messages to the provider, one claimed batch; answers how many were taken.
    Each outcome is recorded in its own short transaction right after its send: a crash loses at
    most the outcome of the one send in flight (that message goes again after its lease: the only
    window in which a message can be sent twice)."""
    if not provider.ready():
        return 0
    with db.transaction() as cur:
        claimed = sms_outbox.claim_due(cur, now, delivery.batch, delivery.lease_s)
    taken = 0
    for message_id, phone_enc, text in claimed:
        at = clock() if clock else now
        try:
            accepted = provider.send(Outgoing(message_id, vault.decrypt(phone_enc), text))
        except Unavailable as exc:
            with db.transaction() as cur:
                sms_outbox.retry_later(cur, message_id, exc.reason,
                                       at + timedelta(seconds=delivery.unavailable_delay_s), counted=False)
            continue
        except SendFailed as exc:
            _failed(db, sms_outbox, message_id, exc, at, delivery)
            continue
        except Exception as exc:  # noqa: BLE001 - a bug in an adapter must not strand the batch
            _failed(db, sms_outbox, message_id, SendFailed(f"{type(exc).__name__}"), at, delivery)
            _log.exception("sms_send_crashed", message_id=message_id)
            continue
        with db.transaction() as cur:
            sms_outbox.sent(cur, message_id, provider.name, accepted.provider_ids, at)
        taken += 1
    return taken


def _failed(db: Database, sms_outbox: SmsOutbox, message_id: str, exc: SendFailed, at: datetime,
            delivery: Delivery) -> None:
    with db.transaction() as cur:
        attempts = sms_outbox.attempts_of(cur, message_id) + 1
        if exc.permanent or attempts >= delivery.max_attempts:
            sms_outbox.park(cur, message_id, exc.reason, at)
            _log.warning("sms_parked", message_id=message_id, attempts=attempts, reason=exc.reason)
        else:
            sms_outbox.retry_later(cur, message_id, exc.reason, at + retry_delay(attempts, delivery), counted=True)


def retry_delay(attempts: int, delivery: Delivery = Delivery()) -> timedelta:
    """Doubling from the base, capped, with up to 20 % jitter (replicas do not retry in step)."""
    delay = min(delivery.max_delay_s, delivery.base_delay_s * 2 ** max(0, attempts - 1))
    return timedelta(seconds=delay * (1 + random.random() * 0.2))  # noqa: S311 - jitter, not a secret


def record_receipt(db: Database, sms_outbox: SmsOutbox, receipt: Receipt) -> None:
    with db.transaction() as cur:
        sms_outbox.receipt(cur, receipt.provider_id, receipt.delivered, receipt.status, receipt.at)


def retry_message(message_id: str, actor: Actor, db: Database, sms_outbox: SmsOutbox, now: datetime,
                  hospitals: Hospitals | None = None) -> dict[str, Any]:
    """The operator sends a parked message again (platform admin, or its hospital's admin); one
    that can wait still waits for the end of the hospital's quiet hours."""
    with db.transaction() as cur:
        found, hospital_id, urgent = sms_outbox.hospital_of(cur, message_id)
        if not found:
            raise NotFound("短信不存在 / unknown message", field="message_id")
        if actor.kind != "platform_admin":
            if hospital_id is None:
                raise Forbidden("只有平台管理员可以重发 / only a platform admin may resend this", field="message_id")
            _may_manage(actor, hospital_id)
        sms = hospitals.settings(cur, hospital_id) if hospitals is not None and hospital_id else domain.HospitalSms()
        if not sms_outbox.requeue(cur, message_id, now, domain.release_at(now, sms, urgent)):
            raise InvalidInput("只有发送失败的短信可以重发 / only a failed message can be sent again",
                               field="message_id", code="not_failed")
    _log.info("sms_requeued", message_id=message_id, actor=actor.id)
    return {"message_id": message_id, "status": "queued"}


# --- sending to a patient, a doctor ----------------------------------------------------------------

def _names(cur: Any, names: Names, appt: dict[str, Any], *more: str | None) -> dict[str, str]:
    ids = [appt["hospital_id"], appt["department_id"], appt["doctor_id"], *(m for m in more if m)]
    return names.of(cur, ids)


def _contact(cur: Any, contacts: JsonMemory, booking: Any, patient_id: str, vault: PiiVault) -> dict[str, str]:
    """The patient's phone as booking answers it, sealed at once: encrypted, masked, keyed hash,
    and the patient's language. The clear number is not kept.

    Asked of booking once per patient and remembered sealed (`contacts`, in the reaction's
    transaction): a patient's phone and language are fixed at registration, so the RPC per
    booking was pure cost (issue 15: a fifth of notification's samples in the steady bench, and
    booking's replica answering it). Learnt when the patient registers (`learn_contact`), so a
    booking normally asks nothing."""
    with contextlib.suppress(NotKnownYet):
        return {k: str(v) for k, v in contacts.recall(cur, patient_id).items()}
    contact = booking.patient_contact(patient_id)
    if (err := from_wire(contact)) is not None:
        raise err
    phone = str(contact["phone"])
    sealed = {"phone_enc": vault.encrypt(phone), "phone_masked": str(contact["phone_masked"]),
              "phone_hash": vault.lookup_hash(phone), "locale": "en" if contact.get("locale") == "en" else "zh"}
    contacts.remember(cur, patient_id, sealed)
    return sealed


def _to_patient(cur: Any, sms_outbox: SmsOutbox, envelope: Envelope, template: str, appt: dict[str, Any],
                contact: dict[str, str], text: str, sms: domain.HospitalSms, now: datetime, urgent: bool) -> None:
    _add(cur, sms_outbox, envelope, appt["patient_id"], contact, template, text, urgent=urgent,
         hospital_id=appt["hospital_id"], not_before=domain.release_at(now, sms, urgent))
    _log.info("sms_queued", template=template, appointment_id=appt["appointment_id"], urgent=urgent)


def _tell_doctor(cur: Any, doctors: Doctors, vault: PiiVault, sms_outbox: SmsOutbox, envelope: Envelope,
                 appt: dict[str, Any], known: dict[str, str], sms: domain.HospitalSms, now: datetime,
                 moved_here: bool) -> None:
    doctor = doctors.contact(cur, appt["doctor_id"])
    if doctor is None or doctor["notice"] != "each" or not doctor["phone_enc"]:
        return
    sms_outbox.add(cur, event_id=envelope.event_id, patient_id="", phone_enc=doctor["phone_enc"],
                   phone_masked=doctor["phone_masked"], phone_hash=doctor["phone_hash"], template="doctor_booking",
                   text=domain.doctor_new_booking(appt, known, moved_here), recipient="doctor",
                   intent_key=f"{envelope.event_id}:doctor_booking:doctor:{appt['doctor_id']}",
                   hospital_id=appt["hospital_id"], not_before=domain.release_at(now, sms, urgent=False))
    _log.info("sms_queued", template="doctor_booking", doctor_id=appt["doctor_id"])


def _add(cur: Any, sms_outbox: SmsOutbox, envelope: Envelope, patient_id: str, contact: dict[str, str],
         template: str, text: str, *, urgent: bool, hospital_id: str | None = None,
         not_before: datetime | None = None) -> None:
    sms_outbox.add(cur, event_id=envelope.event_id, patient_id=patient_id, phone_enc=contact["phone_enc"],
                   phone_masked=contact["phone_masked"], phone_hash=contact["phone_hash"], template=template,
                   text=text, intent_key=f"{envelope.event_id}:{template}:patient:{patient_id}",
                   hospital_id=hospital_id, urgent=urgent, not_before=not_before)
