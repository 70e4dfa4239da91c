"""Schedule rules, decided on state folded from events: hospitals, fees, departments, doctors, weekly
plans and the sessions generated from them, one-off sessions, quotas, time bands, the release rule,
and doctor stops with replacements. Every refusal names its field and stores nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    Actor,
    ApproveDoctorStop,
    ChangeFee,
    ChangeSessionQuota,
    Conflict,
    CreateDepartment,
    DepartmentCreated,
    DoctorRegistered,
    DoctorSessionAdded,
    DoctorStopApproved,
    DoctorStopRejected,
    DoctorStopRequested,
    DoctorStopRetracted,
    Event,
    FeeChanged,
    Forbidden,
    HolidayDeclared,
    HospitalRegistered,
    HospitalRulesChanged,
    InvalidInput,
    NotFound,
    PlanSlot,
    Quota,
    RegisterDoctor,
    RegisterHospital,
    RejectDoctorStop,
    ReplacementSession,
    RequestDoctorStop,
    ScheduleSession,
    SessionQuotaChanged,
    SessionScheduled,
    SetWeeklyPlan,
    TimeBand,
    UpdateDepartment,
    UpdateDoctor,
    WeeklyPlanChanged,
    WithdrawDoctorStop,
    invalid_from_validation,
)
from contracts.schedule import BookingRules
from services.schedule import domain
from services.schedule.domain import (
    HOSPITAL_TZ,
    DoctorSessions,
    Entity,
    Hospital,
    ScheduleWorld,
    Session,
    SessionRequest,
    booking_status,
    booking_window,
    check_session_shape,
    create_department,
    equal_time_bands,
    register_doctor,
    register_hospital,
    schedule_session,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]

TODAY = date(2025, 3, 1)  # a Saturday
NOW = datetime(2025, 3, 1, 9, 0, tzinfo=HOSPITAL_TZ)
DAY = date(2025, 3, 10)  # a Monday
ADMIN = Actor(kind="hospital_admin", id="admin-hb3", hospital_id="hb3")
OTHER_ADMIN = Actor(kind="hospital_admin", id="admin-hb2", hospital_id="hb2")


@dataclass(frozen=True)
class FakeEnvelope:
    type: str
    data: dict[str, Any]
    version: int


def envelopes(*events: Event) -> list[FakeEnvelope]:
    """Events as the store hands them back: JSON data, versions counting from 1."""
    return [
        FakeEnvelope(ev.type_name(), ev.model_dump(mode="json"), i) for i, ev in enumerate(events, start=1)
    ]


class History:
    """An in-memory event store: streams of stored events, read by a World, written by commit()."""

    def __init__(self) -> None:
        self.streams: dict[str, list[FakeEnvelope]] = {}

    def add(self, stream: str, *events: Event) -> History:
        stored = self.streams.setdefault(stream, [])
        for ev in events:
            stored.append(FakeEnvelope(ev.type_name(), ev.model_dump(mode="json"), len(stored) + 1))
        return self

    def world(self) -> ScheduleWorld:
        return _ReadThrough(self)

    def commit(self, world: ScheduleWorld) -> list[tuple[str, Event]]:
        """Store what the world staged, as the store would (checking expected versions)."""
        for stream, (expected, events) in world.appends().items():
            assert len(self.streams.get(stream, [])) == expected, f"{stream} moved since it was read"
            self.add(stream, *events)
        return list(world.staged)


class _ReadThrough(ScheduleWorld):
    """A World that loads a stream from the history the moment a decision asks for it: what the unit
    of work achieves by loading what was Missing and deciding again (tested in test_handlers.py),
    here in one pass so that a test can call a decision directly and look at what it staged."""

    def __init__(self, history: History) -> None:
        super().__init__({})
        self._history = history

    def need(self, *streams: str) -> None:
        for stream in streams:
            self.events(stream)

    def events(self, stream: str) -> list[Any]:
        if stream not in self.base:
            self.load(stream, list(self._history.streams.get(stream, [])))
        return super().events(stream)


def key(tag: str) -> str:
    return f"idem-{tag}-0001"


NOBODY = Entity()

HB3 = HospitalRegistered(hospital_id="hb3", name="河北医科大学第三医院", level="三级甲等", address="石家庄市")
FEES = [FeeChanged(hospital_id="hb3", fee_class=c, fee=Decimal(f)) for c, f in
        (("主任医师", "30.00"), ("副主任医师", "20.00"), ("主治医师", "10.00"), ("普通门诊", "6.00"))]
HOSPITAL = Hospital.fold(envelopes(HB3))
CARD = DepartmentCreated(department_id="hb3-card", hospital_id="hb3", name="心内科", parent_id=None)
CARDIOLOGY = Entity.fold(envelopes(CARD))
OTHER_HOSPITALS_DEPARTMENT = Entity.fold(
    envelopes(DepartmentCreated(department_id="hb2-card", hospital_id="hb2", name="心内科", parent_id=None))
)
WANG = DoctorRegistered(doctor_id="dr-wang", hospital_id="hb3", department_id="hb3-card", name="王建国",
                        title="主任医师", specialty="冠心病", clinic_type="expert")
LI = DoctorRegistered(doctor_id="dr-li", hospital_id="hb3", department_id="hb3-card", name="李明",
                      title="主任医师", specialty="心衰", clinic_type="expert")
ZHOU = DoctorRegistered(doctor_id="dr-zhou", hospital_id="hb3", department_id="hb3-card", name="周平",
                        title="主治医师", specialty="", clinic_type="general")
DR_WANG = Entity.fold(envelopes(WANG))


def hospital_history() -> History:
    """Hospital hb3 (default rules: release 7 days ahead at 08:00, close 16:00 the day before), its
    fees, a cardiology department and three doctors."""
    h = History()
    h.add("hospital-hb3", HB3, *FEES)
    h.add("department-hb3-card", CARD)
    for doctor in (WANG, LI, ZHOU):
        h.add(f"doctor-{doctor.doctor_id}", doctor)
    return h


def slot(session_id: str, day: date, start: time, end: time, doctor_id: str = "dr-wang") -> DoctorSessionAdded:
    return DoctorSessionAdded(doctor_id=doctor_id, session_id=session_id, date=day, start=start, end=end)


def session_cmd(
    session_id: str = "s-new",
    day: date = DAY,
    start: time = time(8, 0),
    end: time = time(11, 30),
    doctor_id: str = "dr-wang",
    fee: Decimal | None = Decimal("50.00"),
    actor: Actor = ADMIN,
) -> ScheduleSession:
    return ScheduleSession(
        idempotency_key=key(session_id),
        session_id=session_id,
        doctor_id=doctor_id,
        date=day,
        period="morning" if start < time(12) else "afternoon",
        start=start,
        end=end,
        capacity=30,
        quota=Quota(web=15, phone=10, window=5),
        fee=fee,
        actor=actor,
    )


def plan_slot(weekday: int = 1, start: time = time(8), end: time = time(11, 30), **kw: Any) -> PlanSlot:
    fields: dict[str, Any] = {"weekday": weekday, "period": "morning" if start < time(12) else "afternoon",
                              "start": start, "end": end, "capacity": 30, "quota": Quota(web=12, phone=6, window=6)}
    fields.update(kw)
    return PlanSlot(**fields)


# --- folding -------------------------------------------------------------------------------------


def test_an_unfolded_entity_does_not_exist_and_a_folded_one_does():
    assert not Entity.fold([]).exists
    assert CARDIOLOGY.exists
    assert CARDIOLOGY.version == 1
    assert CARDIOLOGY.data["name"] == "心内科"


def test_later_events_override_earlier_fields_and_keep_the_rest():
    doctor = Entity.fold(
        [
            *envelopes(ZHOU),
            FakeEnvelope("DoctorUpdated", {"title": "副主任医师"}, 2),
        ]
    )
    assert doctor.version == 2
    assert doctor.data["title"] == "副主任医师"
    assert doctor.data["name"] == "周平"


def test_doctor_sessions_fold_collects_every_slot_in_order():
    sessions = DoctorSessions.fold(
        envelopes(slot("s-1", DAY, time(8), time(12)), slot("s-2", DAY, time(14), time(17)))
    )
    assert sessions.version == 2
    assert [s[3] for s in sessions.slots] == ["s-1", "s-2"]
    assert sessions.slots[0][0] == "2025-03-10"


def test_hospital_fold_keeps_rules_fees_and_holidays():
    rules = BookingRules(release_days=14, release_time=time(7, 30))
    hospital = Hospital.fold(envelopes(
        HB3, *FEES,
        FeeChanged(hospital_id="hb3", fee_class="主任医师", fee=Decimal("35.00"), previous_fee=Decimal("30.00")),
        HolidayDeclared(hospital_id="hb3", date=DAY, name="院庆"),
        HospitalRulesChanged(hospital_id="hb3", rules=rules),
    ))
    assert hospital.fees["主任医师"] == Decimal("35.00")
    assert hospital.fees["普通门诊"] == Decimal("6.00")
    assert hospital.holidays == {DAY: "院庆"}
    assert hospital.rules == rules
    assert hospital.version == 8


# --- who may change what -------------------------------------------------------------------------


def test_registering_a_hospital_needs_the_platform():
    cmd = RegisterHospital(idempotency_key=key("h"), hospital_id="hb3", name="河北医科大学第三医院", actor=ADMIN)
    with pytest.raises(Forbidden) as exc:
        register_hospital(cmd, NOBODY)
    assert exc.value.field == "actor"


@pytest.mark.parametrize("actor", [OTHER_ADMIN, Actor(kind="patient", id="p-1"),
                                   Actor(kind="clerk", id="c-1", hospital_id="hb3")],
                         ids=["admin-of-another-hospital", "patient", "clerk"])
def test_only_staff_of_the_hospital_or_the_platform_change_its_schedule(actor):
    with pytest.raises(Forbidden) as exc:
        schedule_session(session_cmd(actor=actor), DR_WANG, DoctorSessions(), NOBODY, NOW, HOSPITAL)
    assert exc.value.field == "actor"
    for allowed in (ADMIN, Actor(kind="service", id="his-sync"), Actor(kind="platform_admin", id="ops")):
        assert schedule_session(session_cmd(actor=allowed), DR_WANG, DoctorSessions(), NOBODY, NOW, HOSPITAL)


# --- hospitals, fees -----------------------------------------------------------------------------


def test_register_a_new_hospital():
    cmd = RegisterHospital(
        idempotency_key=key("h"),
        hospital_id="hb3",
        name="河北医科大学第三医院",
        address="石家庄市自强路139号",
        contact="0311-88602000",
    )
    ev = register_hospital(cmd, NOBODY)
    assert ev == HospitalRegistered(
        hospital_id="hb3", name="河北医科大学第三医院", level="三级甲等", address="石家庄市自强路139号",
        contact="0311-88602000",
    )


def test_registering_a_hospital_twice_is_a_conflict():
    cmd = RegisterHospital(idempotency_key=key("h"), hospital_id="hb3", name="河北医科大学第三医院")
    with pytest.raises(Conflict) as exc:
        register_hospital(cmd, HOSPITAL)
    assert exc.value.field == "hospital_id"


def fee_cmd(fee: str, fee_class: str = "主任医师", hospital_id: str = "hb3") -> ChangeFee:
    return ChangeFee(idempotency_key=key("fee"), hospital_id=hospital_id, fee_class=fee_class, fee=Decimal(fee))


def test_a_fee_change_records_the_previous_fee_and_an_unchanged_fee_is_no_event():
    hospital = Hospital.fold(envelopes(HB3, *FEES))
    ev = domain.change_fee(fee_cmd("35.00"), hospital)
    assert ev == FeeChanged(hospital_id="hb3", fee_class="主任医师", fee=Decimal("35.00"),
                            previous_fee=Decimal("30.00"))
    assert domain.change_fee(fee_cmd("30.00"), hospital) is None


def test_a_fee_below_zero_is_refused_naming_fee():
    with pytest.raises(ValidationError) as exc:
        fee_cmd("-0.01")
    assert invalid_from_validation(exc.value).field == "fee"
    # The domain keeps the rule too, for a command built without validation.
    negative = ChangeFee.model_construct(idempotency_key=key("fee"), hospital_id="hb3", fee_class="医师",
                                         fee=Decimal("-1"), actor=ADMIN)
    with pytest.raises(InvalidInput) as refused:
        domain.change_fee(negative, HOSPITAL)
    assert refused.value.field == "fee"


def test_a_fee_of_an_unknown_hospital_is_not_found():
    with pytest.raises(NotFound) as exc:
        domain.change_fee(fee_cmd("10.00", hospital_id="nowhere"), Hospital())
    assert exc.value.field == "hospital_id"


def test_a_fee_with_more_than_two_decimals_is_refused():
    with pytest.raises(ValidationError) as exc:
        ChangeFee(idempotency_key=key("fee"), hospital_id="hb3", fee_class="医师", fee=Decimal("6.005"))
    assert invalid_from_validation(exc.value).field == "fee"


# --- departments ---------------------------------------------------------------------------------


def department_cmd(
    department_id: str = "hb3-card-sub", hospital_id: str = "hb3", parent_id: str | None = None
) -> CreateDepartment:
    return CreateDepartment(
        idempotency_key=key(department_id),
        department_id=department_id,
        hospital_id=hospital_id,
        name="心内一科",
        parent_id=parent_id,
    )


def test_create_a_top_level_and_a_child_department():
    top = create_department(department_cmd("hb3-neuro"), HOSPITAL, None, NOBODY)
    assert (top.department_id, top.hospital_id, top.parent_id) == ("hb3-neuro", "hb3", None)

    child = create_department(department_cmd(parent_id="hb3-card"), HOSPITAL, CARDIOLOGY, NOBODY)
    assert (child.department_id, child.hospital_id, child.parent_id) == ("hb3-card-sub", "hb3", "hb3-card")


def test_department_of_an_unknown_hospital_is_not_found_naming_hospital_id():
    with pytest.raises(NotFound) as exc:
        create_department(department_cmd(hospital_id="nowhere"), NOBODY, None, NOBODY)
    assert exc.value.field == "hospital_id"
    assert "nowhere" in exc.value.message


def test_creating_a_department_twice_is_a_conflict():
    with pytest.raises(Conflict) as exc:
        create_department(department_cmd("hb3-card"), HOSPITAL, None, CARDIOLOGY)
    assert exc.value.field == "department_id"


@pytest.mark.parametrize("parent", [None, Entity()], ids=["not-loaded", "never-created"])
def test_unknown_parent_department_is_not_found(parent):
    with pytest.raises(NotFound) as exc:
        create_department(department_cmd(parent_id="hb3-ghost"), HOSPITAL, parent, NOBODY)
    assert exc.value.field == "parent_id"


def test_parent_of_another_hospital_is_refused():
    with pytest.raises(InvalidInput) as exc:
        create_department(department_cmd(parent_id="hb2-card"), HOSPITAL, OTHER_HOSPITALS_DEPARTMENT, NOBODY)
    assert exc.value.field == "parent_id"


def test_a_department_cannot_be_moved_under_its_own_child():
    h = hospital_history()
    h.add("department-hb3-card-sub", DepartmentCreated(department_id="hb3-card-sub", hospital_id="hb3",
                                                       name="心内一科", parent_id="hb3-card"))
    w = h.world()
    move = UpdateDepartment(idempotency_key=key("mv"), department_id="hb3-card", name="心内科",
                            parent_id="hb3-card-sub")
    with pytest.raises(InvalidInput) as exc:
        domain.update_department(move, w.department("hb3-card"), w.department("hb3-card-sub"),
                                 w.ancestors("hb3-card-sub"))
    assert exc.value.field == "parent_id"
    rename = UpdateDepartment(idempotency_key=key("rn"), department_id="hb3-card", name="心血管内科")
    ev = domain.update_department(rename, w.department("hb3-card"), None, [])
    assert ev is not None and ev.name == "心血管内科"


# --- doctors -------------------------------------------------------------------------------------


def doctor_cmd(
    doctor_id: str = "dr-zhao", department_id: str = "hb3-card", hospital_id: str = "hb3", title: str = "副主任医师"
) -> RegisterDoctor:
    return RegisterDoctor(
        idempotency_key=key(doctor_id),
        doctor_id=doctor_id,
        hospital_id=hospital_id,
        department_id=department_id,
        name="赵丽",
        title=title,
        specialty="心律失常",
    )


def test_register_a_doctor_carries_every_field_and_an_expert_clinic_by_title():
    ev = register_doctor(doctor_cmd(), CARDIOLOGY, NOBODY)
    assert ev == DoctorRegistered(
        doctor_id="dr-zhao",
        hospital_id="hb3",
        department_id="hb3-card",
        name="赵丽",
        title="副主任医师",
        specialty="心律失常",
        clinic_type="expert",
    )
    assert register_doctor(doctor_cmd(title="主治医师"), CARDIOLOGY, NOBODY).clinic_type == "general"


def test_doctor_in_an_unknown_department_is_not_found():
    with pytest.raises(NotFound) as exc:
        register_doctor(doctor_cmd(department_id="hb3-ghost"), NOBODY, NOBODY)
    assert exc.value.field == "department_id"


def test_doctor_in_a_department_of_another_hospital_is_refused():
    with pytest.raises(InvalidInput) as exc:
        register_doctor(doctor_cmd(department_id="hb2-card"), OTHER_HOSPITALS_DEPARTMENT, NOBODY)
    assert exc.value.field == "department_id"


def test_registering_a_doctor_twice_is_a_conflict():
    with pytest.raises(Conflict) as exc:
        register_doctor(doctor_cmd("dr-wang"), CARDIOLOGY, DR_WANG)
    assert exc.value.field == "doctor_id"


def test_updating_a_doctor_is_an_event_only_when_something_changed():
    same = UpdateDoctor(idempotency_key=key("u"), doctor_id="dr-wang", department_id="hb3-card", name="王建国",
                        title="主任医师", specialty="冠心病")
    assert domain.update_doctor(same, DR_WANG, CARDIOLOGY) is None
    promoted = domain.update_doctor(same.model_copy(update={"bio": "心内科主任"}), DR_WANG, CARDIOLOGY)
    assert promoted is not None and promoted.bio == "心内科主任" and promoted.hospital_id == "hb3"
    with pytest.raises(NotFound) as exc:
        domain.update_doctor(same.model_copy(update={"department_id": "hb3-ghost"}), DR_WANG, NOBODY)
    assert exc.value.field == "department_id"


# --- the shape of a session ----------------------------------------------------------------------


def shape_error(**overrides: Any) -> InvalidInput:
    fields: dict[str, Any] = {"start": time(8), "end": time(11, 30), "capacity": 30,
                              "quota": Quota(web=15, phone=10, window=5), "time_bands": []}
    fields.update(overrides)
    with pytest.raises(InvalidInput) as exc:
        check_session_shape(**fields)
    return exc.value


def test_an_end_before_or_at_the_start_is_refused_naming_end():
    assert shape_error(end=time(7, 0)).field == "end"
    assert shape_error(end=time(8, 0)).field == "end"


def test_a_quota_larger_than_the_capacity_is_refused_naming_quota():
    err = shape_error(capacity=29)
    assert err.field == "quota"
    assert "30" in err.message and "29" in err.message


@pytest.mark.parametrize(
    ("bands", "where"),
    [
        ([TimeBand(start=time(7, 30), end=time(8, 30), numbers=30)], "time_bands.0"),  # before the session
        ([TimeBand(start=time(8), end=time(12), numbers=30)], "time_bands.0"),  # after its end
        ([TimeBand(start=time(9), end=time(8, 30), numbers=30)], "time_bands.0"),  # ends before it starts
        ([TimeBand(start=time(9), end=time(10), numbers=15),
          TimeBand(start=time(8), end=time(9), numbers=15)], "time_bands.1"),  # out of order
        ([TimeBand(start=time(8), end=time(9), numbers=10)], "time_bands"),  # fewer numbers than the quota
    ],
    ids=["before", "after", "reversed", "out-of-order", "too-few-numbers"],
)
def test_time_bands_must_lie_in_the_session_in_order_and_hold_the_quota(bands, where):
    assert shape_error(time_bands=bands).field == where


def test_equal_time_bands_share_the_capacity_and_map_numbers_to_arrival_windows():
    bands = equal_time_bands(time(8), time(11, 30), 30, 30)
    assert [(b.start, b.end) for b in bands][:2] == [(time(8), time(8, 30)), (time(8, 30), time(9))]
    assert bands[-1].end == time(11, 30)
    assert len(bands) == 7
    assert [b.numbers for b in bands] == [5, 5, 4, 4, 4, 4, 4]
    assert sum(b.numbers for b in bands) == 30


def test_more_bands_than_numbers_is_refused_naming_band_minutes():
    with pytest.raises(InvalidInput) as exc:
        equal_time_bands(time(8), time(11, 30), 10, 5)
    assert exc.value.field == "band_minutes"


def session_fields(**overrides: Any) -> dict[str, Any]:
    fields = session_cmd().model_dump(mode="json")
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"start": "11:30", "end": "08:00"}, "end"),
        ({"capacity": 29}, "quota"),
        ({"band_minutes": 30, "time_bands": [{"start": "08:00", "end": "11:30", "numbers": 30}]}, "band_minutes"),
    ],
    ids=["end-before-start", "quota-above-capacity", "bands-twice"],
)
def test_the_service_boundary_names_the_field_the_contract_alone_would_not(overrides, where):
    # ScheduleSession's own rule refuses the whole model (no field); the service parses with
    # SessionRequest so that the refusal it answers names the field.
    with pytest.raises(InvalidInput) as exc:
        SessionRequest.model_validate(session_fields(**overrides))
    assert exc.value.field == where
    accepted = SessionRequest.model_validate(session_fields(band_minutes=30))
    assert isinstance(accepted, ScheduleSession)


def test_a_negative_session_fee_is_refused_naming_fee():
    with pytest.raises(ValidationError) as exc:
        SessionRequest.model_validate(session_fields(fee="-5.00"))
    assert invalid_from_validation(exc.value).field == "fee"


# --- one-off sessions ----------------------------------------------------------------------------

MORNING_OF_DAY = DoctorSessions.fold(envelopes(slot("s-am", DAY, time(8), time(11, 30))))
WITH_FEES = Hospital.fold(envelopes(HB3, *FEES))


def test_scheduled_session_carries_hospital_department_and_doctor_from_the_doctor_state():
    ev = schedule_session(session_cmd(start=time(14), end=time(17)), DR_WANG, MORNING_OF_DAY, NOBODY, NOW)
    assert isinstance(ev, SessionScheduled)
    assert (ev.hospital_id, ev.department_id, ev.doctor_id) == ("hb3", "hb3-card", "dr-wang")
    assert (ev.doctor_name, ev.doctor_title, ev.clinic_type) == ("王建国", "主任医师", "expert")
    assert (ev.date, ev.start, ev.end, ev.period) == (DAY, time(14), time(17), "afternoon")
    assert ev.capacity == 30
    assert ev.quota == Quota(web=15, phone=10, window=5)
    assert ev.fee == Decimal("50.00")


def test_a_session_without_a_fee_takes_the_hospital_fee_for_the_doctor_title_or_the_general_clinic():
    expert = schedule_session(session_cmd(fee=None), DR_WANG, DoctorSessions(), NOBODY, NOW, WITH_FEES)
    assert expert.fee == Decimal("30.00")
    general = schedule_session(session_cmd(doctor_id="dr-zhou", fee=None), Entity.fold(envelopes(ZHOU)),
                               DoctorSessions(), NOBODY, NOW, WITH_FEES)
    assert general.fee == Decimal("6.00")  # 主治医师 in a general clinic: the 普通门诊 fee


def test_a_session_without_a_fee_when_the_hospital_has_none_for_the_title_is_refused_naming_fee():
    with pytest.raises(InvalidInput) as exc:
        schedule_session(session_cmd(fee=None), DR_WANG, DoctorSessions(), NOBODY, NOW, HOSPITAL)
    assert exc.value.field == "fee"
    assert "主任医师" in exc.value.message


def test_the_booking_window_follows_the_hospital_rules():
    rules = BookingRules(release_days=7, release_time=time(8), cutoff_days_before=1, cutoff_time=time(16))
    hospital = Hospital.fold(envelopes(HB3.model_copy(update={"rules": rules})))
    ev = schedule_session(session_cmd(), DR_WANG, DoctorSessions(), NOBODY, NOW, hospital)
    assert ev.opens_at == datetime(2025, 3, 3, 8, 0, tzinfo=HOSPITAL_TZ)
    assert ev.closes_at == datetime(2025, 3, 9, 16, 0, tzinfo=HOSPITAL_TZ)
    assert ev.lapse_at == datetime(2025, 3, 10, 10, 30, tzinfo=HOSPITAL_TZ)  # end − 1 h
    assert (ev.opens_at, ev.closes_at, ev.lapse_at) == booking_window(session_cmd(), rules)


def test_session_of_an_unknown_doctor_is_not_found():
    with pytest.raises(NotFound) as exc:
        schedule_session(session_cmd(doctor_id="dr-ghost"), NOBODY, DoctorSessions(), NOBODY, NOW)
    assert exc.value.field == "doctor_id"


def test_scheduling_an_existing_session_is_a_conflict():
    existing = Entity.fold([FakeEnvelope("SessionScheduled", {"session_id": "s-am"}, 1)])
    with pytest.raises(Conflict) as exc:
        schedule_session(session_cmd("s-am"), DR_WANG, DoctorSessions(), existing, NOW)
    assert exc.value.field == "session_id"


def test_a_session_in_the_past_is_refused_on_date_but_later_today_is_allowed():
    with pytest.raises(InvalidInput) as exc:
        schedule_session(session_cmd(day=date(2025, 2, 28)), DR_WANG, DoctorSessions(), NOBODY, NOW)
    assert exc.value.field == "date"
    with pytest.raises(InvalidInput) as begun:  # today 08:00, and it is 09:00 now
        schedule_session(session_cmd(day=TODAY), DR_WANG, DoctorSessions(), NOBODY, NOW)
    assert begun.value.field == "date"

    ev = schedule_session(session_cmd(day=TODAY, start=time(14), end=time(17)), DR_WANG, DoctorSessions(), NOBODY,
                          NOW)
    assert ev.date == TODAY


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (time(8), time(11, 30)),  # identical
        (time(9), time(10)),  # inside
        (time(7), time(8, 30)),  # overlaps the beginning
        (time(11), time(13)),  # overlaps the end
        (time(7), time(12)),  # covers
        (time(11, 29), time(11, 31)),  # one minute in common
    ],
)
def test_overlapping_session_of_the_same_doctor_on_the_same_day_is_a_conflict_on_start(start, end):
    with pytest.raises(Conflict) as exc:
        schedule_session(session_cmd(start=start, end=end), DR_WANG, MORNING_OF_DAY, NOBODY, NOW)
    assert exc.value.field == "start"
    assert "s-am" in exc.value.message


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (time(11, 30), time(12)),  # starts when the other ends
        (time(7), time(8)),  # ends when the other starts
        (time(14), time(17)),
    ],
)
def test_adjacent_sessions_on_the_same_day_are_allowed(start, end):
    ev = schedule_session(session_cmd(start=start, end=end), DR_WANG, MORNING_OF_DAY, NOBODY, NOW)
    assert (ev.start, ev.end) == (start, end)


def test_the_same_hours_on_another_day_are_allowed():
    ev = schedule_session(session_cmd(day=date(2025, 3, 11)), DR_WANG, MORNING_OF_DAY, NOBODY, NOW)
    assert ev.date == date(2025, 3, 11)


def test_overlap_is_checked_against_every_slot_not_only_the_first():
    sessions = DoctorSessions.fold(
        envelopes(slot("s-am", DAY, time(8), time(11, 30)), slot("s-pm", DAY, time(14), time(17)))
    )
    with pytest.raises(Conflict) as exc:
        schedule_session(session_cmd(start=time(16), end=time(18)), DR_WANG, sessions, NOBODY, NOW)
    assert "s-pm" in exc.value.message


def test_a_one_off_session_stages_the_session_and_the_doctor_calendar_entry():
    h = hospital_history()
    w = h.world()
    domain.stage_one_off_session(w, session_cmd(fee=None), NOW)
    assert [(s, type(e).__name__) for s, e in w.staged] == [
        ("session-s-new", "SessionScheduled"), ("doctor-sessions-dr-wang", "DoctorSessionAdded")]
    assert w.appends() == {"session-s-new": (0, [w.staged[0][1]]), "doctor-sessions-dr-wang": (0, [w.staged[1][1]])}


# --- release rule --------------------------------------------------------------------------------

OPENS = datetime(2025, 3, 3, 8, 0, tzinfo=HOSPITAL_TZ)
CLOSES = datetime(2025, 3, 9, 16, 0, tzinfo=HOSPITAL_TZ)


def test_before_release_the_answer_is_not_open_yet_with_the_time_it_opens():
    status = booking_status(OPENS, CLOSES, datetime(2025, 3, 3, 7, 59, tzinfo=HOSPITAL_TZ))
    assert status["state"] == "not_open"
    assert status["opens_at"] == OPENS.isoformat()
    assert "2025-03-03 08:00" in status["message"]


def test_between_release_and_cut_off_it_is_open_and_after_the_cut_off_closed():
    assert booking_status(OPENS, CLOSES, OPENS)["state"] == "open"
    assert "2025-03-09 16:00" in booking_status(OPENS, CLOSES, OPENS)["message"]
    assert booking_status(OPENS, CLOSES, CLOSES - timedelta(seconds=1))["state"] == "open"
    closed = booking_status(OPENS, CLOSES, CLOSES)
    assert closed["state"] == "closed"
    assert "截止" in closed["message"]


def test_a_stopped_session_is_not_bookable_whatever_the_time():
    assert booking_status(OPENS, CLOSES, OPENS + timedelta(days=1), state="replaced")["state"] == "stopped"


# --- weekly plan and generated sessions ----------------------------------------------------------


def plan_cmd(*slots: PlanSlot, doctor_id: str = "dr-wang") -> SetWeeklyPlan:
    return SetWeeklyPlan(idempotency_key=key("plan"), doctor_id=doctor_id, slots=list(slots), actor=ADMIN)


def test_a_weekly_plan_is_set_and_setting_the_same_plan_again_is_no_event():
    plan = plan_cmd(plan_slot(1), plan_slot(4, time(14), time(17)))
    ev = domain.set_weekly_plan(plan, DR_WANG)
    assert isinstance(ev, WeeklyPlanChanged) and len(ev.slots) == 2
    doctor = Entity.fold(envelopes(WANG, ev))
    assert domain.set_weekly_plan(plan, doctor) is None


@pytest.mark.parametrize(
    ("bad", "error", "where"),
    [
        (plan_slot(1, time(9), time(10)), Conflict, "slots.1.start"),  # overlaps slot 0 on Monday
        (plan_slot(2, time(11), time(9)), InvalidInput, "slots.1.end"),
        (plan_slot(2, capacity=20), InvalidInput, "slots.1.quota"),  # 24 numbers in the quota
    ],
    ids=["overlap", "end-before-start", "quota-above-capacity"],
)
def test_a_bad_plan_slot_is_refused_naming_it(bad, error, where):
    with pytest.raises(error) as exc:
        domain.set_weekly_plan(plan_cmd(plan_slot(1), bad), DR_WANG)
    assert exc.value.field == where


def planned_history(*slots: PlanSlot) -> History:
    h = hospital_history()
    h.add("doctor-dr-wang", WeeklyPlanChanged(doctor_id="dr-wang", hospital_id="hb3", slots=list(slots)))
    return h


def test_generation_publishes_the_plan_for_each_matching_weekday_with_stable_ids():
    h = planned_history(plan_slot(1, band_minutes=30), plan_slot(3, time(14), time(17)))
    w = h.world()
    summary = domain.generate_sessions(w, "hb3", ["dr-wang"], date(2025, 3, 2), date(2025, 3, 15), NOW, ADMIN)
    assert summary.session_ids == ["dr-wang-20250303-am", "dr-wang-20250305-pm", "dr-wang-20250310-am",
                                   "dr-wang-20250312-pm"]
    published = [e for _, e in w.staged if isinstance(e, SessionScheduled)]
    assert [e.date.isoweekday() for e in published] == [1, 3, 1, 3]
    assert all(e.fee == Decimal("30.00") for e in published)
    assert len(published[0].time_bands) == 7 and published[1].time_bands == []
    assert published[0].opens_at == datetime(2025, 2, 24, 8, 0, tzinfo=HOSPITAL_TZ)
    assert w.staged[-1] == ("generation-hb3", summary)


def test_generation_skips_holidays_past_times_and_overlaps_and_leaves_existing_sessions_alone():
    h = planned_history(plan_slot(1), plan_slot(6, time(8), time(11, 30)))
    h.add("hospital-hb3", HolidayDeclared(hospital_id="hb3", date=date(2025, 3, 10), name="院庆"))
    h.add("doctor-sessions-dr-wang", slot("one-off", date(2025, 3, 15), time(10), time(12)))
    first = h.world()
    domain.generate_sessions(first, "hb3", ["dr-wang"], date(2025, 3, 3), date(2025, 3, 3), NOW, ADMIN)
    h.commit(first)

    w = h.world()
    summary = domain.generate_sessions(w, "hb3", ["dr-wang"], TODAY, date(2025, 3, 15), NOW, ADMIN)
    assert summary.session_ids == ["dr-wang-20250308-am"]
    reasons = {s.session_id: s.reason for s in summary.skipped}
    assert set(reasons) == {"dr-wang-20250301-am", "dr-wang-20250310-am", "dr-wang-20250315-am"}
    assert "past" in reasons["dr-wang-20250301-am"]  # today 08:00, now 09:00
    assert "院庆" in reasons["dr-wang-20250310-am"]
    assert "one-off" in reasons["dr-wang-20250315-am"]
    assert "dr-wang-20250303-am" not in summary.session_ids  # generated before: not again, not reported


def test_generation_without_a_fee_for_the_doctor_title_is_refused_naming_fee():
    h = History()
    h.add("hospital-hb3", HB3).add("department-hb3-card", CARD).add("doctor-dr-wang", WANG, WeeklyPlanChanged(
        doctor_id="dr-wang", hospital_id="hb3", slots=[plan_slot(1)]))
    with pytest.raises(InvalidInput) as exc:
        domain.generate_sessions(h.world(), "hb3", ["dr-wang"], DAY, DAY, NOW, ADMIN)
    assert exc.value.field == "fee"


def test_a_fee_change_applies_to_sessions_published_after_it_never_to_published_ones():
    h = planned_history(plan_slot(1))
    first = h.world()
    domain.generate_sessions(first, "hb3", ["dr-wang"], date(2025, 3, 3), date(2025, 3, 3), NOW, ADMIN)
    h.commit(first)
    raised = domain.change_fee(fee_cmd("45.00"), h.world().hospital("hb3"))
    assert raised is not None
    h.add("hospital-hb3", raised)

    later = h.world()
    domain.generate_sessions(later, "hb3", ["dr-wang"], date(2025, 3, 3), date(2025, 3, 10), NOW, ADMIN)
    h.commit(later)
    w = h.world()
    assert w.session("dr-wang-20250303-am").data["fee"] == "30.00"
    assert w.session("dr-wang-20250310-am").data["fee"] == "45.00"


@pytest.mark.parametrize(
    ("date_from", "date_to", "where"),
    [(date(2025, 3, 10), date(2025, 3, 9), "date_to"), (date(2025, 3, 1), date(2025, 6, 1), "date_to"),
     (date(2025, 2, 1), date(2025, 2, 20), "date_to")],
    ids=["reversed", "too-long", "in-the-past"],
)
def test_a_bad_generation_horizon_is_refused(date_from, date_to, where):
    with pytest.raises(InvalidInput) as exc:
        domain.generate_sessions(planned_history(plan_slot(1)).world(), "hb3", ["dr-wang"], date_from, date_to,
                                 NOW, ADMIN)
    assert exc.value.field == where


# --- quota ---------------------------------------------------------------------------------------


def scheduled_history(session_id: str = "s-1", day: date = DAY, start: time = time(8),
                      end: time = time(11, 30), doctor: DoctorRegistered = WANG) -> History:
    h = hospital_history()
    w = h.world()
    cmd = session_cmd(session_id, day=day, start=start, end=end, doctor_id=doctor.doctor_id, actor=ADMIN)
    domain.stage_one_off_session(w, cmd, NOW)
    h.commit(w)
    return h


def quota_cmd(web: int, phone: int = 0, window: int = 0, session_id: str = "s-1") -> ChangeSessionQuota:
    return ChangeSessionQuota(idempotency_key=key("q"), session_id=session_id,
                              quota=Quota(web=web, phone=phone, window=window), actor=ADMIN)


def test_a_quota_change_is_an_event_and_the_same_quota_is_none():
    session = scheduled_history().world().session("s-1")
    ev = domain.change_session_quota(quota_cmd(20, 5, 5), session, NOW)
    assert ev == SessionQuotaChanged(session_id="s-1", hospital_id="hb3", quota=Quota(web=20, phone=5, window=5))
    assert domain.change_session_quota(quota_cmd(15, 10, 5), session, NOW) is None


def test_a_quota_above_capacity_or_for_an_unknown_or_past_session_is_refused():
    session = scheduled_history().world().session("s-1")
    with pytest.raises(InvalidInput) as over:
        domain.change_session_quota(quota_cmd(20, 10, 5), session, NOW)
    assert over.value.field == "quota"
    with pytest.raises(NotFound) as unknown:
        domain.change_session_quota(quota_cmd(1, session_id="s-ghost"), Session(), NOW)
    assert unknown.value.field == "session_id"
    with pytest.raises(InvalidInput) as past:
        domain.change_session_quota(quota_cmd(1), session, datetime(2025, 3, 10, 12, tzinfo=HOSPITAL_TZ))
    assert past.value.field == "session_id"


# --- doctor stops --------------------------------------------------------------------------------


def stop_request(session_id: str = "s-1", actor: Actor = ADMIN) -> RequestDoctorStop:
    return RequestDoctorStop(idempotency_key=key("stop"), session_id=session_id, reason="外出会诊",
                             requested_by="dr-wang", actor=actor)


def requested_history(**kw: Any) -> History:
    h = scheduled_history(**kw)
    h.add("session-s-1", domain.request_doctor_stop(stop_request(), h.world().session("s-1"), NOW))
    return h


def test_a_stop_request_names_the_session_hospital_and_reason():
    ev = domain.request_doctor_stop(stop_request(), scheduled_history().world().session("s-1"), NOW)
    assert ev == DoctorStopRequested(stop_id="s-1.stop1", session_id="s-1", hospital_id="hb3", reason="外出会诊",
                                     requested_by="dr-wang")


def test_a_stop_for_a_session_that_does_not_exist_is_not_found():
    with pytest.raises(NotFound) as exc:
        domain.request_doctor_stop(stop_request("s-ghost"), Session(), NOW)
    assert exc.value.field == "session_id"


def test_a_stop_for_a_session_that_already_happened_or_began_is_refused():
    session = scheduled_history().world().session("s-1")
    for moment in (datetime(2025, 3, 10, 8, 0, tzinfo=HOSPITAL_TZ), datetime(2025, 3, 11, tzinfo=HOSPITAL_TZ)):
        with pytest.raises(InvalidInput) as exc:
            domain.request_doctor_stop(stop_request(), session, moment)
        assert exc.value.field == "session_id"


def test_a_second_stop_request_while_one_is_pending_is_a_conflict():
    with pytest.raises(Conflict) as exc:
        domain.request_doctor_stop(stop_request(), requested_history().world().session("s-1"), NOW)
    assert exc.value.field == "session_id"
    assert "s-1.stop1" in exc.value.message


def test_a_stop_request_from_another_hospital_is_forbidden():
    with pytest.raises(Forbidden) as exc:
        domain.request_doctor_stop(stop_request(actor=OTHER_ADMIN), scheduled_history().world().session("s-1"), NOW)
    assert exc.value.field == "actor"


def approve(replacement: ReplacementSession | None = None, actor: Actor = ADMIN,
            stop_id: str = "s-1.stop1") -> ApproveDoctorStop:
    return ApproveDoctorStop(idempotency_key=key("approve"), session_id="s-1", stop_id=stop_id,
                             replacement=replacement, actor=actor)


@pytest.mark.parametrize(
    "actor",
    [OTHER_ADMIN, Actor(kind="hospital_admin", id="a-none"), Actor(kind="clerk", id="c", hospital_id="hb3"),
     Actor(kind="patient", id="p"), Actor(kind="system", id="platform"), Actor(kind="service", id="his-sync")],
    ids=["admin-of-another-hospital", "admin-without-hospital", "clerk-of-the-hospital", "patient", "system",
         "service"],
)
def test_only_an_admin_of_the_session_hospital_may_decide_a_stop(actor):
    h = requested_history()
    with pytest.raises(Forbidden) as exc:
        domain.approve_doctor_stop(h.world(), approve(actor=actor), NOW)
    assert exc.value.field == "actor"
    reject = RejectDoctorStop(idempotency_key=key("rej"), session_id="s-1", stop_id="s-1.stop1", reason="无人替诊",
                              actor=actor)
    with pytest.raises(Forbidden):
        domain.reject_doctor_stop(reject, h.world().session("s-1"), NOW)


def test_a_platform_admin_may_decide_a_stop():
    w = requested_history().world()
    ev = domain.approve_doctor_stop(w, approve(actor=Actor(kind="platform_admin", id="ops")), NOW)
    assert ev.approved_by == "ops"


def test_approval_without_replacement_stops_the_session():
    h = requested_history()
    w = h.world()
    ev = domain.approve_doctor_stop(w, approve(), NOW)
    assert ev == DoctorStopApproved(stop_id="s-1.stop1", session_id="s-1", hospital_id="hb3", reason="外出会诊",
                                    approved_by="admin-hb3", replacement_session_id=None)
    assert [s for s, _ in w.staged] == ["session-s-1"]
    h.commit(w)
    session = h.world().session("s-1")
    assert (session.state, session.replaced_by, session.pending_stop) == ("stopped", None, None)


def test_approval_with_a_replacement_publishes_it_first_then_the_approval():
    h = requested_history()
    w = h.world()
    replacement = ReplacementSession(date=date(2025, 3, 12), period="afternoon", start=time(14), end=time(17, 30))
    ev = domain.approve_doctor_stop(w, approve(replacement), NOW)

    assert [(s, type(e).__name__) for s, e in w.staged] == [
        ("session-s-1-bz1", "SessionScheduled"),
        ("doctor-sessions-dr-wang", "DoctorSessionAdded"),
        ("session-s-1", "DoctorStopApproved"),
    ]
    assert list(w.appends()) == ["session-s-1-bz1", "doctor-sessions-dr-wang", "session-s-1"]
    published = w.staged[0][1]
    assert isinstance(published, SessionScheduled)
    assert published.replaces_session_id == "s-1"
    assert ev.replacement_session_id == "s-1-bz1"
    # Left-out fields are the stopped session's: the same numbers for the same patients.
    assert (published.capacity, published.quota) == (30, Quota(web=15, phone=10, window=5))
    assert (published.doctor_id, published.date, published.start) == ("dr-wang", date(2025, 3, 12), time(14))
    h.commit(w)
    stopped = h.world().session("s-1")
    assert (stopped.state, stopped.replaced_by) == ("replaced", "s-1-bz1")


def test_a_replacement_by_a_colleague_of_the_same_title_takes_the_same_slot():
    w = requested_history().world()
    replacement = ReplacementSession(doctor_id="dr-li", date=DAY, period="morning", start=time(8), end=time(11, 30),
                                     session_id="s-1-li")
    ev = domain.approve_doctor_stop(w, approve(replacement), NOW)
    assert ev.replacement_session_id == "s-1-li"
    published = w.staged[0][1]
    assert isinstance(published, SessionScheduled)
    assert (published.doctor_id, published.doctor_name, published.fee) == ("dr-li", "李明", Decimal("30.00"))


@pytest.mark.parametrize(
    ("replacement", "error", "where"),
    [
        ({"doctor_id": "dr-zhou"}, InvalidInput, "replacement.doctor_id"),  # 主治医师 for a 主任医师
        ({"doctor_id": "dr-ghost"}, NotFound, "replacement.doctor_id"),
        ({"start": time(9), "end": time(10)}, Conflict, "replacement.start"),  # the stopped session's own hours
        ({"date": date(2025, 2, 28)}, InvalidInput, "replacement.date"),
        ({"end": time(13)}, InvalidInput, "replacement.end"),
        ({"capacity": 10}, InvalidInput, "replacement.quota"),
    ],
    ids=["colleague-of-another-title", "unknown-colleague", "overlap", "in-the-past", "end-before-start",
         "quota-above-capacity"],
)
def test_a_bad_replacement_is_refused_naming_its_field_and_nothing_is_staged(replacement, error, where):
    fields: dict[str, Any] = {"date": DAY, "period": "afternoon", "start": time(14), "end": time(17)}
    fields.update(replacement)
    w = requested_history().world()
    with pytest.raises(error) as exc:
        domain.approve_doctor_stop(w, approve(ReplacementSession(**fields)), NOW)
    assert exc.value.field == where
    assert w.staged == []


def test_a_decided_or_unknown_stop_cannot_be_decided_again():
    h = requested_history()
    w = h.world()
    domain.approve_doctor_stop(w, approve(), NOW)
    h.commit(w)
    with pytest.raises(Conflict) as again:
        domain.approve_doctor_stop(h.world(), approve(), NOW)
    assert again.value.field == "stop_id"
    with pytest.raises(NotFound) as unknown:
        domain.approve_doctor_stop(requested_history().world(), approve(stop_id="s-1.stop9"), NOW)
    assert unknown.value.field == "stop_id"


def test_a_rejected_stop_leaves_the_session_scheduled_and_a_new_request_possible():
    h = requested_history()
    reject = RejectDoctorStop(idempotency_key=key("rej"), session_id="s-1", stop_id="s-1.stop1",
                              reason="无同级医生替诊", actor=ADMIN)
    ev = domain.reject_doctor_stop(reject, h.world().session("s-1"), NOW)
    assert ev == DoctorStopRejected(stop_id="s-1.stop1", session_id="s-1", hospital_id="hb3",
                                    reason="无同级医生替诊", rejected_by="admin-hb3")
    h.add("session-s-1", ev)
    session = h.world().session("s-1")
    assert (session.state, session.pending_stop) == ("scheduled", None)
    assert domain.request_doctor_stop(stop_request(), session, NOW).stop_id == "s-1.stop2"


def test_a_withdrawn_stop_request_is_neither_approved_nor_rejected_and_cannot_be_decided_after():
    h = requested_history()
    his = Actor(kind="service", id="his_sync", hospital_id="hb3")
    withdraw = WithdrawDoctorStop(idempotency_key=key("wd"), session_id="s-1", stop_id="s-1.stop1",
                                  reason="HIS: block B1 lifted", actor=his)
    ev = domain.withdraw_doctor_stop(withdraw, h.world().session("s-1"), NOW)
    assert ev == DoctorStopRetracted(stop_id="s-1.stop1", session_id="s-1", hospital_id="hb3",
                                     reason="HIS: block B1 lifted", retracted_by="his_sync")
    h.add("session-s-1", ev)
    session = h.world().session("s-1")
    assert session.pending_stop is None and session.stops[0]["state"] == "withdrawn"
    with pytest.raises(Conflict):
        domain.approve_doctor_stop(h.world(), approve(), NOW)
    with pytest.raises(Conflict):
        domain.withdraw_doctor_stop(withdraw, session, NOW)
    clerk = Actor(kind="clerk", id="c1", hospital_id="hb3")
    with pytest.raises(Forbidden):
        domain.withdraw_doctor_stop(withdraw.model_copy(update={"actor": clerk}),
                                    requested_history().world().session("s-1"), NOW)


def test_a_stop_decision_after_the_session_ended_is_refused():
    with pytest.raises(InvalidInput) as exc:
        domain.approve_doctor_stop(requested_history().world(), approve(),
                                   datetime(2025, 3, 10, 11, 30, tzinfo=HOSPITAL_TZ))
    assert exc.value.field == "session_id"


# --- the world -----------------------------------------------------------------------------------


def test_the_world_groups_staged_events_by_stream_in_first_staged_order_with_read_versions():
    h = hospital_history()
    w = h.world()
    a = w.stage("hospital-hb3", HolidayDeclared(hospital_id="hb3", date=DAY, name="甲"))
    b = w.stage("department-x", CARD)
    c = w.stage("hospital-hb3", HolidayDeclared(hospital_id="hb3", date=DAY, name="乙"))
    assert w.appends() == {"hospital-hb3": (5, [a, c]), "department-x": (0, [b])}
    assert w.hospital("hb3").holidays[DAY] == "乙"  # a decision sees what was staged before it
    w.rollback(1)
    assert w.appends() == {"hospital-hb3": (5, [a])}
    assert w.hospital("hb3").holidays[DAY] == "甲"


def test_the_domain_package_imports_neither_nameko_nor_a_database_driver():
    check = ("import sys, services.schedule.domain; "
             "assert 'psycopg2' not in sys.modules and 'nameko' not in sys.modules, "
             "sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg2', 'nameko'))")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
