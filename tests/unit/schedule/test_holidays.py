"""Holidays that stop published sessions through the doctor-stop path, cancelled holidays, the
holiday preview, the replacement session of a doctor stop (its fee), and who may change a
hospital's own settings. Decisions on folded state, pure; the handlers' single append is in
test_handlers.py."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from contracts import (
    Actor,
    CancelHoliday,
    ChangeBookingRules,
    Conflict,
    DeclareHoliday,
    DoctorStopApproved,
    DoctorStopRequested,
    Forbidden,
    HolidayCancelled,
    HolidayDeclared,
    NotFound,
    PlanSlot,
    RegisterHospital,
    ReplacementSession,
    SessionScheduled,
    SetWeeklyPlan,
    UpdateHospital,
)
from contracts.schedule import BookingRules
from services.schedule import domain
from services.schedule.domain import HOSPITAL_TZ, Entity, Hospital
from tests.unit.schedule.test_domain import (
    ADMIN,
    CARD,
    DAY,
    HB3,
    HOSPITAL,
    LI,
    NOW,
    OTHER_ADMIN,
    ZHOU,
    History,
    approve,
    envelopes,
    hospital_history,
    key,
    plan_slot,
    session_cmd,
    stop_request,
)

pytestmark = pytest.mark.unit

PLATFORM = Actor(kind="platform_admin", id="ops")
HIS_SYNC = Actor(kind="service", id="his-sync")


def holiday(confirm: int | None = None, day: date = DAY, name: str = "院庆", actor: Actor = ADMIN) -> DeclareHoliday:
    return DeclareHoliday(idempotency_key=key("holiday"), hospital_id="hb3", date=day, name=name,
                          confirm_stops=confirm, actor=actor)


def day_of_sessions() -> History:
    """On DAY: s-am (王, 08:00), s-pm (李, 14:00), s-zhou (周, 08:00, already stopped); s-next the day after."""
    h = hospital_history()
    for session_id, doctor, day, start, end in (
            ("s-am", "dr-wang", DAY, time(8), time(11, 30)), ("s-pm", "dr-li", DAY, time(14), time(17)),
            ("s-zhou", "dr-zhou", DAY, time(8), time(11, 30)),
            ("s-next", "dr-wang", date(2025, 3, 11), time(8), time(11, 30))):
        w = h.world()
        domain.stage_one_off_session(w, session_cmd(session_id, day=day, start=start, end=end, doctor_id=doctor,
                                                    fee=None), NOW)
        h.commit(w)
    w = h.world()
    h.add("session-s-zhou", domain.request_doctor_stop(stop_request("s-zhou"), w.session("s-zhou"), NOW))
    w = h.world()
    domain.approve_doctor_stop(w, approve().model_copy(update={"session_id": "s-zhou", "stop_id": "s-zhou.stop1"}),
                               NOW)
    h.commit(w)
    return h


ALL_IDS = ["s-am", "s-pm", "s-zhou", "s-next"]  # a hint may name more than the day holds: each is checked


# --- declaring a holiday stops the day's published sessions ----------------------------------------


def test_a_confirmed_holiday_stops_each_published_session_of_the_day_as_a_doctor_stop_does():
    h = day_of_sessions()
    w = h.world()
    ev = domain.stage_holiday(w, holiday(confirm=2), NOW, ALL_IDS)
    assert ev == HolidayDeclared(hospital_id="hb3", date=DAY, name="院庆", stopped_session_ids=["s-am", "s-pm"])
    assert [(s, type(e).__name__) for s, e in w.staged] == [
        ("session-s-am", "DoctorStopRequested"), ("session-s-am", "DoctorStopApproved"),
        ("session-s-pm", "DoctorStopRequested"), ("session-s-pm", "DoctorStopApproved"),
        ("hospital-hb3", "HolidayDeclared"),  # last: its position is past every stop
    ]
    assert w.staged[0][1] == DoctorStopRequested(stop_id="s-am.stop1", session_id="s-am", hospital_id="hb3",
                                                 reason="节假日：院庆", requested_by="admin-hb3")
    assert w.staged[1][1] == DoctorStopApproved(stop_id="s-am.stop1", session_id="s-am", hospital_id="hb3",
                                                reason="节假日：院庆", approved_by="admin-hb3",
                                                replacement_session_id=None)
    h.commit(w)
    after = h.world()
    assert [after.session(s).state for s in ALL_IDS] == ["stopped", "stopped", "stopped", "scheduled"]
    assert after.hospital("hb3").holidays == {DAY: "院庆"}


@pytest.mark.parametrize("confirm", [None, 1, 3], ids=["not-confirmed", "too-few", "too-many"])
def test_a_holiday_not_confirmed_with_the_number_it_stops_is_refused_saying_how_many(confirm):
    w = day_of_sessions().world()
    with pytest.raises(Conflict) as exc:
        domain.stage_holiday(w, holiday(confirm=confirm), NOW, ALL_IDS)
    assert (exc.value.code, exc.value.field, exc.value.status) == ("confirm_holiday_stops", "confirm_stops", 409)
    chinese, english = exc.value.message.split(" / ")
    assert "2 个已发布的出诊" in chinese and "would stop 2 published sessions" in english
    assert w.staged == []


def test_a_holiday_on_a_day_without_published_sessions_needs_no_confirmation_but_a_wrong_one_is_refused():
    h = day_of_sessions()
    empty = date(2025, 3, 12)
    w = h.world()
    assert domain.stage_holiday(w, holiday(day=empty), NOW, ALL_IDS) == HolidayDeclared(
        hospital_id="hb3", date=empty, name="院庆")
    assert [s for s, _ in w.staged] == ["hospital-hb3"]
    assert domain.stage_holiday(h.world(), holiday(confirm=0, day=empty), NOW, []) is not None
    with pytest.raises(Conflict) as exc:
        domain.stage_holiday(h.world(), holiday(confirm=1, day=empty), NOW, [])
    assert exc.value.code == "confirm_holiday_stops" and "stop 0" in exc.value.message


def test_a_session_that_has_begun_is_left_to_be_seen_and_not_counted():
    during_the_morning = datetime(2025, 3, 10, 9, 0, tzinfo=HOSPITAL_TZ)
    w = day_of_sessions().world()
    ev = domain.stage_holiday(w, holiday(confirm=1), during_the_morning, ALL_IDS)
    assert ev is not None and ev.stopped_session_ids == ["s-pm"]


def test_a_pending_stop_request_is_rejected_as_superseded_and_the_holiday_stop_decides_the_session():
    h = day_of_sessions()
    h.add("session-s-am", domain.request_doctor_stop(stop_request("s-am"), h.world().session("s-am"), NOW))
    w = h.world()
    domain.stage_holiday(w, holiday(confirm=2), NOW, ALL_IDS)
    assert [type(e).__name__ for s, e in w.staged if s == "session-s-am"] == [
        "DoctorStopRejected", "DoctorStopRequested", "DoctorStopApproved"]
    h.commit(w)
    session = h.world().session("s-am")
    assert (session.state, session.pending_stop) == ("stopped", None)
    assert [(s["stop_id"], s["state"], s["reason"]) for s in session.stops] == [
        ("s-am.stop1", "rejected", "外出会诊"), ("s-am.stop2", "approved", "节假日：院庆")]


def test_a_day_already_declared_stops_nothing_when_renamed_and_a_repeat_changes_nothing():
    h = day_of_sessions()
    w = h.world()
    domain.stage_holiday(w, holiday(confirm=2), NOW, ALL_IDS)
    h.commit(w)
    # A one-off the admin then publishes on the holiday (a holiday clinic) is meant to be held.
    w = h.world()
    domain.stage_one_off_session(w, session_cmd("s-clinic", day=DAY, start=time(18), end=time(20), fee=None), NOW)
    h.commit(w)
    ids = [*ALL_IDS, "s-clinic"]
    assert domain.stage_holiday(h.world(), holiday(confirm=2), NOW, ids) is None  # same name: nothing to change
    w = h.world()
    renamed = domain.stage_holiday(w, holiday(name="建院七十周年"), NOW, ids)
    assert renamed == HolidayDeclared(hospital_id="hb3", date=DAY, name="建院七十周年")
    assert [s for s, _ in w.staged] == ["hospital-hb3"]


def test_a_stale_hint_naming_sessions_of_another_day_or_hospital_stops_only_the_day_s_own():
    h = day_of_sessions()
    same_day_elsewhere = SessionScheduled.model_validate(
        {**h.world().session("s-am").data, "session_id": "s-far", "hospital_id": "hb2", "doctor_id": "dr-far"})
    h.add("session-s-far", same_day_elsewhere)
    w = h.world()
    ev = domain.stage_holiday(w, holiday(confirm=2), NOW, [*ALL_IDS, "s-far", "s-ghost", "s-am"])
    assert ev is not None and ev.stopped_session_ids == ["s-am", "s-pm"]


@pytest.mark.parametrize("actor", [HIS_SYNC, Actor(kind="system", id="platform")], ids=["his-sync", "system"])
def test_stopping_sessions_is_a_stop_decision_an_admin_makes(actor):
    h = day_of_sessions()
    with pytest.raises(Forbidden) as exc:
        domain.stage_holiday(h.world(), holiday(confirm=2, actor=actor), NOW, ALL_IDS)
    assert exc.value.field == "actor"
    # A holiday that stops nothing is the schedule change it always was.
    assert domain.stage_holiday(h.world(), holiday(day=date(2025, 3, 12), actor=actor), NOW, ALL_IDS) is not None
    assert domain.stage_holiday(h.world(), holiday(confirm=2, actor=PLATFORM), NOW, ALL_IDS) is not None


def test_a_holiday_of_another_hospital_is_forbidden_and_of_an_unknown_one_not_found():
    with pytest.raises(Forbidden):
        domain.stage_holiday(day_of_sessions().world(), holiday(confirm=2, actor=OTHER_ADMIN), NOW, ALL_IDS)
    with pytest.raises(NotFound) as exc:
        domain.stage_holiday(History().world(), holiday(), NOW, [])
    assert exc.value.field == "hospital_id"


# --- cancelling a holiday ------------------------------------------------------------------------


def cancel(day: date = DAY, actor: Actor = ADMIN) -> CancelHoliday:
    return CancelHoliday(idempotency_key=key("cancel"), hospital_id="hb3", date=day, actor=actor)


def test_a_cancelled_holiday_is_a_working_day_again_for_the_plan_and_what_it_stopped_stays_stopped():
    h = day_of_sessions()
    h.add("doctor-dr-li", domain.set_weekly_plan(
        plan_cmd("dr-li", [plan_slot(1, time(8), time(11, 30))]), h.world().doctor("dr-li")))
    w = h.world()
    domain.stage_holiday(w, holiday(confirm=2), NOW, ALL_IDS)
    h.commit(w)
    held = h.world()
    summary = domain.generate_sessions(held, "hb3", ["dr-li"], DAY, DAY, NOW, ADMIN)
    assert summary.session_ids == [] and "院庆" in summary.skipped[0].reason

    ev = domain.cancel_holiday(cancel(), h.world().hospital("hb3"))
    assert ev == HolidayCancelled(hospital_id="hb3", date=DAY)
    h.add("hospital-hb3", ev)
    assert h.world().hospital("hb3").holidays == {}
    w = h.world()
    assert domain.generate_sessions(w, "hb3", ["dr-li"], DAY, DAY, NOW, ADMIN).session_ids == ["dr-li-20250310-am"]
    h.commit(w)
    assert [h.world().session(s).state for s in ("s-am", "s-pm")] == ["stopped", "stopped"]


def plan_cmd(doctor_id: str, slots: list[PlanSlot]) -> SetWeeklyPlan:
    return SetWeeklyPlan(idempotency_key=key("plan"), doctor_id=doctor_id, slots=slots, actor=ADMIN)


def test_cancelling_a_day_that_is_no_holiday_is_not_found_and_another_hospital_s_is_forbidden():
    hospital = Hospital.fold(envelopes(HB3, HolidayDeclared(hospital_id="hb3", date=DAY, name="院庆")))
    with pytest.raises(NotFound) as exc:
        domain.cancel_holiday(cancel(date(2025, 3, 11)), hospital)
    assert exc.value.field == "date"
    with pytest.raises(Forbidden):
        domain.cancel_holiday(cancel(actor=OTHER_ADMIN), hospital)
    with pytest.raises(NotFound) as unknown:
        domain.cancel_holiday(cancel(), Hospital())
    assert unknown.value.field == "hospital_id"
    # Declared again after a cancellation, the fold holds it again.
    again = Hospital.fold(envelopes(HB3, HolidayDeclared(hospital_id="hb3", date=DAY, name="院庆"),
                                    HolidayCancelled(hospital_id="hb3", date=DAY),
                                    HolidayDeclared(hospital_id="hb3", date=DAY, name="补假")))
    assert again.holidays == {DAY: "补假"}


# --- the preview ---------------------------------------------------------------------------------


def row(session_id: str, start: str, state: str = "scheduled") -> dict[str, Any]:
    return {"session_id": session_id, "doctor_id": "dr-wang", "doctor_name": "王建国", "department_id": "hb3-card",
            "period": "morning" if start < "12:00" else "afternoon", "start": start, "end": "17:00", "state": state}


HOSPITAL_ROW = {"hospital_id": "hb3", "name": "河北医科大学第三医院", "holidays": []}


def test_the_preview_lists_what_the_holiday_would_stop_in_the_shape_the_gateway_shows():
    rows = [row("s-pm", "14:00"), row("s-am", "08:00"), row("s-stopped", "08:00", "stopped"),
            row("s-moved", "09:00", "replaced")]
    during_the_morning = datetime(2025, 3, 10, 9, 0, tzinfo=HOSPITAL_TZ)
    preview = domain.holiday_preview(ADMIN, "hb3", DAY, HOSPITAL_ROW, rows, NOW)
    assert preview == {"hospital_id": "hb3", "date": "2025-03-10", "declared": None, "sessions": [
        {k: v for k, v in row("s-am", "08:00").items() if k != "state"},
        {k: v for k, v in row("s-pm", "14:00").items() if k != "state"}]}
    later = domain.holiday_preview(ADMIN, "hb3", DAY, HOSPITAL_ROW, rows, during_the_morning)
    assert [s["session_id"] for s in later["sessions"]] == ["s-pm"]


def test_the_preview_of_a_day_already_declared_stops_nothing_and_is_scoped_like_a_change():
    declared = {**HOSPITAL_ROW, "holidays": [{"date": "2025-03-10", "name": "院庆"}]}
    preview = domain.holiday_preview(ADMIN, "hb3", DAY, declared, [row("s-am", "08:00")], NOW)
    assert (preview["declared"], preview["sessions"]) == ("院庆", [])
    for actor in (OTHER_ADMIN, Actor(kind="patient", id="p-1"), Actor(kind="clerk", id="c", hospital_id="hb3")):
        with pytest.raises(Forbidden):
            domain.holiday_preview(actor, "hb3", DAY, HOSPITAL_ROW, [], NOW)
    with pytest.raises(NotFound):
        domain.holiday_preview(PLATFORM, "hb9", DAY, None, [], NOW)


def test_the_preview_and_the_declaration_count_the_same_sessions():
    h = day_of_sessions()
    w = h.world()
    rows = [{"session_id": s, "doctor_id": w.session(s).data["doctor_id"], "doctor_name": "",
             "department_id": "hb3-card", "period": w.session(s).data["period"], "start": w.session(s).data["start"],
             "end": w.session(s).data["end"], "state": w.session(s).state}
            for s in ALL_IDS if w.session(s).data["date"] == DAY.isoformat()]
    preview = domain.holiday_preview(ADMIN, "hb3", DAY, HOSPITAL_ROW, rows, NOW)
    ev = domain.stage_holiday(w, holiday(confirm=len(preview["sessions"])), NOW, ALL_IDS)
    assert ev is not None
    assert sorted(s["session_id"] for s in preview["sessions"]) == ev.stopped_session_ids


# --- a doctor stop's replacement session (补诊) and fees --------------------------------------------


def test_the_replacement_session_carries_a_fee_and_the_stopped_session_keeps_its_own():
    """Booking moves each booking with the fee it was booked at (AppointmentMoved.fee = the booking's);
    the replacement's own fee is for the bookings made on it, and schedule changes no booked fee."""
    h = hospital_history()
    w = h.world()
    domain.stage_one_off_session(w, session_cmd("s-1", fee=Decimal("50.00")), NOW)  # a fee given for the session
    h.commit(w)
    h.add("session-s-1", domain.request_doctor_stop(stop_request(), h.world().session("s-1"), NOW))
    w = h.world()
    replacement = ReplacementSession(doctor_id="dr-li", date=date(2025, 3, 11), period="afternoon", start=time(14),
                                     end=time(17), session_id="s-1-li")
    approved = domain.approve_doctor_stop(w, approve(replacement), NOW)
    published, added, decided = (e for _, e in w.staged)
    assert isinstance(published, SessionScheduled)
    assert (published.session_id, published.replaces_session_id, published.doctor_id, published.fee) == (
        "s-1-li", "s-1", "dr-li", Decimal("30.00"))  # the hospital's 主任医师 fee: for new bookings on it
    assert (published.capacity, published.quota.total()) == (30, 30)
    assert (added.session_id, added.doctor_id) == ("s-1-li", "dr-li")  # type: ignore[attr-defined]
    assert decided is approved and approved.replacement_session_id == "s-1-li"
    h.commit(w)
    assert h.world().session("s-1").data["fee"] == "50.00"  # what its patients booked at, untouched


def test_a_replacement_colleague_of_another_clinic_type_gets_that_fee_class_and_without_a_fee_table_the_old_fee():
    h = hospital_history()
    h.add("doctor-dr-li", LI.model_copy(update={"clinic_type": "general"}))  # a 主任医师 seeing general patients
    w = h.world()
    domain.stage_one_off_session(w, session_cmd("s-1", fee=None), NOW)
    h.commit(w)
    h.add("session-s-1", domain.request_doctor_stop(stop_request(), h.world().session("s-1"), NOW))
    w = h.world()
    domain.approve_doctor_stop(w, approve(ReplacementSession(doctor_id="dr-li", date=DAY, period="afternoon",
                                                             start=time(14), end=time(17))), NOW)
    published = w.staged[0][1]
    assert isinstance(published, SessionScheduled) and published.fee == Decimal("6.00")  # 普通门诊

    bare = History().add("hospital-hb3", HB3).add("department-hb3-card", CARD).add("doctor-dr-zhou", ZHOU)
    w = bare.world()  # fees given per session, none in the hospital's table
    domain.stage_one_off_session(w, session_cmd("s-z", doctor_id="dr-zhou", fee=Decimal("12.50")), NOW)
    bare.commit(w)
    bare.add("session-s-z", domain.request_doctor_stop(stop_request("s-z"), bare.world().session("s-z"), NOW))
    w = bare.world()
    domain.approve_doctor_stop(w, approve(ReplacementSession(date=DAY, period="afternoon", start=time(14),
                                                             end=time(17))).model_copy(
        update={"session_id": "s-z", "stop_id": "s-z.stop1"}), NOW)
    published = w.staged[0][1]
    assert isinstance(published, SessionScheduled) and published.fee == Decimal("12.50")


# --- who may change a hospital's own settings ----------------------------------------------------


@pytest.mark.parametrize("actor", [ADMIN, Actor(kind="clerk", id="c", hospital_id="hb3"), HIS_SYNC,
                                   Actor(kind="patient", id="p"), Actor(kind="operator", id="o")],
                         ids=["hospital-admin", "clerk", "his-sync", "patient", "operator"])
def test_only_the_platform_registers_a_hospital(actor):
    cmd = RegisterHospital(idempotency_key=key("h"), hospital_id="hb9", name="九院", actor=actor)
    with pytest.raises(Forbidden) as exc:
        domain.register_hospital(cmd, Entity())
    assert exc.value.field == "actor"
    for allowed in (PLATFORM, Actor(kind="system", id="platform")):  # the platform's admin, or its own import
        assert domain.register_hospital(cmd.model_copy(update={"actor": allowed}), Entity()).hospital_id == "hb9"


@pytest.mark.parametrize("actor", [OTHER_ADMIN, Actor(kind="hospital_admin", id="a-none"),
                                   Actor(kind="clerk", id="c", hospital_id="hb3"),
                                   Actor(kind="doctor", id="d", hospital_id="hb3"), HIS_SYNC,
                                   Actor(kind="patient", id="p")],
                         ids=["admin-of-another-hospital", "admin-without-hospital", "clerk", "doctor", "his-sync",
                              "patient"])
def test_a_hospital_s_details_and_booking_rules_are_changed_by_its_own_admin_or_the_platform(actor):
    details = UpdateHospital(idempotency_key=key("u"), hospital_id="hb3", name="河北医科大学第三医院（新）",
                             actor=actor)
    rules = ChangeBookingRules(idempotency_key=key("r"), hospital_id="hb3", rules=BookingRules(release_days=14),
                               actor=actor)
    with pytest.raises(Forbidden) as exc:
        domain.update_hospital(details, HOSPITAL)
    assert exc.value.field == "actor"
    with pytest.raises(Forbidden):
        domain.change_booking_rules(rules, HOSPITAL)
    for allowed in (ADMIN, PLATFORM):
        assert domain.update_hospital(details.model_copy(update={"actor": allowed}), HOSPITAL) is not None
        assert domain.change_booking_rules(rules.model_copy(update={"actor": allowed}), HOSPITAL) is not None
