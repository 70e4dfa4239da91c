"""notification's reactions: booking events become SMS in the outbox; schedule events give names.
And its one command path: verification codes that prove who holds a mobile number.

Each reaction runs inside one transaction of the service database that has already claimed the
event in the inbox (infra.application): a redelivered event queues nothing twice, and any failure
rolls the claim back so that the delivery is retried.

The patient's phone is asked of booking over RPC inside that transaction (before the kernel it
was asked before it): a slow booking holds one pooled connection a little longer, which is
acceptable for an SMS, and a redelivery now finds its claim and asks nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentMoved,
    CheckVerificationCode,
    DepartmentCreated,
    DoctorRegistered,
    Envelope,
    HospitalRegistered,
    PatientPasswordReplaced,
    PatientRegistrationRefused,
    SendVerificationCode,
    VerificationSent,
    from_wire,
)
from infra.application import Application
from infra.db import Database
from infra.logging import get_logger, mask_phone
from infra.memory import JsonMemory
from infra.pii import PiiVault
from services.notification import domain
from services.notification.readmodel import Names, SmsOutbox, VerificationCodes

APP = Application("notification")

_log = get_logger(__name__)
Render = Callable[[dict[str, Any], dict[str, str]], str]


@APP.on(AppointmentBooked)
def confirm_booking(cur: Any, event: AppointmentBooked, envelope: Envelope, booking: Any, vault: PiiVault,
                    names: Names, sms_outbox: SmsOutbox, appointments: JsonMemory) -> None:
    appt = event.model_dump(mode="json")
    _queue(cur, envelope, "booking_confirmation", appt, domain.booking_confirmation, booking, vault, names, sms_outbox)
    appointments.remember(cur, event.appointment_id, appt)


@APP.on(AppointmentMoved)
def tell_moved(cur: Any, event: AppointmentMoved, envelope: Envelope, booking: Any, vault: PiiVault,
               names: Names, sms_outbox: SmsOutbox, appointments: JsonMemory) -> None:
    appt = event.model_dump(mode="json")
    _queue(cur, envelope, "moved_by_doctor_stop", appt, domain.moved, booking, vault, names, sms_outbox)
    appointments.remember(cur, event.appointment_id, appt)


@APP.on(AppointmentCancelled)
def tell_cancelled(cur: Any, event: AppointmentCancelled, envelope: Envelope, booking: Any, vault: PiiVault,
                   names: Names, sms_outbox: SmsOutbox, appointments: JsonMemory) -> None:
    """The cancellation SMS; for a doctor stop it is the warning the patient must not miss.
    Its booking's confirmation not handled yet: NotKnownYet, retried after it."""
    appt = appointments.recall(cur, event.appointment_id)
    template = "cancelled_doctor_stop" if event.reason == "doctor_stop" else "cancelled"

    def render(appt: dict[str, Any], known: dict[str, str]) -> str:
        return domain.cancellation(appt, known, event.reason, event.refund_due)

    _queue(cur, envelope, template, appt, render, booking, vault, names, sms_outbox)


@APP.on(PatientRegistrationRefused)
def warn_registration_refused(cur: Any, event: PatientRegistrationRefused, envelope: Envelope, booking: Any,
                              vault: PiiVault, sms_outbox: SmsOutbox) -> None:
    """The owner of the resident ID hears that another mobile tried to register it."""
    _send_to_patient(cur, envelope, event.patient_id, "registration_refused",
                     domain.registration_refused(event.attempt_phone_masked), booking, vault, sms_outbox)


@APP.on(PatientPasswordReplaced)
def tell_password_replaced(cur: Any, event: PatientPasswordReplaced, envelope: Envelope, booking: Any,
                           vault: PiiVault, sms_outbox: SmsOutbox) -> None:
    _send_to_patient(cur, envelope, event.patient_id, "password_replaced", domain.password_replaced(),
                     booking, vault, sms_outbox)


@APP.on(HospitalRegistered)
def remember_hospital_name(cur: Any, event: HospitalRegistered, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.hospital_id, event.name)


@APP.on(DepartmentCreated)
def remember_department_name(cur: Any, event: DepartmentCreated, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.department_id, event.name)


@APP.on(DoctorRegistered)
def remember_doctor_name(cur: Any, event: DoctorRegistered, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.doctor_id, event.name)


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


# --- sending to a patient ----------------------------------------------------------------------

def _queue(cur: Any, envelope: Envelope, template: str, appt: dict[str, Any], render: Render, booking: Any,
           vault: PiiVault, names: Names, sms_outbox: SmsOutbox) -> None:
    contact = _contact(booking, appt["patient_id"])
    known = names.of(cur, (appt["hospital_id"], appt["department_id"], appt["doctor_id"]))
    _add(cur, envelope, appt["patient_id"], contact, template, render(appt, known), vault, sms_outbox)
    _log.info("sms_queued", template=template, appointment_id=appt["appointment_id"])


def _send_to_patient(cur: Any, envelope: Envelope, patient_id: str, template: str, text: str, booking: Any,
                     vault: PiiVault, sms_outbox: SmsOutbox) -> None:
    _add(cur, envelope, patient_id, _contact(booking, patient_id), template, text, vault, sms_outbox)
    _log.info("sms_queued", template=template, patient_id=patient_id)


def _contact(booking: Any, patient_id: str) -> dict[str, str]:
    contact = booking.patient_contact(patient_id)
    if (err := from_wire(contact)) is not None:
        raise err
    return dict(contact)


def _add(cur: Any, envelope: Envelope, patient_id: str, contact: dict[str, str], template: str, text: str,
         vault: PiiVault, sms_outbox: SmsOutbox) -> None:
    sms_outbox.add(cur, event_id=envelope.event_id, patient_id=patient_id, phone_enc=vault.encrypt(contact["phone"]),
                   phone_masked=contact["phone_masked"], phone_hash=vault.lookup_hash(contact["phone"]),
                   template=template, text=text)
