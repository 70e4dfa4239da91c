"""Schedule command handlers: load -> decide -> append. No nameko here.

Every command runs the same way: a repeat of its idempotency key answers what the first run
stored; otherwise the domain decides on a fresh `World` (the streams it reads, each at the version
it was read at) and everything it staged is appended in one atomic append with those expected
versions. A concurrent writer makes the append fail on a version, and the decision is taken again
on fresh state. One event of each command (its "key event") gets the id derived from the idempotency
key, and the answer is that event's payload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contracts import (
    ApproveDoctorStop,
    ChangeBookingRules,
    ChangeFee,
    ChangeSessionQuota,
    Command,
    Conflict,
    CreateDepartment,
    DeclareHoliday,
    Event,
    GenerateSessions,
    ImportPlan,
    ImportReport,
    RegisterDoctor,
    RegisterHospital,
    RejectDoctorStop,
    RequestDoctorStop,
    ScheduleSession,
    SetWeeklyPlan,
    UpdateDepartment,
    UpdateDoctor,
    UpdateHospital,
)
from infra.eventstore import EventStore, WrongExpectedVersion, idempotent_event_id, new_envelope
from services.schedule import domain

SOURCE = "schedule"
ATTEMPTS = 5

Decide = Callable[[domain.World], Event | None]


def register_hospital(store: EventStore, cmd: RegisterHospital) -> dict[str, Any]:
    def decide(w: domain.World) -> Event:
        return w.stage(domain.hospital_stream(cmd.hospital_id),
                       domain.register_hospital(cmd, w.hospital(cmd.hospital_id)))

    return _run(store, cmd, "register_hospital", decide)


def update_hospital(store: EventStore, cmd: UpdateHospital) -> dict[str, Any]:
    return _run(store, cmd, "update_hospital", _on_hospital(cmd.hospital_id, lambda h: domain.update_hospital(cmd, h)))


def change_booking_rules(store: EventStore, cmd: ChangeBookingRules) -> dict[str, Any]:
    return _run(store, cmd, "change_booking_rules",
                _on_hospital(cmd.hospital_id, lambda h: domain.change_booking_rules(cmd, h)))


def change_fee(store: EventStore, cmd: ChangeFee) -> dict[str, Any]:
    return _run(store, cmd, "change_fee", _on_hospital(cmd.hospital_id, lambda h: domain.change_fee(cmd, h)))


def declare_holiday(store: EventStore, cmd: DeclareHoliday) -> dict[str, Any]:
    return _run(store, cmd, "declare_holiday", _on_hospital(cmd.hospital_id, lambda h: domain.declare_holiday(cmd, h)))


def create_department(store: EventStore, cmd: CreateDepartment) -> dict[str, Any]:
    def decide(w: domain.World) -> Event:
        parent = w.department(cmd.parent_id) if cmd.parent_id else None
        event = domain.create_department(cmd, w.hospital(cmd.hospital_id), parent, w.department(cmd.department_id))
        return w.stage(domain.department_stream(cmd.department_id), event)

    return _run(store, cmd, "create_department", decide)


def update_department(store: EventStore, cmd: UpdateDepartment) -> dict[str, Any]:
    def decide(w: domain.World) -> Event | None:
        parent = w.department(cmd.parent_id) if cmd.parent_id else None
        event = domain.update_department(cmd, w.department(cmd.department_id), parent, w.ancestors(cmd.parent_id))
        return w.stage(domain.department_stream(cmd.department_id), event) if event else None

    return _run(store, cmd, "update_department", decide)


def register_doctor(store: EventStore, cmd: RegisterDoctor) -> dict[str, Any]:
    def decide(w: domain.World) -> Event:
        event = domain.register_doctor(cmd, w.department(cmd.department_id), w.doctor(cmd.doctor_id))
        return w.stage(domain.doctor_stream(cmd.doctor_id), event)

    return _run(store, cmd, "register_doctor", decide)


def update_doctor(store: EventStore, cmd: UpdateDoctor) -> dict[str, Any]:
    def decide(w: domain.World) -> Event | None:
        event = domain.update_doctor(cmd, w.doctor(cmd.doctor_id), w.department(cmd.department_id))
        return w.stage(domain.doctor_stream(cmd.doctor_id), event) if event else None

    return _run(store, cmd, "update_doctor", decide)


def set_weekly_plan(store: EventStore, cmd: SetWeeklyPlan) -> dict[str, Any]:
    def decide(w: domain.World) -> Event | None:
        event = domain.set_weekly_plan(cmd, w.doctor(cmd.doctor_id))
        return w.stage(domain.doctor_stream(cmd.doctor_id), event) if event else None

    return _run(store, cmd, "set_weekly_plan", decide)


def generate_sessions(store: EventStore, cmd: GenerateSessions, now: datetime,
                      planned_doctors: Sequence[str] = ()) -> dict[str, Any]:
    """`planned_doctors`: the hospital's doctors with a weekly plan, used when the command names none."""
    doctor_ids = cmd.doctor_ids or list(planned_doctors)

    def decide(w: domain.World) -> Event:
        return domain.generate_sessions(w, cmd.hospital_id, doctor_ids, cmd.date_from, cmd.date_to, now, cmd.actor)

    return _run(store, cmd, "generate_sessions", decide)


def schedule_session(store: EventStore, cmd: ScheduleSession, now: datetime) -> dict[str, Any]:
    # The session and the doctor's session index change together, each with its expected version:
    # two overlapping sessions scheduled at once cannot both pass the overlap check.
    return _run(store, cmd, "schedule_session", lambda w: domain.stage_one_off_session(w, cmd, now))


def change_session_quota(store: EventStore, cmd: ChangeSessionQuota, now: datetime) -> dict[str, Any]:
    def decide(w: domain.World) -> Event | None:
        event = domain.change_session_quota(cmd, w.session(cmd.session_id), now)
        return w.stage(domain.session_stream(cmd.session_id), event) if event else None

    return _run(store, cmd, "change_session_quota", decide)


def request_doctor_stop(store: EventStore, cmd: RequestDoctorStop, now: datetime) -> dict[str, Any]:
    def decide(w: domain.World) -> Event:
        event = domain.request_doctor_stop(cmd, w.session(cmd.session_id), now)
        return w.stage(domain.session_stream(cmd.session_id), event)

    return _run(store, cmd, "request_doctor_stop", decide)


def approve_doctor_stop(store: EventStore, cmd: ApproveDoctorStop, now: datetime) -> dict[str, Any]:
    # Staged in this order: the replacement's SessionScheduled, its calendar entry, then the approval,
    # so a consumer that follows the store's order knows the replacement before it must move bookings.
    return _run(store, cmd, "approve_doctor_stop", lambda w: domain.approve_doctor_stop(w, cmd, now))


def reject_doctor_stop(store: EventStore, cmd: RejectDoctorStop, now: datetime) -> dict[str, Any]:
    def decide(w: domain.World) -> Event:
        event = domain.reject_doctor_stop(cmd, w.session(cmd.session_id), now)
        return w.stage(domain.session_stream(cmd.session_id), event)

    return _run(store, cmd, "reject_doctor_stop", decide)


def import_plan(store: EventStore, cmd: ImportPlan, now: datetime) -> dict[str, Any]:
    """Every record checked, then everything stored in one append, or nothing and the refusals."""
    scope = "import_plan"
    if (prior := store.get_event(idempotent_event_id(scope, cmd.idempotency_key))) is not None:
        report = ImportReport(ok=True, **{k: v for k, v in prior.data.items() if k != "hospital_ids"})
        return {**report.model_dump(mode="json"), "position": prior.position, "duplicate": True}
    import_id = idempotent_event_id(scope, cmd.idempotency_key).hex[:16]
    for attempt in range(ATTEMPTS):
        world = domain.World(store.read_stream)
        report = domain.import_plan(world, cmd, now, import_id)
        if not report.ok:
            return {**report.model_dump(mode="json"), "position": 0, "duplicate": False}
        try:
            position, duplicate, _ = _append(store, world, cmd, scope, world.staged[-1][1])
        except WrongExpectedVersion:
            if attempt == ATTEMPTS - 1:
                raise _busy() from None
            continue
        return {**report.model_dump(mode="json"), "position": position, "duplicate": duplicate}
    raise AssertionError("unreachable")


# --- the shared path ------------------------------------------------------------------------------


def _on_hospital(hospital_id: str, decide: Callable[[domain.Hospital], Event | None]) -> Decide:
    def run(w: domain.World) -> Event | None:
        event = decide(w.hospital(hospital_id))
        return w.stage(domain.hospital_stream(hospital_id), event) if event else None

    return run


def _run(store: EventStore, cmd: Command, scope: str, decide: Decide) -> dict[str, Any]:
    if (prior := store.get_event(idempotent_event_id(scope, cmd.idempotency_key))) is not None:
        return {"position": prior.position, "duplicate": True, "changed": True, **prior.data}
    for attempt in range(ATTEMPTS):
        world = domain.World(store.read_stream)
        key = decide(world)
        if key is None:
            return {"position": 0, "duplicate": False, "changed": False}
        try:
            position, duplicate, data = _append(store, world, cmd, scope, key)
        except WrongExpectedVersion:
            if attempt == ATTEMPTS - 1:
                raise _busy() from None
            continue  # someone else wrote one of these streams meanwhile: decide again on fresh state
        return {"position": position, "duplicate": duplicate, "changed": True, **data}
    raise AssertionError("unreachable")


def _append(store: EventStore, world: domain.World, cmd: Command, scope: str,
            key: Event) -> tuple[int, bool, dict[str, Any]]:
    """Append what `world` staged; the key event's id comes from the idempotency key."""
    key_id = idempotent_event_id(scope, cmd.idempotency_key)
    batch: dict[str, tuple[int | None, list[Any]]] = {}
    for stream, (expected, events) in world.appends().items():
        batch[stream] = (expected, [
            new_envelope(ev, stream, SOURCE, cmd.correlation_id, actor=cmd.actor,
                         event_id=key_id if ev is key else None)
            for ev in events
        ])
    result = store.append(batch)
    stored = next(e for e in result.events if e.event_id == key_id)
    return result.last_position, result.duplicate, dict(stored.data)


def _busy() -> Conflict:
    return Conflict("出诊信息正被同时修改，请重试 / the schedule is being changed concurrently, try again",
                    code="busy")
