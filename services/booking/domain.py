"""Booking rules, pure: resident IDs, the session ledger and patient aggregates, and every
decision of the appointment lifecycle. No clock reads: `now` is always passed in."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from contracts import (
    Actor,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    BookAppointment,
    BookingRules,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    PatientAppointmentsChanged,
    PatientBanned,
    SessionFull,
    SessionStopApplied,
)
from contracts.schedule import Channel

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read over the phone
# Two questions that must not be confused (DESIGN guarantee 1). A booking that was ever confirmed
# keeps its place in the session (the quota, the one booking per patient and session) unless it
# is cancelled or refunded with `place_released`: a check-in or a no-show does not free it.
# Only a booking still to come can be cancelled, checked in, lapse, or count against the
# patient's active limits.
UPCOMING = frozenset({"booked", "moved"})
HOLDS_PLACE = frozenset({"booked", "moved", "checked_in", "no_show"})


class Refused(DomainError):
    """A rule says no (422): not open yet, closed, banned, a limit reached, a wrong transition."""

    code = "refused"
    status = 422


# --- resident ID ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ResidentId:
    number: str
    birth_date: date
    sex: Literal["M", "F"]


def parse_resident_id(raw: str, today: date | None = None) -> ResidentId:
    """GB 11643-1999: 6-digit region, 8-digit birth date, 3-digit order (odd = male), check char."""
    number = raw.strip().upper()
    if len(number) != 18 or not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        raise InvalidInput("身份证号应为18位 / resident ID must be 17 digits and a digit or X", field="id_number")
    expected = _CHECK[sum(int(c) * w for c, w in zip(number[:17], _WEIGHTS, strict=True)) % 11]
    if number[17] != expected:
        raise InvalidInput("身份证号校验位错误 / resident ID check digit is wrong", field="id_number")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidInput("身份证号出生日期无效 / resident ID birth date is invalid", field="id_number") from None
    if born > (today or date.today()) or born.year < 1900:
        raise InvalidInput("身份证号出生日期无效 / resident ID birth date is invalid", field="id_number")
    return ResidentId(number=number, birth_date=born, sex="M" if int(number[16]) % 2 else "F")


# --- what booking knows of sessions and hospitals --------------------------------------------

def ledger_stream(session_id: str) -> str:
    return f"ledger-{session_id}"


def patient_stream(patient_id: str) -> str:
    return f"patient-{patient_id}"


@dataclass
class SessionInfo:
    """A session as booking learned it from schedule's SessionScheduled (plus later changes)."""

    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    date: str
    period: str
    start: str
    end: str
    fee: str
    quota: dict[str, int]
    opens_at: datetime
    closes_at: datetime
    lapse_at: datetime
    time_bands: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False
    doctor_name: str = ""

    @classmethod
    def from_event(cls, d: dict[str, Any], stopped: bool = False) -> SessionInfo:
        return cls(
            session_id=d["session_id"], hospital_id=d["hospital_id"], department_id=d["department_id"],
            doctor_id=d["doctor_id"], date=d["date"], period=d["period"], start=d["start"], end=d["end"],
            fee=str(d["fee"]), quota={k: int(v) for k, v in d["quota"].items()},
            opens_at=_aware(d["opens_at"]), closes_at=_aware(d["closes_at"]), lapse_at=_aware(d["lapse_at"]),
            time_bands=list(d.get("time_bands") or []), stopped=stopped, doctor_name=str(d.get("doctor_name") or ""),
        )

    def starts_at(self) -> datetime:
        return datetime.combine(date.fromisoformat(self.date), time.fromisoformat(self.start), HOSPITAL_TZ)

    def arrival_window(self, sequence_number: int) -> str | None:
        """分时段: the band whose numbers include this sequence number."""
        upto = 0
        for band in self.time_bands:
            upto += int(band["numbers"])
            if sequence_number <= upto:
                return f"{str(band['start'])[:5]}-{str(band['end'])[:5]}"
        return None


def _aware(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=HOSPITAL_TZ)


def local(moment: datetime) -> str:
    return moment.astimezone(HOSPITAL_TZ).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class NoShowRules:
    """N no-shows within M days bans for T days, on every channel and hospital."""

    limit: int = 3
    window_days: int = 90
    ban_days: int = 90


# --- aggregates -------------------------------------------------------------------------------

@dataclass
class Booking:
    appointment_id: str
    code: str
    patient_id: str
    channel: Channel
    sequence_number: int
    status: str
    paid: bool
    fee: str
    arrival_window: str | None
    data: dict[str, Any]
    fee_taken: str | None = None  # at the window's check-in
    place_released: bool = False  # a 退号 before the session started gave the place back

    @property
    def upcoming(self) -> bool:
        return self.status in UPCOMING

    @property
    def holds_place(self) -> bool:
        return self.status in HOLDS_PLACE or (self.status == "refunded" and not self.place_released)


@dataclass
class Ledger:
    """All bookings of one session: the aggregate whose stream version guards the quota."""

    version: int = 0
    bookings: dict[str, Booking] = field(default_factory=dict)
    issued: int = 0  # sequence numbers handed out so far (never reused)
    stopped: bool = False

    def apply(self, ev: Any) -> None:
        d = ev.data
        if ev.type in ("AppointmentBooked", "AppointmentMoved"):
            self.bookings[d["appointment_id"]] = Booking(
                appointment_id=d["appointment_id"], code=d["code"], patient_id=d["patient_id"],
                channel=d["channel"], sequence_number=d["sequence_number"],
                status="booked" if ev.type == "AppointmentBooked" else "moved", paid=bool(d.get("paid")),
                fee=str(d["fee"]), arrival_window=d.get("arrival_window"), data=d,
            )
            self.issued = max(self.issued, d["sequence_number"])
        elif ev.type in _CLOSING and d["appointment_id"] in self.bookings:
            b = self.bookings[d["appointment_id"]]
            b.status = _CLOSING[ev.type]
            if ev.type == "AppointmentCheckedIn":
                b.fee_taken = str(d["fee_taken"])
            elif ev.type == "AppointmentRefunded":
                b.place_released = bool(d["place_released"])
        elif ev.type == "SessionStopApplied":
            self.stopped = True
            for b in self.bookings.values():
                if b.upcoming:
                    b.status = "moved_out"
        self.version = ev.version

    @classmethod
    def fold(cls, events: Iterable[Any]) -> Ledger:
        ledger = cls()
        for ev in events:
            ledger.apply(ev)
        return ledger

    def booked(self, channel: str) -> int:
        """Places of `channel` taken: every booking that holds one, checked in and missed ones too."""
        return sum(1 for b in self.bookings.values() if b.channel == channel and b.holds_place)

    def patients_holding_places(self) -> set[str]:
        """Who has a place in this session: they may not book it a second time."""
        return {b.patient_id for b in self.bookings.values() if b.holds_place}

    def remaining(self, quota: dict[str, int]) -> dict[str, int]:
        return {ch: max(0, quota.get(ch, 0) - self.booked(ch)) for ch in ("web", "phone", "window")}

    def upcoming_in_order(self) -> list[Booking]:
        """The bookings still to come, by sequence number: what a doctor stop moves or cancels."""
        return sorted((b for b in self.bookings.values() if b.upcoming), key=lambda b: b.sequence_number)


_CLOSING = {"AppointmentCancelled": "cancelled", "AppointmentCheckedIn": "checked_in", "AppointmentLapsed": "no_show",
            "AppointmentRefunded": "refunded"}


@dataclass
class PatientRecord:
    """A patient's own stream: active appointments, no-shows and bans, across every hospital."""

    version: int = 0
    exists: bool = False
    appointments: dict[str, dict[str, Any]] = field(default_factory=dict)
    no_show_dates: list[date] = field(default_factory=list)
    banned_until: date | None = None

    def apply(self, ev: Any) -> None:
        d = ev.data
        if ev.type == "PatientRegistered":
            self.exists = True
        elif ev.type == "PatientAppointmentsChanged":
            self.appointments[d["appointment_id"]] = d
            if d["outcome"] == "no_show":
                self.no_show_dates.append(date.fromisoformat(d["date"]))
        elif ev.type == "PatientBanned":
            until = date.fromisoformat(d["until"])
            self.banned_until = max(self.banned_until or until, until)
        self.version = ev.version

    @classmethod
    def fold(cls, events: Iterable[Any]) -> PatientRecord:
        record = cls()
        for ev in events:
            record.apply(ev)
        return record

    def active(self) -> list[dict[str, Any]]:
        """The appointments still to come (booked or moved): what the per-patient limits count."""
        return [a for a in self.appointments.values() if a["active"]]


# --- decisions --------------------------------------------------------------------------------

def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))


def book(cmd: BookAppointment, session: SessionInfo | None, ledger: Ledger, patient: PatientRecord,
         rules: BookingRules, now: datetime, appointment_id: str, code: str
         ) -> tuple[AppointmentBooked, PatientAppointmentsChanged]:
    if session is None:
        raise NotFound(f"出诊 {cmd.session_id} 不存在 / unknown session", field="session_id")
    if not patient.exists:
        raise NotFound("患者不存在 / unknown patient", field="patient_id")
    if session.stopped or ledger.stopped:
        raise Refused("该出诊已停诊 / the doctor has stopped this session", field="session_id", code="session_stopped")
    if now < session.opens_at:
        raise Refused(f"尚未开放预约，{local(session.opens_at)} 开放 / booking opens at {local(session.opens_at)}",
                      field="session_id", code="not_open")
    if now >= session.closes_at:
        raise Refused(f"预约已截止（{local(session.closes_at)}）/ booking closed at {local(session.closes_at)}",
                      field="session_id", code="closed")
    today = now.astimezone(HOSPITAL_TZ).date()
    if patient.banned_until is not None and patient.banned_until >= today:
        raise Refused(f"因爽约被暂停预约至 {patient.banned_until} / booking suspended until {patient.banned_until} "
                      "after missed appointments", field="patient_id", code="banned")
    if cmd.patient_id in ledger.patients_holding_places():
        raise Conflict("您已预约该出诊 / already booked for this session", field="session_id", code="already_booked")
    active = patient.active()
    if len(active) >= rules.max_active:
        raise Refused(f"未就诊的预约已达 {rules.max_active} 个 / at most {rules.max_active} active bookings",
                      field="patient_id", code="limit_active")
    same_day = [a for a in active if a["date"] == session.date]
    if len(same_day) >= rules.max_per_day:
        raise Refused(f"同一天最多预约 {rules.max_per_day} 个 / at most {rules.max_per_day} bookings a day",
                      field="session_id", code="limit_day")
    if sum(1 for a in same_day if a["department_id"] == session.department_id) >= rules.max_per_department_day:
        raise Refused("同一天同一科室预约已达上限 / daily limit for this department reached",
                      field="session_id", code="limit_department")
    if ledger.booked(cmd.channel) >= session.quota.get(cmd.channel, 0):
        raise SessionFull("该出诊已约满 / this session is full", field="session_id")
    sequence = ledger.issued + 1
    booked = AppointmentBooked(
        appointment_id=appointment_id, code=code, session_id=session.session_id, hospital_id=session.hospital_id,
        department_id=session.department_id, doctor_id=session.doctor_id, patient_id=cmd.patient_id,
        channel=cmd.channel, sequence_number=sequence, date=session.date, period=session.period,
        start=session.start, fee=session.fee, arrival_window=session.arrival_window(sequence),
        operator_id=cmd.operator_id, paid=cmd.channel == "phone",
    )
    return booked, _change(booked.patient_id, appointment_id, session, True, "booked")


def cancel(booking: Booking | None, session: SessionInfo, actor: Actor, now: datetime
           ) -> tuple[AppointmentCancelled, PatientAppointmentsChanged]:
    if booking is None:
        raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
    authorize_cancel(actor, booking.patient_id)
    reason = "patient" if actor.kind == "patient" else "operator"
    _must_be_upcoming(booking, "取消 / cancel")
    if now >= session.closes_at:
        raise Refused(f"已过取消截止时间（{local(session.closes_at)}）/ cancelling closed at "
                      f"{local(session.closes_at)}", field="appointment_id", code="cancel_closed")
    event = AppointmentCancelled(
        appointment_id=booking.appointment_id, session_id=session.session_id, hospital_id=session.hospital_id,
        patient_id=booking.patient_id, channel=booking.channel, reason=reason,  # type: ignore[arg-type]
        refund_due=booking.fee if booking.paid else None, date=session.date,
    )
    return event, _change(booking.patient_id, booking.appointment_id, session, False, "cancelled")


def check_in(booking: Booking | None, session: SessionInfo, clerk: Actor, id_matches: bool, now: datetime
             ) -> tuple[AppointmentCheckedIn, PatientAppointmentsChanged]:
    authorize_check_in(clerk, session.hospital_id)
    if booking is None:
        raise NotFound("预约码不存在 / unknown booking code", field="code")
    if not id_matches:
        raise Refused("身份证号与预约人不符 / the resident ID does not match the booking", field="id_number",
                      code="id_mismatch")
    _must_be_upcoming(booking, "取号 / check in")
    if now.astimezone(HOSPITAL_TZ).date().isoformat() != session.date:
        raise Refused(f"请于就诊当日（{session.date}）取号 / check in on the visit day {session.date}",
                      field="code", code="not_visit_day")
    if now >= session.lapse_at:
        raise Refused(f"已过取号时间（{local(session.lapse_at)}）/ check-in closed at {local(session.lapse_at)}",
                      field="code", code="check_in_closed")
    event = AppointmentCheckedIn(
        appointment_id=booking.appointment_id, session_id=session.session_id, hospital_id=session.hospital_id,
        patient_id=booking.patient_id, channel=booking.channel, clerk_id=clerk.id,
        fee_taken="0.00" if booking.paid else booking.fee, date=session.date,
    )
    return event, _change(booking.patient_id, booking.appointment_id, session, False, "checked_in")


def refund_at_window(booking: Booking | None, session: SessionInfo, clerk: Actor, reason: str, now: datetime
                     ) -> tuple[AppointmentRefunded, PatientAppointmentsChanged]:
    """退号 on the visit day: a paid phone booking not yet checked in (until the lapse time, when it
    becomes a no-show instead), or a registration checked in at the window. The fee paid or taken
    is due back; the place is released only while the session has not started, because after
    the start nobody else could use it (and the doctor's list keeps it)."""
    authorize_refund(clerk, session.hospital_id)
    if booking is None:
        raise NotFound(UNKNOWN_CODE, field="code")
    if not (booking.status == "checked_in" or (booking.upcoming and booking.paid)):
        what = "未付费的预约无费用可退 / an unpaid booking has nothing to refund" \
            if booking.upcoming else f"预约状态为 {booking.status} / the appointment is {booking.status}"
        raise Refused(f"不能退号：{what}", field="code", code="not_refundable")
    if now.astimezone(HOSPITAL_TZ).date().isoformat() != session.date:
        raise Refused(f"只能在就诊当日（{session.date}）退号 / refunds at the window on the visit day {session.date}",
                      field="code", code="not_visit_day")
    if booking.upcoming and now >= session.lapse_at:
        raise Refused(f"已过取号时间（{local(session.lapse_at)}），预约已失效 / past the lapse time "
                      f"{local(session.lapse_at)}: the booking is a no-show", field="code", code="not_refundable")
    refund_due = booking.fee if booking.paid else (booking.fee_taken or booking.fee)
    event = AppointmentRefunded(
        appointment_id=booking.appointment_id, session_id=session.session_id, hospital_id=session.hospital_id,
        patient_id=booking.patient_id, channel=booking.channel, date=session.date, clerk_id=clerk.id,
        refund_due=refund_due, reason=reason, place_released=now < session.starts_at(),
    )
    return event, _change(booking.patient_id, booking.appointment_id, session, False, "refunded")


def lapse(booking: Booking, session: SessionInfo, now: datetime
          ) -> tuple[AppointmentLapsed, PatientAppointmentsChanged] | None:
    if not booking.upcoming or now < session.lapse_at:
        return None
    event = AppointmentLapsed(
        appointment_id=booking.appointment_id, session_id=session.session_id, hospital_id=session.hospital_id,
        patient_id=booking.patient_id, channel=booking.channel, date=session.date,
    )
    return event, _change(booking.patient_id, booking.appointment_id, session, False, "no_show")


def ban_after_no_show(patient_id: str, patient: PatientRecord, no_show_on: date, today: date,
                      rules: NoShowRules) -> PatientBanned | None:
    """Called with the patient's record before the new no-show is applied."""
    since = today - timedelta(days=rules.window_days)
    recent = [d for d in [*patient.no_show_dates, no_show_on] if d >= since]
    if len(recent) < rules.limit:
        return None
    until = today + timedelta(days=rules.ban_days)
    if patient.banned_until is not None and patient.banned_until >= until:
        return None
    return PatientBanned(patient_id=patient_id, until=until.isoformat(), no_shows=len(recent))


@dataclass
class StopOutcome:
    stopped_events: list[Any]     # for the stopped session's ledger: the marker first, then cancellations
    replacement_events: list[Any]  # AppointmentMoved, for the replacement's ledger
    patient_changes: list[PatientAppointmentsChanged]


def apply_stop(stop_id: str, session: SessionInfo, ledger: Ledger, replacement: SessionInfo | None,
               replacement_ledger: Ledger | None) -> StopOutcome:
    """Move every active booking, in sequence order, to the replacement while its channel has room;
    cancel the rest with reason doctor_stop (a refund is due where the fee was charged)."""
    moved: list[Any] = []
    cancelled: list[Any] = []
    changes: list[PatientAppointmentsChanged] = []
    taken = {"web": 0, "phone": 0, "window": 0}
    issued = replacement_ledger.issued if replacement_ledger else 0
    usable = (replacement is not None and replacement_ledger is not None
              and not replacement.stopped and not replacement_ledger.stopped)
    already_there = replacement_ledger.patients_holding_places() if replacement_ledger else set()
    for b in ledger.upcoming_in_order():
        room = False
        if usable and replacement is not None and replacement_ledger is not None:
            # One booking per patient and session: a patient already booked there is not given a second.
            room = (b.patient_id not in already_there
                    and replacement_ledger.booked(b.channel) + taken[b.channel] < replacement.quota.get(b.channel, 0))
        if room and replacement is not None:
            taken[b.channel] += 1
            issued += 1
            moved.append(AppointmentMoved(
                appointment_id=b.appointment_id, code=b.code, from_session_id=session.session_id,
                session_id=replacement.session_id, hospital_id=replacement.hospital_id,
                department_id=replacement.department_id, doctor_id=replacement.doctor_id, patient_id=b.patient_id,
                channel=b.channel, sequence_number=issued, date=replacement.date, period=replacement.period,
                start=replacement.start, fee=b.fee, arrival_window=replacement.arrival_window(issued), paid=b.paid,
            ))
            changes.append(_change(b.patient_id, b.appointment_id, replacement, True, "moved"))
        else:
            cancelled.append(AppointmentCancelled(
                appointment_id=b.appointment_id, session_id=session.session_id, hospital_id=session.hospital_id,
                patient_id=b.patient_id, channel=b.channel, reason="doctor_stop",
                refund_due=b.fee if b.paid else None, date=session.date,
            ))
            changes.append(_change(b.patient_id, b.appointment_id, session, False, "cancelled"))
    marker = SessionStopApplied(
        stop_id=stop_id, session_id=session.session_id,
        replacement_session_id=replacement.session_id if replacement else None,
        moved=len(moved), cancelled=len(cancelled),
    )
    return StopOutcome([marker, *cancelled], moved, changes)


# --- who may act on what: checked before anything is answered, a repeat's answer included --------

def authorize_cancel(actor: Actor, patient_id: str) -> None:
    """The patient themselves or a hotline operator; another patient learns nothing (404)."""
    if actor.kind == "patient":
        if actor.id != patient_id:
            raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
    elif actor.kind != "operator":
        raise Forbidden("只有患者本人或话务员可以取消 / only the patient or an operator may cancel", field="actor")


def authorize_check_in(clerk: Actor, hospital_id: str) -> None:
    """Window staff of the booking's hospital; another hospital's clerk learns nothing (404)."""
    if clerk.kind not in ("clerk", "hospital_admin"):
        raise Forbidden("只有预约窗口人员可以取号 / only a window clerk may check in", field="actor")
    if clerk.hospital_id != hospital_id:
        raise NotFound("预约码不存在 / unknown booking code", field="code")


UNKNOWN_CODE = "预约码不存在 / unknown booking code"


WINDOW_STAFF = frozenset({"clerk", "hospital_admin"})
HOSPITAL_READERS = frozenset({"clerk", "hospital_admin", "doctor"})


def authorize_refund(actor: Actor, hospital_id: str) -> None:
    """退号: window staff of the appointment's hospital, or a platform admin; anyone else is
    answered as for an unknown code (404), so a code of another hospital tells nothing."""
    if not _of_hospital(actor, hospital_id, WINDOW_STAFF):
        raise NotFound(UNKNOWN_CODE, field="code")


def authorize_read_by_code(actor: Actor | None, hospital_id: str) -> None:
    """One appointment by its code: staff of its hospital (doctors too) or a platform admin; anyone
    else is answered as for an unknown code (404)."""
    if actor is None or not _of_hospital(actor, hospital_id, HOSPITAL_READERS):
        raise NotFound(UNKNOWN_CODE, field="code")


def authorize_hospital_read(actor: Actor | None, hospital_id: str) -> None:
    """A hospital's day list, or a patient's bookings there: its staff (doctors too) or a platform admin."""
    if actor is None or actor.kind not in (*HOSPITAL_READERS, "platform_admin"):
        raise Forbidden("仅限医院工作人员 / hospital staff only", field="actor")
    if not _of_hospital(actor, hospital_id, HOSPITAL_READERS):
        raise Forbidden("只能查看本院数据 / staff see only their own hospital", field="hospital_id")


def _of_hospital(actor: Actor, hospital_id: str, kinds: frozenset[str]) -> bool:
    return actor.kind == "platform_admin" or (actor.kind in kinds and actor.hospital_id == hospital_id)


def authorize_booking(actor: Actor, patient_id: str) -> None:
    """A patient books for themselves only (operators and the system for anyone)."""
    if actor.kind == "patient" and actor.id != patient_id:
        raise Forbidden("只能为本人预约 / a patient books only for themselves", field="patient_id")


def patient_lookup_scope(actor: Actor | None) -> str | None:
    """Where a lookup by resident ID may find patients: the hospital of a clerk or hospital admin
    (patients with a booking there), or None for the whole province (hotline operators, the
    platform's admins, and the one-argument call of a gateway that does not pass its actor yet)."""
    if actor is None or actor.kind in ("operator", "platform_admin"):
        return None
    if actor.kind in ("clerk", "hospital_admin") and actor.hospital_id:
        return actor.hospital_id
    raise Forbidden("仅限工作人员 / staff only", field="actor")


NO_SUCH_PATIENT = "未找到该身份证号的患者 / no patient with this resident ID"


# --- what the window sees: masked rows ---------------------------------------------------------

STATUS_LABELS = {"booked": "待取号", "moved": "待取号", "checked_in": "已取号", "refunded": "已退号",
                 "cancelled": "已取消", "no_show": "爽约"}
WINDOW_ROW_FIELDS = ("appointment_id", "code", "session_id", "department_id", "doctor_id", "doctor_name", "date",
                     "period", "start", "sequence_number", "channel", "fee", "paid", "status", "label", "id_masked",
                     "phone_masked", "name_masked", "arrival_window")


def mask_name(name: str) -> str:
    """张三丰 → 张**: the first character, a star for each further one."""
    name = name.strip()
    return name[:1] + "*" * (len(name) - 1)


def window_row(appointment: dict[str, Any], status: str, doctor_name: str, id_masked: str | None,
               phone_masked: str | None, name: str | None) -> dict[str, Any]:
    """One appointment as window staff and doctors see it: masked, never a clear name, ID or phone."""
    return {
        "appointment_id": appointment["appointment_id"], "code": appointment["code"],
        "session_id": appointment["session_id"], "department_id": appointment["department_id"],
        "doctor_id": appointment["doctor_id"], "doctor_name": doctor_name, "date": appointment["date"],
        "period": appointment["period"], "start": appointment["start"],
        "sequence_number": appointment["sequence_number"], "channel": appointment["channel"],
        "fee": appointment["fee"], "paid": bool(appointment.get("paid")), "status": status,
        "label": STATUS_LABELS.get(status, status), "id_masked": id_masked, "phone_masked": phone_masked,
        "name_masked": mask_name(name) if name else None, "arrival_window": appointment.get("arrival_window"),
    }


def valid_code(raw: str) -> str:
    """A booking code as typed at the window: 8 characters of CODE_ALPHABET (case ignored)."""
    code = raw.strip().upper()
    if len(code) != 8 or any(c not in CODE_ALPHABET for c in code):
        raise InvalidInput("预约码应为8位字母数字 / a booking code is 8 letters and digits", field="code")
    return code


def valid_day(raw: str) -> str:
    try:
        return date.fromisoformat(raw.strip()).isoformat()
    except (AttributeError, ValueError):
        raise InvalidInput("日期格式应为 YYYY-MM-DD / date must be YYYY-MM-DD", field="date") from None


def already_registered(phone_masked: str) -> Conflict:
    """The refusal of a second account for one resident ID, telling the caller how the owner gets in."""
    return Conflict(
        f"该身份证号已注册，绑定手机号 {phone_masked}。如是本人，请用该手机号找回密码，或携带身份证到医院窗口办理 / "
        f"this resident ID is already registered with the mobile number {phone_masked}: if it is yours, reset "
        "the password with that phone, or bring your ID card to a hospital window",
        field="id_number", code="already_registered")


def no_such_account() -> NotFound:
    """The same answer for an unknown resident ID and a phone that is not the registered one."""
    return NotFound("身份证号与手机号不匹配任何账户 / no account with this resident ID and mobile number",
                    field="id_number", code="no_such_account")


def authorize_staff(actor: Actor | None, hospital_id: str) -> None:
    """Lists of patients are for staff of the session's hospital (and the platform's admins)."""
    if actor is None or actor.kind not in ("clerk", "hospital_admin", "platform_admin"):
        raise Forbidden("仅限医院工作人员 / hospital staff only", field="actor")
    if actor.kind != "platform_admin" and actor.hospital_id != hospital_id:
        raise Forbidden("只能查看本院数据 / staff see only their own hospital", field="actor")


def _must_be_upcoming(booking: Booking, what: str) -> None:
    if not booking.upcoming:
        raise Conflict(f"预约状态为 {booking.status}，不能{what} / an appointment that is {booking.status} "
                       f"cannot be changed", field="appointment_id", code="invalid_transition")


def _change(patient_id: str, appointment_id: str, session: SessionInfo, active: bool, outcome: str
            ) -> PatientAppointmentsChanged:
    return PatientAppointmentsChanged(
        patient_id=patient_id, appointment_id=appointment_id, session_id=session.session_id,
        hospital_id=session.hospital_id, department_id=session.department_id, date=session.date,
        active=active, outcome=outcome,  # type: ignore[arg-type]
    )


