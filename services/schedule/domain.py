"""Schedule rules, pure: state folded from events, decisions returning new events.

No nameko, no database, no clock: `now` is always passed in (hospital local time, Asia/Shanghai).
Decisions that touch several aggregates (generating sessions, approving a stop with a replacement,
an import) work on a `World`: the streams they read, through a reader function they are given,
plus the events they have decided so far ("staged"), so that a later decision in the same batch
sees an earlier one. The handler appends what is staged in one atomic append, each stream at the
version it was read at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError, model_validator

from contracts import (
    GENERAL_FEE_CLASS,
    Actor,
    ApproveDoctorStop,
    ChangeBookingRules,
    ChangeFee,
    ChangeSessionQuota,
    Conflict,
    CreateDepartment,
    DeclareHoliday,
    DepartmentCreated,
    DepartmentUpdated,
    DoctorRegistered,
    DoctorSessionAdded,
    DoctorStopApproved,
    DoctorStopRejected,
    DoctorStopRequested,
    DoctorUpdated,
    DomainError,
    Event,
    FeeChanged,
    Forbidden,
    HolidayDeclared,
    HospitalRegistered,
    HospitalRulesChanged,
    HospitalUpdated,
    ImportPlan,
    ImportProblem,
    ImportRecord,
    ImportReport,
    InvalidInput,
    NotFound,
    PlanImported,
    PlanSlot,
    Quota,
    RegisterDoctor,
    RegisterHospital,
    RejectDoctorStop,
    RequestDoctorStop,
    ScheduleSession,
    SessionQuotaChanged,
    SessionScheduled,
    SessionsGenerated,
    SetWeeklyPlan,
    SkippedSession,
    TimeBand,
    UpdateDepartment,
    UpdateDoctor,
    UpdateHospital,
    WeeklyPlanChanged,
)
from contracts.schedule import BookingRules, ClinicType, Period

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
PERIOD_CODES = {"morning": "am", "afternoon": "pm", "evening": "ev"}
PERIOD_NAMES = {"morning": "上午", "afternoon": "下午", "evening": "晚上"}
WEEKDAY_NAMES = ("", "周一", "周二", "周三", "周四", "周五", "周六", "周日")
MAX_GENERATION_DAYS = 62
# Hospital staff of these kinds, the HIS sync and the platform itself may change a hospital's schedule.
_PLATFORM_KINDS = frozenset({"platform_admin", "system"})
_WRITER_KINDS = frozenset({"platform_admin", "system", "service"})
E = TypeVar("E", bound=Event)


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


def generation_stream(hospital_id: str) -> str:
    return f"generation-{hospital_id}"


def import_stream(import_id: str) -> str:
    return f"import-{import_id}"


def plan_session_id(doctor_id: str, day: date, period: str) -> str:
    """The id of the session a weekly plan generates: stable, so generating twice finds it."""
    return f"{doctor_id}-{day:%Y%m%d}-{PERIOD_CODES[period]}"


# --- state folded from events ---------------------------------------------------------------------


class Stored(Protocol):
    """What folding needs of a stored event (the store's Envelope, or a staged one)."""

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def version(self) -> int | None: ...


@dataclass
class Entity:
    """A department or a doctor: it exists once its first event is folded in; data is the latest view
    (every event of these streams carries the whole entity, or a part that replaces its keys)."""

    version: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.version > 0

    @classmethod
    def fold(cls, events: Iterable[Stored]) -> Entity:
        state = cls()
        for ev in events:
            state.data.update(ev.data)
            state.version = ev.version or 0
        return state


@dataclass
class DoctorSessions:
    """The sessions of one doctor: what overlap is checked against."""

    version: int = 0
    slots: list[tuple[str, str, str, str]] = field(default_factory=list)  # (date, start, end, session_id)

    @classmethod
    def fold(cls, events: Iterable[Stored]) -> DoctorSessions:
        state = cls()
        for ev in events:
            d = ev.data
            state.slots.append((d["date"], d["start"], d["end"], d["session_id"]))
            state.version = ev.version or 0
        return state

    def overlapping(self, day: date, start: time, end: time) -> str | None:
        """The id of a session of this doctor that shares a minute with day start..end, if any."""
        d, s, e = day.isoformat(), start.isoformat(), end.isoformat()
        for other_day, other_start, other_end, other_id in self.slots:
            if other_day == d and s < other_end and other_start < e:
                return other_id
        return None


@dataclass
class Hospital:
    version: int = 0
    hospital_id: str = ""
    name: str = ""
    level: str = ""
    address: str = ""
    contact: str = ""
    rules: BookingRules = field(default_factory=BookingRules)
    fees: dict[str, Decimal] = field(default_factory=dict)
    holidays: dict[date, str] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.version > 0

    @classmethod
    def fold(cls, events: Iterable[Stored]) -> Hospital:
        state = cls()
        for ev in events:
            d = ev.data
            if ev.type in ("HospitalRegistered", "HospitalUpdated"):
                state.hospital_id = d["hospital_id"]
                state.name, state.level, state.address = d["name"], d["level"], d["address"]
                state.contact = d.get("contact", "")
                if "rules" in d:
                    state.rules = BookingRules.model_validate(d["rules"])
            elif ev.type == "HospitalRulesChanged":
                state.rules = BookingRules.model_validate(d["rules"])
            elif ev.type == "FeeChanged":
                state.fees[d["fee_class"]] = Decimal(str(d["fee"]))
            elif ev.type == "HolidayDeclared":
                state.holidays[date.fromisoformat(d["date"])] = d["name"]
            state.version = ev.version or 0
        return state


@dataclass
class Session:
    """One published session: what was scheduled, its current quota, and its doctor stops."""

    version: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # the SessionScheduled payload
    quota: dict[str, int] = field(default_factory=dict)
    stops: list[dict[str, Any]] = field(default_factory=list)  # every request, with "state"
    state: str = "scheduled"  # scheduled | stopped | replaced
    replaced_by: str | None = None

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def hospital_id(self) -> str:
        return str(self.data["hospital_id"])

    @property
    def starts_at(self) -> datetime:
        return datetime.combine(date.fromisoformat(self.data["date"]), time.fromisoformat(self.data["start"]),
                                HOSPITAL_TZ)

    @property
    def ends_at(self) -> datetime:
        return datetime.combine(date.fromisoformat(self.data["date"]), time.fromisoformat(self.data["end"]),
                                HOSPITAL_TZ)

    @property
    def pending_stop(self) -> dict[str, Any] | None:
        return next((s for s in self.stops if s["state"] == "requested"), None)

    @classmethod
    def fold(cls, events: Iterable[Stored]) -> Session:
        state = cls()
        for ev in events:
            d = ev.data
            if ev.type == "SessionScheduled":
                state.data = dict(d)
                state.quota = dict(d["quota"])
            elif ev.type == "SessionQuotaChanged":
                state.quota = dict(d["quota"])
            elif ev.type == "DoctorStopRequested":
                state.stops.append({**d, "state": "requested"})
            elif ev.type in ("DoctorStopApproved", "DoctorStopRejected"):
                decided = "approved" if ev.type == "DoctorStopApproved" else "rejected"
                for stop in state.stops:
                    if stop["stop_id"] == d["stop_id"]:
                        stop["state"] = decided
                if decided == "approved":
                    state.replaced_by = d.get("replacement_session_id")
                    state.state = "replaced" if state.replaced_by else "stopped"
            state.version = ev.version or 0
        return state


@dataclass(frozen=True)
class _Staged:
    type: str
    data: dict[str, Any]
    version: int


class World:
    """The streams a decision reads (through `read`, once each) plus the events it has staged."""

    def __init__(self, read: Callable[[str], Sequence[Stored]]) -> None:
        self._read = read
        self._events: dict[str, list[Stored]] = {}
        self.base: dict[str, int] = {}  # the version each stream was read at: the expected version
        self.staged: list[tuple[str, Event]] = []

    def events(self, stream: str) -> list[Stored]:
        if stream not in self._events:
            loaded = list(self._read(stream))
            self._events[stream] = loaded
            self.base[stream] = (loaded[-1].version or 0) if loaded else 0
        return self._events[stream]

    def stage(self, stream: str, event: E) -> E:
        events = self.events(stream)
        version = ((events[-1].version or 0) if events else 0) + 1
        events.append(_Staged(event.type_name(), event.model_dump(mode="json"), version))
        self.staged.append((stream, event))
        return event

    def rollback(self, mark: int) -> None:
        """Forget what was staged after `mark` (len(staged) at that time)."""
        while len(self.staged) > mark:
            stream, _ = self.staged.pop()
            self._events[stream].pop()

    def appends(self) -> dict[str, tuple[int, list[Event]]]:
        """Staged events grouped by stream, streams in the order they were first staged (so an entity
        is stored before the first event that refers to it), each with its expected version."""
        out: dict[str, tuple[int, list[Event]]] = {}
        for stream, event in self.staged:
            out.setdefault(stream, (self.base[stream], []))[1].append(event)
        return out

    def hospital(self, hospital_id: str) -> Hospital:
        return Hospital.fold(self.events(hospital_stream(hospital_id)))

    def department(self, department_id: str) -> Entity:
        return Entity.fold(self.events(department_stream(department_id)))

    def doctor(self, doctor_id: str) -> Entity:
        return Entity.fold(self.events(doctor_stream(doctor_id)))

    def session(self, session_id: str) -> Session:
        return Session.fold(self.events(session_stream(session_id)))

    def doctor_sessions(self, doctor_id: str) -> DoctorSessions:
        return DoctorSessions.fold(self.events(doctor_sessions_stream(doctor_id)))

    def ancestors(self, department_id: str | None, limit: int = 20) -> list[str]:
        """department_id and its parents up to the top (a cycle cannot make this loop)."""
        chain: list[str] = []
        while department_id and department_id not in chain and len(chain) < limit:
            chain.append(department_id)
            department_id = self.department(department_id).data.get("parent_id")
        return chain


# --- who may do what ------------------------------------------------------------------------------


def authorize_platform(actor: Actor) -> None:
    if actor.kind not in _PLATFORM_KINDS:
        raise Forbidden("仅平台管理员可登记医院 / only a platform admin may register a hospital", field="actor")


def authorize_hospital_change(actor: Actor, hospital_id: str) -> None:
    """Hospital admins change their own hospital; the platform and the HIS sync any."""
    if actor.kind in _WRITER_KINDS:
        return
    if actor.kind == "hospital_admin" and actor.hospital_id == hospital_id:
        return
    raise Forbidden(f"无权修改医院 {hospital_id} 的出诊信息 / actor may not change this hospital's schedule",
                    field="actor")


def authorize_stop_decision(actor: Actor, hospital_id: str) -> None:
    """停诊审批: an admin of the session's own hospital (or a platform admin), nobody else."""
    if actor.kind == "platform_admin":
        return
    if actor.kind == "hospital_admin" and actor.hospital_id == hospital_id:
        return
    raise Forbidden(f"仅医院 {hospital_id} 的管理员可审批停诊 / only an admin of this hospital may decide a "
                    "doctor stop", field="actor")


# --- the shape of a session -----------------------------------------------------------------------


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def _clock(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)


def check_session_shape(start: time, end: time, capacity: int, quota: Quota, time_bands: Sequence[TimeBand],
                        prefix: str = "") -> None:
    """End after start, quota within capacity, time bands inside the session, in order, and holding
    every bookable number. Each refusal names its field (with `prefix`, e.g. "replacement.")."""
    if end <= start:
        raise InvalidInput(f"结束时间 {end:%H:%M} 须晚于开始时间 {start:%H:%M} / end must be after start",
                           field=f"{prefix}end")
    if quota.total() > capacity:
        raise InvalidInput(
            f"号源配额（网络{quota.web}+电话{quota.phone}+窗口{quota.window}={quota.total()}）超过总号源 {capacity}"
            f" / quota (web+phone+window) exceeds capacity", field=f"{prefix}quota")
    previous_end: time | None = None
    for i, band in enumerate(time_bands):
        where = f"{prefix}time_bands.{i}"
        if band.end <= band.start:
            raise InvalidInput("分时段结束须晚于开始 / a time band must end after it starts", field=where)
        if band.start < start or band.end > end:
            raise InvalidInput(f"分时段 {band.start:%H:%M}-{band.end:%H:%M} 超出出诊时间 / a time band lies outside "
                               "the session", field=where)
        if previous_end is not None and band.start < previous_end:
            raise InvalidInput("分时段须按时间先后且不重叠 / time bands must be in order and must not overlap",
                               field=where)
        previous_end = band.end
    numbers = sum(b.numbers for b in time_bands)
    if time_bands and numbers < quota.total():
        raise InvalidInput(f"分时段号数合计 {numbers} 少于可预约号源 {quota.total()} / time bands hold fewer "
                           "numbers than the quota", field=f"{prefix}time_bands")


def equal_time_bands(start: time, end: time, minutes: int, capacity: int, prefix: str = "") -> list[TimeBand]:
    """分时段 of `minutes` each from start to end, the capacity shared out (earlier bands get the rest)."""
    edges = list(range(_minutes(start), _minutes(end), minutes))
    if not edges:
        return []
    if capacity < len(edges):
        raise InvalidInput(f"分时段 {len(edges)} 段多于总号源 {capacity} / more time bands than numbers",
                           field=f"{prefix}band_minutes")
    share, rest = divmod(capacity, len(edges))
    return [TimeBand(start=_clock(at), end=_clock(min(at + minutes, _minutes(end))), numbers=share + (i < rest))
            for i, at in enumerate(edges)]


def resolve_time_bands(start: time, end: time, capacity: int, time_bands: Sequence[TimeBand],
                       band_minutes: int | None, prefix: str = "") -> list[TimeBand]:
    if band_minutes is None:
        return list(time_bands)
    if time_bands:
        raise InvalidInput("time_bands 与 band_minutes 只能给一个 / give time_bands or band_minutes, not both",
                           field=f"{prefix}band_minutes")
    return equal_time_bands(start, end, band_minutes, capacity, prefix)


class SessionRequest(ScheduleSession):
    """ScheduleSession as this service accepts it: the contract's own shape rule refuses the whole
    model without naming a field, so the same rules run here instead, naming "end", "quota" or
    "time_bands". A DomainError raised in a validator passes through pydantic unchanged."""

    @model_validator(mode="after")
    def _consistent(self) -> SessionRequest:
        check_session_shape(self.start, self.end, self.capacity, self.quota,
                            resolve_time_bands(self.start, self.end, self.capacity, self.time_bands,
                                               self.band_minutes))
        return self


# --- fees and release -----------------------------------------------------------------------------


def clinic_type_of(title: str, given: str | None) -> ClinicType:
    if given:
        return cast(ClinicType, given)
    return "expert" if title in ("主任医师", "副主任医师") else "general"


def fee_class_of(doctor: dict[str, Any]) -> str:
    """Expert clinics charge by the doctor's title, general clinics one fee."""
    clinic = clinic_type_of(doctor["title"], doctor.get("clinic_type"))
    return str(doctor["title"]) if clinic == "expert" else GENERAL_FEE_CLASS


def fee_for(hospital: Hospital, doctor: dict[str, Any], given: Decimal | None, prefix: str = "") -> Decimal:
    if given is not None:
        return given
    fee_class = fee_class_of(doctor)
    if fee_class not in hospital.fees:
        raise InvalidInput(f"医院 {hospital.hospital_id} 未设置「{fee_class}」挂号费 / no registration fee is set "
                           f"for {fee_class}", field=f"{prefix}fee")
    return hospital.fees[fee_class]


class _Dated(Protocol):
    @property
    def date(self) -> date: ...

    @property
    def start(self) -> time: ...

    @property
    def end(self) -> time: ...


@dataclass(frozen=True)
class _When:
    date: date
    start: time
    end: time


def booking_window(cmd: _Dated, rules: BookingRules) -> tuple[datetime, datetime, datetime]:
    """(opens_at, closes_at, lapse_at) of a session under its hospital's rules, local time."""
    opens = datetime.combine(cmd.date - timedelta(days=rules.release_days), rules.release_time, HOSPITAL_TZ)
    closes = datetime.combine(cmd.date - timedelta(days=rules.cutoff_days_before), rules.cutoff_time, HOSPITAL_TZ)
    end = datetime.combine(cmd.date, cmd.end, HOSPITAL_TZ)
    start = datetime.combine(cmd.date, cmd.start, HOSPITAL_TZ)
    closes = min(closes, start)
    lapse = max(end - timedelta(minutes=rules.lapse_minutes_before_end), start)
    return opens, closes, lapse


def _local(moment: datetime) -> str:
    return moment.astimezone(HOSPITAL_TZ).strftime("%Y-%m-%d %H:%M")


def booking_status(opens_at: datetime, closes_at: datetime, now: datetime, state: str = "scheduled") -> dict[str, Any]:
    """Whether a session can be booked at `now`: not open yet (and when it opens), open, closed, stopped."""
    if state != "scheduled":
        return {"state": "stopped", "opens_at": None, "closes_at": None, "message": "已停诊 / the doctor stopped"}
    if now < opens_at:
        return {"state": "not_open", "opens_at": opens_at.isoformat(), "closes_at": closes_at.isoformat(),
                "message": f"尚未开放，{_local(opens_at)} 开始预约 / not open yet, opens {_local(opens_at)}"}
    if now >= closes_at:
        return {"state": "closed", "opens_at": opens_at.isoformat(), "closes_at": closes_at.isoformat(),
                "message": f"预约已于 {_local(closes_at)} 截止 / booking closed at {_local(closes_at)}"}
    return {"state": "open", "opens_at": opens_at.isoformat(), "closes_at": closes_at.isoformat(),
            "message": f"可预约，{_local(closes_at)} 截止 / open until {_local(closes_at)}"}


# --- hospitals ------------------------------------------------------------------------------------


def _unknown_hospital(hospital_id: str) -> NotFound:
    return NotFound(f"医院 {hospital_id} 不存在 / unknown hospital", field="hospital_id")


def register_hospital(cmd: RegisterHospital, current: Hospital | Entity) -> HospitalRegistered:
    authorize_platform(cmd.actor)
    if current.exists:
        raise Conflict(f"医院 {cmd.hospital_id} 已存在 / hospital already exists", field="hospital_id")
    return HospitalRegistered(hospital_id=cmd.hospital_id, name=cmd.name, level=cmd.level, address=cmd.address,
                              contact=cmd.contact, rules=cmd.rules)


def update_hospital(cmd: UpdateHospital, hospital: Hospital) -> HospitalUpdated | None:
    if not hospital.exists:
        raise _unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    event = HospitalUpdated(hospital_id=cmd.hospital_id, name=cmd.name, level=cmd.level, address=cmd.address,
                            contact=cmd.contact)
    before = (hospital.name, hospital.level, hospital.address, hospital.contact)
    return None if before == (cmd.name, cmd.level, cmd.address, cmd.contact) else event


def change_booking_rules(cmd: ChangeBookingRules, hospital: Hospital) -> HospitalRulesChanged | None:
    if not hospital.exists:
        raise _unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if cmd.rules == hospital.rules:
        return None
    return HospitalRulesChanged(hospital_id=cmd.hospital_id, rules=cmd.rules)


def change_fee(cmd: ChangeFee, hospital: Hospital) -> FeeChanged | None:
    if not hospital.exists:
        raise _unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if cmd.fee < 0:  # the contract refuses it too; the rule is the domain's
        raise InvalidInput("挂号费不能为负数 / fee must not be negative", field="fee")
    previous = hospital.fees.get(cmd.fee_class)
    if previous == cmd.fee:
        return None
    return FeeChanged(hospital_id=cmd.hospital_id, fee_class=cmd.fee_class, fee=cmd.fee, previous_fee=previous)


def declare_holiday(cmd: DeclareHoliday, hospital: Hospital) -> HolidayDeclared | None:
    if not hospital.exists:
        raise _unknown_hospital(cmd.hospital_id)
    authorize_hospital_change(cmd.actor, cmd.hospital_id)
    if hospital.holidays.get(cmd.date) == cmd.name:
        return None
    return HolidayDeclared(hospital_id=cmd.hospital_id, date=cmd.date, name=cmd.name)


# --- departments ----------------------------------------------------------------------------------


def create_department(cmd: CreateDepartment, hospital: Hospital | Entity, parent: Entity | None,
                      current: Entity) -> DepartmentCreated:
    if not hospital.exists:
        raise _unknown_hospital(cmd.hospital_id)
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


# --- sessions -------------------------------------------------------------------------------------


def _published(
    session_id: str, doctor: dict[str, Any], hospital: Hospital, day: date, period: Period, start: time, end: time,
    capacity: int, quota: Quota, fee: Decimal, time_bands: list[TimeBand], replaces: str | None = None,
) -> SessionScheduled:
    opens_at, closes_at, lapse_at = booking_window(_When(day, start, end), hospital.rules)
    return SessionScheduled(
        session_id=session_id, hospital_id=doctor["hospital_id"], department_id=doctor["department_id"],
        doctor_id=doctor["doctor_id"], doctor_name=doctor["name"], doctor_title=doctor["title"], date=day,
        period=period, start=start, end=end, capacity=capacity, quota=quota, fee=fee, opens_at=opens_at,
        closes_at=closes_at, lapse_at=lapse_at, time_bands=time_bands, replaces_session_id=replaces,
        clinic_type=clinic_type_of(doctor["title"], doctor.get("clinic_type")),
    )


def _not_in_the_past(day: date, start: time, now: datetime, field_name: str) -> None:
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
    _not_in_the_past(cmd.date, cmd.start, now, "date")
    if (other := sessions.overlapping(cmd.date, cmd.start, cmd.end)) is not None:
        raise Conflict(f"与出诊 {other} 时间重叠 / overlaps session {other}", field="start")
    hospital = hospital or Hospital()
    fee = fee_for(hospital, doctor.data, cmd.fee)
    return _published(cmd.session_id, doctor.data, hospital, cmd.date, cmd.period, cmd.start, cmd.end,
                      cmd.capacity, cmd.quota, fee, bands)


def _stage_session(world: World, event: SessionScheduled) -> None:
    world.stage(session_stream(event.session_id), event)
    world.stage(doctor_sessions_stream(event.doctor_id), DoctorSessionAdded(
        doctor_id=event.doctor_id, session_id=event.session_id, date=event.date, start=event.start, end=event.end))


def stage_one_off_session(world: World, cmd: ScheduleSession, now: datetime) -> SessionScheduled:
    doctor = world.doctor(cmd.doctor_id)
    hospital = world.hospital(doctor.data["hospital_id"]) if doctor.exists else Hospital()
    event = schedule_session(cmd, doctor, world.doctor_sessions(cmd.doctor_id), world.session(cmd.session_id),
                             now, hospital)
    _stage_session(world, event)
    return event


def generate_for_doctor(world: World, doctor_id: str, date_from: date, date_to: date, now: datetime,
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
            _stage_session(world, _published(session_id, doctor.data, hospital, day, slot.period, slot.start,
                                             slot.end, slot.capacity, slot.quota, fee, bands))
            scheduled.append(session_id)
        day += timedelta(days=1)
    return scheduled, skipped


def check_horizon(date_from: date, date_to: date, now: datetime) -> None:
    if date_to < date_from:
        raise InvalidInput("结束日期早于开始日期 / date_to is before date_from", field="date_to")
    if (date_to - date_from).days >= MAX_GENERATION_DAYS:
        raise InvalidInput(f"一次最多生成 {MAX_GENERATION_DAYS} 天 / at most {MAX_GENERATION_DAYS} days at once",
                           field="date_to")
    if date_to < now.date():
        raise InvalidInput("日期范围已过 / the date range is in the past", field="date_to")


def generate_sessions(world: World, hospital_id: str, doctor_ids: Sequence[str], date_from: date, date_to: date,
                      now: datetime, actor: Actor) -> SessionsGenerated:
    hospital = world.hospital(hospital_id)
    if not hospital.exists:
        raise _unknown_hospital(hospital_id)
    authorize_hospital_change(actor, hospital_id)
    check_horizon(date_from, date_to, now)
    scheduled: list[str] = []
    skipped: list[SkippedSession] = []
    for doctor_id in sorted(set(doctor_ids)):
        doctor = world.doctor(doctor_id)
        if doctor.exists and doctor.data["hospital_id"] != hospital_id:
            raise InvalidInput(f"医生 {doctor_id} 不属于医院 {hospital_id} / doctor of another hospital",
                               field="doctor_ids")
        ids, skips = generate_for_doctor(world, doctor_id, date_from, date_to, now)
        scheduled += ids
        skipped += skips
    return world.stage(generation_stream(hospital_id), SessionsGenerated(
        hospital_id=hospital_id, date_from=date_from, date_to=date_to, session_ids=scheduled, skipped=skipped))


def _unknown_session(session_id: str) -> NotFound:
    return NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")


def change_session_quota(cmd: ChangeSessionQuota, session: Session, now: datetime) -> SessionQuotaChanged | None:
    """A new split of the session's numbers; bookings already made are booking's and stay."""
    if not session.exists:
        raise _unknown_session(cmd.session_id)
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


# --- doctor stops (停诊) --------------------------------------------------------------------------


def request_doctor_stop(cmd: RequestDoctorStop, session: Session, now: datetime) -> DoctorStopRequested:
    if not session.exists:
        raise _unknown_session(cmd.session_id)
    authorize_hospital_change(cmd.actor, session.hospital_id)
    if session.starts_at <= now:
        raise InvalidInput("出诊已开始或已结束，不能申请停诊 / the session has already begun or happened",
                           field="session_id")
    if session.state != "scheduled":
        raise Conflict("该出诊已停诊 / the session is already stopped", field="session_id")
    if (pending := session.pending_stop) is not None:
        raise Conflict(f"已有待审批的停诊申请 {pending['stop_id']} / a stop request is already pending",
                       field="session_id")
    return DoctorStopRequested(stop_id=f"{cmd.session_id}.stop{len(session.stops) + 1}", session_id=cmd.session_id,
                               hospital_id=session.hospital_id, reason=cmd.reason, requested_by=cmd.requested_by)


def _pending(session: Session, session_id: str, stop_id: str, actor: Actor, now: datetime) -> dict[str, Any]:
    if not session.exists:
        raise _unknown_session(session_id)
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


def approve_doctor_stop(world: World, cmd: ApproveDoctorStop, now: datetime) -> DoctorStopApproved:
    """Stage the replacement session (补诊), if any, and then the approval, in that order."""
    session = world.session(cmd.session_id)
    stop = _pending(session, cmd.session_id, cmd.stop_id, cmd.actor, now)
    replacement_id = None
    if cmd.replacement is not None:
        replacement_id = _stage_replacement(world, cmd, session, now).session_id
    return world.stage(session_stream(cmd.session_id), DoctorStopApproved(
        stop_id=cmd.stop_id, session_id=cmd.session_id, hospital_id=session.hospital_id, reason=stop["reason"],
        approved_by=cmd.actor.id, replacement_session_id=replacement_id))


def _stage_replacement(world: World, cmd: ApproveDoctorStop, stopped: Session, now: datetime) -> SessionScheduled:
    r = cmd.replacement
    assert r is not None
    p = "replacement."
    original = world.doctor(stopped.data["doctor_id"])
    doctor_id = r.doctor_id or stopped.data["doctor_id"]
    doctor = world.doctor(doctor_id) if r.doctor_id else original
    if not doctor.exists:
        raise NotFound(f"医生 {doctor_id} 不存在 / unknown doctor", field=f"{p}doctor_id")
    if doctor_id != stopped.data["doctor_id"]:
        same_place = (doctor.data["hospital_id"], doctor.data["department_id"]) == (
            stopped.hospital_id, stopped.data["department_id"])
        if not same_place or doctor.data["title"] != original.data["title"]:
            raise InvalidInput(f"补诊医生须为同科室同级（{original.data['title']}）医生 / the replacement doctor must "
                               "be a colleague of the same department and title", field=f"{p}doctor_id")
    session_id = r.session_id or f"{cmd.session_id[:74]}-bz{len(stopped.stops)}"
    if world.session(session_id).exists:
        raise Conflict(f"出诊 {session_id} 已存在 / session already exists", field=f"{p}session_id")
    capacity = r.capacity or int(stopped.data["capacity"])
    quota = r.quota or Quota.model_validate(stopped.quota)
    bands = _replacement_bands(r.start, r.end, capacity, stopped, r.time_bands, r.band_minutes)
    check_session_shape(r.start, r.end, capacity, quota, bands, prefix=p)
    _not_in_the_past(r.date, r.start, now, f"{p}date")
    if (other := world.doctor_sessions(doctor_id).overlapping(r.date, r.start, r.end)) is not None:
        raise Conflict(f"补诊与出诊 {other} 时间重叠 / the replacement overlaps session {other}", field=f"{p}start")
    hospital = world.hospital(stopped.hospital_id)
    try:
        fee = fee_for(hospital, doctor.data, None)
    except InvalidInput:
        fee = Decimal(str(stopped.data["fee"]))  # no fee table (fees given per session): keep the session's
    event = _published(session_id, doctor.data, hospital, r.date, r.period, r.start, r.end, capacity, quota, fee,
                       bands, replaces=cmd.session_id)
    _stage_session(world, event)
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
    return equal_time_bands(start, end, _minutes(first.end) - _minutes(first.start), capacity, "replacement.")


# --- import ---------------------------------------------------------------------------------------

_KIND_ORDER = ("hospital", "fee", "holiday", "department", "doctor", "plan_slot", "session")
_ID_FIELDS = {"hospital": "hospital_id", "department": "department_id", "doctor": "doctor_id",
              "session": "session_id"}
_REFERS_TO = {"hospital_id": "hospital", "department_id": "department", "parent_id": "department",
              "doctor_id": "doctor"}
_KIND_COUNTS = {"hospital": "hospitals", "fee": "fees", "holiday": "holidays", "department": "departments",
                "doctor": "doctors", "plan_slot": "plans", "session": "sessions"}


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
    world: World
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


def import_plan(world: World, cmd: ImportPlan, now: datetime, import_id: str) -> ImportReport:
    """Check every record of an import against the store and the records before it, collecting every
    refusal; stage the events only when nothing was refused (the handler appends them in one go)."""
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
