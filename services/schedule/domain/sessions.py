"""Decisions on sessions (出诊): a one-off session, generating the weekly plans' sessions for a
date range, and a change of a session's quota. A session and its doctor's calendar entry
(doctor-sessions-<id>, what overlap is checked against) are always staged together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from contracts import (
    Actor,
    ChangeSessionQuota,
    Conflict,
    DoctorSessionAdded,
    InvalidInput,
    NotFound,
    PlanSlot,
    Quota,
    ScheduleSession,
    SessionQuotaChanged,
    SessionScheduled,
    SessionsGenerated,
    SkippedSession,
    TimeBand,
)
from contracts.schedule import Period
from services.schedule.domain.hospitals import unknown_hospital
from services.schedule.domain.rules import (
    SessionTime,
    authorize_hospital_change,
    booking_window,
    check_session_shape,
    clinic_type_of,
    fee_for,
    resolve_time_bands,
)
from services.schedule.domain.state import (
    HOSPITAL_TZ,
    DoctorSessions,
    Entity,
    Hospital,
    ScheduleWorld,
    Session,
    doctor_sessions_stream,
    doctor_stream,
    generation_stream,
    hospital_stream,
    plan_session_id,
    session_stream,
)

MAX_GENERATION_DAYS = 62

# --- sessions -------------------------------------------------------------------------------------


def published_session(
    session_id: str, doctor: dict[str, Any], hospital: Hospital, day: date, period: Period, start: time, end: time,
    capacity: int, quota: Quota, fee: Decimal, time_bands: list[TimeBand], replaces: str | None = None,
) -> SessionScheduled:
    opens_at, closes_at, lapse_at = booking_window(SessionTime(day, start, end), hospital.rules)
    return SessionScheduled(
        session_id=session_id, hospital_id=doctor["hospital_id"], department_id=doctor["department_id"],
        doctor_id=doctor["doctor_id"], doctor_name=doctor["name"], doctor_title=doctor["title"], date=day,
        period=period, start=start, end=end, capacity=capacity, quota=quota, fee=fee, opens_at=opens_at,
        closes_at=closes_at, lapse_at=lapse_at, time_bands=time_bands, replaces_session_id=replaces,
        clinic_type=clinic_type_of(doctor["title"], doctor.get("clinic_type")),
    )


def not_in_the_past(day: date, start: time, now: datetime, field_name: str) -> None:
    if datetime.combine(day, start, HOSPITAL_TZ) <= now:
        raise InvalidInput(f"出诊时间 {day} {start:%H:%M} 已过 / the session is in the past", field=field_name)


def schedule_session(cmd: ScheduleSession, doctor: Entity, sessions: DoctorSessions, current: Entity | Session,
                     now: datetime, hospital: Hospital | None = None) -> SessionScheduled:
    """A one-off session (a session outside the weekly plan, e.g. on a holiday)."""
    if not doctor.exists:
        raise NotFound(f"医生 {cmd.doctor_id} 不存在 / unknown doctor", field="doctor_id")
    authorize_hospital_change(cmd.actor, doctor.data["hospital_id"])
    if current.exists:
        raise Conflict(f"出诊 {cmd.session_id} 已存在 / session already exists", field="session_id")
    bands = resolve_time_bands(cmd.start, cmd.end, cmd.capacity, cmd.time_bands, cmd.band_minutes)
    check_session_shape(cmd.start, cmd.end, cmd.capacity, cmd.quota, bands)
    not_in_the_past(cmd.date, cmd.start, now, "date")
    if (other := sessions.overlapping(cmd.date, cmd.start, cmd.end)) is not None:
        raise Conflict(f"与出诊 {other} 时间重叠 / overlaps session {other}", field="start")
    hospital = hospital or Hospital()
    fee = fee_for(hospital, doctor.data, cmd.fee)
    return published_session(cmd.session_id, doctor.data, hospital, cmd.date, cmd.period, cmd.start, cmd.end,
                      cmd.capacity, cmd.quota, fee, bands)


def stage_session(world: ScheduleWorld, event: SessionScheduled) -> None:
    world.stage(session_stream(event.session_id), event)
    world.stage(doctor_sessions_stream(event.doctor_id), DoctorSessionAdded(
        doctor_id=event.doctor_id, session_id=event.session_id, date=event.date, start=event.start, end=event.end))


def stage_one_off_session(world: ScheduleWorld, cmd: ScheduleSession, now: datetime) -> SessionScheduled:
    world.need(doctor_stream(cmd.doctor_id), doctor_sessions_stream(cmd.doctor_id), session_stream(cmd.session_id))
    doctor = world.doctor(cmd.doctor_id)
    hospital = world.hospital(doctor.data["hospital_id"]) if doctor.exists else Hospital()
    event = schedule_session(cmd, doctor, world.doctor_sessions(cmd.doctor_id), world.session(cmd.session_id),
                             now, hospital)
    stage_session(world, event)
    return event


def generate_for_doctor(world: ScheduleWorld, doctor_id: str, date_from: date, date_to: date, now: datetime,
                        slots: Sequence[PlanSlot] | None = None) -> tuple[list[str], list[SkippedSession]]:
    """Stage the sessions of the doctor's weekly plan from date_from to date_to (inclusive). Existing
    ones are left alone (not reported); holidays, past times and overlaps are skipped and reported."""
    doctor = world.doctor(doctor_id)
    if not doctor.exists:
        raise NotFound(f"医生 {doctor_id} 不存在 / unknown doctor", field="doctor_ids")
    if slots is None:
        slots = [PlanSlot.model_validate(s) for s in doctor.data.get("slots", [])]
    hospital = world.hospital(doctor.data["hospital_id"])
    scheduled: list[str] = []
    skipped: list[SkippedSession] = []
    if not slots:
        return scheduled, skipped
    fee = fee_for(hospital, doctor.data, None)
    day = date_from
    while day <= date_to:
        for slot in sorted(slots, key=lambda s: s.start):
            if slot.weekday != day.isoweekday():
                continue
            session_id = plan_session_id(doctor_id, day, slot.period)
            if world.session(session_id).exists:
                continue
            if day in hospital.holidays:
                skipped.append(SkippedSession(session_id=session_id, date=day,
                                              reason=f"节假日：{hospital.holidays[day]} / holiday"))
                continue
            if datetime.combine(day, slot.start, HOSPITAL_TZ) <= now:
                skipped.append(SkippedSession(session_id=session_id, date=day, reason="时间已过 / in the past"))
                continue
            other = world.doctor_sessions(doctor_id).overlapping(day, slot.start, slot.end)
            if other is not None:
                skipped.append(SkippedSession(session_id=session_id, date=day,
                                              reason=f"与出诊 {other} 时间重叠 / overlaps session {other}"))
                continue
            bands = resolve_time_bands(slot.start, slot.end, slot.capacity, slot.time_bands, slot.band_minutes)
            stage_session(world, published_session(session_id, doctor.data, hospital, day, slot.period, slot.start,
                                             slot.end, slot.capacity, slot.quota, fee, bands))
            scheduled.append(session_id)
        day += timedelta(days=1)
    return scheduled, skipped


def generation_streams(world: ScheduleWorld, doctor_ids: Sequence[str], date_from: date, date_to: date) -> list[str]:
    """What generating the (loaded) doctors' weekly plans from date_from to date_to reads: each
    doctor's hospital and calendar, and every session its plan would publish in the range."""
    streams: list[str] = []
    for doctor_id in doctor_ids:
        doctor = world.doctor(doctor_id)
        if not doctor.exists:
            continue
        streams += [hospital_stream(doctor.data["hospital_id"]), doctor_sessions_stream(doctor_id)]
        slots = [(int(s["weekday"]), str(s["period"])) for s in doctor.data.get("slots", [])]
        day = date_from
        while slots and day <= date_to:
            streams += [session_stream(plan_session_id(doctor_id, day, period))
                        for weekday, period in slots if weekday == day.isoweekday()]
            day += timedelta(days=1)
    return streams


def check_horizon(date_from: date, date_to: date, now: datetime) -> None:
    if date_to < date_from:
        raise InvalidInput("结束日期早于开始日期 / date_to is before date_from", field="date_to")
    if (date_to - date_from).days >= MAX_GENERATION_DAYS:
        raise InvalidInput(f"一次最多生成 {MAX_GENERATION_DAYS} 天 / at most {MAX_GENERATION_DAYS} days at once",
                           field="date_to")
    if date_to < now.date():
        raise InvalidInput("日期范围已过 / the date range is in the past", field="date_to")


def generate_sessions(world: ScheduleWorld, hospital_id: str, doctor_ids: Sequence[str], date_from: date,
                      date_to: date, now: datetime, actor: Actor) -> SessionsGenerated:
    doctor_ids = sorted(set(doctor_ids))
    # Everything is asked for in two reads, not one per doctor and day: the doctors, then what their plans name.
    world.need(hospital_stream(hospital_id), generation_stream(hospital_id), *(doctor_stream(d) for d in doctor_ids))
    hospital = world.hospital(hospital_id)
    if not hospital.exists:
        raise unknown_hospital(hospital_id)
    authorize_hospital_change(actor, hospital_id)
    check_horizon(date_from, date_to, now)
    world.need(*generation_streams(world, doctor_ids, date_from, date_to))
    scheduled: list[str] = []
    skipped: list[SkippedSession] = []
    for doctor_id in doctor_ids:
        doctor = world.doctor(doctor_id)
        if doctor.exists and doctor.data["hospital_id"] != hospital_id:
            raise InvalidInput(f"医生 {doctor_id} 不属于医院 {hospital_id} / doctor of another hospital",
                               field="doctor_ids")
        ids, skips = generate_for_doctor(world, doctor_id, date_from, date_to, now)
        scheduled += ids
        skipped += skips
    return world.stage(generation_stream(hospital_id), SessionsGenerated(
        hospital_id=hospital_id, date_from=date_from, date_to=date_to, session_ids=scheduled, skipped=skipped))


def unknown_session(session_id: str) -> NotFound:
    return NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")


def change_session_quota(cmd: ChangeSessionQuota, session: Session, now: datetime) -> SessionQuotaChanged | None:
    """A new split of the session's numbers; bookings already made are booking's and stay."""
    if not session.exists:
        raise unknown_session(cmd.session_id)
    authorize_hospital_change(cmd.actor, session.hospital_id)
    if session.state != "scheduled":
        raise Conflict("出诊已停诊 / the session was stopped", field="session_id")
    if session.ends_at <= now:
        raise InvalidInput("出诊已结束 / the session has already happened", field="session_id")
    capacity = int(session.data["capacity"])
    if cmd.quota.total() > capacity:
        raise InvalidInput(f"号源配额合计 {cmd.quota.total()} 超过总号源 {capacity} / quota exceeds capacity",
                           field="quota")
    if cmd.quota.model_dump() == session.quota:
        return None
    return SessionQuotaChanged(session_id=cmd.session_id, hospital_id=session.hospital_id, quota=cmd.quota)
