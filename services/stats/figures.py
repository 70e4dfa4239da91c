"""The health bureau's figures as a fold of store events: pure, no SQL, no nameko.

A batch of events (in the store's global order) is folded into `Changes`: count deltas per fact
row, the new state of every session it touched, lead-time samples, the latest visit reports and
names. readmodel.py loads the sessions a batch refers to, folds it here and writes the Changes in
the same transaction as the projection's checkpoint; unit tests fold the same way into dicts.

The grain (see README.md for every figure's definition):
- bookings: visit day (the session's date) × hospital × department × doctor × channel;
- stops: visit day × hospital × department × doctor;
- accounts: the day the event occurred, in hospital time (Asia/Shanghai);
- sessions: one row each (quota, places taken, stopped, when it sold out);
- leads: one row per AppointmentBooked (booked at, session starts at).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    DepartmentCreated,
    DepartmentUpdated,
    DoctorRegistered,
    DoctorStopApproved,
    DoctorStopRejected,
    DoctorStopRequested,
    DoctorStopRetracted,
    DoctorUpdated,
    Envelope,
    Event,
    HospitalRegistered,
    HospitalUpdated,
    OutpatientVisitsReported,
    PatientBanned,
    PatientRegistered,
    SessionQuotaChanged,
    SessionScheduled,
    SessionStopApplied,
)
from contracts.schedule import Quota

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
CHANNELS = ("web", "phone", "window")
BOOKING_COUNTS = ("released", "booked", "cancelled_patient", "cancelled_operator", "cancelled_hospital",
                  "refunded", "moved", "moved_in", "checked_in", "no_show")
STOP_COUNTS = ("sessions", "stopped_sessions", "stop_requested", "stop_approved", "stop_rejected",
               "stop_withdrawn", "affected", "affected_moved", "affected_cancelled")
ACCOUNT_COUNTS = ("registrations", "bans")
CANCELLED_BY = {"patient": "cancelled_patient", "operator": "cancelled_operator", "doctor_stop": "cancelled_hospital"}

BookingKey = tuple[date, str, str, str, str]  # day, hospital_id, department_id, doctor_id, channel
StopKey = tuple[date, str, str, str]          # day, hospital_id, department_id, doctor_id
F = TypeVar("F", bound=Callable[..., None])


@dataclass
class Session:
    """What the figures need to know of a session, kept in stats_sessions."""

    session_id: str
    day: date
    hospital_id: str
    department_id: str
    doctor_id: str
    opens_at: datetime
    starts_at: datetime
    quota: dict[str, int]
    taken: int = 0  # places held: booked or moved in, less cancelled, moved out, refunded with the place
    stopped: bool = False
    sold_out_at: datetime | None = None

    def stop_key(self) -> StopKey:
        return (self.day, self.hospital_id, self.department_id, self.doctor_id)

    def booking_key(self, channel: str) -> BookingKey:
        return (self.day, self.hospital_id, self.department_id, self.doctor_id, channel)

    @property
    def places(self) -> int:
        return sum(self.quota.values())


@dataclass(frozen=True)
class Lead:
    appointment_id: str
    day: date
    hospital_id: str
    department_id: str
    booked_at: datetime
    starts_at: datetime


@dataclass
class Changes:
    """What one batch changes. Counts are deltas (added to the stored rows); sessions, visits and
    names are the new values (they replace the stored ones)."""

    sessions: dict[str, Session]  # every session the batch knows: loaded, then as the batch left it
    touched: set[str] = field(default_factory=set)
    bookings: defaultdict[BookingKey, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    stops: defaultdict[StopKey, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    accounts: defaultdict[date, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    leads: list[Lead] = field(default_factory=list)
    visits: dict[tuple[date, str], tuple[int, int]] = field(default_factory=dict)  # → (visits, position)
    hospitals: dict[str, str] = field(default_factory=dict)
    departments: dict[str, tuple[str, str]] = field(default_factory=dict)  # → (hospital_id, name)
    doctors: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # → (hospital, department, name)

    def touch(self, session: Session) -> Session:
        self.touched.add(session.session_id)
        return session


Fold = Callable[[Changes, Any, Envelope], None]
FOLDS: dict[str, tuple[type[Event], Fold]] = {}


def fresh(batch: Sequence[Envelope], done: int) -> list[Envelope]:
    """The events of a batch beyond the checkpoint `done`: a redelivered or re-read event is
    folded at most once."""
    return [ev for ev in batch if (ev.position or 0) > done]


def session_ids(events: Iterable[Envelope]) -> set[str]:
    """The sessions a batch refers to: what must be loaded before it is folded."""
    ids: set[str] = set()
    for ev in events:
        for key in ("session_id", "from_session_id"):
            value = ev.data.get(key)
            if isinstance(value, str):
                ids.add(value)
    return ids


def fold(events: Iterable[Envelope], sessions: dict[str, Session]) -> Changes:
    """Fold events (in global order) onto the known `sessions` (mutated and returned in Changes)."""
    changes = Changes(sessions=sessions)
    for ev in events:
        entry = FOLDS.get(ev.type)
        if entry is not None:
            cls, fn = entry
            fn(changes, cls.model_validate(ev.data), ev)
    return changes


def event_types() -> set[str]:
    return set(FOLDS)


def event_classes() -> list[type[Event]]:
    return [cls for cls, _ in FOLDS.values()]


def local_day(moment: datetime) -> date:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(HOSPITAL_TZ).date()


def _on(*classes: type[Event]) -> Callable[[F], F]:
    def register(fn: F) -> F:
        for cls in classes:
            FOLDS[cls.type_name()] = (cls, fn)
        return fn
    return register


def _quota(q: Quota) -> dict[str, int]:
    return {c: q.for_channel(c) for c in CHANNELS}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=HOSPITAL_TZ)


def _starts_at(day: date, start: time) -> datetime:
    return datetime.combine(day, start, HOSPITAL_TZ)


def _requota(ch: Changes, s: Session, quota: dict[str, int]) -> None:
    """The latest quota counts: released places move by the difference, per channel."""
    for channel in CHANNELS:
        delta = quota[channel] - s.quota.get(channel, 0)
        if delta:
            ch.bookings[s.booking_key(channel)]["released"] += delta
    s.quota = quota
    ch.touch(s)


def _stop_key(ch: Changes, session_id: str, hospital_id: str, env: Envelope) -> StopKey:
    s = ch.sessions.get(session_id)
    if s is not None:
        return s.stop_key()
    # A session the store never published (not seen in practice): counted on the event's day.
    return (local_day(env.occurred_at), hospital_id, "", "")


def _booking_key(ch: Changes, e: AppointmentCancelled | AppointmentCheckedIn | AppointmentLapsed
                 | AppointmentRefunded, env: Envelope) -> tuple[BookingKey, Session | None]:
    s = ch.sessions.get(e.session_id)
    if s is not None:
        return s.booking_key(e.channel), s
    day = date.fromisoformat(e.date) if e.date else local_day(env.occurred_at)
    return (day, e.hospital_id, "", "", e.channel), None


# --- sessions and their quota ---------------------------------------------------------------

@_on(SessionScheduled)
def _scheduled(ch: Changes, e: SessionScheduled, env: Envelope) -> None:
    known = ch.sessions.get(e.session_id)
    if known is not None:  # published again: counted once, its latest quota counts
        _requota(ch, known, _quota(e.quota))
        return
    s = ch.touch(Session(
        session_id=e.session_id, day=e.date, hospital_id=e.hospital_id, department_id=e.department_id,
        doctor_id=e.doctor_id, opens_at=_aware(e.opens_at), starts_at=_starts_at(e.date, e.start),
        quota={c: 0 for c in CHANNELS},
    ))
    ch.sessions[s.session_id] = s
    ch.stops[s.stop_key()]["sessions"] += 1
    _requota(ch, s, _quota(e.quota))


@_on(SessionQuotaChanged)
def _quota_changed(ch: Changes, e: SessionQuotaChanged, env: Envelope) -> None:
    s = ch.sessions.get(e.session_id)
    if s is not None:
        _requota(ch, s, _quota(e.quota))


# --- the appointment lifecycle --------------------------------------------------------------

@_on(AppointmentBooked)
def _booked(ch: Changes, e: AppointmentBooked, env: Envelope) -> None:
    s = ch.sessions.get(e.session_id)
    if s is None:
        day = date.fromisoformat(e.date)
        ch.bookings[(day, e.hospital_id, e.department_id, e.doctor_id, e.channel)]["booked"] += 1
        starts_at = _starts_at(day, time.fromisoformat(e.start))
        ch.leads.append(Lead(e.appointment_id, day, e.hospital_id, e.department_id, env.occurred_at, starts_at))
        return
    ch.bookings[s.booking_key(e.channel)]["booked"] += 1
    ch.touch(s).taken += 1
    if s.sold_out_at is None and s.places > 0 and s.taken >= s.places:
        s.sold_out_at = env.occurred_at
    ch.leads.append(Lead(e.appointment_id, s.day, s.hospital_id, s.department_id, env.occurred_at, s.starts_at))


@_on(AppointmentMoved)
def _moved(ch: Changes, e: AppointmentMoved, env: Envelope) -> None:
    source = ch.sessions.get(e.from_session_id)
    if source is not None:
        ch.bookings[source.booking_key(e.channel)]["moved"] += 1
        ch.touch(source).taken -= 1
    target = ch.sessions.get(e.session_id)
    if target is not None:
        ch.bookings[target.booking_key(e.channel)]["moved_in"] += 1
        ch.touch(target).taken += 1
    else:
        day = date.fromisoformat(e.date)
        ch.bookings[(day, e.hospital_id, e.department_id, e.doctor_id, e.channel)]["moved_in"] += 1


@_on(AppointmentCancelled)
def _cancelled(ch: Changes, e: AppointmentCancelled, env: Envelope) -> None:
    key, s = _booking_key(ch, e, env)
    ch.bookings[key][CANCELLED_BY[e.reason]] += 1
    if s is not None:
        ch.touch(s).taken -= 1


@_on(AppointmentRefunded)
def _refunded(ch: Changes, e: AppointmentRefunded, env: Envelope) -> None:
    key, s = _booking_key(ch, e, env)
    ch.bookings[key]["refunded"] += 1
    if s is not None and e.place_released:
        ch.touch(s).taken -= 1


@_on(AppointmentCheckedIn)
def _checked_in(ch: Changes, e: AppointmentCheckedIn, env: Envelope) -> None:
    ch.bookings[_booking_key(ch, e, env)[0]]["checked_in"] += 1


@_on(AppointmentLapsed)
def _lapsed(ch: Changes, e: AppointmentLapsed, env: Envelope) -> None:
    ch.bookings[_booking_key(ch, e, env)[0]]["no_show"] += 1


# --- doctor stops ---------------------------------------------------------------------------

@_on(DoctorStopRequested)
def _stop_requested(ch: Changes, e: DoctorStopRequested, env: Envelope) -> None:
    ch.stops[_stop_key(ch, e.session_id, e.hospital_id, env)]["stop_requested"] += 1


@_on(DoctorStopApproved)
def _stop_approved(ch: Changes, e: DoctorStopApproved, env: Envelope) -> None:
    key = _stop_key(ch, e.session_id, e.hospital_id, env)
    ch.stops[key]["stop_approved"] += 1
    s = ch.sessions.get(e.session_id)
    if s is not None and not s.stopped:
        ch.touch(s).stopped = True
        ch.stops[key]["stopped_sessions"] += 1


@_on(DoctorStopRejected)
def _stop_rejected(ch: Changes, e: DoctorStopRejected, env: Envelope) -> None:
    ch.stops[_stop_key(ch, e.session_id, e.hospital_id, env)]["stop_rejected"] += 1


@_on(DoctorStopRetracted)
def _stop_withdrawn(ch: Changes, e: DoctorStopRetracted, env: Envelope) -> None:
    ch.stops[_stop_key(ch, e.session_id, e.hospital_id, env)]["stop_withdrawn"] += 1


@_on(SessionStopApplied)
def _stop_applied(ch: Changes, e: SessionStopApplied, env: Envelope) -> None:
    s = ch.sessions.get(e.session_id)
    key = s.stop_key() if s is not None else (local_day(env.occurred_at), "", "", "")
    counts = ch.stops[key]
    counts["affected"] += e.moved + e.cancelled
    counts["affected_moved"] += e.moved
    counts["affected_cancelled"] += e.cancelled


# --- patients and the HIS's totals ----------------------------------------------------------

@_on(PatientRegistered)
def _registered(ch: Changes, e: PatientRegistered, env: Envelope) -> None:
    ch.accounts[local_day(env.occurred_at)]["registrations"] += 1


@_on(PatientBanned)
def _banned(ch: Changes, e: PatientBanned, env: Envelope) -> None:
    ch.accounts[local_day(env.occurred_at)]["bans"] += 1


@_on(OutpatientVisitsReported)
def _visits(ch: Changes, e: OutpatientVisitsReported, env: Envelope) -> None:
    # A later report of the same day is a correction: the latest (highest position) counts.
    ch.visits[(e.date, e.hospital_id)] = (e.visits, env.position or 0)


# --- names, so that rows and CSV carry them -------------------------------------------------

@_on(HospitalRegistered, HospitalUpdated)
def _hospital(ch: Changes, e: HospitalRegistered | HospitalUpdated, env: Envelope) -> None:
    ch.hospitals[e.hospital_id] = e.name


@_on(DepartmentCreated, DepartmentUpdated)
def _department(ch: Changes, e: DepartmentCreated | DepartmentUpdated, env: Envelope) -> None:
    ch.departments[e.department_id] = (e.hospital_id, e.name)


@_on(DoctorRegistered, DoctorUpdated)
def _doctor(ch: Changes, e: DoctorRegistered | DoctorUpdated, env: Envelope) -> None:
    ch.doctors[e.doctor_id] = (e.hospital_id, e.department_id, e.name)
