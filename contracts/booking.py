"""Booking: patients (real name) and the appointment lifecycle.

booked → checked_in | cancelled | no_show | moved (to a replacement session, still to come) | refunded
(退号 at the window; also from checked_in).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field

from contracts.envelope import Command, Contract, Event
from contracts.schedule import Channel

AppointmentStatus = Literal["booked", "cancelled", "checked_in", "no_show", "moved", "refunded"]
CancelReason = Literal["patient", "operator", "doctor_stop"]


# --- commands -------------------------------------------------------------------------------

class RegisterPatient(Command):
    name: str = Field(min_length=1, max_length=40)
    id_number: str = Field(min_length=18, max_length=18)
    phone: str = Field(pattern=r"^1[3-9]\d{9}$")
    password: str | None = Field(default=None, min_length=8, max_length=128)
    guardian_patient_id: str | None = Field(default=None, max_length=64, description="a child under a guardian")
    locale: Literal["zh", "en"] = Field(default="zh", description="the language of the patient's SMS")


class ResetPatientPassword(Command):
    """A new password for the patient with this resident ID, whose registered mobile is `phone`. The
    gateway sends it only after the caller proved the phone with an SMS code."""

    id_number: str = Field(min_length=18, max_length=18)
    phone: str = Field(pattern=r"^1[3-9]\d{9}$")
    password: str = Field(min_length=8, max_length=128)


class BookAppointment(Command):
    session_id: str = Field(min_length=1, max_length=80)
    patient_id: str = Field(min_length=1, max_length=64)
    channel: Channel = "web"
    operator_id: str | None = Field(default=None, max_length=64)


class CancelAppointment(Command):
    appointment_id: str = Field(min_length=1, max_length=64)


class CheckInAppointment(Command):
    """取号 at the window: the clerk types the booking code and the patient's resident ID."""

    code: str = Field(min_length=8, max_length=8)
    id_number: str = Field(min_length=18, max_length=18)


class RefundAtWindow(Command):
    """退号 at the window, on the visit day: a paid phone booking or a checked-in registration is
    refunded (the fee goes back); its place is released only if the session has not started."""

    code: str = Field(min_length=8, max_length=8)
    reason: str = Field(min_length=1, max_length=200)


class LapseDueAppointments(Command):
    """The timer's command: mark every booking whose lapse time has passed as no-show."""

    now: datetime


class HandOverPhoneBookings(Command):
    """The daily hand-over of the next day's paid phone bookings to the HIS side."""

    hospital_id: str
    visit_date: date


# --- events ---------------------------------------------------------------------------------

class PatientRegistered(Event):
    patient_id: str
    id_masked: str
    phone_masked: str
    birth_date: str
    sex: Literal["M", "F"]
    guardian_patient_id: str | None = None


class PatientRegistrationRefused(Event):
    """Someone (with a proved phone) tried to register a resident ID that already has an account:
    its owner is told by SMS. The attempt's phone is kept masked only."""

    patient_id: str
    attempt_phone_masked: str


class PatientPasswordReplaced(Event):
    """The password was replaced after an SMS code to the registered phone (the owner is told)."""

    patient_id: str


class AppointmentEvent(Event):
    """What every event about one appointment carries (a base: never stored by itself)."""

    appointment_id: str
    session_id: str
    hospital_id: str
    patient_id: str
    channel: Channel
    date: str = ""


class AppointmentPlaced(AppointmentEvent):
    """An appointment holding a place in a session's ledger: booked there, or moved there."""

    code: str
    department_id: str
    doctor_id: str
    sequence_number: int
    date: str
    period: str
    start: str
    fee: str
    arrival_window: str | None = None
    paid: bool = False  # phone bookings are charged at booking (a billing record)


class AppointmentBooked(AppointmentPlaced):
    operator_id: str | None = None


class AppointmentCancelled(AppointmentEvent):
    reason: CancelReason
    refund_due: str | None = None  # yuan, when the fee was charged at booking


class AppointmentCheckedIn(AppointmentEvent):
    clerk_id: str
    fee_taken: str  # yuan taken at the window ("0.00" when paid at booking)


class AppointmentRefunded(AppointmentEvent):
    """退号 at the window: `refund_due` goes back to the patient; `place_released` when the session
    had not started (the place may be booked again), otherwise it stays taken."""

    clerk_id: str
    refund_due: str
    reason: str
    place_released: bool


class AppointmentLapsed(AppointmentEvent):
    """No-show: not checked in by the lapse time."""


class AppointmentMoved(AppointmentPlaced):
    """Moved by a doctor stop to the replacement session: a booking in that session's ledger."""

    from_session_id: str


class SessionStopApplied(Event):
    """Booking has reacted to a doctor stop: the session takes no bookings; its bookings moved or cancelled."""

    stop_id: str
    session_id: str
    replacement_session_id: str | None
    moved: int
    cancelled: int


class PatientAppointmentsChanged(Event):
    """The patient's own index of appointments (stream patient-<id>): what the per-patient limits
    and bans are decided on. Appended atomically with the ledger event it mirrors."""

    patient_id: str
    appointment_id: str
    session_id: str
    hospital_id: str
    department_id: str
    date: str
    active: bool
    outcome: Literal["booked", "moved", "cancelled", "checked_in", "no_show", "refunded"]


class PatientBanned(Event):
    patient_id: str
    until: str  # ISO date, inclusive
    no_shows: int
    reason: str = "no_show"


class PhoneBookingsHandedOver(Event):
    hospital_id: str
    visit_date: str
    appointments: list[dict[str, str | int]]


# --- answers --------------------------------------------------------------------------------

class BookingAnswer(Contract):
    appointment_id: str
    code: str
    sequence_number: int
    session_id: str
    status: AppointmentStatus = "booked"
    arrival_window: str | None = None
    channel: Channel = "web"
    paid: bool = False
