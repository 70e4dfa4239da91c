"""A hand-made workload of real contract events whose figures are known, for the unit tests (the
in-memory store) and the integration tests (PostgreSQL) of stats alike.

Two hospitals, three doctors, six sessions on 2025-03-10 (D1), 2025-03-11 (D2) and the replacement
on 2025-03-12 (D3). What happens, and so what every figure must say, is written next to each step
of `standard()`; `EXPECTED_*` hold the figures.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from typing import Any

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    DepartmentCreated,
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
    PatientAppointmentsChanged,
    PatientBanned,
    PatientRegistered,
    SessionQuotaChanged,
    SessionScheduled,
    SessionStopApplied,
)
from contracts.schedule import Quota
from infra.eventstore import EventStore, new_envelope
from services.stats.figures import HOSPITAL_TZ

D1, D2, D3 = date(2025, 3, 10), date(2025, 3, 11), date(2025, 3, 12)
HOSPITALS = {"hosp-a": "河北医科大学第二医院", "hosp-b": "河北省人民医院"}


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), HOSPITAL_TZ)


class Workload:
    """Appends contract events one by one, each at a chosen moment, and remembers the sessions and
    appointments it made so that later steps carry the same fields the real services would."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.sessions: dict[str, SessionScheduled] = {}
        self.appointments: dict[str, AppointmentBooked | AppointmentMoved] = {}
        self.envelopes: list[Envelope] = []
        self._codes = itertools.count(1)

    def emit(self, event: Event, stream: str, source: str, when: datetime) -> Envelope:
        env = new_envelope(event, stream, source).model_copy(update={"occurred_at": when})
        stored = self.store.append({stream: (None, [env])}).events[0]
        self.envelopes.append(stored)
        return stored

    # --- schedule ------------------------------------------------------------------------------

    def hospital(self, hospital_id: str, name: str) -> None:
        self.emit(HospitalRegistered(hospital_id=hospital_id, name=name, level="三级甲等", address="石家庄"),
                  f"hospital-{hospital_id}", "schedule", at(D1, 0) - timedelta(days=30))

    def department(self, department_id: str, hospital_id: str, name: str) -> None:
        self.emit(DepartmentCreated(department_id=department_id, hospital_id=hospital_id, name=name, parent_id=None),
                  f"department-{department_id}", "schedule", at(D1, 0) - timedelta(days=30))

    def doctor(self, doctor_id: str, hospital_id: str, department_id: str, name: str) -> None:
        self.emit(DoctorRegistered(doctor_id=doctor_id, hospital_id=hospital_id, department_id=department_id,
                                   name=name, title="主任医师", specialty=""),
                  f"doctor-{doctor_id}", "schedule", at(D1, 0) - timedelta(days=30))

    def session(self, session_id: str, hospital_id: str, department_id: str, doctor_id: str, day: date,
                web: int, phone: int, window: int = 0, replaces: str | None = None) -> SessionScheduled:
        event = SessionScheduled(
            session_id=session_id, hospital_id=hospital_id, department_id=department_id, doctor_id=doctor_id,
            doctor_name="", doctor_title="主任医师", date=day, period="morning", start=time(8, 0), end=time(12, 0),
            capacity=web + phone + window + 10, quota=Quota(web=web, phone=phone, window=window), fee="50.00",
            opens_at=at(day - timedelta(days=7), 8), closes_at=at(day - timedelta(days=1), 16),
            lapse_at=at(day, 11), replaces_session_id=replaces,
        )
        self.sessions[session_id] = event
        self.emit(event, f"session-{session_id}", "schedule", at(day - timedelta(days=8), 9))
        return event

    def quota(self, session_id: str, web: int, phone: int, window: int, when: datetime) -> None:
        s = self.sessions[session_id]
        self.emit(SessionQuotaChanged(session_id=session_id, hospital_id=s.hospital_id,
                                      quota=Quota(web=web, phone=phone, window=window)),
                  f"session-{session_id}", "schedule", when)

    def stop(self, session_id: str, stop_id: str, outcome: str, when: datetime,
             replacement: str | None = None) -> None:
        s = self.sessions[session_id]
        stream = f"session-{session_id}"
        self.emit(DoctorStopRequested(stop_id=stop_id, session_id=session_id, hospital_id=s.hospital_id,
                                      reason="外出会诊", requested_by=s.doctor_id), stream, "schedule", when)
        later = when + timedelta(hours=1)
        common: dict[str, Any] = {"stop_id": stop_id, "session_id": session_id, "hospital_id": s.hospital_id}
        if outcome == "approved":
            self.emit(DoctorStopApproved(**common, reason="外出会诊", approved_by="admin",
                                         replacement_session_id=replacement), stream, "schedule", later)
        elif outcome == "rejected":
            self.emit(DoctorStopRejected(**common, reason="无替班医生", rejected_by="admin"), stream, "schedule", later)
        else:
            self.emit(DoctorStopRetracted(**common, reason="会诊取消", retracted_by=s.doctor_id),
                      stream, "schedule", later)

    # --- booking -------------------------------------------------------------------------------

    def book(self, appointment_id: str, session_id: str, channel: str, when: datetime) -> None:
        s = self.sessions[session_id]
        event = AppointmentBooked(
            appointment_id=appointment_id, code=f"C{next(self._codes):07d}", session_id=session_id,
            hospital_id=s.hospital_id, department_id=s.department_id, doctor_id=s.doctor_id,
            patient_id=f"p-{appointment_id}", channel=channel,  # type: ignore[arg-type]
            sequence_number=1, date=s.date.isoformat(), period=s.period, start=s.start.isoformat(), fee="50.00",
            paid=channel == "phone", operator_id="op-1" if channel == "phone" else None,
        )
        self.appointments[appointment_id] = event
        self._ledger(event, when)
        self._patient(event, True, "booked", when)

    def cancel(self, appointment_id: str, reason: str, when: datetime) -> None:
        self._ledger(AppointmentCancelled(**self._common(appointment_id), reason=reason), when)  # type: ignore[arg-type]
        self._patient(self.appointments[appointment_id], False, "cancelled", when)

    def check_in(self, appointment_id: str, when: datetime) -> None:
        self._ledger(AppointmentCheckedIn(**self._common(appointment_id), clerk_id="clerk-1", fee_taken="50.00"), when)

    def lapse(self, appointment_id: str, when: datetime) -> None:
        self._ledger(AppointmentLapsed(**self._common(appointment_id)), when)

    def refund(self, appointment_id: str, place_released: bool, when: datetime) -> None:
        self._ledger(AppointmentRefunded(**self._common(appointment_id), clerk_id="clerk-1", refund_due="50.00",
                                         reason="患者改期", place_released=place_released), when)

    def apply_stop(self, session_id: str, stop_id: str, when: datetime, moves: dict[str, str],
                   cancels: list[str]) -> None:
        """Booking's reaction to an approved stop: the marker, the cancellations, the moves."""
        replacement = next(iter(moves.values()), None)
        self.emit(SessionStopApplied(stop_id=stop_id, session_id=session_id, replacement_session_id=replacement,
                                     moved=len(moves), cancelled=len(cancels)),
                  f"ledger-{session_id}", "booking", when)
        for appointment_id in cancels:
            self.cancel(appointment_id, "doctor_stop", when)
        for appointment_id, target in moves.items():
            old = self.appointments[appointment_id]
            t = self.sessions[target]
            moved = AppointmentMoved(
                **{**old.model_dump(exclude={"operator_id", "from_session_id"}),
                   "session_id": target, "hospital_id": t.hospital_id, "department_id": t.department_id,
                   "doctor_id": t.doctor_id, "date": t.date.isoformat(), "start": t.start.isoformat()},
                from_session_id=session_id,
            )
            self.appointments[appointment_id] = moved
            self._ledger(moved, when)

    # --- patients and the HIS ------------------------------------------------------------------

    def register(self, patient_id: str, when: datetime) -> None:
        self.emit(PatientRegistered(patient_id=patient_id, id_masked="130102********0023", phone_masked="138****8000",
                                    birth_date="1988-03-15", sex="F"), f"patient-{patient_id}", "booking", when)

    def ban(self, patient_id: str, when: datetime) -> None:
        self.emit(PatientBanned(patient_id=patient_id, until="2025-06-10", no_shows=3), f"patient-{patient_id}",
                  "booking", when)

    def visits(self, hospital_id: str, day: date, visits: int, when: datetime) -> None:
        self.emit(OutpatientVisitsReported(hospital_id=hospital_id, date=day, visits=visits, reported_by="HIS"),
                  f"his-{hospital_id}", "his_sync", when)

    def _common(self, appointment_id: str) -> dict[str, Any]:
        a = self.appointments[appointment_id]
        return {"appointment_id": appointment_id, "session_id": a.session_id, "hospital_id": a.hospital_id,
                "patient_id": a.patient_id, "channel": a.channel, "date": a.date}

    def _ledger(self, event: Event, when: datetime) -> None:
        self.emit(event, f"ledger-{event.session_id}", "booking", when)  # type: ignore[attr-defined]

    def _patient(self, a: AppointmentBooked | AppointmentMoved, active: bool, outcome: str, when: datetime) -> None:
        # The patient's own index, appended with every ledger event: stats must ignore it.
        self.emit(PatientAppointmentsChanged(patient_id=a.patient_id, appointment_id=a.appointment_id,
                                             session_id=a.session_id, hospital_id=a.hospital_id,
                                             department_id=a.department_id, date=a.date, active=active,
                                             outcome=outcome),  # type: ignore[arg-type]
                  f"patient-{a.patient_id}", "booking", when)


def standard(store: EventStore) -> Workload:
    w = Workload(store)
    w.hospital("hosp-a", "河北医大二院")
    w.emit(HospitalUpdated(hospital_id="hosp-a", name=HOSPITALS["hosp-a"], level="三级甲等", address="石家庄",
                           contact=""), "hospital-hosp-a", "schedule", at(D1, 0) - timedelta(days=29))
    w.hospital("hosp-b", HOSPITALS["hosp-b"])
    w.department("dept-a1", "hosp-a", "心内科")
    w.department("dept-b1", "hosp-b", "儿科")
    w.doctor("doc-a1", "hosp-a", "dept-a1", "张医生")
    w.doctor("doc-a2", "hosp-a", "dept-a1", "李医生")
    w.doctor("doc-b1", "hosp-b", "dept-b1", "王大夫")
    w.emit(DoctorUpdated(doctor_id="doc-b1", hospital_id="hosp-b", department_id="dept-b1", name="王医生",
                         title="主任医师", specialty="", bio="", clinic_type="expert"),
           "doctor-doc-b1", "schedule", at(D1, 0) - timedelta(days=20))

    # s1: D1, doc-a1, 3 web + 2 phone + 1 window. Six bookings fill it (sold out 3 h 30 min after
    # it opened); a patient cancels a web one, which is booked again (still sold out at the first).
    w.session("s1", "hosp-a", "dept-a1", "doc-a1", D1, web=3, phone=2, window=1)
    opens = at(D1 - timedelta(days=7), 8)
    for i, (appt, channel) in enumerate((("a1", "web"), ("a2", "web"), ("a3", "web"),
                                         ("a4", "phone"), ("a5", "phone"), ("a6", "window"))):
        w.book(appt, "s1", channel, opens + timedelta(minutes=30 * (i + 2)))
    w.cancel("a2", "patient", at(D1 - timedelta(days=3), 10))
    w.book("a7", "s1", "web", at(D1 - timedelta(days=2), 10))
    # visit day: a1, a4, a6 checked in; a5 (paid by phone) refunded before the start; a3, a7 lapse
    w.check_in("a1", at(D1, 7, 30))
    w.check_in("a4", at(D1, 7, 40))
    w.check_in("a6", at(D1, 7, 50))
    w.refund("a5", True, at(D1, 7, 55))
    w.lapse("a3", at(D1, 11))
    w.lapse("a7", at(D1, 11))

    # s2: D1, doc-a2: one web booking, one phone booking the operator cancels; the quota grows.
    w.session("s2", "hosp-a", "dept-a1", "doc-a2", D1, web=2, phone=1)
    w.book("b1", "s2", "web", at(D1 - timedelta(days=6), 9))
    w.book("b2", "s2", "phone", at(D1 - timedelta(days=6), 10))
    w.cancel("b2", "operator", at(D1 - timedelta(days=5), 10))
    w.quota("s2", 4, 1, 0, at(D1 - timedelta(days=4), 10))

    # s3: D2, doc-b1 (hosp-b): stopped with replacement s4 (D3, 1 web + 2 phone): c1 (web) and c2
    # (phone) are moved, c3 (web) finds no web room there and is cancelled by the hospital.
    w.session("s3", "hosp-b", "dept-b1", "doc-b1", D2, web=2, phone=2)
    w.book("c1", "s3", "web", at(D2 - timedelta(days=5), 9))
    w.book("c2", "s3", "phone", at(D2 - timedelta(days=5), 9, 30))
    w.book("c3", "s3", "web", at(D2 - timedelta(days=4), 9))
    w.session("s4", "hosp-b", "dept-b1", "doc-b1", D3, web=1, phone=2, replaces="s3")
    w.stop("s3", "stop-1", "approved", at(D2 - timedelta(days=3), 9), replacement="s4")
    w.apply_stop("s3", "stop-1", at(D2 - timedelta(days=3), 10, 5), moves={"c1": "s4", "c2": "s4"}, cancels=["c3"])

    # s5: D2, doc-a1: sold out by d1, d2, then stopped without a replacement: both cancelled.
    w.session("s5", "hosp-a", "dept-a1", "doc-a1", D2, web=2, phone=0)
    w.book("d1", "s5", "web", at(D2 - timedelta(days=7), 8, 1))
    w.book("d2", "s5", "web", at(D2 - timedelta(days=7), 8, 2))
    w.stop("s5", "stop-2", "approved", at(D2 - timedelta(days=2), 9))
    w.apply_stop("s5", "stop-2", at(D2 - timedelta(days=2), 10, 5), moves={}, cancels=["d1", "d2"])

    # s6: D2, doc-a2: one stop request rejected, another withdrawn by the doctor.
    w.session("s6", "hosp-a", "dept-a1", "doc-a2", D2, web=1, phone=0)
    w.stop("s6", "stop-3", "rejected", at(D2 - timedelta(days=2), 9))
    w.stop("s6", "stop-4", "withdrawn", at(D2 - timedelta(days=1), 9))

    # patients: three registrations on D1 in hospital time (one at 01:00, the day before in UTC),
    # one on D2; one ban on D2
    w.register("p-x", at(D1, 1))
    w.register("p-y", at(D1, 12))
    w.register("p-z", at(D1, 23, 59))
    w.register("p-w", at(D2, 0, 1))
    w.ban("p-a3", at(D2, 9))

    # the HIS: hosp-a reports 40 visits for D1, then corrects it to 30; no total for D2 or hosp-b
    w.visits("hosp-a", D1, 40, at(D1, 18))
    w.visits("hosp-a", D1, 30, at(D1, 20))
    return w


COUNTS = ("released", "booked", "cancelled_patient", "cancelled_operator", "cancelled_hospital", "refunded",
          "moved", "moved_in", "checked_in", "no_show")


def _b(**counts: int) -> dict[str, int]:
    return {k: counts.get(k, 0) for k in COUNTS}


# stats_bookings: (day, hospital, department, doctor, channel) → counts
EXPECTED_BOOKINGS: dict[tuple[date, str, str, str, str], dict[str, int]] = {
    (D1, "hosp-a", "dept-a1", "doc-a1", "web"): _b(released=3, booked=4, cancelled_patient=1, checked_in=1, no_show=2),
    (D1, "hosp-a", "dept-a1", "doc-a1", "phone"): _b(released=2, booked=2, checked_in=1, refunded=1),
    (D1, "hosp-a", "dept-a1", "doc-a1", "window"): _b(released=1, booked=1, checked_in=1),
    (D1, "hosp-a", "dept-a1", "doc-a2", "web"): _b(released=4, booked=1),
    (D1, "hosp-a", "dept-a1", "doc-a2", "phone"): _b(released=1, booked=1, cancelled_operator=1),
    (D2, "hosp-b", "dept-b1", "doc-b1", "web"): _b(released=2, booked=2, moved=1, cancelled_hospital=1),
    (D2, "hosp-b", "dept-b1", "doc-b1", "phone"): _b(released=2, booked=1, moved=1),
    (D3, "hosp-b", "dept-b1", "doc-b1", "web"): _b(released=1, moved_in=1),
    (D3, "hosp-b", "dept-b1", "doc-b1", "phone"): _b(released=2, moved_in=1),
    (D2, "hosp-a", "dept-a1", "doc-a1", "web"): _b(released=2, booked=2, cancelled_hospital=2),
    (D2, "hosp-a", "dept-a1", "doc-a2", "web"): _b(released=1),
}

STOP_COUNTS = ("sessions", "stopped_sessions", "stop_requested", "stop_approved", "stop_rejected", "stop_withdrawn",
               "affected", "affected_moved", "affected_cancelled")


def _s(**counts: int) -> dict[str, int]:
    return {k: counts.get(k, 0) for k in STOP_COUNTS}


EXPECTED_STOPS: dict[tuple[date, str, str, str], dict[str, int]] = {
    (D1, "hosp-a", "dept-a1", "doc-a1"): _s(sessions=1),
    (D1, "hosp-a", "dept-a1", "doc-a2"): _s(sessions=1),
    (D2, "hosp-b", "dept-b1", "doc-b1"): _s(sessions=1, stopped_sessions=1, stop_requested=1, stop_approved=1,
                                            affected=3, affected_moved=2, affected_cancelled=1),
    (D3, "hosp-b", "dept-b1", "doc-b1"): _s(sessions=1),
    (D2, "hosp-a", "dept-a1", "doc-a1"): _s(sessions=1, stopped_sessions=1, stop_requested=1, stop_approved=1,
                                            affected=2, affected_cancelled=2),
    (D2, "hosp-a", "dept-a1", "doc-a2"): _s(sessions=1, stop_requested=2, stop_rejected=1, stop_withdrawn=1),
}

EXPECTED_ACCOUNTS = {D1: {"registrations": 3, "bans": 0}, D2: {"registrations": 1, "bans": 1}}
# sessions that sold out, and minutes from opening to the booking that took the last place
EXPECTED_SELLOUT_MINUTES = {"s1": 210.0, "s5": 2.0}
EXPECTED_TAKEN = {"s1": 5, "s2": 1, "s3": 0, "s4": 2, "s5": 0, "s6": 0}


def random_bulk(w: Workload, seed: int = 7, sessions: int = 30) -> None:
    """More of the same at random (seeded): sessions on D1..D3 over both hospitals, each with bookings
    on every channel, some cancelled (patient or operator), refunded, checked in or lapsed; every
    fifth session stopped, alternately with and without a replacement."""
    import random

    rnd = random.Random(seed)
    doctors = [("hosp-a", "dept-a1", "doc-a1"), ("hosp-a", "dept-a1", "doc-a2"), ("hosp-b", "dept-b1", "doc-b1")]
    for n in range(sessions):
        hospital, department, doctor = doctors[n % 3]
        day = (D1, D2, D3)[n % 3]
        sid = f"r{n}"
        quota = {"web": rnd.randint(1, 6), "phone": rnd.randint(0, 3), "window": rnd.randint(0, 2)}
        w.session(sid, hospital, department, doctor, day, **quota)
        opens = at(day - timedelta(days=7), 8)
        held: list[str] = []
        for channel, places in quota.items():
            for k in range(rnd.randint(0, places)):
                appointment = f"{sid}-{channel}-{k}"
                w.book(appointment, sid, channel, opens + timedelta(minutes=rnd.randint(1, 5000)))
                held.append(appointment)
        if n % 5 == 4:
            w.stop(sid, f"stop-{sid}", "approved", at(day - timedelta(days=1), 9),
                   replacement=f"{sid}-x" if n % 10 == 4 else None)
            if n % 10 == 4:
                w.session(f"{sid}-x", hospital, department, doctor, day + timedelta(days=7), web=10, phone=10,
                          window=10, replaces=sid)
                w.apply_stop(sid, f"stop-{sid}", at(day - timedelta(days=1), 10), moves=dict.fromkeys(held, f"{sid}-x"),
                             cancels=[])
            else:
                w.apply_stop(sid, f"stop-{sid}", at(day - timedelta(days=1), 10), moves={}, cancels=held)
            continue
        for appointment in held:
            fate = rnd.random()
            if fate < 0.15:
                w.cancel(appointment, rnd.choice(["patient", "operator"]), at(day - timedelta(days=2), 12))
            elif fate < 0.6:
                w.check_in(appointment, at(day, 7, 30))
                if fate < 0.2:
                    w.refund(appointment, False, at(day, 9))
            elif fate < 0.65 and w.appointments[appointment].channel == "phone":
                w.refund(appointment, True, at(day, 7, 45))
            else:
                w.lapse(appointment, at(day, 11))
    for i in range(sessions):
        w.register(f"rp-{i}", at(D1, rnd.randint(0, 23)) + timedelta(days=rnd.randint(-3, 3)))
    w.visits("hosp-b", D2, 25, at(D2, 18))
