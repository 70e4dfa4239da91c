"""Decisions on hospitals (details, booking rules, fees, holidays), departments, doctors and a
doctor's weekly plan (出诊计划). Each takes the command and the folded state it concerns and
returns the event to store, None when nothing would change, or raises a DomainError."""

from __future__ import annotations

from collections.abc import Sequence

from contracts import (
    ChangeBookingRules,
    ChangeFee,
    Conflict,
    CreateDepartment,
    DeclareHoliday,
    DepartmentCreated,
    DepartmentUpdated,
    DoctorRegistered,
    DoctorUpdated,
    DomainError,
    FeeChanged,
    HolidayDeclared,
    HospitalRegistered,
    HospitalRulesChanged,
    HospitalUpdated,
    InvalidInput,
    NotFound,
    PlanSlot,
    RegisterDoctor,
    RegisterHospital,
    SetWeeklyPlan,
    UpdateDepartment,
    UpdateDoctor,
    UpdateHospital,
    WeeklyPlanChanged,
)
from services.schedule.domain.rules import (
    authorize_hospital_change,
    authorize_hospital_settings,
    authorize_platform,
    check_session_shape,
    clinic_type_of,
    resolve_time_bands,
)
from services.schedule.domain.state import WEEKDAY_NAMES, Entity, Hospital

# --- hospitals ------------------------------------------------------------------------------------


def unknown_hospital(hospital_id: str) -> NotFound:
    return NotFound(f"医院 {hospital_id} 不存在 / unknown hospital", field="hospital_id")


def register_hospital(cmd: RegisterHospital, current: Hospital | Entity) -> HospitalRegistered:
    authorize_platform(cmd.actor)
    if current.exists:
        raise Conflict(f"医院 {cmd.hospital_id} 已存在 / hospital already exists", field="hospital_id")
    return HospitalRegistered(hospital_id=cmd.hospital_id, name=cmd.name, level=cmd.level, address=cmd.address,
                              contact=cmd.contact, rules=cmd.rules)


def update_hospital(cmd: UpdateHospital, hospital: Hospital) -> HospitalUpdated | None:
    if not hospital.exists:
        raise unknown_hospital(cmd.hospital_id)
    authorize_hospital_settings(cmd.actor, cmd.hospital_id)
    event = HospitalUpdated(hospital_id=cmd.hospital_id, name=cmd.name, level=cmd.level, address=cmd.address,
                            contact=cmd.contact)
    before = (hospital.name, hospital.level, hospital.address, hospital.contact)
    return None if before == (cmd.name, cmd.level, cmd.address, cmd.contact) else event


def change_booking_rules(cmd: ChangeBookingRules, hospital: Hospital) -> HospitalRulesChanged | None:
    if not hospital.exists:
        raise unknown_hospital(cmd.hospital_id)
    authorize_hospital_settings(cmd.actor, cmd.hospital_id)
    if cmd.rules == hospital.rules:
        return None
    return HospitalRulesChanged(hospital_id=cmd.hospital_id, rules=cmd.rules)


def change_fee(cmd: ChangeFee, hospital: Hospital) -> FeeChanged | None:
    if not hospital.exists:
        raise unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if cmd.fee < 0:  # the contract refuses it too; the rule is the domain's
        raise InvalidInput("挂号费不能为负数 / fee must not be negative", field="fee")
    previous = hospital.fees.get(cmd.fee_class)
    if previous == cmd.fee:
        return None
    return FeeChanged(hospital_id=cmd.hospital_id, fee_class=cmd.fee_class, fee=cmd.fee, previous_fee=previous)


def declare_holiday(cmd: DeclareHoliday, hospital: Hospital) -> HolidayDeclared | None:
    if not hospital.exists:
        raise unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if hospital.holidays.get(cmd.date) == cmd.name:
        return None
    return HolidayDeclared(hospital_id=cmd.hospital_id, date=cmd.date, name=cmd.name)


# --- departments ----------------------------------------------------------------------------------


def create_department(cmd: CreateDepartment, hospital: Hospital | Entity, parent: Entity | None,
                      current: Entity) -> DepartmentCreated:
    if not hospital.exists:
        raise unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if current.exists:
        raise Conflict(f"科室 {cmd.department_id} 已存在 / department already exists", field="department_id")
    _check_parent(cmd.parent_id, cmd.hospital_id, parent)
    return DepartmentCreated(
        department_id=cmd.department_id, hospital_id=cmd.hospital_id, name=cmd.name, parent_id=cmd.parent_id
    )


def update_department(cmd: UpdateDepartment, current: Entity, parent: Entity | None,
                      parent_chain: Sequence[str] = ()) -> DepartmentUpdated | None:
    """`parent_chain`: the new parent and its ancestors, to refuse a department under itself."""
    if not current.exists:
        raise NotFound(f"科室 {cmd.department_id} 不存在 / unknown department", field="department_id")
    hospital_id = current.data["hospital_id"]
    authorize_hospital_change(cmd.actor, hospital_id)
    _check_parent(cmd.parent_id, hospital_id, parent)
    if cmd.department_id in parent_chain:
        raise InvalidInput("科室不能挂在自己或下级科室之下 / a department cannot sit under itself", field="parent_id")
    if (current.data["name"], current.data.get("parent_id")) == (cmd.name, cmd.parent_id):
        return None
    return DepartmentUpdated(department_id=cmd.department_id, hospital_id=hospital_id, name=cmd.name,
                             parent_id=cmd.parent_id)


def _check_parent(parent_id: str | None, hospital_id: str, parent: Entity | None) -> None:
    if parent_id is None:
        return
    if parent is None or not parent.exists:
        raise NotFound(f"上级科室 {parent_id} 不存在 / unknown parent department", field="parent_id")
    if parent.data["hospital_id"] != hospital_id:
        raise InvalidInput("上级科室属于其他医院 / parent belongs to another hospital", field="parent_id")


# --- doctors --------------------------------------------------------------------------------------


def _check_department(department_id: str, hospital_id: str, department: Entity) -> None:
    if not department.exists:
        raise NotFound(f"科室 {department_id} 不存在 / unknown department", field="department_id")
    if department.data["hospital_id"] != hospital_id:
        raise InvalidInput("科室不属于该医院 / department belongs to another hospital", field="department_id")


def register_doctor(cmd: RegisterDoctor, department: Entity, current: Entity) -> DoctorRegistered:
    _check_department(cmd.department_id, cmd.hospital_id, department)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if current.exists:
        raise Conflict(f"医生 {cmd.doctor_id} 已存在 / doctor already exists", field="doctor_id")
    return DoctorRegistered(
        doctor_id=cmd.doctor_id, hospital_id=cmd.hospital_id, department_id=cmd.department_id, name=cmd.name,
        title=cmd.title, specialty=cmd.specialty, bio=cmd.bio, clinic_type=clinic_type_of(cmd.title, cmd.clinic_type),
    )


def update_doctor(cmd: UpdateDoctor, current: Entity, department: Entity) -> DoctorUpdated | None:
    if not current.exists:
        raise NotFound(f"医生 {cmd.doctor_id} 不存在 / unknown doctor", field="doctor_id")
    hospital_id = current.data["hospital_id"]
    authorize_hospital_change(cmd.actor, hospital_id)
    _check_department(cmd.department_id, hospital_id, department)
    event = DoctorUpdated(
        doctor_id=cmd.doctor_id, hospital_id=hospital_id, department_id=cmd.department_id, name=cmd.name,
        title=cmd.title, specialty=cmd.specialty, bio=cmd.bio, clinic_type=clinic_type_of(cmd.title, cmd.clinic_type),
    )
    fields = ("department_id", "name", "title", "specialty", "bio", "clinic_type")
    if all(current.data.get(f, "") == getattr(event, f) for f in fields):
        return None
    return event


# --- the weekly plan ------------------------------------------------------------------------------


def plan_slot_problems(slots: Sequence[PlanSlot], labels: Sequence[str] = ()) -> list[tuple[int, DomainError]]:
    """Every refused slot of a weekly plan, by index: its own shape, or an overlap with an earlier one
    (named by its label: an import line; by default its place in the list)."""
    problems: list[tuple[int, DomainError]] = []
    kept: list[tuple[int, PlanSlot]] = []
    for i, slot in enumerate(slots):
        try:
            bands = resolve_time_bands(slot.start, slot.end, slot.capacity, slot.time_bands, slot.band_minutes)
            check_session_shape(slot.start, slot.end, slot.capacity, slot.quota, bands)
            for j, other in kept:
                if other.weekday == slot.weekday and slot.start < other.end and other.start < slot.end:
                    other_label = labels[j] if labels else f"slots.{j}"
                    raise Conflict(f"与 {other_label} 的出诊计划（{WEEKDAY_NAMES[slot.weekday]}）时间重叠 / overlaps "
                                   f"the plan slot of {other_label}", field="start")
        except DomainError as err:
            problems.append((i, err))
            continue
        kept.append((i, slot))
    return problems


def set_weekly_plan(cmd: SetWeeklyPlan, doctor: Entity) -> WeeklyPlanChanged | None:
    if not doctor.exists:
        raise NotFound(f"医生 {cmd.doctor_id} 不存在 / unknown doctor", field="doctor_id")
    authorize_hospital_change(cmd.actor, doctor.data["hospital_id"])
    for i, err in plan_slot_problems(cmd.slots):
        raise type(err)(err.message, field=f"slots.{i}.{err.field}" if err.field else f"slots.{i}")
    event = WeeklyPlanChanged(doctor_id=cmd.doctor_id, hospital_id=doctor.data["hospital_id"], slots=cmd.slots)
    if doctor.data.get("slots") == event.model_dump(mode="json")["slots"]:
        return None
    return event
