"""notification's reactions: booking events become SMS in the outbox; schedule events give names.

Each reaction runs inside one transaction of the service database that has already claimed the
event in the inbox (infra.application): a redelivered event queues nothing twice, and any failure
rolls the claim back so that the delivery is retried.

The patient's phone is asked of booking over RPC inside that transaction (before the kernel it
was asked before it): a slow booking holds one pooled connection a little longer, which is
acceptable for an SMS, and a redelivery now finds its claim and asks nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentMoved,
    DepartmentCreated,
    DoctorRegistered,
    Envelope,
    HospitalRegistered,
    from_wire,
)
from infra.application import Application
from infra.logging import get_logger
from infra.memory import JsonMemory
from infra.pii import PiiVault
from services.notification import domain
from services.notification.readmodel import Names, SmsOutbox

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


@APP.on(HospitalRegistered)
def remember_hospital_name(cur: Any, event: HospitalRegistered, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.hospital_id, event.name)


@APP.on(DepartmentCreated)
def remember_department_name(cur: Any, event: DepartmentCreated, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.department_id, event.name)


@APP.on(DoctorRegistered)
def remember_doctor_name(cur: Any, event: DoctorRegistered, envelope: Envelope, names: Names) -> None:
    names.remember(cur, event.doctor_id, event.name)


def _queue(cur: Any, envelope: Envelope, template: str, appt: dict[str, Any], render: Render, booking: Any,
           vault: PiiVault, names: Names, sms_outbox: SmsOutbox) -> None:
    contact = booking.patient_contact(appt["patient_id"])
    if (err := from_wire(contact)) is not None:
        raise err
    known = names.of(cur, (appt["hospital_id"], appt["department_id"], appt["doctor_id"]))
    sms_outbox.add(cur, event_id=envelope.event_id, patient_id=appt["patient_id"],
                   phone_enc=vault.encrypt(contact["phone"]), phone_masked=contact["phone_masked"],
                   template=template, text=render(appt, known))
    _log.info("sms_queued", template=template, appointment_id=appt["appointment_id"])
