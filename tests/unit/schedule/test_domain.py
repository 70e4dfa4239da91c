"""Schedule rules: hospitals, departments, doctors and sessions, decided on state folded from events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from typing import Any

import pytest

from contracts import (
    Conflict,
    CreateDepartment,
    DepartmentCreated,
    DoctorRegistered,
    DoctorSessionAdded,
    Event,
    HospitalRegistered,
    InvalidInput,
    NotFound,
    Quota,
    RegisterDoctor,
    RegisterHospital,
    ScheduleSession,
    SessionScheduled,
)
from services.schedule.domain import (
    DoctorSessions,
    Entity,
    create_department,
    register_doctor,
    register_hospital,
    schedule_session,
)

pytestmark = pytest.mark.unit

TODAY = date(2025, 3, 1)
DAY = date(2025, 3, 10)


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


NOBODY = Entity()

HOSPITAL = Entity.fold(
    envelopes(
        HospitalRegistered(
            hospital_id="hb3", name="河北医科大学第三医院", level="三级甲等", address="石家庄市"
        )
    )
)
CARDIOLOGY = Entity.fold(
    envelopes(DepartmentCreated(department_id="hb3-card", hospital_id="hb3", name="心内科", parent_id=None))
)
OTHER_HOSPITALS_DEPARTMENT = Entity.fold(
    envelopes(DepartmentCreated(department_id="hb2-card", hospital_id="hb2", name="心内科", parent_id=None))
)
DR_WANG = Entity.fold(
    envelopes(
        DoctorRegistered(
            doctor_id="dr-wang",
            hospital_id="hb3",
            department_id="hb3-card",
            name="王建国",
            title="主任医师",
            specialty="冠心病",
        )
    )
)


def key(tag: str) -> str:
    return f"idem-{tag}-0001"


def slot(session_id: str, day: date, start: time, end: time) -> DoctorSessionAdded:
    return DoctorSessionAdded(doctor_id="dr-wang", session_id=session_id, date=day, start=start, end=end)


def session_cmd(
    session_id: str = "s-new",
    day: date = DAY,
    start: time = time(8, 0),
    end: time = time(11, 30),
    doctor_id: str = "dr-wang",
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
        fee=Decimal("50.00"),
    )


# --- folding -------------------------------------------------------------------------------------


def test_an_unfolded_entity_does_not_exist_and_a_folded_one_does():
    assert not Entity.fold([]).exists
    assert HOSPITAL.exists
    assert HOSPITAL.version == 1
    assert HOSPITAL.data["name"] == "河北医科大学第三医院"


def test_later_events_override_earlier_fields_and_keep_the_rest():
    doctor = Entity.fold(
        [
            *envelopes(
                DoctorRegistered(
                    doctor_id="dr-li",
                    hospital_id="hb3",
                    department_id="hb3-card",
                    name="李明",
                    title="主治医师",
                    specialty="",
                )
            ),
            FakeEnvelope("DoctorPromoted", {"title": "副主任医师"}, 2),
        ]
    )
    assert doctor.version == 2
    assert doctor.data["title"] == "副主任医师"
    assert doctor.data["name"] == "李明"


def test_doctor_sessions_fold_collects_every_slot_in_order():
    sessions = DoctorSessions.fold(
        envelopes(slot("s-1", DAY, time(8), time(12)), slot("s-2", DAY, time(14), time(17)))
    )
    assert sessions.version == 2
    assert [s[3] for s in sessions.slots] == ["s-1", "s-2"]
    assert sessions.slots[0][0] == "2025-03-10"


# --- hospitals -----------------------------------------------------------------------------------


def test_register_a_new_hospital():
    cmd = RegisterHospital(
        idempotency_key=key("h"),
        hospital_id="hb3",
        name="河北医科大学第三医院",
        address="石家庄市自强路139号",
    )
    ev = register_hospital(cmd, NOBODY)
    assert ev == HospitalRegistered(
        hospital_id="hb3", name="河北医科大学第三医院", level="三级甲等", address="石家庄市自强路139号"
    )


def test_registering_a_hospital_twice_is_a_conflict():
    cmd = RegisterHospital(idempotency_key=key("h"), hospital_id="hb3", name="河北医科大学第三医院")
    with pytest.raises(Conflict) as exc:
        register_hospital(cmd, HOSPITAL)
    assert exc.value.field == "hospital_id"


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


# --- doctors -------------------------------------------------------------------------------------


def doctor_cmd(
    doctor_id: str = "dr-zhao", department_id: str = "hb3-card", hospital_id: str = "hb3"
) -> RegisterDoctor:
    return RegisterDoctor(
        idempotency_key=key(doctor_id),
        doctor_id=doctor_id,
        hospital_id=hospital_id,
        department_id=department_id,
        name="赵丽",
        title="副主任医师",
        specialty="心律失常",
    )


def test_register_a_doctor_carries_every_field_but_the_command_envelope():
    ev = register_doctor(doctor_cmd(), CARDIOLOGY, NOBODY)
    assert ev == DoctorRegistered(
        doctor_id="dr-zhao",
        hospital_id="hb3",
        department_id="hb3-card",
        name="赵丽",
        title="副主任医师",
        specialty="心律失常",
    )


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


# --- sessions ------------------------------------------------------------------------------------

MORNING_OF_DAY = DoctorSessions.fold(envelopes(slot("s-am", DAY, time(8), time(11, 30))))


def test_scheduled_session_carries_hospital_department_and_doctor_from_the_doctor_state():
    ev = schedule_session(session_cmd(start=time(14), end=time(17)), DR_WANG, MORNING_OF_DAY, NOBODY, TODAY)
    assert isinstance(ev, SessionScheduled)
    assert (ev.hospital_id, ev.department_id, ev.doctor_id) == ("hb3", "hb3-card", "dr-wang")
    assert (ev.doctor_name, ev.doctor_title) == ("王建国", "主任医师")
    assert (ev.date, ev.start, ev.end, ev.period) == (DAY, time(14), time(17), "afternoon")
    assert ev.capacity == 30
    assert ev.quota == Quota(web=15, phone=10, window=5)
    assert ev.fee == Decimal("50.00")


def test_scheduled_session_uses_the_doctor_latest_title():
    promoted = Entity.fold(
        [
            *envelopes(
                DoctorRegistered(
                    doctor_id="dr-li",
                    hospital_id="hb3",
                    department_id="hb3-card",
                    name="李明",
                    title="主治医师",
                    specialty="",
                )
            ),
            FakeEnvelope("DoctorPromoted", {"title": "副主任医师"}, 2),
        ]
    )
    ev = schedule_session(session_cmd(doctor_id="dr-li"), promoted, DoctorSessions(), NOBODY, TODAY)
    assert ev.doctor_title == "副主任医师"


def test_session_of_an_unknown_doctor_is_not_found():
    with pytest.raises(NotFound) as exc:
        schedule_session(session_cmd(doctor_id="dr-ghost"), NOBODY, DoctorSessions(), NOBODY, TODAY)
    assert exc.value.field == "doctor_id"


def test_scheduling_an_existing_session_is_a_conflict():
    existing = Entity.fold([FakeEnvelope("SessionScheduled", {"session_id": "s-am"}, 1)])
    with pytest.raises(Conflict) as exc:
        schedule_session(session_cmd("s-am"), DR_WANG, DoctorSessions(), existing, TODAY)
    assert exc.value.field == "session_id"


def test_a_session_in_the_past_is_refused_on_date_but_today_is_allowed():
    with pytest.raises(InvalidInput) as exc:
        schedule_session(session_cmd(day=date(2025, 2, 28)), DR_WANG, DoctorSessions(), NOBODY, TODAY)
    assert exc.value.field == "date"

    ev = schedule_session(session_cmd(day=TODAY), DR_WANG, DoctorSessions(), NOBODY, TODAY)
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
        schedule_session(session_cmd(start=start, end=end), DR_WANG, MORNING_OF_DAY, NOBODY, TODAY)
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
    ev = schedule_session(session_cmd(start=start, end=end), DR_WANG, MORNING_OF_DAY, NOBODY, TODAY)
    assert (ev.start, ev.end) == (start, end)


def test_the_same_hours_on_another_day_are_allowed():
    ev = schedule_session(session_cmd(day=date(2025, 3, 11)), DR_WANG, MORNING_OF_DAY, NOBODY, TODAY)
    assert ev.date == date(2025, 3, 11)


def test_overlap_is_checked_against_every_slot_not_only_the_first():
    sessions = DoctorSessions.fold(
        envelopes(slot("s-am", DAY, time(8), time(11, 30)), slot("s-pm", DAY, time(14), time(17)))
    )
    with pytest.raises(Conflict) as exc:
        schedule_session(session_cmd(start=time(16), end=time(18)), DR_WANG, sessions, NOBODY, TODAY)
    assert "s-pm" in exc.value.message
