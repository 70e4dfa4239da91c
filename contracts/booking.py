"""Booking: patients and appointments."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Command, Contract, Event
from contracts.schedule import Channel


class RegisterPatient(Command):
    name: str = Field(min_length=1, max_length=40)
    id_number: str = Field(min_length=18, max_length=18)
    phone: str = Field(pattern=r"^1[3-9]\d{9}$")


class BookAppointment(Command):
    session_id: str = Field(min_length=1, max_length=80)
    patient_id: str = Field(min_length=1, max_length=64)
    channel: Channel = "web"
    operator_id: str | None = None


class PatientRegistered(Event):
    patient_id: str
    id_masked: str
    phone_masked: str
    birth_date: str
    sex: Literal["M", "F"]


class AppointmentBooked(Event):
    appointment_id: str
    code: str
    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    patient_id: str
    channel: Channel
    sequence_number: int
    date: str
    period: str
    start: str
    fee: str


class BookingAnswer(Contract):
    appointment_id: str
    code: str
    sequence_number: int
    session_id: str
    status: Literal["booked", "cancelled", "checked_in", "no_show", "moved"] = "booked"
    arrival_window: str | None = None
