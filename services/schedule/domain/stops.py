"""Doctor stops (停诊): a request, and its approval (with an optional replacement session, 补诊)
or rejection by an admin of the session's hospital."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from decimal import Decimal
from typing import Any

from contracts import (
    Actor,
    ApproveDoctorStop,
    Conflict,
    DoctorStopApproved,
    DoctorStopRejected,
    DoctorStopRequested,
    DoctorStopRetracted,
    InvalidInput,
    NotFound,
    Quota,
    RejectDoctorStop,
    RequestDoctorStop,
    SessionScheduled,
    TimeBand,
    WithdrawDoctorStop,
)
from services.schedule.domain.rules import (
    authorize_hospital_change,
    authorize_stop_decision,
    check_session_shape,
    equal_time_bands,
    fee_for,
    minutes_of,
    resolve_time_bands,
)
from services.schedule.domain.sessions import not_in_the_past, published_session, stage_session, unknown_session
from services.schedule.domain.state import (
    ScheduleWorld,
    Session,
    doctor_sessions_stream,
    doctor_stream,
    hospital_stream,
    session_stream,
)

# --- doctor stops (停诊) --------------------------------------------------------------------------


def request_doctor_stop(cmd: RequestDoctorStop, session: Session, now: datetime) -> DoctorStopRequested:
    if not session.exists:
        raise unknown_session(cmd.session_id)
    authorize_hospital_change(cmd.actor, session.hospital_id)
    if session.starts_at <= now:
        raise InvalidInput("出诊已开始或已结束，不能申请停诊 / the session has already begun or happened",
                           field="session_id")
    if session.state != "scheduled":
        raise Conflict("该出诊已停诊 / the session is already stopped", field="session_id")
    if (pending := session.pending_stop) is not None:
        raise Conflict(f"已有待审批的停诊申请 {pending['stop_id']} / a stop request is already pending",
                       field="session_id")
    return DoctorStopRequested(stop_id=_next_stop_id(session, cmd.session_id), session_id=cmd.session_id,
                               hospital_id=session.hospital_id, reason=cmd.reason, requested_by=cmd.requested_by)


def stage_stop_without_replacement(world: ScheduleWorld, session_id: str, reason: str, by: str) -> DoctorStopApproved:
    """Stop a session as a doctor stop does, requested and approved at once by `by` (an admin), with
    no replacement: what a holiday does to the day's published sessions. A request still pending
    is rejected first, as superseded, so the session never keeps an undecided request."""
    session = world.session(session_id)
    stream = session_stream(session_id)
    if (pending := session.pending_stop) is not None:
        world.stage(stream, DoctorStopRejected(
            stop_id=pending["stop_id"], session_id=session_id, hospital_id=session.hospital_id,
            reason=f"已由停诊（{reason}）取代 / superseded by a stop for: {reason}", rejected_by=by))
    stop_id = _next_stop_id(session, session_id)
    world.stage(stream, DoctorStopRequested(stop_id=stop_id, session_id=session_id, hospital_id=session.hospital_id,
                                            reason=reason, requested_by=by))
    return world.stage(stream, DoctorStopApproved(stop_id=stop_id, session_id=session_id,
                                                  hospital_id=session.hospital_id, reason=reason, approved_by=by))


def _next_stop_id(session: Session, session_id: str) -> str:
    return f"{session_id}.stop{len(session.stops) + 1}"


def _pending(session: Session, session_id: str, stop_id: str, actor: Actor, now: datetime) -> dict[str, Any]:
    if not session.exists:
        raise unknown_session(session_id)
    authorize_stop_decision(actor, session.hospital_id)
    stop = next((s for s in session.stops if s["stop_id"] == stop_id), None)
    if stop is None:
        raise NotFound(f"停诊申请 {stop_id} 不存在 / unknown stop request", field="stop_id")
    if stop["state"] != "requested":
        raise Conflict(f"停诊申请 {stop_id} 已处理 / the stop request was already decided", field="stop_id")
    if session.ends_at <= now:
        raise InvalidInput("出诊已结束 / the session has already happened", field="session_id")
    return stop


def reject_doctor_stop(cmd: RejectDoctorStop, session: Session, now: datetime) -> DoctorStopRejected:
    _pending(session, cmd.session_id, cmd.stop_id, cmd.actor, now)
    return DoctorStopRejected(stop_id=cmd.stop_id, session_id=cmd.session_id, hospital_id=session.hospital_id,
                              reason=cmd.reason, rejected_by=cmd.actor.id)


def withdraw_doctor_stop(cmd: WithdrawDoctorStop, session: Session, now: datetime) -> DoctorStopRetracted:
    """A pending request taken back by whoever may ask for stops (the HIS sync, the platform, the
    hospital's admin); a decided one cannot be."""
    if not session.exists:
        raise unknown_session(cmd.session_id)
    authorize_hospital_change(cmd.actor, session.hospital_id)
    stop = next((s for s in session.stops if s["stop_id"] == cmd.stop_id), None)
    if stop is None:
        raise NotFound(f"停诊申请 {cmd.stop_id} 不存在 / unknown stop request", field="stop_id")
    if stop["state"] != "requested":
        raise Conflict(f"停诊申请 {cmd.stop_id} 已处理，不能撤回 / the stop request was already decided",
                       field="stop_id")
    return DoctorStopRetracted(stop_id=cmd.stop_id, session_id=cmd.session_id, hospital_id=session.hospital_id,
                               reason=cmd.reason, retracted_by=cmd.actor.id)


def approve_doctor_stop(world: ScheduleWorld, cmd: ApproveDoctorStop, now: datetime) -> DoctorStopApproved:
    """Stage the replacement session (补诊), if any, and then the approval, in that order."""
    session = world.session(cmd.session_id)
    stop = _pending(session, cmd.session_id, cmd.stop_id, cmd.actor, now)
    replacement_id = None
    if cmd.replacement is not None:
        replacement_id = _stage_replacement(world, cmd, session, now).session_id
    return world.stage(session_stream(cmd.session_id), DoctorStopApproved(
        stop_id=cmd.stop_id, session_id=cmd.session_id, hospital_id=session.hospital_id, reason=stop["reason"],
        approved_by=cmd.actor.id, replacement_session_id=replacement_id))


def _stage_replacement(world: ScheduleWorld, cmd: ApproveDoctorStop, stopped: Session,
                       now: datetime) -> SessionScheduled:
    r = cmd.replacement
    assert r is not None
    p = "replacement."
    doctor_id = r.doctor_id or stopped.data["doctor_id"]
    session_id = r.session_id or f"{cmd.session_id[:74]}-bz{len(stopped.stops)}"
    world.need(doctor_stream(stopped.data["doctor_id"]), doctor_stream(doctor_id), session_stream(session_id),
               doctor_sessions_stream(doctor_id), hospital_stream(stopped.hospital_id))
    original = world.doctor(stopped.data["doctor_id"])
    doctor = world.doctor(doctor_id) if r.doctor_id else original
    if not doctor.exists:
        raise NotFound(f"医生 {doctor_id} 不存在 / unknown doctor", field=f"{p}doctor_id")
    if doctor_id != stopped.data["doctor_id"]:
        same_place = (doctor.data["hospital_id"], doctor.data["department_id"]) == (
            stopped.hospital_id, stopped.data["department_id"])
        if not same_place or doctor.data["title"] != original.data["title"]:
            raise InvalidInput(f"补诊医生须为同科室同级（{original.data['title']}）医生 / the replacement doctor must "
                               "be a colleague of the same department and title", field=f"{p}doctor_id")
    if world.session(session_id).exists:
        raise Conflict(f"出诊 {session_id} 已存在 / session already exists", field=f"{p}session_id")
    capacity = r.capacity or int(stopped.data["capacity"])
    quota = r.quota or Quota.model_validate(stopped.quota)
    bands = _replacement_bands(r.start, r.end, capacity, stopped, r.time_bands, r.band_minutes)
    check_session_shape(r.start, r.end, capacity, quota, bands, prefix=p)
    not_in_the_past(r.date, r.start, now, f"{p}date")
    if (other := world.doctor_sessions(doctor_id).overlapping(r.date, r.start, r.end)) is not None:
        raise Conflict(f"补诊与出诊 {other} 时间重叠 / the replacement overlaps session {other}", field=f"{p}start")
    hospital = world.hospital(stopped.hospital_id)
    try:
        fee = fee_for(hospital, doctor.data, None)
    except InvalidInput:
        fee = Decimal(str(stopped.data["fee"]))  # no fee table (fees given per session): keep the session's
    event = published_session(session_id, doctor.data, hospital, r.date, r.period, r.start, r.end, capacity, quota, fee,
                       bands, replaces=cmd.session_id)
    stage_session(world, event)
    return event


def _replacement_bands(start: time, end: time, capacity: int, stopped: Session, given: Sequence[TimeBand] | None,
                       band_minutes: int | None) -> list[TimeBand]:
    """Given bands, or bands of the given length, or, when the stopped session had bands, bands of
    the same length over the replacement's hours."""
    if given is not None or band_minutes is not None:
        return resolve_time_bands(start, end, capacity, given or [], band_minutes, prefix="replacement.")
    old = stopped.data.get("time_bands") or []
    if not old:
        return []
    first = TimeBand.model_validate(old[0])
    return equal_time_bands(start, end, minutes_of(first.end) - minutes_of(first.start), capacity, "replacement.")
