"""Every figure of stats on hand-made event sequences (tests/unit/stats/workload.py), folded as the
projection folds them (figures.fresh + figures.fold), on the in-memory store."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from contracts.schedule import Quota
from infra.eventstore import InMemoryEventStore
from services.stats import catalogue, figures
from tests.unit.stats.fakes import MemoryFigures
from tests.unit.stats.workload import (
    D1,
    D2,
    D3,
    EXPECTED_ACCOUNTS,
    EXPECTED_BOOKINGS,
    EXPECTED_SELLOUT_MINUTES,
    EXPECTED_STOPS,
    EXPECTED_TAKEN,
    HOSPITALS,
    Workload,
    at,
    standard,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def folded() -> tuple[Workload, MemoryFigures]:
    store = InMemoryEventStore()
    w = standard(store)
    m = MemoryFigures()
    m.catch_up(store, batch_size=4)  # small batches: sessions are carried from batch to batch
    return w, m


def test_bookings_by_visit_day_hospital_department_doctor_and_channel(folded):
    _, m = folded
    assert m.counts("bookings") == EXPECTED_BOOKINGS


def test_doctor_stops_with_and_without_replacement(folded):
    _, m = folded
    assert m.counts("stops") == EXPECTED_STOPS


def test_registrations_and_bans_by_the_day_in_hospital_time(folded):
    _, m = folded
    # p-x registered at 01:00 on D1 in Shijiazhuang, which is still D1 - 1 in UTC
    assert m.counts("accounts") == EXPECTED_ACCOUNTS


def test_sessions_keep_places_taken_stopped_and_the_first_sell_out(folded):
    w, m = folded
    assert {sid: s.taken for sid, s in m.sessions.items()} == EXPECTED_TAKEN
    sold = {sid: (s.sold_out_at - s.opens_at).total_seconds() / 60 for sid, s in m.sessions.items() if s.sold_out_at}
    assert sold == EXPECTED_SELLOUT_MINUTES  # s1 stays sold out at a6 though a2 was cancelled and rebooked
    assert {sid for sid, s in m.sessions.items() if s.stopped} == {"s3", "s5"}
    assert m.sessions["s2"].quota == {"web": 4, "phone": 1, "window": 0}


def test_lead_time_is_from_the_booking_to_the_session_start(folded):
    w, m = folded
    lead = m.leads["a1"]  # booked 7 days before at 09:00, the session starts at 08:00
    assert (lead.starts_at - lead.booked_at) == timedelta(days=6, hours=23)
    assert set(m.leads) == {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "b1", "b2", "c1", "c2", "c3", "d1", "d2"}
    assert (m.leads["c1"].day, m.leads["c1"].department_id) == (D2, "dept-b1")  # the session booked, not moved to


def test_latest_visit_report_of_a_day_counts(folded):
    w, m = folded
    correction = [e for e in w.envelopes if e.type == "OutpatientVisitsReported"][-1]
    assert m.visits == {(D1, "hosp-a"): (30, correction.position)}


def test_names_are_the_latest(folded):
    _, m = folded
    assert m.hospitals == HOSPITALS
    assert m.departments == {"dept-a1": ("hosp-a", "心内科"), "dept-b1": ("hosp-b", "儿科")}
    assert m.doctors["doc-b1"] == ("hosp-b", "dept-b1", "王医生")


def test_a_redelivered_batch_counts_nothing_twice(folded):
    w, m = folded
    before = copy.deepcopy((m.counts("bookings"), m.counts("stops"), m.counts("accounts"), m.sessions, m.visits))
    # the subscription hands over the last 10 events again (a redelivery after a lost commit answer)
    m.handle_batch(w.envelopes[-10:])
    m.handle_batch(w.envelopes)
    assert (m.counts("bookings"), m.counts("stops"), m.counts("accounts"), m.sessions, m.visits) == before


def test_a_redelivered_event_inside_a_new_batch_is_skipped_and_the_new_one_counted():
    store = InMemoryEventStore()
    w = standard(store)
    m = MemoryFigures()
    m.catch_up(store)
    w.book("a8", "s2", "web", at(D1 - timedelta(days=1), 9))
    booked_again = [e for e in w.envelopes if e.type == "AppointmentBooked"][-2:]  # d2 (seen) and a8 (new)
    m.handle_batch(booked_again)
    assert m.counts("bookings")[(D1, "hosp-a", "dept-a1", "doc-a2", "web")]["booked"] == 2
    assert m.counts("bookings")[(D2, "hosp-a", "dept-a1", "doc-a1", "web")]["booked"] == 2


def test_batch_boundaries_change_nothing(folded):
    w, by_four = folded
    one_by_one, all_at_once = MemoryFigures(), MemoryFigures()
    for env in w.envelopes:
        one_by_one.handle_batch([env])
    all_at_once.handle_batch(w.envelopes)
    for m in (one_by_one, all_at_once):
        assert m.counts("bookings") == by_four.counts("bookings")
        assert m.counts("stops") == by_four.counts("stops")
        assert m.sessions == by_four.sessions
        assert m.leads == by_four.leads


def test_events_stats_does_not_project_are_not_handed_over(folded):
    w, m = folded
    ignored = sum(1 for e in w.envelopes if e.type == "PatientAppointmentsChanged")
    assert ignored > 0
    assert "PatientAppointmentsChanged" not in figures.event_types()
    assert m.checkpoint == max(e.position for e in w.envelopes if e.type in figures.event_types())


def test_a_quota_change_moves_released_places_by_the_difference():
    store = InMemoryEventStore()
    w = Workload(store)
    w.session("q1", "hosp-a", "dept-a1", "doc-a1", D1, web=5, phone=3, window=2)
    w.quota("q1", 2, 3, 4, at(D1 - timedelta(days=3), 9))
    w.quota("q1", 6, 0, 4, at(D1 - timedelta(days=2), 9))
    again = w.sessions["q1"].model_copy(update={"quota": Quota(web=7, phone=1, window=2)})
    w.emit(again, "session-q1", "schedule", at(D1 - timedelta(days=1), 9))  # published again: counted once
    m = MemoryFigures()
    m.catch_up(store)
    released = {k[4]: c["released"] for k, c in m.counts("bookings").items()}
    assert released == {"web": 7, "phone": 1, "window": 2}  # the latest of 5/3/2, 2/3/4, 6/0/4, 7/1/2
    assert m.counts("stops")[(D1, "hosp-a", "dept-a1", "doc-a1")]["sessions"] == 1


def test_a_stopped_session_keeps_its_released_places(folded):
    _, m = folded
    assert m.counts("bookings")[(D2, "hosp-a", "dept-a1", "doc-a1", "web")]["released"] == 2


def test_rates_of_the_bookings_table(folded):
    _, m = folded
    by_doctor_day = m.grouped(catalogue.BOOKINGS, lambda k: (k[0], k[3]))
    s1 = by_doctor_day[(D1, "doc-a1")]  # released 6, booked 7, 1 cancelled, 2 no-shows
    assert (s1["released"], s1["booked"], s1["cancelled"], s1["no_show"]) == (6, 7, 1, 2)
    assert s1["utilisation"] == round(7 / 6, 4)
    assert s1["no_show_rate"] == round(2 / 7, 4)
    assert s1["cancellation_rate"] == round(1 / 7, 4)
    replacement = by_doctor_day[(D3, "doc-b1")]  # only moved-in bookings: nothing booked there
    assert replacement["utilisation"] == 0.0
    assert replacement["no_show_rate"] is None and replacement["cancellation_rate"] is None
    total = m.grouped(catalogue.BOOKINGS, lambda k: ())[()]
    cancellations = total["cancelled_patient"] + total["cancelled_operator"] + total["cancelled_hospital"]
    assert (cancellations, total["booked"], total["refunded"], total["moved"]) == (5, 14, 1, 2)
    assert total["cancellation_rate"] == round(5 / 14, 4)  # refunds and moves are not cancellations


def test_stop_rate_is_stopped_sessions_over_sessions(folded):
    _, m = folded
    by_hospital = m.grouped(catalogue.STOPS, lambda k: k[1])
    assert by_hospital["hosp-a"]["stop_rate"] == round(1 / 4, 4)
    assert by_hospital["hosp-b"]["stop_rate"] == 0.5
    assert by_hospital["hosp-b"]["affected_moved"] == 2


def test_rate_rounds_to_four_places_and_has_no_value_without_a_denominator():
    assert catalogue.rate(1, 3) == 0.3333
    assert catalogue.rate(5, 0) is None
    assert catalogue.rate(5, None) is None
    assert catalogue.rate(0, 7) == 0.0


def test_booking_share_says_no_data_where_no_total_was_reported():
    row = {"booked_web": 5, "booked_phone": 3, "booked_window": 1, "checked_in": 3, "checked_in_reported": 0,
           "visits": None, "days_without_report": 1}
    finished = catalogue.finish(catalogue.SHARE, row)
    assert finished["booking_share"] is None
    assert finished["phone_share"] == 0.375  # phone ÷ (phone + web): the window does not count
    reported = catalogue.finish(catalogue.SHARE, {**row, "checked_in_reported": 3, "visits": 30})
    assert reported["booking_share"] == 0.1
    zero = catalogue.finish(catalogue.SHARE, {**row, "checked_in_reported": 0, "visits": 0})
    assert zero["booking_share"] is None


def test_every_table_column_is_counted_or_derived():
    for t in catalogue.TABLES.values():
        keys = [c.key for c in t.columns(t.dims)]
        assert len(keys) == len(set(keys)), t.name
    assert {c.key for c in catalogue.BOOKINGS.counts} == set(figures.BOOKING_COUNTS)
    assert {c.key for c in catalogue.STOPS.counts} == set(figures.STOP_COUNTS)
    assert {c.key for c in catalogue.ACCOUNTS.counts} == set(figures.ACCOUNT_COUNTS)
