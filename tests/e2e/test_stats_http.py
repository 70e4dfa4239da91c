"""Statistics over HTTP, the platform as real processes: patients registered with an SMS code book
over HTTP and one cancels; the bookings table (JSON) and its CSV then show the booked and the
cancelled place for that day and hospital, once the projection has caught up. The analyst reads the
province, a hospital admin only their own hospital, a clerk nothing; bad dates are refused naming
the parameter; every endpoint is in the OpenAPI document."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from services.gateway.staff import ApiClient
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "hebmu2-zhang-d3-am"
HOSPITAL = "hebmu2"
TZ = ZoneInfo("Asia/Shanghai")
BOM = "\ufeff"


def rid(n: int) -> str:
    return with_check_digit(f"13040519750202{n:03d}")


class Stats:
    def __init__(self, platform: Any) -> None:
        self.base = f"http://{platform.gateway_address}"
        self.admin = ApiClient(self.base).login("admin", "admin-pass-2024")
        self.tokens = {name: ApiClient(self.base).login(name, password).token for name, password in (
            ("analyst", "analyst-pass-2024"), ("admin", "admin-pass-2024"), ("hebmu2-admin", "admin-pass-2024"),
            ("hbph-admin", "admin-pass-2024"), ("hebmu2-clerk", "clerk-pass-2024"))}

    def get(self, path: str, who: str | None = "analyst", **params: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return requests.get(self.base + path, params=params, headers=headers, timeout=30)

    def patient(self, n: int) -> str:
        phone = f"136{n:08d}"
        status, answer = ApiClient(self.base).call("POST", "/api/v1/patients", {
            "name": f"钱{n}芳", "id_number": rid(n), "phone": phone, "password": "good-pass-77",
            "sms_code": self.admin.sms_code(phone, operator=self.admin)})
        assert status == 201, answer
        return str(answer["token"])

    def book(self, token: str) -> dict[str, Any]:
        r = requests.post(self.base + "/api/v1/appointments", json={"session_id": SESSION}, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def cancel(self, token: str, appointment_id: str) -> None:
        r = requests.post(f"{self.base}/api/v1/appointments/{appointment_id}/cancel", json={}, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 200, r.text

    def session_date(self) -> str:
        def opened() -> str | None:
            answer = requests.get(f"{self.base}/api/v1/departments/hebmu2-xnk/schedule", timeout=30).json()
            return next((str(s["date"]) for s in answer.get("sessions", [])
                         if s["session_id"] == SESSION and s["state"] == "open" and s["remaining"]["web"] >= 3), None)
        return str(wait_for("the demo session to open with room for three", opened))


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if last := check():
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def today() -> str:
    return datetime.now(TZ).date().isoformat()


def the_row(rows: list[dict[str, Any]], day: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("day") == day and r.get("hospital_id") == HOSPITAL), None)


@pytest.fixture(scope="module")
def stats() -> Any:
    env = {"SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000", "RATE_BURST_CLIENT": "5000"}
    with running_platform("stats", ["demo/walking-skeleton.json"], env=env) as p:
        s = Stats(p)
        r = requests.post(s.base + "/api/v1/admin/schedule/change_session_quota", timeout=30,
                          json={"session_id": SESSION, "quota": {"web": 20, "phone": 5, "window": 5}},
                          headers={"Authorization": f"Bearer {s.tokens['hebmu2-admin']}"})
        assert r.status_code == 200, r.text
        yield s


@pytest.fixture(scope="module")
def booked_day(stats: Stats) -> str:
    """Three web bookings of the demo session, the third cancelled by its patient: the session's day."""
    day = stats.session_date()
    patients = [stats.patient(n) for n in range(1, 4)]
    answers = [stats.book(token) for token in patients]
    stats.cancel(patients[2], answers[2]["appointment_id"])
    return day


def test_the_bookings_table_and_its_csv_show_the_booked_and_the_cancelled_place(stats, booked_day):
    query = {"from": today(), "to": booked_day, "hospital_id": HOSPITAL, "group_by": "day,hospital"}

    def counted() -> dict[str, Any] | None:
        answer = stats.get("/api/v1/stats/bookings", **query).json()
        row = the_row(answer["rows"], booked_day)
        return answer if row and row["booked"] == 3 and row["cancelled_patient"] == 1 else None

    answer = wait_for("the projection to count three bookings and a cancel", counted)
    assert answer["table"] == "bookings"
    assert answer["query"]["from"] == today() and answer["query"]["to"] == booked_day
    assert answer["query"]["group_by"] == ["day", "hospital"] and answer["query"]["hospital_id"] == HOSPITAL
    row = the_row(answer["rows"], booked_day)
    assert row is not None and row["released"] >= 20 and row["cancelled_operator"] == 0
    keys = [c["key"] for c in answer["columns"]]
    assert {"day", "hospital_id", "hospital_name", "booked", "cancelled_patient", "utilisation"} <= set(keys)
    assert {c["kind"] for c in answer["columns"] if c["key"] in ("day", "hospital_id")} == {"dim"}
    assert row["hospital_name"] == "河北医科大学第二医院" and row["cancellation_rate"] == round(1 / 3, 4)

    r = stats.get("/api/v1/stats/bookings.csv", **query)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"] == f'attachment; filename="stats-bookings-{today()}-{booked_day}.csv"'
    assert r.content.startswith(BOM.encode()), "Excel reads UTF-8 only with the BOM"
    header, *lines = list(csv.reader(io.StringIO(r.content.decode("utf-8").removeprefix(BOM))))
    by_column = {c["key"]: i for i, c in enumerate(answer["columns"])}
    assert header == [f"{c['zh']} {c['en']}" for c in answer["columns"]], header
    mine = [line for line in lines
            if line[by_column["day"]] == booked_day and line[by_column["hospital_id"]] == HOSPITAL]
    assert len(mine) == 1, lines
    assert (mine[0][by_column["booked"]], mine[0][by_column["cancelled_patient"]]) == ("3", "1")

    # the channel filter: all three were web bookings, none by phone
    web = the_row(stats.get("/api/v1/stats/bookings", **{**query, "channel": "web"}).json()["rows"], booked_day)
    assert web is not None and web["booked"] == 3
    phone = the_row(stats.get("/api/v1/stats/bookings", **{**query, "channel": "phone"}).json()["rows"], booked_day)
    assert phone is None or phone["booked"] == 0


def test_who_may_read_which_hospital(stats, booked_day):
    query = {"from": today(), "to": booked_day, "group_by": "day,hospital"}
    wait_for("the bookings to be counted", lambda: the_row(
        stats.get("/api/v1/stats/bookings", **query).json()["rows"], booked_day))
    for who in ("analyst", "admin", "hebmu2-admin"):
        r = stats.get("/api/v1/stats/bookings", who, **query)
        assert r.status_code == 200 and the_row(r.json()["rows"], booked_day), (who, r.text)
    # a hospital admin's scope is their hospital, whatever they ask for
    own = stats.get("/api/v1/stats/bookings", "hebmu2-admin", **query).json()
    assert own["query"]["hospital_id"] == HOSPITAL and {r["hospital_id"] for r in own["rows"]} == {HOSPITAL}
    other = stats.get("/api/v1/stats/bookings", "hbph-admin", **{**query, "hospital_id": HOSPITAL})
    assert other.status_code == 403 and other.json()["error"]["field"] == "hospital_id", other.text
    other_csv = stats.get("/api/v1/stats/bookings.csv", "hbph-admin", **{**query, "hospital_id": HOSPITAL})
    assert other_csv.status_code == 403, other_csv.text
    theirs = stats.get("/api/v1/stats/bookings", "hbph-admin", **query)
    assert theirs.status_code == 200 and not any(r.get("hospital_id") == HOSPITAL for r in theirs.json()["rows"])
    # registrations and bans have no hospital: the province's figures, not for a hospital admin
    province = stats.get("/api/v1/stats/accounts", "hebmu2-admin")
    assert province.status_code == 403 and province.json()["error"]["field"] == "table", province.text
    assert stats.get("/api/v1/stats/accounts").status_code == 200
    for path in ("/api/v1/stats/bookings", "/api/v1/stats/bookings.csv", "/api/v1/stats/tables", "/api/v1/stats/lag"):
        clerk = stats.get(path, "hebmu2-clerk", **query)
        assert clerk.status_code == 403 and clerk.json()["error"]["code"] == "forbidden", (path, clerk.text)
        assert stats.get(path, None, **query).status_code == 401, path


def test_bad_queries_are_refused_naming_the_parameter(stats):
    for params, field in (({"from": "2026-13-01"}, "from"), ({"to": "yesterday"}, "to"),
                          ({"from": "2026-03-02", "to": "2026-03-01"}, "from"), ({"to": "9999-12-31"}, "to"),
                          ({"channel": "fax"}, "channel"), ({"group_by": "day;drop"}, "group_by"),
                          ({"group_by": "weather"}, "group_by")):
        for path in ("/api/v1/stats/bookings", "/api/v1/stats/bookings.csv"):
            r = stats.get(path, **params)
            assert r.status_code == 400, (path, params, r.status_code, r.text)
            assert r.json()["error"]["field"] == field, (path, params, r.text)
    unknown = stats.get("/api/v1/stats/weather")
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "table", unknown.text


def test_the_tables_the_lag_and_the_document(stats, booked_day):
    tables = {t["name"]: t for t in stats.get("/api/v1/stats/tables").json()["tables"]}
    assert set(tables) >= {"bookings", "stops", "sellout", "accounts", "share"}
    assert {"day", "hospital", "department", "doctor", "channel"} <= set(tables["bookings"]["dims"])
    assert all(set(t["default_group_by"]) <= set(t["dims"]) and t["zh"] and t["en"] for t in tables.values())
    # the default range is the last 30 days, grouped as the table says
    default = stats.get("/api/v1/stats/bookings").json()["query"]
    last = date.fromisoformat(default["to"])
    assert default["to"] == today() and date.fromisoformat(default["from"]) == last - timedelta(days=29)
    assert default["group_by"] == tables["bookings"]["default_group_by"]

    def caught_up() -> list[dict[str, Any]] | None:
        lag = stats.get("/api/v1/stats/lag").json()["projections"]
        return lag if lag and all(p["behind"] == 0 for p in lag) else None

    for projection in wait_for("the projections to catch up", caught_up):
        assert projection["position"] == projection["head"] and projection["seconds_behind"] >= 0, projection

    doc = requests.get(stats.base + "/api/v1/openapi.json", timeout=30).json()
    for path in ("/api/v1/stats/tables", "/api/v1/stats/lag", "/api/v1/stats/{table}", "/api/v1/stats/{table}.csv"):
        op = doc["paths"][path]["get"]
        assert set(op["x-roles"]) == {"analyst", "platform_admin", "hospital_admin"}, path
    params = {p["name"]: p for p in doc["paths"]["/api/v1/stats/{table}"]["get"]["parameters"]}
    assert {"from", "to", "hospital_id", "department_id", "channel", "group_by"} <= set(params)
    assert not any(p["required"] for p in params.values() if p["in"] == "query"), "optional, with defaults"
