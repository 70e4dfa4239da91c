"""Schedule command handlers: load -> decide -> append. No nameko here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from contracts import (
    BookingRules,
    Command,
    CreateDepartment,
    DoctorSessionAdded,
    Event,
    RegisterDoctor,
    RegisterHospital,
    ScheduleSession,
)
from infra.eventstore import EventStore, WrongExpectedVersion, idempotent_event_id, new_envelope
from services.schedule import domain

SOURCE = "schedule"


def _load(store: EventStore, stream: str) -> domain.Entity:
    return domain.Entity.fold(store.read_stream(stream))


def _emit(store: EventStore, cmd: Command, scope: str, appends: dict[str, tuple[int, Event]]) -> dict[str, Any]:
    """Append the decided events; the first one's id comes from the idempotency key."""
    first = True
    batch = {}
    for stream, (expected, event) in appends.items():
        eid = idempotent_event_id(scope, cmd.idempotency_key) if first else None
        first = False
        env = new_envelope(event, stream, SOURCE, cmd.correlation_id, actor=cmd.actor, event_id=eid)
        batch[stream] = (expected, [env])
    result = store.append(batch)
    return {"position": result.last_position, "duplicate": result.duplicate, **result.events[0].data}


def _repeat(store: EventStore, scope: str, cmd: Command) -> dict[str, Any] | None:
    prior = store.get_event(idempotent_event_id(scope, cmd.idempotency_key))
    if prior is None:
        return None
    return {"position": prior.position, "duplicate": True, **prior.data}


def _with_retry(fn: Callable[[], dict[str, Any]], attempts: int = 5) -> dict[str, Any]:
    for attempt in range(attempts):
        try:
            return fn()
        except WrongExpectedVersion:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def register_hospital(store: EventStore, cmd: RegisterHospital) -> dict[str, Any]:
    if (done := _repeat(store, "register_hospital", cmd)) is not None:
        return done
    stream = domain.hospital_stream(cmd.hospital_id)
    current = _load(store, stream)
    event = domain.register_hospital(cmd, current)
    return _emit(store, cmd, "register_hospital", {stream: (current.version, event)})


def create_department(store: EventStore, cmd: CreateDepartment) -> dict[str, Any]:
    if (done := _repeat(store, "create_department", cmd)) is not None:
        return done
    stream = domain.department_stream(cmd.department_id)
    current = _load(store, stream)
    hospital = _load(store, domain.hospital_stream(cmd.hospital_id))
    parent = _load(store, domain.department_stream(cmd.parent_id)) if cmd.parent_id else None
    event = domain.create_department(cmd, hospital, parent, current)
    return _emit(store, cmd, "create_department", {stream: (current.version, event)})


def register_doctor(store: EventStore, cmd: RegisterDoctor) -> dict[str, Any]:
    if (done := _repeat(store, "register_doctor", cmd)) is not None:
        return done
    stream = domain.doctor_stream(cmd.doctor_id)
    current = _load(store, stream)
    department = _load(store, domain.department_stream(cmd.department_id))
    event = domain.register_doctor(cmd, department, current)
    return _emit(store, cmd, "register_doctor", {stream: (current.version, event)})


def schedule_session(store: EventStore, cmd: ScheduleSession, today: date) -> dict[str, Any]:
    if (done := _repeat(store, "schedule_session", cmd)) is not None:
        return done

    def attempt() -> dict[str, Any]:
        stream = domain.session_stream(cmd.session_id)
        current = _load(store, stream)
        doctor = _load(store, domain.doctor_stream(cmd.doctor_id))
        by_doctor = domain.doctor_sessions_stream(cmd.doctor_id)
        sessions = domain.DoctorSessions.fold(store.read_stream(by_doctor))
        hospital = _load(store, domain.hospital_stream(doctor.data["hospital_id"])) if doctor.exists else None
        rules = BookingRules.model_validate(hospital.data.get("rules", {})) if hospital else BookingRules()
        event = domain.schedule_session(cmd, doctor, sessions, current, today, rules)
        added = DoctorSessionAdded(doctor_id=cmd.doctor_id, session_id=cmd.session_id, date=cmd.date,
                                   start=cmd.start, end=cmd.end)
        # The session and the doctor's session index change together, each with its expected
        # version: two overlapping sessions scheduled at once cannot both pass the overlap check.
        eid = idempotent_event_id("schedule_session", cmd.idempotency_key)
        result = store.append({
            stream: (current.version, [new_envelope(event, stream, SOURCE, cmd.correlation_id,
                                                    actor=cmd.actor, event_id=eid)]),
            by_doctor: (sessions.version, [new_envelope(added, by_doctor, SOURCE, cmd.correlation_id,
                                                        actor=cmd.actor)]),
        })
        return {"position": result.last_position, "duplicate": result.duplicate, **event.model_dump(mode="json")}

    return _with_retry(attempt)
