"""Schedule rules, pure: state folded from events, decisions returning new events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from contracts import (
    Conflict,
    CreateDepartment,
    DepartmentCreated,
    DoctorRegistered,
    HospitalRegistered,
    InvalidInput,
    NotFound,
    RegisterDoctor,
    RegisterHospital,
    ScheduleSession,
    SessionScheduled,
)
from contracts.schedule import BookingRules

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")


def hospital_stream(hospital_id: str) -> str:
    return f"hospital-{hospital_id}"


def department_stream(department_id: str) -> str:
    return f"department-{department_id}"


def doctor_stream(doctor_id: str) -> str:
    return f"doctor-{doctor_id}"


def session_stream(session_id: str) -> str:
    return f"session-{session_id}"


def doctor_sessions_stream(doctor_id: str) -> str:
    return f"doctor-sessions-{doctor_id}"


@dataclass
class Entity:
    """Any schedule entity: it exists once its first event is folded in; data is the latest view."""

    version: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.version > 0

    @classmethod
    def fold(cls, events: list[Any]) -> Entity:
        state = cls()
        for ev in events:
            state.data.update(ev.data)
            state.version = ev.version
        return state


@dataclass
class DoctorSessions:
    """The sessions of one doctor: what overlap is checked against."""

    version: int = 0
    slots: list[tuple[str, str, str, str]] = field(default_factory=list)  # (date, start, end, session_id)

    @classmethod
    def fold(cls, events: list[Any]) -> DoctorSessions:
        state = cls()
        for ev in events:
            d = ev.data
            state.slots.append((d["date"], d["start"], d["end"], d["session_id"]))
            state.version = ev.version
        return state


def register_hospital(cmd: RegisterHospital, current: Entity) -> HospitalRegistered:
    if current.exists:
        raise Conflict(f"医院 {cmd.hospital_id} 已存在 / hospital already exists", field="hospital_id")
    return HospitalRegistered(hospital_id=cmd.hospital_id, name=cmd.name, level=cmd.level, address=cmd.address)


def create_department(cmd: CreateDepartment, hospital: Entity, parent: Entity | None,
                      current: Entity) -> DepartmentCreated:
    if not hospital.exists:
        raise NotFound(f"医院 {cmd.hospital_id} 不存在 / unknown hospital", field="hospital_id")
    if current.exists:
        raise Conflict(f"科室 {cmd.department_id} 已存在 / department already exists", field="department_id")
    if cmd.parent_id is not None:
        if parent is None or not parent.exists:
            raise NotFound(f"上级科室 {cmd.parent_id} 不存在 / unknown parent department", field="parent_id")
        if parent.data["hospital_id"] != cmd.hospital_id:
            raise InvalidInput("上级科室属于其他医院 / parent belongs to another hospital", field="parent_id")
    return DepartmentCreated(
        department_id=cmd.department_id, hospital_id=cmd.hospital_id, name=cmd.name, parent_id=cmd.parent_id
    )


def register_doctor(cmd: RegisterDoctor, department: Entity, current: Entity) -> DoctorRegistered:
    if not department.exists:
        raise NotFound(f"科室 {cmd.department_id} 不存在 / unknown department", field="department_id")
    if department.data["hospital_id"] != cmd.hospital_id:
        raise InvalidInput("科室不属于该医院 / department belongs to another hospital", field="department_id")
    if current.exists:
        raise Conflict(f"医生 {cmd.doctor_id} 已存在 / doctor already exists", field="doctor_id")
    return DoctorRegistered(**cmd.model_dump(exclude={"idempotency_key", "correlation_id", "actor"}))


def booking_window(cmd: ScheduleSession, rules: BookingRules) -> tuple[datetime, datetime, datetime]:
    """(opens_at, closes_at, lapse_at) of a session under its hospital's rules, local time."""
    opens = datetime.combine(cmd.date - timedelta(days=rules.release_days), rules.release_time, HOSPITAL_TZ)
    closes = datetime.combine(cmd.date - timedelta(days=rules.cutoff_days_before), rules.cutoff_time, HOSPITAL_TZ)
    end = datetime.combine(cmd.date, cmd.end, HOSPITAL_TZ)
    start = datetime.combine(cmd.date, cmd.start, HOSPITAL_TZ)
    closes = min(closes, start)
    lapse = max(end - timedelta(minutes=rules.lapse_minutes_before_end), start)
    return opens, closes, lapse


def schedule_session(cmd: ScheduleSession, doctor: Entity, sessions: DoctorSessions, current: Entity,
                     today: date, rules: BookingRules | None = None) -> SessionScheduled:
    if not doctor.exists:
        raise NotFound(f"医生 {cmd.doctor_id} 不存在 / unknown doctor", field="doctor_id")
    if current.exists:
        raise Conflict(f"出诊 {cmd.session_id} 已存在 / session already exists", field="session_id")
    if cmd.date < today:
        raise InvalidInput("出诊日期已过 / the session date is in the past", field="date")
    day, start, end = cmd.date.isoformat(), cmd.start.isoformat(), cmd.end.isoformat()
    for other_day, other_start, other_end, other_id in sessions.slots:
        if other_day == day and start < other_end and other_start < end:
            raise Conflict(f"与出诊 {other_id} 时间重叠 / overlaps session {other_id}", field="start")
    d = doctor.data
    opens_at, closes_at, lapse_at = booking_window(cmd, rules or BookingRules())
    return SessionScheduled(
        session_id=cmd.session_id,
        hospital_id=d["hospital_id"],
        department_id=d["department_id"],
        doctor_id=cmd.doctor_id,
        doctor_name=d["name"],
        doctor_title=d["title"],
        date=cmd.date,
        period=cmd.period,
        start=cmd.start,
        end=cmd.end,
        capacity=cmd.capacity,
        quota=cmd.quota,
        fee=cmd.fee,
        opens_at=opens_at,
        closes_at=closes_at,
        lapse_at=lapse_at,
        time_bands=cmd.time_bands,
    )
