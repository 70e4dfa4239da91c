"""Schedule rules that are not a decision of their own: who may change what, the shape of a
session (time, quota, 分时段 time bands), registration fees, and the booking window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from pydantic import model_validator

from contracts import GENERAL_FEE_CLASS, Actor, Forbidden, InvalidInput, Quota, ScheduleSession, TimeBand
from contracts.schedule import BookingRules, ClinicType
from services.schedule.domain.state import HOSPITAL_TZ, Hospital

# Hospital staff of these kinds, the HIS sync and the platform itself may change a hospital's schedule.
_PLATFORM_KINDS = frozenset({"platform_admin", "system"})
_WRITER_KINDS = frozenset({"platform_admin", "system", "service"})


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


def authorize_hospital_settings(actor: Actor, hospital_id: str) -> None:
    """A hospital's own details and booking rules: its admins and the platform, not the HIS sync
    (which publishes schedule changes, not the hospital's rules)."""
    if actor.kind in _PLATFORM_KINDS:
        return
    if actor.kind == "hospital_admin" and actor.hospital_id == hospital_id:
        return
    raise Forbidden(f"仅医院 {hospital_id} 的管理员或平台管理员可修改医院信息与预约规则 / only an admin of this "
                    "hospital or a platform admin may change its details and booking rules", field="actor")


def authorize_stop_decision(actor: Actor, hospital_id: str) -> None:
    """停诊审批: an admin of the session's own hospital (or a platform admin), nobody else."""
    if actor.kind == "platform_admin":
        return
    if actor.kind == "hospital_admin" and actor.hospital_id == hospital_id:
        return
    raise Forbidden(f"仅医院 {hospital_id} 的管理员可审批停诊 / only an admin of this hospital may decide a "
                    "doctor stop", field="actor")


# --- the shape of a session -----------------------------------------------------------------------


def minutes_of(t: time) -> int:
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
    edges = list(range(minutes_of(start), minutes_of(end), minutes))
    if not edges:
        return []
    if capacity < len(edges):
        raise InvalidInput(f"分时段 {len(edges)} 段多于总号源 {capacity} / more time bands than numbers",
                           field=f"{prefix}band_minutes")
    share, rest = divmod(capacity, len(edges))
    return [TimeBand(start=_clock(at), end=_clock(min(at + minutes, minutes_of(end))), numbers=share + (i < rest))
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
class SessionTime:
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
