"""The demo history's day plan (scripts/demo_plan.py), pure: deterministic, and every action is one
the services' rules allow at its time, in the proportions the analyst page should show."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta

import pytest

from scripts import demo_plan
from scripts.demo_plan import HOSPITAL_TZ, Session
from services.booking.domain import parse_resident_id

pytestmark = pytest.mark.unit

UNTIL = date(2026, 11, 30)  # a Monday


def sessions(weeks: int = 3) -> list[Session]:
    """Two hospitals' weekly plans as schedule would publish them: release 7 days ahead at 08:00,
    cut-off the day before at 16:00, lapse an hour before the end."""
    doctors = [("h1", "h1-card", "d1", True), ("h1", "h1-card", "d2", False), ("h1", "h1-gi", "d3", False),
               ("h2", "h2-resp", "d4", True), ("h2", "h2-resp", "d5", False), ("h2", "h2-kid", "d6", False)]
    out = []
    first = UNTIL - timedelta(days=7 * weeks - 1)
    for n in range(7 * weeks):
        day = first + timedelta(days=n)
        for i, (hospital, dept, doctor, expert) in enumerate(doctors):
            if (day.weekday() + i) % 3 == 0 or day.weekday() == 6:
                continue
            morning = (day.toordinal() + i) % 2 == 0
            start, end = (time(8, 0), time(11, 30)) if morning else (time(14, 0), time(17, 0))
            at = datetime.combine(day, start, HOSPITAL_TZ)
            out.append(Session(
                session_id=f"{doctor}-{day:%Y%m%d}-{'am' if morning else 'pm'}", hospital_id=hospital,
                department_id=dept, doctor_id=doctor, day=day, period="morning" if morning else "afternoon",
                start=at, end=datetime.combine(day, end, HOSPITAL_TZ),
                opens_at=datetime.combine(day - timedelta(days=7), time(8, 0), HOSPITAL_TZ),
                closes_at=datetime.combine(day - timedelta(days=1), time(16, 0), HOSPITAL_TZ),
                lapse_at=datetime.combine(day, end, HOSPITAL_TZ) - timedelta(hours=1),
                quota={"web": 12, "phone": 6, "window": 6} if expert else {"web": 16, "phone": 8, "window": 8},
                expert=expert))
    return out


@pytest.fixture(scope="module")
def plan() -> demo_plan.Plan:
    return demo_plan.plan(sessions(), UNTIL, seed=13)


def key(p: demo_plan.Plan) -> list[tuple[object, ...]]:
    return [(a.at, a.kind, a.ref, sorted(a.data.items())) for a in p.actions]


def test_the_same_sessions_anchor_and_seed_give_the_same_plan_and_another_seed_another(plan):
    assert key(demo_plan.plan(sessions(), UNTIL, seed=13)) == key(plan)
    assert demo_plan.plan(sessions(), UNTIL, seed=13).patients == plan.patients
    assert key(demo_plan.plan(sessions(), UNTIL, seed=14)) != key(plan)


def test_actions_are_in_time_order_and_a_patient_registers_before_booking(plan):
    assert [a.at for a in plan.actions] == sorted(a.at for a in plan.actions)
    registered = {a.ref: a.at for a in plan.actions if a.kind == "register"}
    assert set(registered) == set(plan.patients)
    for a in plan.actions:
        if a.kind == "book":
            assert registered[a.data["patient"]] < a.at


def test_bookings_keep_to_the_booking_window_the_quota_and_one_place_per_patient(plan):
    by_id = {s.session_id: s for s in sessions()}
    per_channel: Counter[tuple[str, str]] = Counter()
    patients: defaultdict[str, set[str]] = defaultdict(set)
    for a in plan.actions:
        if a.kind != "book":
            continue
        s = by_id[a.data["session_id"]]
        assert s.opens_at < a.at < s.closes_at
        per_channel[(s.session_id, a.data["channel"])] += 1
        assert a.data["patient"] not in patients[s.session_id]
        patients[s.session_id].add(a.data["patient"])
    for (sid, channel), n in per_channel.items():
        assert n <= by_id[sid].quota[channel]


def test_a_patients_bookings_still_to_come_keep_the_per_patient_limits(plan):
    """At each booking: fewer than max_active still to come, at most max_per_day that day and one
    per department and day (a booking is still to come until cancelled, checked in, refunded,
    stopped, or lapsed)."""
    by_id = {s.session_id: s for s in sessions()}
    ends: dict[str, datetime] = {}
    decided = {a.data["session_id"]: a.at for a in plan.actions if a.kind in ("stop_approve",)}
    for a in plan.actions:
        if a.kind in ("cancel", "check_in", "refund") and a.ref not in ends:
            ends[a.ref] = a.at
    active: defaultdict[str, list[tuple[str, datetime, datetime]]] = defaultdict(list)
    rules = demo_plan.Rules()
    for a in plan.actions:
        if a.kind != "book":
            continue
        s = by_id[a.data["session_id"]]
        end = ends.get(a.ref, decided.get(s.session_id, s.lapse_at + timedelta(minutes=1)))
        mine = [(sid, e) for sid, b, e in active[a.data["patient"]] if b <= a.at < e]
        assert len(mine) < rules.max_active
        same_day = [sid for sid, _ in mine if by_id[sid].day == s.day]
        assert len(same_day) < rules.max_per_day
        assert all(by_id[sid].department_id != s.department_id for sid in same_day)
        active[a.data["patient"]].append((s.session_id, a.at, end))


def test_cancellations_check_ins_and_refunds_come_when_the_rules_allow_them(plan):
    by_id = {s.session_id: s for s in sessions()}
    booked = {a.ref: (a.at, by_id[a.data["session_id"]]) for a in plan.actions if a.kind == "book"}
    moved_to = {a.data["session_id"]: a.data["replacement"] for a in plan.actions
                if a.kind == "stop_approve" and a.data["replacement"]}
    for a in plan.actions:
        if a.kind == "cancel":
            at, s = booked[a.ref]
            assert at < a.at < s.closes_at
        elif a.kind in ("check_in", "refund"):
            _, s = booked[a.ref]
            visit = date.fromisoformat(moved_to[s.session_id]["date"]) if s.session_id in moved_to else s.day
            assert a.at.astimezone(HOSPITAL_TZ).date() == visit


def test_stops_are_asked_before_the_session_and_a_replacement_takes_a_free_day(plan):
    by_id = {s.session_id: s for s in sessions()}
    days = {(s.doctor_id, s.day) for s in sessions()}
    requested = {a.ref: a.at for a in plan.actions if a.kind == "stop_request"}
    decisions = [a for a in plan.actions if a.kind in ("stop_approve", "stop_reject")]
    assert len(requested) == len(decisions) == plan.stops >= 3
    assert {a.kind for a in decisions} == {"stop_approve", "stop_reject"}
    replaced = [a for a in decisions if a.kind == "stop_approve" and a.data["replacement"]]
    assert replaced and any(a.kind == "stop_approve" and not a.data["replacement"] for a in decisions)
    for a in decisions:
        s = by_id[a.data["session_id"]]
        assert requested[a.ref] < a.at < s.start
        if a.kind == "stop_approve":
            late = [b for b in plan.actions if b.kind == "book" and b.data["session_id"] == s.session_id
                    and b.at >= requested[a.ref]]
            assert late == []
    for a in replaced:
        day = date.fromisoformat(a.data["replacement"]["date"])
        assert (by_id[a.data["session_id"]].doctor_id, day) not in days and day <= UNTIL


def test_the_proportions_look_like_a_hospital(plan):
    by_id = {s.session_id: s for s in sessions()}
    books = [a for a in plan.actions if a.kind == "book"]
    released = sum(sum(s.quota.values()) for s in sessions())
    assert 0.6 <= len(books) / released <= 1.0
    per_session = Counter(a.data["session_id"] for a in books)
    experts = [s for s in sessions() if s.expert]
    sold_out = [s for s in experts if per_session[s.session_id] == sum(s.quota.values())]
    assert len(sold_out) >= len(experts) // 2
    assert {a.data["channel"] for a in books} == {"web", "phone", "window"}
    cancelled = Counter(a.data["by"] for a in plan.actions if a.kind == "cancel")
    assert cancelled["patient"] and cancelled["operator"]
    assert 0.03 <= sum(cancelled.values()) / len(books) <= 0.1
    checked = {a.ref for a in plan.actions if a.kind in ("check_in", "refund")}
    not_ended = [a for a in books if a.ref not in checked and a.ref not in {
        c.ref for c in plan.actions if c.kind == "cancel"} and by_id[a.data["session_id"]].session_id not in {
        d.data["session_id"] for d in plan.actions if d.kind == "stop_approve" and not d.data["replacement"]}]
    assert 0.04 <= len(not_ended) / len(books) <= 0.11  # the no-shows
    assert plan.count("refund") > 0 and plan.count("lapse") > 0


def test_only_the_planned_chronic_patients_miss_three_visits(plan):
    """Ordinary patients miss at most two visits (three would ban them mid-plan and refuse their
    next booking); the few planned for it miss three, and are banned."""
    assert plan.banned == 4
    done = {a.ref for a in plan.actions if a.kind in ("cancel", "check_in", "refund")}
    stopped = {a.data["session_id"] for a in plan.actions if a.kind == "stop_approve" and not a.data["replacement"]}
    missed: Counter[str] = Counter(a.data["patient"] for a in plan.actions if a.kind == "book"
                                   and a.ref not in done and a.data["session_id"] not in stopped)
    chronic = {p for p in missed if p.startswith("x")}
    assert len(chronic) == 4 and all(missed[p] == 3 for p in chronic)
    assert max(n for p, n in missed.items() if p not in chronic) <= demo_plan.NO_SHOW_CAP


def test_some_hospital_days_have_a_visit_total_and_some_have_none(plan):
    reported = {(a.data["hospital_id"], a.data["day"]) for a in plan.actions if a.kind == "visits"}
    visited = {(s.hospital_id, s.day.isoformat()) for s in sessions()}
    assert reported and reported < visited
    assert all(a.data["visits"] > 0 for a in plan.actions if a.kind == "visits")


def test_the_fake_patients_look_real_are_distinct_and_valid():
    p = demo_plan.plan(sessions(1), UNTIL, seed=5)
    ids = [x.id_number for x in p.patients.values()]
    assert len(set(ids)) == len(ids) and len({x.phone for x in p.patients.values()}) == len(ids)
    for patient in p.patients.values():
        parse_resident_id(patient.id_number)  # GB 11643 check digit, a real birth date
        assert re.fullmatch(r"1[3-9]\d{9}", patient.phone) and 2 <= len(patient.name) <= 3
