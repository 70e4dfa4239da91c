"""Schedule: what hospitals publish. Commands are imperative, events past tense."""

from __future__ import annotations

from datetime import date, datetime, time
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


class BookingRules(Contract):
    """A hospital's booking rules; every field has the default real platforms use."""

    release_days: int = Field(default=7, ge=1, le=90, description="sessions open N days ahead")
    release_time: time = Field(default=time(8, 0), description="at this local time")
    cutoff_days_before: int = Field(default=1, ge=0, le=7, description="booking and cancel close N days before")
    cutoff_time: time = Field(default=time(16, 0), description="at this local time")
    lapse_minutes_before_end: int = Field(default=60, ge=0, le=600, description="unchecked-in bookings lapse")
    max_per_day: int = Field(default=2, ge=1, le=20, description="bookings of one patient on one day")
    max_per_department_day: int = Field(default=1, ge=1, le=20, description="per department per day")
    max_active: int = Field(default=5, ge=1, le=50, description="booked, not yet visited")
    phone_max_patients: int = Field(default=3, ge=1, le=20, description="patients one mobile number serves")
    phone_handover_time: time = Field(default=time(16, 0), description="next day's paid phone list to HIS")


class TimeBand(Contract):
    """分时段: sequence numbers `first`..`last` are asked to arrive between start and end."""

    start: time
    end: time
    numbers: int = Field(ge=1, le=500)


# --- commands -------------------------------------------------------------------------------

class RegisterHospital(Command):
    hospital_id: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    name: str = Field(min_length=2, max_length=100)
    level: str = Field(default="三级甲等", max_length=20)
    address: str = Field(default="", max_length=200)
    rules: BookingRules = BookingRules()


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
    time_bands: list[TimeBand] = Field(default_factory=list, max_length=48)

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
    rules: BookingRules = BookingRules()


class HospitalRulesChanged(Event):
    hospital_id: str
    rules: BookingRules


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
    # When booking opens and closes, and when an unchecked-in booking lapses: absolute times
    # (Asia/Shanghai) computed by schedule from the hospital's rules when the session is published.
    opens_at: datetime
    closes_at: datetime
    lapse_at: datetime
    time_bands: list[TimeBand] = Field(default_factory=list)
    replaces_session_id: str | None = None  # 补诊: scheduled as the replacement of a stopped session


class SessionQuotaChanged(Event):
    session_id: str
    hospital_id: str
    quota: Quota


class DoctorStopRequested(Event):
    stop_id: str
    session_id: str
    hospital_id: str
    reason: str
    requested_by: str


class DoctorStopApproved(Event):
    """停诊 approved: booking moves the session's bookings to the replacement (if any) or cancels them."""

    stop_id: str
    session_id: str
    hospital_id: str
    reason: str
    approved_by: str
    replacement_session_id: str | None = None


class DoctorStopRejected(Event):
    stop_id: str
    session_id: str
    hospital_id: str
    reason: str
    rejected_by: str


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
