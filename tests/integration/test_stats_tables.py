"""stats on PostgreSQL: the projection of a real store into its tables, and the RPC answers read
from them (tests/unit/stats/workload.py is the workload, with its figures known)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest

from infra.db import Database, apply_schema, drop_database, ensure_database
from infra.eventstore import CatchUpSubscription, PostgresEventStore
from infra.projections import PROJECTION_SCHEMA, Projection
from infra.settings import pg_dsn
from services.stats import figures, readmodel, rebuild
from services.stats.service import StatsService
from tests.unit.stats.workload import (
    D1,
    D2,
    D3,
    EXPECTED_ACCOUNTS,
    EXPECTED_BOOKINGS,
    EXPECTED_STOPS,
    HOSPITALS,
    standard,
)

pytestmark = pytest.mark.integration
WEEK = {"from": "2025-03-09", "to": "2025-03-15"}


def figures_db(dsn: str) -> Database:
    ensure_database(dsn)
    db = Database(dsn, size=2)
    apply_schema(db, PROJECTION_SCHEMA + readmodel.SCHEMA)
    return db


def catch_up(projection: Projection, batch_size: int) -> None:
    CatchUpSubscription(projection.store, projection.handle_batch, projection.load_checkpoint,
                        batch_size=batch_size, types=projection.projector.types).catch_up()


@pytest.fixture(scope="module")
def live():
    """The standard workload in a real store, projected (batches of 3) into a real stats database."""
    tag = uuid.uuid4().hex[:8]
    store = PostgresEventStore(pg_dsn(f"stats_t_events_{tag}"), pool_size=2)
    store.setup()
    db = figures_db(pg_dsn(f"stats_t_figures_{tag}"))
    workload = standard(store)
    projection = readmodel.FiguresProjection(readmodel.PROJECTOR, store, db)
    catch_up(projection, batch_size=3)
    service = StatsService()
    service.db = db
    service.figures = projection
    service.now = lambda: datetime.now(UTC)
    yield service, workload
    db.close()
    store.close()
    drop_database(db.dsn)
    drop_database(store.dsn)


def answer(service: StatsService, name: str, **query: Any) -> dict[str, Any]:
    result = service.table(name, {**WEEK, **query})
    assert "domain_error" not in result, result
    return result


def test_bookings_at_the_finest_grain_are_the_expected_counts(live):
    service, _ = live
    result = answer(service, "bookings", group_by=["day", "hospital", "department", "doctor", "channel"])
    got = {(r["day"], r["hospital_id"], r["department_id"], r["doctor_id"], r["channel"]):
           {k: r[k] for k in figures.BOOKING_COUNTS} for r in result["rows"]}
    assert got == {(k[0].isoformat(), *k[1:]): v for k, v in EXPECTED_BOOKINGS.items()}
    first = result["rows"][0]
    assert (first["hospital_name"], first["department_name"]) == (HOSPITALS["hosp-a"], "心内科")
    assert [c["key"] for c in result["columns"]][:8] == ["day", "hospital_id", "hospital_name", "department_id",
                                                         "department_name", "doctor_id", "doctor_name", "channel"]


def test_rows_are_summed_by_the_dims_asked_for_with_rates(live):
    service, _ = live
    result = answer(service, "bookings", group_by=["hospital"])
    hosp_a = next(r for r in result["rows"] if r["hospital_id"] == "hosp-a")
    # hosp-a: released 6 + 5 + 2 + 1 = 14, booked 7 + 2 + 2 = 11; cancelled 1 + 1 + 2; no-shows 2
    assert (hosp_a["released"], hosp_a["booked"], hosp_a["cancelled"], hosp_a["no_show"]) == (14, 11, 4, 2)
    assert hosp_a["utilisation"] == round(11 / 14, 4)
    assert hosp_a["no_show_rate"] == round(2 / 11, 4)
    assert hosp_a["cancellation_rate"] == round(4 / 11, 4)
    assert result["query"] == {**WEEK, "group_by": ["hospital"]}
    total = answer(service, "bookings", group_by=[])["rows"]
    assert len(total) == 1 and total[0]["booked"] == 14


def test_filters_narrow_the_rows(live):
    service, _ = live
    phone = answer(service, "bookings", channel="phone", group_by=["channel"])["rows"]
    assert [(r["channel"], r["booked"]) for r in phone] == [("phone", 4)]
    one_day = service.table("bookings", {"from": "2025-03-10", "to": "2025-03-10", "hospital_id": "hosp-a",
                                         "group_by": ["doctor"]})
    assert {r["doctor_id"]: r["booked"] for r in one_day["rows"]} == {"doc-a1": 7, "doc-a2": 2}
    nothing = service.table("bookings", {"from": "2024-01-01", "to": "2024-01-31", "group_by": ["day"]})
    assert nothing["rows"] == []


def test_stops(live):
    service, _ = live
    result = answer(service, "stops", group_by=["day", "hospital", "department", "doctor"])
    got = {(r["day"], r["hospital_id"], r["department_id"], r["doctor_id"]):
           {k: r[k] for k in figures.STOP_COUNTS} for r in result["rows"]}
    assert got == {(k[0].isoformat(), *k[1:]): v for k, v in EXPECTED_STOPS.items()}
    by_hospital = {r["hospital_id"]: r for r in answer(service, "stops")["rows"]}
    assert by_hospital["hosp-a"]["stop_rate"] == 0.25 and by_hospital["hosp-b"]["stop_rate"] == 0.5
    assert (by_hospital["hosp-b"]["affected_moved"], by_hospital["hosp-b"]["affected_cancelled"]) == (2, 1)


def test_sellout_and_lead_time_percentiles_per_department(live):
    service, workload = live
    rows = {r["department_id"]: r for r in answer(service, "sellout")["rows"]}
    a1 = rows["dept-a1"]
    # s1 sold out after 210 min, s5 after 2 min; s2 and s6 never: percentile_cont over the two
    assert (a1["sessions"], a1["sold_out"]) == (4, 2)
    assert a1["sellout_median_minutes"] == 106.0
    assert a1["sellout_p90_minutes"] == round(2 + 0.9 * 208, 2)
    assert a1["department_name"] == "心内科" and a1["hospital_name"] == HOSPITALS["hosp-a"]
    b1 = rows["dept-b1"]
    assert (b1["sessions"], b1["sold_out"], b1["sellout_median_minutes"]) == (2, 0, None)
    assert b1["bookings"] == 3
    leads = sorted((e.data["appointment_id"], e.occurred_at) for e in workload.envelopes
                   if e.type == "AppointmentBooked" and e.data["department_id"] == "dept-b1")
    starts = datetime.fromisoformat("2025-03-11T08:00:00+08:00")
    days = sorted((starts - at).total_seconds() / 86400 for _, at in leads)
    assert b1["lead_median_days"] == round(days[1], 2)
    total = answer(service, "sellout", group_by=[])["rows"]
    assert len(total) == 1 and total[0]["sessions"] == 6 and total[0]["bookings"] == 14


def test_accounts_by_day(live):
    service, _ = live
    rows = answer(service, "accounts")["rows"]
    assert {r["day"]: {"registrations": r["registrations"], "bans": r["bans"]} for r in rows} == {
        d.isoformat(): v for d, v in EXPECTED_ACCOUNTS.items()}


def test_share_uses_the_latest_visit_total_and_says_no_data_without_one(live):
    service, _ = live
    rows = {(r["day"], r["hospital_id"]): r for r in answer(service, "share")["rows"]}
    a_d1 = rows[(D1.isoformat(), "hosp-a")]
    assert (a_d1["booked_web"], a_d1["booked_phone"], a_d1["booked_window"]) == (5, 3, 1)
    assert a_d1["phone_share"] == 0.375
    assert (a_d1["checked_in"], a_d1["visits"], a_d1["booking_share"]) == (3, 30, 0.1)  # the correction counts
    a_d2 = rows[(D2.isoformat(), "hosp-a")]
    assert (a_d2["visits"], a_d2["booking_share"], a_d2["days_without_report"]) == (None, None, 1)
    assert (D3.isoformat(), "hosp-b") in rows  # the replacement day: moved-in bookings, nothing booked
    by_hospital = {r["hospital_id"]: r for r in answer(service, "share", group_by=["hospital"])["rows"]}
    # over the week hosp-a reported one day of two: the share is over that day only
    assert (by_hospital["hosp-a"]["visits"], by_hospital["hosp-a"]["checked_in_reported"],
            by_hospital["hosp-a"]["booking_share"], by_hospital["hosp-a"]["days_without_report"]) == (30, 3, 0.1, 1)
    assert by_hospital["hosp-b"]["booking_share"] is None


def test_the_answer_carries_the_position_it_was_read_at(live):
    service, workload = live
    assert answer(service, "accounts")["position"] == workload.envelopes[-1].position


def test_a_bad_query_is_a_wire_error_naming_the_field(live):
    service, _ = live
    for name, query, field in (("nope", WEEK, "table"), ("bookings", {"from": "2025-03-09", "to": "x"}, "to"),
                               ("bookings", {**WEEK, "group_by": ["week"]}, "group_by")):
        error = service.table(name, query)["domain_error"]
        assert (error["code"], error["field"], error["status"]) == ("invalid_input", field, 400)
    assert service.table_csv("bookings", {"from": "2025-03-15", "to": "2025-03-09"})["domain_error"]["field"] == "to"


def test_csv_is_the_same_rows(live):
    service, _ = live
    query = {**WEEK, "group_by": ["day", "hospital"]}
    text = service.table_csv("share", query)
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert text.startswith("\ufeff")
    assert rows[0][:3] == ["日期 day", "医院编号 hospital id", "医院 hospital"]
    data = service.table("share", query)["rows"]
    assert len(rows) == len(data) + 1
    assert rows[1][:3] == [data[0]["day"], data[0]["hospital_id"], data[0]["hospital_name"]]


def test_tables_summary_and_lag(live):
    service, workload = live
    assert [t["name"] for t in service.tables()] == ["bookings", "stops", "sellout", "accounts", "share"]
    summary = service.summary()
    assert summary["metrics"]["booked"] == {"web": 9, "phone": 4, "window": 1}
    assert summary["position"] == workload.envelopes[-1].position
    lag = service.lag()["projections"]
    assert lag == [{"name": readmodel.NAME, "position": workload.envelopes[-1].position,
                    "head": workload.envelopes[-1].position, "behind": 0, "seconds_behind": 0}]


def test_one_event_at_a_time_through_the_kernel_gives_the_same_tables(live, fresh_dsn):
    """The kernel's own Projection (Projector.apply per event) against the batch projection."""
    service, _ = live
    db = figures_db(fresh_dsn("stats_kernel"))
    try:
        catch_up(Projection(readmodel.PROJECTOR, service.figures.store, db), batch_size=1000)
        a, b = psycopg2.connect(service.db.dsn), psycopg2.connect(db.dsn)
        try:
            differences, rows = rebuild.compare(a, b)
        finally:
            a.close()
            b.close()
        assert differences == [] and rows > 40
    finally:
        db.close()
