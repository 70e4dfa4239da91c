"""Booking rules, pure: resident IDs, the session ledger aggregate, the booking decision."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from contracts import AppointmentBooked, BookAppointment, Conflict, InvalidInput, NotFound, SessionFull

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read over the phone


@dataclass(frozen=True)
class ResidentId:
    number: str
    birth_date: date
    sex: str  # "M" | "F"


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


def ledger_stream(session_id: str) -> str:
    return f"ledger-{session_id}"


@dataclass
class SessionInfo:
    """What booking knows of a session, from schedule's SessionScheduled."""

    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    date: str
    period: str
    start: str
    fee: str
    quota: dict[str, int]


@dataclass
class Ledger:
    """All bookings of one session: the aggregate whose stream version guards the quota."""

    version: int = 0
    booked: dict[str, int] = field(default_factory=lambda: {"web": 0, "phone": 0, "window": 0})
    active_patients: set[str] = field(default_factory=set)
    issued: int = 0  # sequence numbers handed out so far

    def apply(self, ev: Any) -> None:
        d = ev.data
        if ev.type == "AppointmentBooked":
            self.booked[d["channel"]] += 1
            self.active_patients.add(d["patient_id"])
            self.issued = max(self.issued, d["sequence_number"])
        self.version = ev.version

    def remaining(self, quota: dict[str, int]) -> dict[str, int]:
        return {ch: max(0, quota.get(ch, 0) - n) for ch, n in self.booked.items()}


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))


def book(cmd: BookAppointment, session: SessionInfo | None, ledger: Ledger, appointment_id: str,
         code: str) -> AppointmentBooked:
    if session is None:
        raise NotFound(f"出诊 {cmd.session_id} 不存在 / unknown session", field="session_id")
    if cmd.patient_id in ledger.active_patients:
        raise Conflict("您已预约该出诊 / already booked for this session", field="session_id",
                       code="already_booked")
    if ledger.booked[cmd.channel] >= session.quota.get(cmd.channel, 0):
        raise SessionFull("该出诊已约满 / this session is full", field="session_id")
    return AppointmentBooked(
        appointment_id=appointment_id,
        code=code,
        session_id=session.session_id,
        hospital_id=session.hospital_id,
        department_id=session.department_id,
        doctor_id=session.doctor_id,
        patient_id=cmd.patient_id,
        channel=cmd.channel,
        sequence_number=ledger.issued + 1,
        date=session.date,
        period=session.period,
        start=session.start,
        fee=session.fee,
    )
