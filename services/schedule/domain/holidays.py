"""Holidays (节假日). Declaring one stops the day's published sessions through the doctor-stop path
(a request and its approval each, no replacement, so booking cancels their bookings and the
patients get an SMS), in the same append as the holiday, once the admin has confirmed how many.
Cancelling one lets the weekly plan apply to the day again; what it stopped stays stopped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from contracts import Actor, CancelHoliday, Conflict, DeclareHoliday, HolidayCancelled, HolidayDeclared, NotFound
from services.schedule.domain.hospitals import declare_holiday, unknown_hospital
from services.schedule.domain.rules import authorize_hospital_change, authorize_stop_decision
from services.schedule.domain.state import (
    HOSPITAL_TZ,
    Hospital,
    ScheduleWorld,
    Session,
    hospital_stream,
    session_stream,
)
from services.schedule.domain.stops import stage_stop_without_replacement


def holiday_stop_reason(name: str) -> str:
    return f"节假日：{name}"


def stopped_by_holiday(state: str, starts_at: datetime, now: datetime) -> bool:
    """A holiday stops the sessions of its day that are still scheduled and have not begun (one that
    has begun is being seen; its patients may be in the waiting room)."""
    return state == "scheduled" and starts_at > now


def stage_holiday(world: ScheduleWorld, cmd: DeclareHoliday, now: datetime,
                  session_ids: Sequence[str]) -> HolidayDeclared | None:
    """Stage the holiday and, if the day was not a holiday yet, the stop of each of its sessions
    that `stopped_by_holiday`. `session_ids`: the hospital's sessions of that day as the read model
    knows them, a hint loaded with the hospital in one read; each is checked on its own stream.
    A day already declared (renamed, or declared again) stops nothing: a session published on a
    holiday after it was declared is a one-off the admin meant to hold."""
    ids = sorted(set(session_ids))
    world.need(hospital_stream(cmd.hospital_id), *map(session_stream, ids))
    hospital = world.hospital(cmd.hospital_id)
    if declare_holiday(cmd, hospital) is None:  # unknown hospital, not allowed, or nothing would change
        return None
    to_stop = [] if cmd.date in hospital.holidays else [
        sid for sid in ids if _stops(world.session(sid), cmd.hospital_id, cmd.date, now)]
    check_stop_confirmation(cmd.confirm_stops, len(to_stop))
    if to_stop:
        authorize_stop_decision(cmd.actor, cmd.hospital_id)  # stopping sessions is a stop decision (停诊审批)
    for sid in to_stop:
        stage_stop_without_replacement(world, sid, holiday_stop_reason(cmd.name), cmd.actor.id)
    # The holiday last: its position, which a repeat answers and the service waits for, is past every stop.
    return world.stage(hospital_stream(cmd.hospital_id), HolidayDeclared(
        hospital_id=cmd.hospital_id, date=cmd.date, name=cmd.name, stopped_session_ids=to_stop))


def check_stop_confirmation(confirmed: int | None, count: int) -> None:
    """The admin confirms the number of sessions the holiday stops, as the preview showed it: a
    different number means the day changed since (or the admin did not look), so nothing is done."""
    if confirmed == count or (confirmed is None and count == 0):
        return
    given = "未确认" if confirmed is None else f"确认了 {confirmed} 个"
    given_en = "none was confirmed" if confirmed is None else f"{confirmed} were confirmed"
    raise Conflict(f"该节假日将停诊当日 {count} 个已发布的出诊（其预约将被取消并短信通知患者），{given}；"
                   f"请核对后以 confirm_stops={count} 确认 / the holiday would stop {count} published sessions of "
                   f"that day (their bookings cancelled, patients told by SMS) and {given_en}: check them and "
                   f"confirm with confirm_stops={count}", field="confirm_stops", code="confirm_holiday_stops")


def cancel_holiday(cmd: CancelHoliday, hospital: Hospital) -> HolidayCancelled:
    if not hospital.exists:
        raise unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if cmd.date not in hospital.holidays:
        raise NotFound(f"{cmd.date} 不是医院 {cmd.hospital_id} 的节假日 / no holiday on that day", field="date")
    return HolidayCancelled(hospital_id=cmd.hospital_id, date=cmd.date)


def holiday_preview(actor: Actor, hospital_id: str, day: date, hospital: Mapping[str, Any] | None,
                    sessions: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """What declaring a holiday on `day` would stop, from the read model's `hospital` (None: unknown;
    its `holidays` from `day` on) and `sessions` of that day (rows with session_id, doctor_id,
    doctor_name, department_id, period, start, end, state). `declared`: the day's holiday, if it
    is one already (then nothing would be stopped)."""
    authorize_hospital_change(actor, hospital_id)
    if hospital is None:
        raise unknown_hospital(hospital_id)
    declared = next((h["name"] for h in hospital.get("holidays", []) if h["date"] == day.isoformat()), None)
    fields = ("session_id", "doctor_id", "doctor_name", "department_id", "period", "start", "end")
    stops = [] if declared is not None else [
        {f: s[f] for f in fields} for s in sorted(sessions, key=lambda s: (s["start"], s["session_id"]))
        if stopped_by_holiday(s["state"], datetime.combine(day, time.fromisoformat(s["start"]), HOSPITAL_TZ), now)]
    return {"hospital_id": hospital_id, "date": day.isoformat(), "declared": declared, "sessions": stops}


def _stops(session: Session, hospital_id: str, day: date, now: datetime) -> bool:
    return (session.exists and session.hospital_id == hospital_id and session.data["date"] == day.isoformat()
            and stopped_by_holiday(session.state, session.starts_at, now))
