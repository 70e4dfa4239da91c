"""The shared vocabulary: strict models, the envelope, and errors that survive the wire."""

from __future__ import annotations

import inspect
import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

import contracts
from contracts import (
    EVENT_TYPES,
    Actor,
    BookAppointment,
    Command,
    Conflict,
    DomainError,
    Envelope,
    Event,
    Forbidden,
    InvalidInput,
    NotFound,
    Quota,
    RegisterHospital,
    ScheduleSession,
    SessionFull,
    from_wire,
    invalid_from_validation,
    to_wire,
)

pytestmark = pytest.mark.unit

# Event names that are past participles without ending in "ed" (e.g. "Sent", "Paid").
# Past participles with a particle after them.
PAST_TENSE_EXCEPTIONS: frozenset[str] = frozenset({"AppointmentCheckedIn", "PhoneBookingsHandedOver"})


def session_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "idempotency_key": "idem-0001",
        "session_id": "s-hb3-card-0310-am",
        "doctor_id": "dr-wang",
        "date": "2025-03-10",
        "period": "morning",
        "start": "08:00",
        "end": "11:30",
        "capacity": 30,
        "quota": {"web": 15, "phone": 10, "window": 5},
        "fee": "50.00",
    }
    fields.update(overrides)
    return fields


def error_locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


# --- strict models -------------------------------------------------------------------------------


def test_valid_schedule_session_is_parsed_into_typed_values():
    cmd = ScheduleSession.model_validate(session_fields())
    assert cmd.date == date(2025, 3, 10)
    assert cmd.start == time(8, 0)
    assert cmd.fee == Decimal("50.00")
    assert cmd.quota.total() == 30


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (
            RegisterHospital,
            {"idempotency_key": "idem-0001", "hospital_id": "hb3", "name": "三院", "beds": 1200},
        ),
        (
            BookAppointment,
            {"idempotency_key": "idem-0001", "session_id": "s", "patient_id": "p", "is_vip": True},
        ),
        (ScheduleSession, session_fields(room="A201")),
        (Quota, {"web": 1, "fax": 2}),
    ],
)
def test_unknown_fields_are_rejected_naming_the_field(model, fields):
    extra = (set(fields) - set(model.model_fields)).pop()
    with pytest.raises(ValidationError) as exc:
        model.model_validate(fields)
    assert (extra,) in error_locs(exc.value)
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


def test_unknown_field_inside_a_nested_model_is_rejected_with_its_path():
    with pytest.raises(ValidationError) as exc:
        ScheduleSession.model_validate(session_fields(quota={"web": 1, "sms": 1}))
    assert ("quota", "sms") in error_locs(exc.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capacity", "many"),
        ("date", "10/03/2025"),
        ("start", "eight o'clock"),
        ("period", "night"),
        ("fee", "fifty"),
        ("quota", [15, 10, 5]),
    ],
)
def test_wrong_types_are_rejected(field, value):
    with pytest.raises(ValidationError) as exc:
        ScheduleSession.model_validate(session_fields(**{field: value}))
    assert (field,) in error_locs(exc.value)


def test_unknown_booking_channel_is_rejected():
    with pytest.raises(ValidationError) as exc:
        BookAppointment(idempotency_key="idem-0001", session_id="s", patient_id="p", channel="fax")
    assert ("channel",) in error_locs(exc.value)


@pytest.mark.parametrize(("start", "end"), [("11:30", "08:00"), ("08:00", "08:00")])
def test_session_ending_before_or_when_it_starts_is_rejected(start, end):
    with pytest.raises(ValidationError, match="end must be after start"):
        ScheduleSession.model_validate(session_fields(start=start, end=end))


def test_quota_above_capacity_is_rejected_and_equal_is_accepted():
    with pytest.raises(ValidationError, match="exceeds capacity"):
        ScheduleSession.model_validate(session_fields(capacity=29))
    assert ScheduleSession.model_validate(session_fields(capacity=30)).capacity == 30


@pytest.mark.parametrize("channel", ["web", "phone", "window"])
def test_negative_quota_is_rejected(channel):
    with pytest.raises(ValidationError) as exc:
        Quota.model_validate({channel: -1})
    assert (channel,) in error_locs(exc.value)


def test_quota_counts_per_channel_and_in_total():
    quota = Quota(web=3, phone=2)
    assert quota.for_channel("web") == 3
    assert quota.for_channel("window") == 0
    assert quota.total() == 5


def test_contracts_are_frozen():
    quota = Quota(web=3)
    with pytest.raises(ValidationError):
        quota.web = 4  # type: ignore[misc]


# --- the envelope --------------------------------------------------------------------------------


def test_envelope_survives_a_json_round_trip_unchanged():
    env = Envelope(
        type="AppointmentBooked",
        stream="ledger-s-hb3-card-0310-am",
        source="booking",
        occurred_at=datetime(2025, 3, 1, 0, 15, 7, 123456, tzinfo=UTC),
        correlation_id="corr-1",
        causation_id="cause-1",
        actor=Actor(kind="patient", id="p-1"),
        data={"sequence_number": 3, "name": "张三", "nested": {"fee": "50.00"}},
        position=42,
        version=3,
    )
    wire = json.dumps(env.model_dump(mode="json"), ensure_ascii=False)
    back = Envelope.model_validate(json.loads(wire))
    assert back == env
    assert isinstance(back.event_id, uuid.UUID)
    assert back.occurred_at.utcoffset() is not None


def test_envelope_defaults_give_every_event_its_own_id_and_an_aware_timestamp():
    a = Envelope(type="X", stream="s", source="booking", correlation_id="c", data={})
    b = Envelope(type="X", stream="s", source="booking", correlation_id="c", data={})
    assert a.event_id != b.event_id
    assert a.occurred_at.tzinfo is not None
    assert (a.position, a.version) == (None, None)


def test_envelope_rejects_unknown_fields_and_bad_actors():
    base = {"type": "X", "stream": "s", "source": "booking", "correlation_id": "c", "data": {}}
    with pytest.raises(ValidationError) as exc:
        Envelope.model_validate({**base, "routing_key": "X"})
    assert ("routing_key",) in error_locs(exc.value)
    with pytest.raises(ValidationError) as exc:
        Envelope.model_validate({**base, "actor": {"kind": "hacker", "id": "x"}})
    assert ("actor", "kind") in error_locs(exc.value)


# --- errors --------------------------------------------------------------------------------------


def test_invalid_from_validation_names_the_field():
    with pytest.raises(ValidationError) as exc:
        ScheduleSession.model_validate(session_fields(capacity="many"))
    err = invalid_from_validation(exc.value)
    assert isinstance(err, InvalidInput)
    assert err.field == "capacity"
    assert err.status == 400
    assert "capacity" in err.message


def test_invalid_from_validation_names_a_nested_field_with_dots():
    with pytest.raises(ValidationError) as exc:
        ScheduleSession.model_validate(session_fields(quota={"web": -1}))
    assert invalid_from_validation(exc.value).field == "quota.web"


def test_invalid_from_validation_of_a_whole_model_rule_has_no_field():
    with pytest.raises(ValidationError) as exc:
        ScheduleSession.model_validate(session_fields(start="11:30", end="08:00"))
    err = invalid_from_validation(exc.value)
    assert err.field is None
    assert "end must be after start" in err.message


@pytest.mark.parametrize(
    ("err", "status", "code"),
    [
        (InvalidInput("身份证号校验位错误 / bad check digit", field="id_number"), 400, "invalid_input"),
        (NotFound("出诊不存在 / unknown session", field="session_id"), 404, "not_found"),
        (
            Conflict("已预约 / already booked", field="session_id", code="already_booked"),
            409,
            "already_booked",
        ),
        (Forbidden("无权限 / forbidden"), 403, "forbidden"),
        (DomainError("拒绝 / refused"), 422, "refused"),
    ],
    ids=["invalid", "not-found", "conflict-with-code", "forbidden", "plain"],
)
def test_wire_round_trip_keeps_class_status_code_field_and_message(err, status, code):
    payload = json.loads(json.dumps(to_wire(err)))
    back = from_wire(payload)
    assert type(back) is type(err)
    assert (back.status, back.code, back.field, back.message) == (status, code, err.field, err.message)
    assert str(back) == err.message


def test_session_full_keeps_status_and_code_over_the_wire():
    err = SessionFull("该出诊已约满 / this session is full", field="session_id")
    back = from_wire(json.loads(json.dumps(to_wire(err))))
    assert isinstance(back, Conflict)
    assert (back.status, back.code, back.field, back.message) == (
        409,
        "session_full",
        "session_id",
        err.message,
    )


def test_session_full_keeps_its_class_over_the_wire():
    back = from_wire(to_wire(SessionFull("该出诊已约满 / this session is full", field="session_id")))
    assert type(back) is SessionFull


@pytest.mark.parametrize(
    "payload",
    [{"appointment_id": "a1", "code": "ABCD2345"}, {}, [], None, "domain_error", [{"domain_error": {}}]],
)
def test_from_wire_on_a_normal_answer_returns_none(payload):
    assert from_wire(payload) is None


# --- vocabulary rules ----------------------------------------------------------------------------


def defined_in_contracts(base: type) -> list[type]:
    found: list[type] = []
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "contracts":
            found.append(cls)
    return found


def test_event_types_are_keyed_by_their_own_type_name():
    for name, cls in EVENT_TYPES.items():
        assert issubclass(cls, Event)
        assert name == cls.type_name() == cls.__name__


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_event_types_are_named_in_the_past_tense(name):
    assert name.endswith("ed") or name in PAST_TENSE_EXCEPTIONS


def test_every_event_defined_in_contracts_is_registered():
    # A class other events derive from is a shared shape (AppointmentEvent), never stored itself.
    defined = {cls.__name__ for cls in defined_in_contracts(Event) if not cls.__subclasses__()}
    assert defined
    assert defined <= set(EVENT_TYPES)
    assert not {"AppointmentEvent", "AppointmentPlaced"} & set(EVENT_TYPES)


def test_appointment_events_share_one_base():
    from contracts import AppointmentEvent, AppointmentPlaced

    for name in ("AppointmentBooked", "AppointmentMoved"):
        assert issubclass(EVENT_TYPES[name], AppointmentPlaced)
    for name in ("AppointmentCancelled", "AppointmentCheckedIn", "AppointmentLapsed"):
        assert issubclass(EVENT_TYPES[name], AppointmentEvent)


def test_all_command_subclasses_are_found():
    names = {cls.__name__ for cls in defined_in_contracts(Command)}
    assert {
        "RegisterHospital",
        "CreateDepartment",
        "RegisterDoctor",
        "ScheduleSession",
        "RegisterPatient",
        "BookAppointment",
    } <= names


@pytest.mark.parametrize("cls", defined_in_contracts(Command), ids=lambda c: c.__name__)
def test_every_command_requires_an_idempotency_key(cls):
    assert inspect.isclass(cls) and issubclass(cls, Command)
    with pytest.raises(ValidationError) as exc:
        cls.model_validate({})
    missing = [tuple(e["loc"]) for e in exc.value.errors() if e["type"] == "missing"]
    assert ("idempotency_key",) in missing


@pytest.mark.parametrize("short", ["", "1234567"])
def test_idempotency_keys_shorter_than_eight_characters_are_rejected(short):
    with pytest.raises(ValidationError) as exc:
        BookAppointment(idempotency_key=short, session_id="s", patient_id="p")
    assert ("idempotency_key",) in error_locs(exc.value)


def test_public_names_are_all_exported():
    missing = [name for name in contracts.__all__ if not hasattr(contracts, name)]
    assert missing == []
