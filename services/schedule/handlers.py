"""Schedule's application layer: one function per command, declared in the `APP` table, each run
through the kernel's unit of work (infra.unit_of_work.execute). No nameko here.

A command's key event gets the id derived from its idempotency key under the scope named here
(the same scopes as before the kernel, so keys already stored still answer their repeats); the
answer is that event's payload with the position to wait for. Dependencies are injected by
parameter name (`store`, `now`, `planned_doctors`, `department_chain`, `sessions_of_day`): the
service's providers in production, an in-memory store and fakes in tests/unit/schedule/test_handlers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from contracts import (
    ApproveDoctorStop,
    CancelHoliday,
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
    WithdrawDoctorStop,
)
from infra.application import Application
from infra.eventstore import EventStore, idempotent_event_id
from infra.unit_of_work import Outcome, execute
from services.schedule import domain
from services.schedule.domain import (
    Hospital,
    ScheduleWorld,
    department_stream,
    doctor_sessions_stream,
    doctor_stream,
    hospital_stream,
    session_stream,
)

APP = Application("schedule")
SOURCE = "schedule"
ATTEMPTS = 5  # version conflicts before "busy", as before the kernel

Answer = dict[str, Any]
Decide = Callable[[ScheduleWorld], Event | None]
PlannedDoctors = Callable[[str], Sequence[str]]
DepartmentChain = Callable[[str], Sequence[str]]
SessionsOfDay = Callable[[str, date], Sequence[str]]


# --- hospitals, departments, doctors ----------------------------------------------------------------


@APP.command(RegisterHospital)
def register_hospital(cmd: RegisterHospital, store: EventStore) -> Answer:
    def decide(w: ScheduleWorld) -> Event:
        return w.stage(hospital_stream(cmd.hospital_id), domain.register_hospital(cmd, w.hospital(cmd.hospital_id)))

    return _run(store, cmd, "register_hospital", decide)


@APP.command(UpdateHospital)
def update_hospital(cmd: UpdateHospital, store: EventStore) -> Answer:
    return _run(store, cmd, "update_hospital", _on_hospital(cmd.hospital_id, lambda h: domain.update_hospital(cmd, h)))


@APP.command(ChangeBookingRules)
def change_booking_rules(cmd: ChangeBookingRules, store: EventStore) -> Answer:
    return _run(store, cmd, "change_booking_rules",
                _on_hospital(cmd.hospital_id, lambda h: domain.change_booking_rules(cmd, h)))


@APP.command(ChangeFee)
def change_fee(cmd: ChangeFee, store: EventStore) -> Answer:
    return _run(store, cmd, "change_fee", _on_hospital(cmd.hospital_id, lambda h: domain.change_fee(cmd, h)))


@APP.command(DeclareHoliday)
def declare_holiday(cmd: DeclareHoliday, store: EventStore, now: datetime, sessions_of_day: SessionsOfDay) -> Answer:
    """`sessions_of_day(hospital_id, day)`: the hospital's sessions of that day in the read model, a
    hint read with the hospital in one round trip. The holiday and the stop of each session it stops
    are one append, so either every patient of the day is told or the holiday is not declared."""
    session_ids = list(sessions_of_day(cmd.hospital_id, cmd.date))
    return _run(store, cmd, "declare_holiday", lambda w: domain.stage_holiday(w, cmd, now, session_ids),
                [hospital_stream(cmd.hospital_id), *map(session_stream, session_ids)])


@APP.command(CancelHoliday)
def cancel_holiday(cmd: CancelHoliday, store: EventStore) -> Answer:
    return _run(store, cmd, "cancel_holiday", _on_hospital(cmd.hospital_id, lambda h: domain.cancel_holiday(cmd, h)))


@APP.command(CreateDepartment)
def create_department(cmd: CreateDepartment, store: EventStore) -> Answer:
    def decide(w: ScheduleWorld) -> Event:
        parent = w.department(cmd.parent_id) if cmd.parent_id else None
        event = domain.create_department(cmd, w.hospital(cmd.hospital_id), parent, w.department(cmd.department_id))
        return w.stage(department_stream(cmd.department_id), event)

    return _run(store, cmd, "create_department", decide,
                [hospital_stream(cmd.hospital_id), department_stream(cmd.department_id), *_parent(cmd.parent_id)])


@APP.command(UpdateDepartment)
def update_department(cmd: UpdateDepartment, store: EventStore, department_chain: DepartmentChain) -> Answer:
    """`department_chain(id)`: the new parent's ancestors in the read model, loaded with the rest in
    one read (without it, the walk up the tree costs a read per level); the decision checks the
    chain on the streams themselves, so a stale hint costs a read, never a wrong answer."""
    chain = department_chain(cmd.parent_id) if cmd.parent_id else []

    def decide(w: ScheduleWorld) -> Event | None:
        parent = w.department(cmd.parent_id) if cmd.parent_id else None
        event = domain.update_department(cmd, w.department(cmd.department_id), parent, w.ancestors(cmd.parent_id))
        return w.stage(department_stream(cmd.department_id), event) if event else None

    return _run(store, cmd, "update_department", decide,
                [department_stream(cmd.department_id), *_parent(cmd.parent_id), *map(department_stream, chain)])


@APP.command(RegisterDoctor)
def register_doctor(cmd: RegisterDoctor, store: EventStore) -> Answer:
    def decide(w: ScheduleWorld) -> Event:
        event = domain.register_doctor(cmd, w.department(cmd.department_id), w.doctor(cmd.doctor_id))
        return w.stage(doctor_stream(cmd.doctor_id), event)

    return _run(store, cmd, "register_doctor", decide,
                [department_stream(cmd.department_id), doctor_stream(cmd.doctor_id)])


@APP.command(UpdateDoctor)
def update_doctor(cmd: UpdateDoctor, store: EventStore) -> Answer:
    def decide(w: ScheduleWorld) -> Event | None:
        event = domain.update_doctor(cmd, w.doctor(cmd.doctor_id), w.department(cmd.department_id))
        return w.stage(doctor_stream(cmd.doctor_id), event) if event else None

    return _run(store, cmd, "update_doctor", decide,
                [doctor_stream(cmd.doctor_id), department_stream(cmd.department_id)])


# --- plans and sessions -----------------------------------------------------------------------------


@APP.command(SetWeeklyPlan)
def set_weekly_plan(cmd: SetWeeklyPlan, store: EventStore) -> Answer:
    def decide(w: ScheduleWorld) -> Event | None:
        event = domain.set_weekly_plan(cmd, w.doctor(cmd.doctor_id))
        return w.stage(doctor_stream(cmd.doctor_id), event) if event else None

    return _run(store, cmd, "set_weekly_plan", decide)


@APP.command(GenerateSessions)
def generate_sessions(cmd: GenerateSessions, store: EventStore, now: datetime,
                      planned_doctors: PlannedDoctors) -> Answer:
    """`planned_doctors(hospital_id)`: the hospital's doctors with a weekly plan (a read-model
    query), used when the command names none. The decision asks for every stream it reads at once."""
    doctor_ids = cmd.doctor_ids or list(planned_doctors(cmd.hospital_id))

    def decide(w: ScheduleWorld) -> Event:
        return domain.generate_sessions(w, cmd.hospital_id, doctor_ids, cmd.date_from, cmd.date_to, now, cmd.actor)

    return _run(store, cmd, "generate_sessions", decide)


@APP.command(ScheduleSession)
def schedule_session(cmd: ScheduleSession, store: EventStore, now: datetime) -> Answer:
    # The session and the doctor's session index change together, each with its expected version:
    # two overlapping sessions scheduled at once cannot both pass the overlap check.
    return _run(store, cmd, "schedule_session", lambda w: domain.stage_one_off_session(w, cmd, now),
                [doctor_stream(cmd.doctor_id), doctor_sessions_stream(cmd.doctor_id), session_stream(cmd.session_id)])


@APP.command(ChangeSessionQuota)
def change_session_quota(cmd: ChangeSessionQuota, store: EventStore, now: datetime) -> Answer:
    def decide(w: ScheduleWorld) -> Event | None:
        event = domain.change_session_quota(cmd, w.session(cmd.session_id), now)
        return w.stage(session_stream(cmd.session_id), event) if event else None

    return _run(store, cmd, "change_session_quota", decide)


@APP.command(ImportPlan)
def import_plan(cmd: ImportPlan, store: EventStore, now: datetime) -> Answer:
    """Every record checked, then everything stored in one append; or nothing, and the refusals."""
    scope = "import_plan"
    import_id = idempotent_event_id(scope, cmd.idempotency_key).hex[:16]
    reports: list[ImportReport] = []  # the last decision's report (a decision may run more than once)

    def decide(w: ScheduleWorld) -> Event | None:
        reports.append(domain.import_plan(w, cmd, now, import_id))
        return w.staged[-1][1] if reports[-1].ok else None  # refused: nothing staged, nothing appended

    outcome = _execute(store, cmd, scope, decide)
    if outcome.duplicate:
        stored = {k: v for k, v in outcome.data.items() if k != "hospital_ids"}
        report = ImportReport.model_validate({**stored, "ok": True})
    else:
        report = reports[-1]
    return {**report.model_dump(mode="json"), "position": outcome.position, "duplicate": outcome.duplicate}


# --- doctor stops (停诊) ----------------------------------------------------------------------------


@APP.command(RequestDoctorStop)
def request_doctor_stop(cmd: RequestDoctorStop, store: EventStore, now: datetime) -> Answer:
    def decide(w: ScheduleWorld) -> Event:
        return w.stage(session_stream(cmd.session_id), domain.request_doctor_stop(cmd, w.session(cmd.session_id), now))

    return _run(store, cmd, "request_doctor_stop", decide)


@APP.command(ApproveDoctorStop)
def approve_doctor_stop(cmd: ApproveDoctorStop, store: EventStore, now: datetime) -> Answer:
    # Staged in this order: the replacement's SessionScheduled, its calendar entry, then the approval,
    # so a consumer that follows the store's order knows the replacement before it must move bookings.
    return _run(store, cmd, "approve_doctor_stop", lambda w: domain.approve_doctor_stop(w, cmd, now))


@APP.command(RejectDoctorStop)
def reject_doctor_stop(cmd: RejectDoctorStop, store: EventStore, now: datetime) -> Answer:
    def decide(w: ScheduleWorld) -> Event:
        return w.stage(session_stream(cmd.session_id), domain.reject_doctor_stop(cmd, w.session(cmd.session_id), now))

    return _run(store, cmd, "reject_doctor_stop", decide)


@APP.command(WithdrawDoctorStop)
def withdraw_doctor_stop(cmd: WithdrawDoctorStop, store: EventStore, now: datetime) -> Answer:
    def decide(w: ScheduleWorld) -> Event:
        return w.stage(session_stream(cmd.session_id),
                       domain.withdraw_doctor_stop(cmd, w.session(cmd.session_id), now))

    return _run(store, cmd, "withdraw_doctor_stop", decide)


COMMANDS = APP.commands


# --- the shared path --------------------------------------------------------------------------------


def _on_hospital(hospital_id: str, decide: Callable[[Hospital], Event | None]) -> Decide:
    def run(w: ScheduleWorld) -> Event | None:
        event = decide(w.hospital(hospital_id))
        return w.stage(hospital_stream(hospital_id), event) if event else None

    return run


def _parent(parent_id: str | None) -> list[str]:
    return [department_stream(parent_id)] if parent_id else []


def _run(store: EventStore, cmd: Command, scope: str, decide: Decide, prefetch: Sequence[str] = ()) -> Answer:
    outcome = _execute(store, cmd, scope, decide, prefetch)
    if outcome.key is None:
        return {"position": 0, "duplicate": False, "changed": False}
    return {"position": outcome.position, "duplicate": outcome.duplicate, "changed": True, **outcome.data}


def _execute(store: EventStore, cmd: Command, scope: str, decide: Decide, prefetch: Sequence[str] = ()) -> Outcome:
    return execute(store, decide, key_id=idempotent_event_id(scope, cmd.idempotency_key), source=SOURCE,
                   world=ScheduleWorld, correlation_id=cmd.correlation_id, actor=cmd.actor, prefetch=prefetch,
                   check_first=True, attempts=ATTEMPTS, on_busy=_busy)


def _busy() -> Conflict:
    return Conflict("出诊信息正被同时修改，请重试 / the schedule is being changed concurrently, try again",
                    code="busy")
