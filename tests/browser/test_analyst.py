"""The statistics page (/analyst) in Chromium against the whole platform: after a few bookings over
the API (web and phone, one cancelled), the analyst lands on the page after login; every chart is
drawn on its canvas by ECharts; every table shows the figures the JSON API answers for the same
query (null as 无数据, never 0); the CSV link downloads those figures with the BOM; a hospital
admin sees only their own hospital. Screenshots at phone and desktop width."""

from __future__ import annotations

import csv
import io
import re
from typing import Any
from urllib.parse import parse_qs

import pytest

from services.gateway.staff import ApiClient
from tests.browser.conftest import (
    DEPARTMENT,
    HOSPITAL,
    STAFF,
    Api,
    add_days,
    login,
    new_id_number,
    new_phone,
    shoot,
    today,
    until,
)

pytestmark = pytest.mark.browser
ANALYST = ("analyst", "analyst-pass-2024")
SECTIONS = ("bookings-day", "utilisation", "sellout", "stops", "share", "accounts")
BOM = "\ufeff"
NO_DATA = "无数据"


@pytest.fixture(scope="module")
def bookings(base_url: str) -> dict[str, Any]:
    """Two web bookings and a phone booking of demo sessions two or more days ahead (the cancel
    cut-off is the day before), the second web one cancelled: the range of days they are on."""
    operator = Api(base_url)
    operator.login(*STAFF["operator"])
    sessions = operator.schedule(DEPARTMENT, add_days(today(), 2), 6)
    web = next(s for s in sessions if s["state"] == "open" and s["remaining"].get("web", 0) >= 2)
    phone = next(s for s in sessions if s["state"] == "open" and s["remaining"].get("phone", 0) >= 1)
    patients = [Api(base_url) for _ in range(3)]
    registered = [p.register(name, new_id_number(), new_phone()) for p, name in zip(patients, ("孙丽", "周强", "吴敏"),
                                                                                        strict=True)]
    patients[0].book(web["session_id"])
    cancelled = patients[1].book(web["session_id"])
    patients[1].post(f"/api/v1/appointments/{cancelled['appointment_id']}/cancel", {})
    operator.book(phone["session_id"], registered[2]["patient_id"])
    return {"from": today(), "to": max(web["date"], phone["date"])}


def analyst_client(base_url: str) -> ApiClient:
    return ApiClient(base_url).login(*ANALYST)


def caught_up(client: ApiClient) -> bool:
    status, lag = client.call("GET", "/api/v1/stats/lag")
    return status == 200 and bool(lag["projections"]) and all(p["behind"] == 0 for p in lag["projections"])


def open_dashboard(page: Any, period: dict[str, Any], csp: list[str]) -> None:
    """Set the date range in the filters and wait until every section has drawn its answer."""
    page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
    page.locator("#stats[data-state=ready]").wait_for()
    page.fill("#f-from", period["from"])
    page.fill("#f-to", period["to"])
    page.click("#stats-apply")
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('to') === '{period['to']}'")
    page.locator("#stats[data-state=ready]").wait_for()




def table_matches_api(page: Any, client: ApiClient, section: str) -> dict[str, Any]:
    """The section's table shows, row by row, the figures of the API's answer to the section's own query."""
    card = page.locator(f"#stats-{section}")
    query, position = card.get_attribute("data-query"), card.get_attribute("data-position")
    status, answer = client.call("GET", f"/api/v1/stats/{card.get_attribute('data-table')}?{query}")
    assert status == 200, answer
    assert str(answer.get("position", "")) == position, "the projection moved on while the test read the page"
    shown = page.evaluate("""(id) => Array.from(document.querySelectorAll('#table-' + id + ' tbody tr'), (tr) =>
        Object.fromEntries(Array.from(tr.cells, (td) => [td.dataset.key || '', td.textContent.trim()])))""", section)
    if not answer["rows"]:
        assert len(shown) == 1 and list(shown[0].values()) == [NO_DATA], shown
        return answer
    assert len(shown) == len(answer["rows"]), (section, shown, answer["rows"])
    for cells, row in zip(shown, answer["rows"], strict=True):
        for column in answer["columns"]:
            key, kind = column["key"], column["kind"]
            if kind in ("dim", "name"):
                continue
            value, text = row[key], cells[key]
            if value is None:
                assert text == NO_DATA, (section, key, text)  # never 0
            elif kind == "count":
                assert text == str(value), (section, key, text, value)
            else:  # a rate as a percentage, minutes and days, to one decimal
                shown = float(text.removesuffix("%")) if kind != "rate" or text.endswith("%") else None
                scale = 100 if kind == "rate" else 1
                assert shown is not None and abs(shown - value * scale) <= 0.05 + 1e-9, (section, key, text, value)
    return answer


def test_the_analyst_sees_every_chart_drawn_and_the_tables_and_csv_of_the_api(
    new_page: Any, base_url: str, bookings: dict[str, Any]
) -> None:
    client = analyst_client(base_url)
    query = f"from={bookings['from']}&to={bookings['to']}&group_by=day,hospital"

    def counted() -> bool:
        status, answer = client.call("GET", "/api/v1/stats/bookings?" + query)
        return status == 200 and sum(r["booked"] for r in answer["rows"]) >= 3 and caught_up(client)
    until("the projection to count the bookings", counted)

    for width in ("desktop", "phone"):
        page = new_page(width)
        csp: list[str] = []
        login(page, *ANALYST)
        page.wait_for_url(re.compile(r"/analyst$"))  # the analyst's home, not the public home page
        page.locator("#nav a[href='/analyst']").wait_for()  # the staff navigation links the page
        open_dashboard(page, bookings, csp)
        assert "统计截至" in page.inner_text("#stats-lag")
        for section in SECTIONS:
            box = page.evaluate("""(id) => { const c = document.querySelector('#chart-' + id + ' canvas');
                return c ? [c.width, c.height, c.getBoundingClientRect().width] : null; }""", section)
            assert box and all(n > 0 for n in box), (section, box)
            assert page.locator(f"#stats-{section}").get_attribute("data-state") == "ready", section
        answers = {section: table_matches_api(page, client, section) for section in SECTIONS}
        by_channel = answers["bookings-day"]
        assert by_channel["query"]["group_by"] == ["day", "channel"]
        assert {"web", "phone"} <= {r["channel"] for r in by_channel["rows"] if r["booked"]}
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"the page is {scroll}px wide in a {inner}px window"
        shoot(page, "analyst")
        assert not csp, csp
        if width == "desktop":  # the charts follow the window
            before = page.evaluate("document.querySelector('#chart-utilisation canvas').getBoundingClientRect().width")
            page.set_viewport_size({"width": 900, "height": 900})
            page.wait_for_function(f"""() => Math.abs(document.querySelector('#chart-utilisation canvas')
                .getBoundingClientRect().width - {before}) > 50""")

    # the CSV link asks the same query and downloads the same figures, with the BOM for Excel
    link = page.locator("#csv-bookings-day")
    assert link.get_attribute("href") == "/api/v1/stats/bookings.csv?" + page.locator(
        "#stats-bookings-day").get_attribute("data-query")
    with page.expect_download() as download:
        link.click()
    assert re.fullmatch(rf"stats-bookings-{bookings['from']}-{bookings['to']}\.csv", download.value.suggested_filename)
    raw = download.value.path().read_bytes()
    assert raw.startswith(BOM.encode())
    header, *lines = list(csv.reader(io.StringIO(raw.decode("utf-8").removeprefix(BOM))))
    columns = by_channel["columns"]
    assert header == [f"{c['zh']} {c['en']}" for c in columns]
    keys = [c["key"] for c in columns]
    counts = [k for k, c in zip(keys, columns, strict=True) if c["kind"] == "count"]
    from_csv = sorted(tuple(line[keys.index(k)] for k in ["day", "channel", *counts]) for line in lines)
    from_api = sorted(tuple(str(r[k]) for k in ["day", "channel", *counts]) for r in by_channel["rows"])
    assert from_csv == from_api


def test_a_hospital_admin_sees_only_their_hospital(new_page: Any, base_url: str, bookings: dict[str, Any]) -> None:
    client = analyst_client(base_url)
    until("the projection to catch up", lambda: caught_up(client))
    page = new_page("phone")
    csp: list[str] = []
    login(page, *STAFF["hospital_admin"], next_path="/analyst")
    page.wait_for_url(re.compile(r"/analyst$"))
    page.locator("#nav a[href='/analyst']").wait_for()  # the staff navigation links the page
    open_dashboard(page, bookings, csp)
    hospital = page.locator("#f-hospital")
    assert hospital.is_disabled() and hospital.locator("option").count() == 1 and hospital.input_value() == HOSPITAL
    assert page.locator("#stats-accounts").is_hidden(), "registrations and bans are the province's, not a hospital's"
    for section in ("bookings-day", "utilisation", "sellout", "stops", "share"):
        card = page.locator(f"#stats-{section}")
        assert parse_qs(card.get_attribute("data-query"))["hospital_id"] == [HOSPITAL], section
        assert page.evaluate("(id) => !!document.querySelector('#chart-' + id + ' canvas')", section), section
    # by department within the hospital, the same figures as the hospital's own API answer
    utilisation = page.locator("#stats-utilisation")
    assert parse_qs(utilisation.get_attribute("data-query"))["group_by"] == ["department"]
    admin = ApiClient(base_url).login(*STAFF["hospital_admin"])
    status, theirs = admin.call("GET", "/api/v1/stats/bookings?" + page.locator("#stats-bookings-day").get_attribute(
        "data-query"))
    assert status == 200 and theirs["query"]["hospital_id"] == HOSPITAL
    table_matches_api(page, admin, "bookings-day")
    status, refused = admin.call("GET", f"/api/v1/stats/bookings?from={bookings['from']}&hospital_id=hbph")
    assert status == 403 and refused["error"]["field"] == "hospital_id"
    shoot(page, "analyst-hospital-admin")
    assert not csp, csp
