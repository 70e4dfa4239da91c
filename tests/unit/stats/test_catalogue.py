"""The RPC contract's pure half: which tables, the query each accepts (and the refusals, each
naming its field), CSV for Excel, and projection lag on the in-memory store."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from contracts import InvalidInput
from infra.eventstore import InMemoryEventStore
from services.stats import catalogue, figures, readmodel
from tests.unit.stats.workload import D1, Workload, at, standard

pytestmark = pytest.mark.unit


def test_tables_lists_the_five_tables_with_their_dims():
    described = {t["name"]: t for t in catalogue.describe()}
    assert list(described) == ["bookings", "stops", "sellout", "accounts", "share"]
    assert described["bookings"]["dims"] == ["day", "hospital", "department", "doctor", "channel"]
    assert described["stops"]["dims"] == ["day", "hospital", "department", "doctor"]
    assert described["sellout"]["dims"] == ["hospital", "department"]
    assert described["accounts"]["dims"] == ["day"]
    assert described["share"]["dims"] == ["day", "hospital"]
    for t in described.values():
        assert set(t) == {"name", "zh", "en", "dims", "default_group_by"}
        assert set(t["default_group_by"]) <= set(t["dims"])


def test_a_query_is_normalized():
    t, q = catalogue.parse("bookings", {"from": "2025-03-01", "to": "2025-03-31", "hospital_id": "hosp-a",
                                        "channel": "phone", "group_by": ["channel", "day", "day"]})
    assert t is catalogue.BOOKINGS
    assert q.normalized() == {"from": "2025-03-01", "to": "2025-03-31", "hospital_id": "hosp-a", "channel": "phone",
                              "group_by": ["day", "channel"]}
    _, q = catalogue.parse("stops", {"from": "2025-03-01", "to": "2025-03-01"})
    assert q.group_by == ("hospital",)
    _, q = catalogue.parse("bookings", {"from": "2025-03-01", "to": "2025-03-01", "group_by": []})
    assert q.group_by == ()


def test_filters_a_table_has_no_dimension_for_are_ignored_and_left_out():
    _, q = catalogue.parse("accounts", {"from": "2025-03-01", "to": "2025-03-02", "hospital_id": "hosp-a",
                                        "channel": "web"})
    assert q.normalized() == {"from": "2025-03-01", "to": "2025-03-02", "group_by": ["day"]}
    _, q = catalogue.parse("share", {"from": "2025-03-01", "to": "2025-03-02", "hospital_id": "hosp-a",
                                     "department_id": "dept-a1"})
    assert q.normalized()["hospital_id"] == "hosp-a" and "department_id" not in q.normalized()


@pytest.mark.parametrize(("name", "query", "field"), [
    ("visits", {"from": "2025-03-01", "to": "2025-03-02"}, "table"),
    ("bookings", {"from": "2025-3-1", "to": "2025-03-02"}, "from"),
    ("bookings", {"from": "2025-03-01", "to": "2025-02-30"}, "to"),
    ("bookings", {"to": "2025-03-02"}, "from"),
    ("bookings", {"from": "2025-03-03", "to": "2025-03-02"}, "to"),
    ("bookings", {"from": "2024-01-01", "to": "2025-02-04"}, "to"),  # 401 days
    ("bookings", {"from": "2025-03-01", "to": "2025-03-02", "group_by": ["week"]}, "group_by"),
    ("sellout", {"from": "2025-03-01", "to": "2025-03-02", "group_by": ["day"]}, "group_by"),
    ("bookings", {"from": "2025-03-01", "to": "2025-03-02", "group_by": "day"}, "group_by"),
    ("bookings", {"from": "2025-03-01", "to": "2025-03-02", "channel": "wechat"}, "channel"),
    ("bookings", {"from": "2025-03-01", "to": "2025-03-02", "hospital_id": 7}, "hospital_id"),
    ("bookings", {"from": "2025-03-01", "to": "2025-03-02", "format": "csv"}, "format"),
    ("bookings", ["2025-03-01"], "query"),
])
def test_a_bad_query_is_refused_naming_its_field(name, query, field):
    with pytest.raises(InvalidInput) as info:
        catalogue.parse(name, query)
    assert info.value.field == field


def test_four_hundred_days_are_allowed():
    _, q = catalogue.parse("bookings", {"from": "2024-01-01", "to": "2025-02-03"})
    assert (q.day_to - q.day_from).days + 1 == 400


def test_columns_follow_the_grouped_dims_with_names():
    cols = catalogue.BOOKINGS.columns(("day", "hospital", "channel"))
    keys = [c.key for c in cols]
    assert keys[:4] == ["day", "hospital_id", "hospital_name", "channel"]
    kinds = {c.key: c.kind for c in cols}
    assert (kinds["day"], kinds["hospital_name"], kinds["booked"], kinds["utilisation"]) == ("dim", "name", "count",
                                                                                            "rate")
    sellout = {c.key: c.kind for c in catalogue.SELLOUT.columns(())}
    assert sellout["sellout_median_minutes"] == "minutes" and sellout["lead_p90_days"] == "days"


def test_csv_has_a_bom_chinese_and_english_headers_iso_dates_and_numbers():
    t, q = catalogue.parse("share", {"from": "2025-03-10", "to": "2025-03-10"})
    row = catalogue.finish(t, {"day": "2025-03-10", "hospital_id": "hosp-a", "hospital_name": "河北医科大学第二医院",
                               "booked_web": 5, "booked_phone": 3, "booked_window": 1, "checked_in": 3,
                               "checked_in_reported": 0, "visits": None, "days_without_report": 1})
    answer = {"columns": [c.describe() for c in t.columns(q.group_by)], "rows": [row]}
    text = catalogue.to_csv(answer)
    assert text.startswith("\ufeff")
    header, line = list(csv.reader(io.StringIO(text[1:])))
    assert header[:3] == ["日期 day", "医院编号 hospital id", "医院 hospital"]
    assert "预约诊疗率 booking share of visits" in header
    values = dict(zip(header, line, strict=True))
    assert values["日期 day"] == "2025-03-10"
    assert values["电话预约占比 phone share"] == "0.375"
    assert values["预约诊疗率 booking share of visits"] == ""  # no data, not 0
    assert values["门诊人次(HIS) outpatient visits (HIS)"] == ""


def test_lag_is_head_minus_position_and_the_age_of_the_oldest_unapplied_event():
    store = InMemoryEventStore()
    w = standard(store)
    types = figures.event_types()
    head = store.head()
    assert w.envelopes[-1].type in types
    caught_up = readmodel.lag_of("stats", head, store, types, datetime.now(UTC))
    assert caught_up == {"name": "stats", "position": head, "head": head, "behind": 0, "seconds_behind": 0}
    w2 = Workload(store)
    w2.register("p-late", at(D1, 9))
    now = at(D1, 9) + timedelta(seconds=90)
    behind = readmodel.lag_of("stats", head, store, types, now)
    assert (behind["behind"], behind["seconds_behind"]) == (1, 90.0)
