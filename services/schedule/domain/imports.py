"""The import engine: every record of an import (hospitals, fees, holidays, departments,
doctors, weekly plan slots, one-off sessions) checked against the store and the records before
it, every refusal collected; the events staged only when nothing was refused, so that the
handler stores all of them in one append, or nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from contracts import (
    Actor,
    ChangeBookingRules,
    ChangeFee,
    CreateDepartment,
    DeclareHoliday,
    DomainError,
    ImportPlan,
    ImportProblem,
    ImportRecord,
    ImportReport,
    NotFound,
    PlanImported,
    PlanSlot,
    RegisterDoctor,
    RegisterHospital,
    ScheduleSession,
    SetWeeklyPlan,
    UpdateDepartment,
    UpdateDoctor,
    UpdateHospital,
)
from services.schedule.domain.hospitals import (
    change_booking_rules,
    change_fee,
    create_department,
    declare_holiday,
    plan_slot_problems,
    register_doctor,
    register_hospital,
    set_weekly_plan,
    update_department,
    update_doctor,
    update_hospital,
)
from services.schedule.domain.rules import SessionRequest, authorize_hospital_change
from services.schedule.domain.sessions import (
    check_horizon,
    generate_for_doctor,
    generation_streams,
    stage_one_off_session,
)
from services.schedule.domain.state import (
    ScheduleWorld,
    department_stream,
    doctor_sessions_stream,
    doctor_stream,
    hospital_stream,
    import_stream,
    session_stream,
)

_KIND_ORDER = ("hospital", "fee", "holiday", "department", "doctor", "plan_slot", "session")
_ID_FIELDS = {"hospital": "hospital_id", "department": "department_id", "doctor": "doctor_id",
              "session": "session_id"}
_REFERS_TO = {"hospital_id": "hospital", "department_id": "department", "parent_id": "department",
              "doctor_id": "doctor"}
_KIND_COUNTS = {"hospital": "hospitals", "fee": "fees", "holiday": "holidays", "department": "departments",
                "doctor": "doctors", "plan_slot": "plans", "session": "sessions"}


_STREAMS_OF: dict[str, Callable[[str], list[str]]] = {
    "hospital_id": lambda i: [hospital_stream(i)],
    "department_id": lambda i: [department_stream(i)],
    "parent_id": lambda i: [department_stream(i)],
    "doctor_id": lambda i: [doctor_stream(i), doctor_sessions_stream(i)],
    "session_id": lambda i: [session_stream(i)],
}


class _Rejected(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _parse(model: type[BaseModel], data: dict[str, Any], actor: Actor, line: str) -> Any:
    """A record's data as the command it stands for; the first problem as _Rejected naming its field."""
    try:
        return model.model_validate({**data, "idempotency_key": f"import-record:{line}"[:100], "actor": actor})
    except ValidationError as exc:
        first: Any = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or None
        raise _Rejected(where, f"字段 {where} 无效 / invalid field {where}: {first.get('msg')}") from None
    except DomainError as err:
        raise _Rejected(err.field, err.message) from None


@dataclass
class _ImportRun:
    world: ScheduleWorld
    cmd: ImportPlan
    now: datetime
    created: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    rejected: list[ImportProblem] = field(default_factory=list)
    notices: list[ImportProblem] = field(default_factory=list)
    seen: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, id) -> the line that failed
    hospitals: set[str] = field(default_factory=set)
    plans: dict[str, list[tuple[ImportRecord, PlanSlot]]] = field(default_factory=dict)
    generated: int = 0

    def count(self, kind: str, event: object | None, new: bool) -> None:
        """One record's outcome: `event` is what it changed (None: nothing), `new` whether it created."""
        if event is None:
            self.unchanged += 1
            return
        bucket = self.created if new else self.changed
        bucket[_KIND_COUNTS[kind]] = bucket.get(_KIND_COUNTS[kind], 0) + 1

    def reject(self, record: ImportRecord, field_name: str | None, message: str) -> None:
        """Record a refusal; one caused by an earlier refused record of the file says so."""
        kind = _REFERS_TO.get(field_name or "")
        refused_line = self.refused.get((kind, str(record.data.get(field_name or "")))) if kind else None
        if refused_line:
            message += f"（{refused_line} 已被拒绝 / {refused_line} was rejected）"
        self.rejected.append(ImportProblem(line=record.line, kind=record.kind, field=field_name, message=message))
        own_id = record.data.get(_ID_FIELDS.get(record.kind, ""))
        if own_id:
            self.refused.setdefault((record.kind, str(own_id)), record.line)

    def first_time(self, record: ImportRecord, key: str) -> bool:
        """False for a repeat of an identical record (a spreadsheet names a department on every row);
        a repeat that differs is refused."""
        seen = self.seen.get((record.kind, key))
        if seen is None:
            self.seen[(record.kind, key)] = (record.line, record.data)
            return True
        if seen[1] != record.data:
            raise _Rejected(None, f"与 {seen[0]} 的同一编码 {key} 内容不同 / differs from {seen[0]} with the same id")
        return False


def import_plan(world: ScheduleWorld, cmd: ImportPlan, now: datetime, import_id: str) -> ImportReport:
    """Check every record of an import against the store and the records before it, collecting every
    refusal; stage the events only when nothing was refused (the handler appends them in one go)."""
    world.need(import_stream(import_id), *record_streams(cmd.records))
    run = _ImportRun(world, cmd, now)
    if (cmd.generate_from is None) != (cmd.generate_to is None):
        run.rejected.append(ImportProblem(line="-", kind="horizon", field="generate_to",
                                          message="generate_from 与 generate_to 须同时给出 / give both or neither"))
    elif cmd.generate_from is not None and cmd.generate_to is not None:
        try:
            check_horizon(cmd.generate_from, cmd.generate_to, now)
        except DomainError as err:
            run.rejected.append(ImportProblem(line="-", kind="horizon", field=err.field, message=err.message))
    by_kind: dict[str, list[ImportRecord]] = {k: [] for k in _KIND_ORDER}
    for record in cmd.records:
        by_kind[record.kind].append(record)
    handlers: dict[str, Callable[[_ImportRun, ImportRecord], None]] = {
        "hospital": _import_hospital, "fee": _import_fee, "holiday": _import_holiday,
        "department": _import_department, "doctor": _import_doctor, "plan_slot": _import_plan_slot,
        "session": _import_session,
    }
    for kind in _KIND_ORDER:
        records = _parents_first(by_kind[kind]) if kind == "department" else by_kind[kind]
        for record in records:
            mark = len(world.staged)
            try:
                handlers[kind](run, record)
            except (_Rejected, DomainError) as err:
                world.rollback(mark)
                run.reject(record, err.field, err.message)
    _import_plans(run)
    report = ImportReport(ok=not run.rejected, source=cmd.source, created=run.created, changed=run.changed,
                          unchanged=run.unchanged, sessions_generated=run.generated, rejected=run.rejected,
                          notices=run.notices)
    if not report.ok:
        world.rollback(0)
        return report
    world.stage(import_stream(import_id), PlanImported(
        source=cmd.source, hospital_ids=sorted(run.hospitals), created=run.created, changed=run.changed,
        unchanged=run.unchanged, sessions_generated=run.generated, notices=run.notices))
    return report


def record_streams(records: Sequence[ImportRecord]) -> list[str]:
    """The streams the records name (their own ids and those they refer to): asked for at once, so
    that a file of many records is read in one round trip, not one per record."""
    streams: list[str] = []
    for record in records:
        data = record.data
        for name, to_streams in _STREAMS_OF.items():
            if value := data.get(name):
                streams += to_streams(str(value))
    return list(dict.fromkeys(streams))


def _parents_first(records: list[ImportRecord]) -> list[ImportRecord]:
    """Departments in an order where a parent defined in the same file comes before its children."""
    parent_of = {str(r.data.get("department_id")): r.data.get("parent_id") for r in records}

    def depth(department_id: str) -> int:
        seen: set[str] = set()
        while (parent := parent_of.get(department_id)) and parent in parent_of and parent not in seen:
            seen.add(department_id)
            department_id = str(parent)
        return len(seen)

    return sorted(records, key=lambda r: depth(str(r.data.get("department_id"))))


def _import_hospital(run: _ImportRun, record: ImportRecord) -> None:
    cmd: RegisterHospital = _parse(RegisterHospital, record.data, run.cmd.actor, record.line)
    if not run.first_time(record, cmd.hospital_id):
        return
    run.hospitals.add(cmd.hospital_id)
    stream = hospital_stream(cmd.hospital_id)
    current = run.world.hospital(cmd.hospital_id)
    if not current.exists:
        run.count("hospital", run.world.stage(stream, register_hospital(cmd, current)), new=True)
        return
    update = UpdateHospital.model_validate({**cmd.model_dump(exclude={"rules"}), "actor": cmd.actor})
    details = update_hospital(update, current)
    rules = change_booking_rules(ChangeBookingRules(idempotency_key=cmd.idempotency_key, actor=cmd.actor,
                                                    hospital_id=cmd.hospital_id, rules=cmd.rules), current)
    for event in (details, rules):
        if event is not None:
            run.world.stage(stream, event)
    run.count("hospital", details or rules, new=False)


def _import_fee(run: _ImportRun, record: ImportRecord) -> None:
    cmd: ChangeFee = _parse(ChangeFee, record.data, run.cmd.actor, record.line)
    if not run.first_time(record, f"{cmd.hospital_id}/{cmd.fee_class}"):
        return
    hospital = run.world.hospital(cmd.hospital_id)
    new = cmd.fee_class not in hospital.fees
    event = change_fee(cmd, hospital)
    if event is not None:
        run.world.stage(hospital_stream(cmd.hospital_id), event)
    run.count("fee", event, new)


def _import_holiday(run: _ImportRun, record: ImportRecord) -> None:
    cmd: DeclareHoliday = _parse(DeclareHoliday, record.data, run.cmd.actor, record.line)
    if not run.first_time(record, f"{cmd.hospital_id}/{cmd.date}"):
        return
    hospital = run.world.hospital(cmd.hospital_id)
    new = cmd.date not in hospital.holidays
    event = declare_holiday(cmd, hospital)
    if event is not None:
        run.world.stage(hospital_stream(cmd.hospital_id), event)
    run.count("holiday", event, new)


def _import_department(run: _ImportRun, record: ImportRecord) -> None:
    cmd: CreateDepartment = _parse(CreateDepartment, record.data, run.cmd.actor, record.line)
    if not run.first_time(record, cmd.department_id):
        return
    world = run.world
    current = world.department(cmd.department_id)
    parent = world.department(cmd.parent_id) if cmd.parent_id else None
    stream = department_stream(cmd.department_id)
    if not current.exists:
        hospital = world.hospital(cmd.hospital_id)
        run.count("department", world.stage(stream, create_department(cmd, hospital, parent, current)), new=True)
        return
    if current.data["hospital_id"] != cmd.hospital_id:
        raise _Rejected("department_id", f"科室编码 {cmd.department_id} 已属于医院 {current.data['hospital_id']} / "
                                         "the department id belongs to another hospital")
    update = UpdateDepartment(idempotency_key=cmd.idempotency_key, actor=cmd.actor, department_id=cmd.department_id,
                              name=cmd.name, parent_id=cmd.parent_id)
    event = update_department(update, current, parent, world.ancestors(cmd.parent_id))
    if event is not None:
        world.stage(stream, event)
    run.count("department", event, new=False)


def _import_doctor(run: _ImportRun, record: ImportRecord) -> None:
    cmd: RegisterDoctor = _parse(RegisterDoctor, record.data, run.cmd.actor, record.line)
    if not run.first_time(record, cmd.doctor_id):
        return
    world = run.world
    current = world.doctor(cmd.doctor_id)
    department = world.department(cmd.department_id)
    stream = doctor_stream(cmd.doctor_id)
    if not current.exists:
        run.count("doctor", world.stage(stream, register_doctor(cmd, department, current)), new=True)
        return
    if current.data["hospital_id"] != cmd.hospital_id:
        raise _Rejected("doctor_id", f"医生编码 {cmd.doctor_id} 已属于医院 {current.data['hospital_id']} / "
                                     "the doctor id belongs to another hospital")
    update = UpdateDoctor.model_validate({**cmd.model_dump(exclude={"hospital_id"}), "actor": cmd.actor})
    event = update_doctor(update, current, department)
    if event is not None:
        world.stage(stream, event)
    run.count("doctor", event, new=False)


def _import_plan_slot(run: _ImportRun, record: ImportRecord) -> None:
    data = dict(record.data)
    doctor_id = str(data.pop("doctor_id", "") or "")
    if not doctor_id:
        raise _Rejected("doctor_id", "出诊计划缺少医生编码 / a plan slot needs a doctor_id")
    slot: PlanSlot = _parse(_PlanSlotRecord, data, run.cmd.actor, record.line).slot()
    doctor = run.world.doctor(doctor_id)
    if not doctor.exists:
        raise NotFound(f"医生 {doctor_id} 不存在 / unknown doctor", field="doctor_id")
    authorize_hospital_change(run.cmd.actor, doctor.data["hospital_id"])
    run.plans.setdefault(doctor_id, []).append((record, slot))


class _PlanSlotRecord(PlanSlot):
    """A plan slot as an import record carries it (with the envelope fields _parse adds)."""

    idempotency_key: str
    actor: Actor

    def slot(self) -> PlanSlot:
        return PlanSlot.model_validate(self.model_dump(exclude={"idempotency_key", "actor"}))


def _import_session(run: _ImportRun, record: ImportRecord) -> None:
    cmd: ScheduleSession = _parse(SessionRequest, record.data, run.cmd.actor, record.line)
    if not run.first_time(record, cmd.session_id):
        return
    existing = run.world.session(cmd.session_id)
    if existing.exists:
        run.unchanged += 1
        if (existing.data["doctor_id"], existing.data["date"], existing.data["start"]) != (
                cmd.doctor_id, cmd.date.isoformat(), cmd.start.isoformat()):
            run.notices.append(ImportProblem(
                line=record.line, kind=record.kind, field="session_id",
                message=f"出诊 {cmd.session_id} 已发布，未更改（改期请走停诊/补诊）/ already published, "
                        "left unchanged"))
        return
    stage_one_off_session(run.world, cmd, run.now)
    run.count("session", cmd, new=True)


def _import_plans(run: _ImportRun) -> None:
    """Each doctor's plan slots of the file become the doctor's weekly plan; then, given a horizon and
    a clean file so far, the plan's sessions are generated."""
    world, cmd = run.world, run.cmd
    for doctor_id, entries in run.plans.items():
        slots = [slot for _, slot in entries]
        problems = plan_slot_problems(slots, [record.line for record, _ in entries])
        for i, err in problems:
            run.reject(entries[i][0], err.field, err.message)
        if problems:
            continue
        doctor = world.doctor(doctor_id)
        event = set_weekly_plan(SetWeeklyPlan(idempotency_key="import-plan-slots", actor=cmd.actor,
                                              doctor_id=doctor_id, slots=slots), doctor)
        if event is not None:
            world.stage(doctor_stream(doctor_id), event)
        run.count("plan_slot", event, new=event is not None and "slots" not in doctor.data)
    if cmd.generate_from is None or cmd.generate_to is None or run.rejected:
        return
    world.need(*generation_streams(world, list(run.plans), cmd.generate_from, cmd.generate_to))
    for doctor_id, entries in run.plans.items():
        try:
            ids, skipped = generate_for_doctor(world, doctor_id, cmd.generate_from, cmd.generate_to, run.now)
        except DomainError as err:
            run.reject(entries[0][0], err.field, err.message)
            continue
        run.generated += len(ids)
        for skip in skipped:
            run.notices.append(ImportProblem(line=entries[0][0].line, kind="plan_slot", field=None,
                                             message=f"{skip.session_id} 未生成：{skip.reason}"))
