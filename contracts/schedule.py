"""Schedule: what hospitals publish. Commands are imperative, events past tense."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from contracts.envelope import Command, Contract, Event

Period = Literal["morning", "afternoon", "evening"]
Channel = Literal["web", "phone", "window"]
CHANNELS: tuple[Channel, ...] = ("web", "phone", "window")


class Quota(Contract):
    web: int = Field(default=0, ge=0, le=1000)
    phone: int = Field(default=0, ge=0, le=1000)
    window: int = Field(default=0, ge=0, le=1000)

    def total(self) -> int:
        return self.web + self.phone + self.window

    def for_channel(self, channel: str) -> int:
        return int(getattr(self, channel))


# --- commands -------------------------------------------------------------------------------

class RegisterHospital(Command):
    hospital_id: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    name: str = Field(min_length=2, max_length=100)
    level: str = Field(default="三级甲等", max_length=20)
    address: str = Field(default="", max_length=200)


class CreateDepartment(Command):
    department_id: str = Field(pattern=r"^[a-z0-9-]{2,60}$")
    hospital_id: str
    name: str = Field(min_length=1, max_length=60)
    parent_id: str | None = None


class RegisterDoctor(Command):
    doctor_id: str = Field(pattern=r"^[a-z0-9-]{2,60}$")
    hospital_id: str
    department_id: str
    name: str = Field(min_length=1, max_length=40)
    title: Literal["主任医师", "副主任医师", "主治医师", "医师"]
    specialty: str = Field(default="", max_length=200)


class ScheduleSession(Command):
    session_id: str = Field(pattern=r"^[a-z0-9-]{2,80}$")
    doctor_id: str
    date: date
    period: Period
    start: time
    end: time
    capacity: int = Field(ge=1, le=1000)
    quota: Quota
    fee: Decimal = Field(ge=0, max_digits=8, decimal_places=2)

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleSession:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.quota.total() > self.capacity:
            raise ValueError("quota (web+phone+window) exceeds capacity")
        return self


# --- events ---------------------------------------------------------------------------------

class HospitalRegistered(Event):
    hospital_id: str
    name: str
    level: str
    address: str


class DepartmentCreated(Event):
    department_id: str
    hospital_id: str
    name: str
    parent_id: str | None


class DoctorRegistered(Event):
    doctor_id: str
    hospital_id: str
    department_id: str
    name: str
    title: str
    specialty: str


class SessionScheduled(Event):
    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    doctor_name: str
    doctor_title: str
    date: date
    period: Period
    start: time
    end: time
    capacity: int
    quota: Quota
    fee: Decimal


class DoctorSessionAdded(Event):
    """The doctor's calendar took a session (its own stream guards against overlaps)."""

    doctor_id: str
    session_id: str
    date: date
    start: time
    end: time


class ScheduleQuery(Contract):
    department_id: str
    date_from: date
    date_to: date
