"""The only vocabulary shared between services: commands, events and errors (pydantic v2, no I/O)."""

from contracts.booking import (
    AppointmentBooked,
    BookAppointment,
    BookingAnswer,
    PatientRegistered,
    RegisterPatient,
)
from contracts.envelope import SYSTEM, Actor, Command, Contract, Envelope, Event, utcnow
from contracts.errors import (
    Conflict,
    DomainError,
    ErrorBody,
    Forbidden,
    InvalidInput,
    NotFound,
    SessionFull,
    from_wire,
    invalid_from_validation,
    to_wire,
)
from contracts.his import HisMessageAcknowledged
from contracts.notification import SmsQueued
from contracts.schedule import (
    CHANNELS,
    CreateDepartment,
    DepartmentCreated,
    DoctorRegistered,
    DoctorSessionAdded,
    HospitalRegistered,
    Quota,
    RegisterDoctor,
    RegisterHospital,
    ScheduleQuery,
    ScheduleSession,
    SessionScheduled,
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        HospitalRegistered,
        DepartmentCreated,
        DoctorRegistered,
        SessionScheduled,
        DoctorSessionAdded,
        PatientRegistered,
        AppointmentBooked,
        SmsQueued,
        HisMessageAcknowledged,
    )
}

__all__ = [
    "CHANNELS",
    "EVENT_TYPES",
    "SYSTEM",
    "Actor",
    "AppointmentBooked",
    "BookAppointment",
    "BookingAnswer",
    "Command",
    "Conflict",
    "Contract",
    "CreateDepartment",
    "DepartmentCreated",
    "DoctorRegistered",
    "DoctorSessionAdded",
    "DomainError",
    "Envelope",
    "ErrorBody",
    "Event",
    "Forbidden",
    "HisMessageAcknowledged",
    "HospitalRegistered",
    "InvalidInput",
    "NotFound",
    "PatientRegistered",
    "Quota",
    "RegisterDoctor",
    "RegisterHospital",
    "RegisterPatient",
    "ScheduleQuery",
    "ScheduleSession",
    "SessionFull",
    "SessionScheduled",
    "SmsQueued",
    "from_wire",
    "invalid_from_validation",
    "to_wire",
    "utcnow",
]
