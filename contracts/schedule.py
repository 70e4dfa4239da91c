"""Schedule: what hospitals publish. Commands are imperative, events past tense."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.envelope import Command, Contract, Event

Period = Literal["morning", "afternoon", "evening"]
Channel = Literal["web", "phone", "window"]
Title = Literal["主任医师", "副主任医师", "主治医师", "医师"]
# 专家门诊 (expert clinic: the fee of the doctor's title) or 普通门诊 (general clinic: one fee).
ClinicType = Literal["expert", "general"]
GENERAL_FEE_CLASS = "普通门诊"
# A registration fee, as approved by the price bureau, is set per title (expert clinics) or for the
# general clinic.
FeeClass = Literal["主任医师", "副主任医师", "主治医师", "医师", "普通门诊"]
SessionState = Literal["scheduled", "stopped", "replaced"]


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
    contact: str = Field(default="", max_length=100, description="enquiry phone or desk")


class UpdateHospital(Command):
    """The hospital's published details, as a whole (fields left out are cleared to their defaults)."""

    hospital_id: str
    name: str = Field(min_length=2, max_length=100)
    level: str = Field(default="三级甲等", max_length=20)
    address: str = Field(default="", max_length=200)
    contact: str = Field(default="", max_length=100)


class ChangeBookingRules(Command):
    """New release / cut-off / limit rules; sessions published before keep the window they were given."""

    hospital_id: str
    rules: BookingRules


class ChangeFee(Command):
    """A registration fee approved by the price bureau; applies to sessions published after it."""

    hospital_id: str
    fee_class: FeeClass
    fee: Decimal = Field(ge=0, max_digits=8, decimal_places=2)


class DeclareHoliday(Command):
    """A day without the weekly plan: no sessions are generated for it (one-off sessions still may be).
    Sessions already published that day are stopped through the doctor-stop path (their bookings
    cancelled with SMS); the admin confirms how many with `confirm_stops`, the number the
    holiday preview showed: a different number (or none while there are some) is refused."""

    hospital_id: str
    date: date
    name: str = Field(min_length=1, max_length=40)
    confirm_stops: int | None = Field(default=None, ge=0, description="sessions of that day it stops")


class CancelHoliday(Command):
    """The day is a working day again: the weekly plan applies (stopped sessions stay stopped)."""

    hospital_id: str
    date: date


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
    title: Title
    specialty: str = Field(default="", max_length=200)
    bio: str = Field(default="", max_length=2000)
    clinic_type: ClinicType | None = Field(default=None, description="None: expert for 主任/副主任医师, else general")


class UpdateDepartment(Command):
    """A department's name and place in the hierarchy, as a whole."""

    department_id: str
    name: str = Field(min_length=1, max_length=60)
    parent_id: str | None = None


class UpdateDoctor(Command):
    """A doctor's published profile, as a whole; sessions published before keep what they showed."""

    doctor_id: str
    department_id: str
    name: str = Field(min_length=1, max_length=40)
    title: Title
    specialty: str = Field(default="", max_length=200)
    bio: str = Field(default="", max_length=2000)
    clinic_type: ClinicType | None = None


class PlanSlot(Contract):
    """One line of a doctor's weekly outpatient plan (出诊计划): every such weekday, this session."""

    weekday: int = Field(ge=1, le=7, description="1 = Monday … 7 = Sunday")
    period: Period
    start: time
    end: time
    capacity: int = Field(ge=1, le=1000)
    quota: Quota
    time_bands: list[TimeBand] = Field(default_factory=list, max_length=48)
    band_minutes: int | None = Field(default=None, ge=5, le=240, description="分时段: equal bands of N minutes")


class SetWeeklyPlan(Command):
    """The doctor's whole weekly plan; it replaces the previous one for sessions generated from now on."""

    doctor_id: str
    slots: list[PlanSlot] = Field(default_factory=list, max_length=21)


class GenerateSessions(Command):
    """Publish the concrete sessions of the weekly plans for a horizon (holidays and existing ones skipped)."""

    hospital_id: str
    date_from: date
    date_to: date
    doctor_ids: list[str] = Field(default_factory=list, max_length=500, description="empty: every planned doctor")


class ScheduleSession(Command):
    session_id: str = Field(pattern=r"^[a-z0-9-]{2,80}$")
    doctor_id: str
    date: date
    period: Period
    start: time
    end: time
    capacity: int = Field(ge=1, le=1000)
    quota: Quota
    # None: the hospital's current fee for the doctor's title or clinic type.
    fee: Decimal | None = Field(default=None, ge=0, max_digits=8, decimal_places=2)
    time_bands: list[TimeBand] = Field(default_factory=list, max_length=48)
    band_minutes: int | None = Field(default=None, ge=5, le=240, description="分时段: equal bands of N minutes")

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleSession:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.quota.total() > self.capacity:
            raise ValueError("quota (web+phone+window) exceeds capacity")
        return self


class ChangeSessionQuota(Command):
    session_id: str
    quota: Quota


class RequestDoctorStop(Command):
    """停诊申请 for one session; a hospital admin approves or rejects it."""

    session_id: str
    reason: str = Field(min_length=1, max_length=200)
    requested_by: str = Field(min_length=1, max_length=64, description="who asks: the doctor or the desk")


class ReplacementSession(Contract):
    """补诊: the session that takes the stopped one's bookings. Left-out fields are the stopped session's."""

    session_id: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,80}$")
    doctor_id: str | None = Field(default=None, description="None: the same doctor; else a same-title colleague")
    date: date
    period: Period
    start: time
    end: time
    capacity: int | None = Field(default=None, ge=1, le=1000)
    quota: Quota | None = None
    time_bands: list[TimeBand] | None = Field(default=None, max_length=48)
    band_minutes: int | None = Field(default=None, ge=5, le=240)


class ApproveDoctorStop(Command):
    session_id: str
    stop_id: str
    replacement: ReplacementSession | None = None


class RejectDoctorStop(Command):
    session_id: str
    stop_id: str
    reason: str = Field(min_length=1, max_length=200)


class WithdrawDoctorStop(Command):
    """The requester takes a pending stop request back (the hospital's HIS unblocks the slot:
    SIU^S24); not a decision of the admin, so not counted as a rejection."""

    session_id: str
    stop_id: str
    reason: str = Field(min_length=1, max_length=200)


ImportKind = Literal["hospital", "fee", "holiday", "department", "doctor", "plan_slot", "session"]


class ImportRecord(Contract):
    """One record of an import file; `data` is checked by the service as the command it stands for."""

    line: str = Field(min_length=1, max_length=200, description="where it came from, for the report")
    kind: ImportKind
    data: dict[str, Any]


class ImportPlan(Command):
    """A whole import file: every record is checked, then all are stored in one append, or none is."""

    source: str = Field(min_length=1, max_length=200)
    records: list[ImportRecord] = Field(max_length=20000)
    generate_from: date | None = None
    generate_to: date | None = None


class ImportProblem(Contract):
    line: str
    kind: str
    field: str | None = None
    message: str


class ImportReport(Contract):
    ok: bool
    source: str
    created: dict[str, int] = Field(default_factory=dict)
    changed: dict[str, int] = Field(default_factory=dict)
    unchanged: int = 0
    sessions_generated: int = 0
    rejected: list[ImportProblem] = Field(default_factory=list)
    notices: list[ImportProblem] = Field(default_factory=list)


# --- events ---------------------------------------------------------------------------------

class HospitalRegistered(Event):
    hospital_id: str
    name: str
    level: str
    address: str
    rules: BookingRules = BookingRules()
    contact: str = ""


class HospitalUpdated(Event):
    hospital_id: str
    name: str
    level: str
    address: str
    contact: str


class HospitalRulesChanged(Event):
    hospital_id: str
    rules: BookingRules


class FeeChanged(Event):
    """Sessions published from now on carry the new fee; published (and booked) ones keep theirs."""

    hospital_id: str
    fee_class: FeeClass
    fee: Decimal
    previous_fee: Decimal | None = None


class HolidayDeclared(Event):
    hospital_id: str
    date: date
    name: str
    # The day's published sessions this declaration stopped (each by DoctorStopApproved in the same append).
    stopped_session_ids: list[str] = Field(default_factory=list)


class HolidayCancelled(Event):
    hospital_id: str
    date: date


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
    bio: str = ""
    clinic_type: ClinicType = "general"


class DepartmentUpdated(Event):
    department_id: str
    hospital_id: str
    name: str
    parent_id: str | None


class DoctorUpdated(Event):
    doctor_id: str
    hospital_id: str
    department_id: str
    name: str
    title: str
    specialty: str
    bio: str
    clinic_type: ClinicType


class WeeklyPlanChanged(Event):
    doctor_id: str
    hospital_id: str
    slots: list[PlanSlot]


class SkippedSession(Contract):
    session_id: str
    date: date
    reason: str


class SessionsGenerated(Event):
    """Summary of one generation run (its sessions are SessionScheduled events of their own)."""

    hospital_id: str
    date_from: date
    date_to: date
    session_ids: list[str]
    skipped: list[SkippedSession] = Field(default_factory=list)


class PlanImported(Event):
    """Summary of one import, for the audit trail; its content is in the events stored with it."""

    source: str
    hospital_ids: list[str]
    created: dict[str, int]
    changed: dict[str, int]
    unchanged: int
    sessions_generated: int
    notices: list[ImportProblem] = Field(default_factory=list)


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
    clinic_type: ClinicType | None = None


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


class DoctorStopRetracted(Event):
    stop_id: str
    session_id: str
    hospital_id: str
    reason: str
    retracted_by: str


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
    include_subdepartments: bool = False  # 内科 → also 心血管内科, 消化内科 …
