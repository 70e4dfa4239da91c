"""Browser tests: headless Debian Chromium driven by Playwright's sync API, against the whole platform
started as processes (the launcher `make run` uses) on the tests' own databases and vhost.

They run in the unpatched pytest run: Playwright's sync API hangs in an eventlet-patched process.
Screenshots of every page, at phone (390x844) and desktop (1366x900) width, are kept in
test-artifacts/screenshots/ for people to look at.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from infra.db import drop_database
from infra.settings import pg_dsn
from scripts.launcher import ROOT, Platform
from services.gateway.staff import ApiClient
from tests.conftest import delete_vhost, ensure_vhost, free_port, until, with_check_digit  # noqa: F401 - until: the pages tests import it from here

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 900}}
DBS = ("events", "schedule", "booking", "notification", "his_sync", "stats", "gateway")
TZ = ZoneInfo("Asia/Shanghai")
HOSPITAL = "hebmu2"
DEPARTMENT = "hebmu2-xnk"
STAFF = {  # the demo accounts (services.gateway.staff demo)
    "hospital_admin": ("hebmu2-admin", "admin-pass-2024"),
    "clerk": ("hebmu2-clerk", "clerk-pass-2024"),
    "operator": ("op-12580", "op-pass-2024"),
    "platform_admin": ("admin", "admin-pass-2024"),
}


def today() -> str:
    return datetime.now(TZ).date().isoformat()


def add_days(day: str, n: int) -> str:
    return (datetime.fromisoformat(day) + timedelta(days=n)).date().isoformat()


def new_id_number(rng: random.Random | None = None) -> str:
    """A resident ID with a valid GB 11643 check digit (Shijiazhuang, born in the 1980s)."""
    r = rng or random.SystemRandom()
    body = f"130102198{r.randint(0, 9)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}{r.randint(0, 999):03d}"
    return with_check_digit(body)


def new_phone() -> str:
    return "139" + f"{random.SystemRandom().randint(0, 99_999_999):08d}"


class Api:
    """A cookie session against the JSON API, as the pages use it (CSRF header on every POST)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.csrf = ""

    def login(self, username: str, password: str) -> dict[str, Any]:
        answer = self.post("/api/v1/auth/login", {"username": username, "password": password}, expect=200)
        self.csrf = answer["csrf_token"]
        return answer

    def register(self, name: str, id_number: str, phone: str, password: str = "pw-12345678") -> dict[str, Any]:
        admin = ApiClient(self.base).login(*STAFF["platform_admin"])
        answer = self.post("/api/v1/patients", {"name": name, "id_number": id_number, "phone": phone,
                                                "password": password,
                                                "sms_code": admin.sms_code(phone, operator=admin)}, expect=201)
        if answer.get("csrf_token"):
            self.csrf = answer["csrf_token"]
        return answer

    def get(self, path: str, expect: int = 200) -> Any:
        r = self.http.get(self.base + path, timeout=30)
        assert r.status_code == expect, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def post(self, path: str, body: dict[str, Any] | None = None, expect: int | None = None,
             key: str | None = None) -> Any:
        headers = {"X-CSRF-Token": self.csrf} if self.csrf else {}
        if key:
            headers["Idempotency-Key"] = key
        r = self.http.post(self.base + path, json=body or {}, headers=headers, timeout=30)
        if expect is not None:
            assert r.status_code == expect, f"POST {path}: {r.status_code} {r.text}"
        else:
            assert r.status_code < 300, f"POST {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def command(self, name: str, body: dict[str, Any]) -> Any:
        return self.post(f"/api/v1/admin/schedule/{name}", body, key=uuid.uuid4().hex)

    def book(self, session_id: str, patient_id: str | None = None) -> dict[str, Any]:
        body = {"session_id": session_id, **({"patient_id": patient_id} if patient_id else {})}
        return self.post("/api/v1/appointments", body, expect=201, key=uuid.uuid4().hex)  # type: ignore[no-any-return]

    def schedule(self, department_id: str, start: str, days: int = 7) -> list[dict[str, Any]]:
        answer = self.get(f"/api/v1/departments/{department_id}/schedule?from={start}&to={add_days(start, days - 1)}")
        return answer["sessions"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    tag = uuid.uuid4().hex[:6]
    prefix = f"appt_test_browser_{tag}"
    vhost = f"appt_test_browser_{tag}"
    amqp = ensure_vhost(vhost)
    p = Platform(
        run_dir=ROOT / ".run" / f"browser-{tag}",
        # One browser on one address makes many requests: the per-client rate limit is for the internet.
        env={"APPT_DB_PREFIX": prefix, "AMQP_URI": amqp, "LOG_FORMAT": "json",
             "RATE_PER_CLIENT": "1000", "RATE_BURST_CLIENT": "2000", "RATE_PER_PATIENT": "50",
             "SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000"},
        gateway_address=f"127.0.0.1:{free_port()}",
        his_port=free_port(),
        his_listen_port=free_port(),
        his_http_port=free_port(),
        metrics_port=0,  # a free port per process: /metrics is scraped by the tests
    )
    try:
        p.start(wait=120)
        env = p.process_env()
        for argv in (["services.schedule.importer", "--hospital", "hebmu4", "demo/hebei-demo.json",
                      "demo/hebmu4-plan.csv"],
                     ["services.gateway.staff", "demo"]):
            subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, check=True, timeout=180,
                           stdout=subprocess.DEVNULL)
        yield p
    finally:
        p.stop()
        saved = os.environ.get("APPT_DB_PREFIX", "")
        os.environ["APPT_DB_PREFIX"] = prefix
        try:
            for name in DBS:
                drop_database(pg_dsn(name))
        finally:
            os.environ["APPT_DB_PREFIX"] = saved
        delete_vhost(vhost)


@pytest.fixture(scope="session")
def base_url(platform: Platform) -> str:
    base = f"http://{platform.gateway_address}"
    # The demo's sessions reach booking through the relay: wait until the schedule shows them bookable.
    api = Api(base)

    def bookable() -> bool:
        try:
            return any(s["state"] == "open" for s in api.schedule(DEPARTMENT, today(), 8))
        except AssertionError:  # 503 while booking is still taking in the imported sessions
            return False
    until("the demo sessions to be bookable", bookable, timeout=120, every=1.0)
    return base


def sms_code(base_url: str, phone: str) -> str:
    """The code a page just asked the platform to send to `phone`, read from the outbox as the platform admin."""
    admin = ApiClient(base_url).login(*STAFF["platform_admin"])

    def sent() -> str | None:
        try:
            return admin.read_code(phone)
        except RuntimeError:
            return None
    return str(until(f"a verification code to {phone[:3]}****", sent, timeout=30))


@pytest.fixture(scope="session")
def admin_api(base_url: str) -> Api:
    api = Api(base_url)
    api.login(*STAFF["hospital_admin"])
    return api


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    eventlet = sys.modules.get("eventlet")
    if eventlet is not None and eventlet.patcher.is_monkey_patched("socket"):
        pytest.fail("this pytest process is eventlet-monkey-patched, where Playwright's sync API hangs: "
                    "run tests/browser in the unpatched run (make test-unpatched)")
    if not Path(CHROMIUM).exists():
        # scripts/setup.sh (run by `make test`) installs it: a skip here would hide a broken install step.
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh does)")
    if shutil.which("fc-list") and "CJK" not in _fonts() and "WenQuanYi" not in _fonts():
        print("note: no CJK font installed; screenshots will show boxes for Chinese text")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _fonts() -> str:
    return subprocess.run(["fc-list"], capture_output=True, text=True, check=False).stdout


@pytest.fixture
def new_page(browser: Any, base_url: str) -> Iterator[Callable[..., Any]]:
    """new_page(width="phone"|"desktop", lang="zh") -> a page in a fresh context (own cookies)."""
    contexts: list[Any] = []

    def make(width: str = "desktop", lang: str = "zh") -> Any:
        context = browser.new_context(viewport=VIEWPORTS[width], base_url=base_url, timezone_id="Asia/Shanghai",
                                      locale="zh-CN" if lang == "zh" else "en-GB")
        context.set_default_timeout(15_000)
        if lang != "zh":
            context.add_cookies([{"name": "lang", "value": lang, "url": base_url}])
        contexts.append(context)
        page = context.new_page()
        page.width_name = width
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        return page

    yield make
    for context in contexts:
        for page in context.pages:
            assert not page.js_errors, f"JavaScript errors on {page.url}: {page.js_errors}"
        context.close()


def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot, kept as an artefact: test-artifacts/screenshots/<name>-<width>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{page.width_name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, username: str, password: str, next_path: str | None = None) -> None:
    """Log in through the login page, as a person would."""
    page.goto("/login" + (f"?next={next_path}" if next_path else ""))
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("#login-submit")


def api_login(page: Any, username: str, password: str) -> None:
    """Log the page's browser context in through the API (shares the cookie jar): for screenshots."""
    r = page.context.request.post("/api/v1/auth/login", data={"username": username, "password": password})
    assert r.status == 200, r.text()
