"""What schedule decisions see: stream names, state folded from events, and the World.

`ScheduleWorld` is the kernel's `infra.decisions.World` (the streams loaded before the decision
ran, plus what it staged) with accessors that fold this service's aggregates. Asking it for a
stream that was not loaded raises `Missing`; the unit of work loads it and decides again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from contracts.schedule import BookingRules
from infra.decisions import Stored, World

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
PERIOD_CODES = {"morning": "am", "afternoon": "pm", "evening": "ev"}
PERIOD_NAMES = {"morning": "上午", "afternoon": "下午", "evening": "晚上"}
WEEKDAY_NAMES = ("", "周一", "周二", "周三", "周四", "周五", "周六", "周日")


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
            elif ev.type == "HolidayCancelled":
                state.holidays.pop(date.fromisoformat(d["date"]), None)
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
            elif ev.type in ("DoctorStopApproved", "DoctorStopRejected", "DoctorStopRetracted"):
                decided = {"DoctorStopApproved": "approved", "DoctorStopRejected": "rejected"}.get(ev.type, "withdrawn")
                for stop in state.stops:
                    if stop["stop_id"] == d["stop_id"]:
                        stop["state"] = decided
                if decided == "approved":
                    state.replaced_by = d.get("replacement_session_id")
                    state.state = "replaced" if state.replaced_by else "stopped"
            state.version = ev.version or 0
        return state


class ScheduleWorld(World):
    """The kernel's World with this service's aggregates folded from the loaded streams."""

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
