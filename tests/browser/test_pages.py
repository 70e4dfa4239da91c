"""Every page renders at phone and desktop width, in Chinese and in English, without script errors;
a screenshot of each is kept. Static files come with their content type and caching."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.browser.conftest import (
    DEPARTMENT,
    HOSPITAL,
    STAFF,
    Api,
    api_login,
    login,
    new_id_number,
    new_phone,
    shoot,
    today,
    until,
)

pytestmark = pytest.mark.browser
WIDTHS = ("phone", "desktop")


@pytest.fixture(scope="module")
def patient(base_url: str) -> dict[str, Any]:
    """A patient with one booking, for the pages behind the login."""
    api = Api(base_url)
    phone, password = new_phone(), "pw-12345678"
    api.register("李明", new_id_number(), phone, password)
    sessions = [s for s in api.schedule(DEPARTMENT, today()) if s["state"] == "open"]
    booked = api.book(sessions[0]["session_id"])
    return {"phone": phone, "password": password, "booked": booked, "booked_date": sessions[0]["date"]}


@pytest.mark.parametrize("width", WIDTHS)
def test_public_pages(new_page: Any, width: str) -> None:
    page = new_page(width)
    page.goto("/")
    page.locator(f"a[data-hospital-id='{HOSPITAL}']").wait_for()
    assert page.locator(".hospital-card").count() >= 1
    shoot(page, "home")
    page.goto(f"/hospitals/{HOSPITAL}")
    page.locator(f"a[data-department-id='{DEPARTMENT}']").wait_for()
    assert "河北医科大学第二医院" in page.inner_text("#hospital")
    shoot(page, "hospital")
    page.goto(f"/departments/{DEPARTMENT}?h={HOSPITAL}")
    page.locator("button.slot").first.wait_for()
    layout = ".week-table" if width == "desktop" else ".day-strip"
    assert page.locator(layout).count() == 1
    shoot(page, "department-week")


@pytest.mark.parametrize("width", WIDTHS)
def test_english_is_the_second_locale(new_page: Any, width: str) -> None:
    page = new_page(width)
    page.goto("/")
    assert page.inner_text(".hero h1") == "网上预约挂号，看病少排队"
    page.click("#lang-en")
    page.wait_for_url(re.compile(r"lang=en"))
    assert page.inner_text(".hero h1") == "Book online, queue less"
    assert page.get_attribute("html", "lang") == "en"
    page.goto(f"/departments/{DEPARTMENT}?h={HOSPITAL}")  # remembered in a cookie
    page.locator("button.slot").first.wait_for()
    assert page.get_attribute("#next-week", "aria-label") == "Next week"
    shoot(page, "department-week-en")
    page.goto("/register")
    assert "Resident ID number" in page.inner_text("#register-form")
    shoot(page, "register-en")
    page.click("#lang-zh")
    page.wait_for_url(re.compile(r"lang=zh"))
    assert "身份证号" in page.inner_text("#register-form")


@pytest.mark.parametrize("width", WIDTHS)
def test_patient_pages(new_page: Any, width: str, patient: dict[str, Any]) -> None:
    page = new_page(width)
    page.goto("/login")
    shoot(page, "login")
    page.goto("/register")
    shoot(page, "register")
    api_login(page, patient["phone"], patient["password"])
    code = patient["booked"]["code"]
    page.goto("/me")
    page.locator(f"article[data-code='{code}']").wait_for()
    shoot(page, "me")
    page.goto(f"/booked/{patient['booked']['appointment_id']}")
    page.locator("#booking-code").wait_for()
    assert page.inner_text("#booking-code").strip() == code
    shoot(page, "booked")


def fits(page: Any) -> None:
    """No horizontal page scroll: what does not fit scrolls inside its card or reflows."""
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url}: the page is {scroll}px wide in a {inner}px window"


ADMIN_TABS = (("departments", f"#dept-table tr[data-department-id='{DEPARTMENT}']"),
              ("doctors", "#doc-table tr[data-doctor-id='hebmu2-zhang']"),
              ("plan", "#plan-doctor option"),
              ("quota", "#quota-table tbody tr"),
              ("stops", "#stops > *"),
              ("lists", "#day-lists .list-block table"),
              ("phone", "#phone-count:not(:empty)"),
              ("rules", "#rules-form input[name='release_days']"),
              ("holidays", "#holiday-list li"),
              ("accounts", "#staff-form select[name='hospital_id'] option"),
              ("hospitals", f"#hospital-table tr[data-hospital-id='{HOSPITAL}']"))


@pytest.mark.parametrize("width", WIDTHS)
def test_staff_pages(new_page: Any, width: str, patient: dict[str, Any]) -> None:
    """Every staff page works at phone and desktop width: no horizontal page scroll, names not codes."""
    page = new_page(width)
    api_login(page, *STAFF["operator"])
    page.goto("/operator")
    page.locator(f"#op-hospital option[value='{HOSPITAL}']").wait_for(state="attached")
    page.select_option("#op-hospital", HOSPITAL)
    page.wait_for_selector(f"#op-department option[value='{DEPARTMENT}']", state="attached")
    page.select_option("#op-department", DEPARTMENT)
    page.locator("#schedule button.slot").first.wait_for()
    fits(page)
    shoot(page, "operator")

    page = new_page(width)
    api_login(page, *STAFF["clerk"])
    page.goto("/clerk")
    page.locator("#staff-hello:not(:empty)").wait_for()
    assert "河北医科大学第二医院" in page.inner_text("#staff-hello") and HOSPITAL not in page.inner_text("#staff-hello")
    page.locator("#daylist-dept option").first.wait_for(state="attached")
    fits(page)
    shoot(page, "clerk")
    page.goto("/doctor")
    page.locator("#doctor-pick option[value='hebmu2-zhang']").wait_for(state="attached")
    fits(page)
    shoot(page, "doctor")

    page = new_page(width)
    api_login(page, *STAFF["hospital_admin"])
    for tab, ready in ADMIN_TABS:
        page.goto(f"/admin#{tab}")
        page.locator(f"#panel-{tab}").wait_for()
        if tab == "lists":  # the day of the patient's booking, with its list
            page.select_option("#lists-dept", DEPARTMENT)
            page.fill("#lists-date", patient["booked_date"])
            page.dispatch_event("#lists-date", "change")
        page.locator(ready).first.wait_for(state="attached")
        fits(page)
        shoot(page, f"admin-{tab}")
    # on a phone every tab is in a select (the strip would hide most of them); on a desktop, the strip
    if width == "phone":
        assert page.locator("#tabs").is_hidden()
        page.select_option("#tab-select", "quota")
        page.wait_for_url(re.compile(r"#quota$"))
        page.locator("#quota-table tbody tr").first.wait_for()
        assert page.locator("#quota-table thead").is_hidden()  # rows as cards, each cell labelled
        assert page.locator("#quota-table tbody td[data-label]").count() > 0
    else:
        assert page.locator("#tab-select").is_hidden() and page.locator("#tab-accounts").is_visible()

    page = new_page(width)
    api_login(page, *STAFF["platform_admin"])
    page.goto("/admin#hospitals")
    page.locator("#hospital-table tr[data-hospital-id='hebmu4']").wait_for()
    assert page.locator("#hospital-id-field").is_visible()
    fits(page)
    shoot(page, "admin-hospitals-platform")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_sms_outbox_shows_what_the_patient_received(new_page: Any, width: str, patient: dict[str, Any]) -> None:
    page = new_page(width)
    code = patient["booked"]["code"]
    page.goto("/dev/sms")  # nobody logged in: the login first, and back
    page.wait_for_url(re.compile(r"/login\?next=%2Fdev%2Fsms"))
    api_login(page, *STAFF["clerk"])
    page.goto("/dev/sms")
    assert "仅限平台管理员" in page.inner_text("main") and code not in page.content()
    api_login(page, *STAFF["platform_admin"])

    def arrived() -> bool:
        page.goto("/dev/sms")
        return code in page.inner_text("#sms-list")
    until("the confirmation SMS in the outbox", arrived, timeout=60, every=1.0)
    text = page.inner_text("#sms-list")
    masked = patient["phone"][:3] + "****" + patient["phone"][-4:]
    assert masked in text and patient["phone"] not in text
    shoot(page, "sms")


@pytest.mark.parametrize("next_path", ["/%09/evil.example", "/%0d/evil.example", "/%0a/evil.example",
                                       "//evil.example", "/%5Cevil.example", "/%09%09//evil.example",
                                       "https://evil.example", "/%20/evil.example"],
                         ids=["tab", "cr", "lf", "double-slash", "backslash", "tabs", "absolute", "space"])
def test_after_login_the_next_page_is_always_on_this_site(new_page: Any, base_url: str, next_path: str) -> None:
    """Browsers drop tab, CR and LF from URLs: "/\t/host" would be "//host", another site."""
    page = new_page("phone")
    left: list[str] = []
    page.on("request", lambda r: left.append(r.url) if urlsplit(r.url).hostname == "evil.example" else None)
    login(page, *STAFF["operator"], next_path=next_path)
    page.wait_for_load_state()
    assert page.url.startswith(base_url), page.url
    assert left == []


def test_a_same_site_next_page_is_kept_after_login(new_page: Any, base_url: str) -> None:
    page = new_page("phone")
    login(page, *STAFF["platform_admin"], next_path="/dev/sms?x=1")
    page.wait_for_url(re.compile(r"/dev/sms\?x=1$"))


def test_a_page_behind_a_login_sends_to_the_login(new_page: Any) -> None:
    page = new_page("phone")
    page.goto("/me")
    page.wait_for_url(re.compile(r"/login\?next=%2Fme"))


def test_static_files_have_their_type_and_are_cached(base_url: str) -> None:
    html = requests.get(base_url + "/", timeout=30).text
    css = re.search(r'href="(/static/app\.css\?v=[0-9a-f]+)"', html)
    js = re.search(r'src="(/static/app\.js\?v=[0-9a-f]+)"', html)
    assert css and js
    r = requests.get(base_url + css.group(1), timeout=30)
    assert r.headers["Content-Type"] == "text/css; charset=utf-8"
    assert "immutable" in r.headers["Cache-Control"] and "max-age=31536000" in r.headers["Cache-Control"]
    r = requests.get(base_url + js.group(1), timeout=30)
    assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
    unversioned = requests.get(base_url + "/static/app.js", timeout=30)
    assert "max-age=0" in unversioned.headers["Cache-Control"]
    etag = unversioned.headers["ETag"]
    again = requests.get(base_url + "/static/app.js", headers={"If-None-Match": etag}, timeout=30)
    assert again.status_code == 304
    assert requests.get(base_url + "/static/../pages.py", timeout=30).status_code == 404
    assert requests.get(base_url + "/static/missing.js", timeout=30).status_code == 404
    page = requests.get(base_url + "/me", timeout=30)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
