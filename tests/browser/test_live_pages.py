"""Live pages: two browsers on the same department's schedule; a booking made through the API changes
the remaining places both show, without a reload (the live notice, GET /api/v1/live)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.browser.conftest import DEPARTMENT, HOSPITAL, Api, new_id_number, new_phone, today

pytestmark = pytest.mark.browser
SOON = 1.0  # seconds from the booking's answer to the new count on the page


def remaining(page: Any, session_id: str) -> int | None:
    text = page.evaluate("(sid) => { const b = document.querySelector("
                         "`button.slot[data-session-id='${sid}'] .slot-state`); return b ? b.innerText : null; }",
                         session_id)
    found = re.search(r"(\d+)", text or "")
    return int(found.group(1)) if found else None


def test_a_booking_changes_the_places_shown_on_other_pages_without_a_reload(new_page: Any, base_url: str) -> None:
    api = Api(base_url)
    api.register("实时刷新", new_id_number(), new_phone())
    sessions = [s for s in api.schedule(DEPARTMENT, today()) if s["state"] == "open" and s["remaining"]["web"] >= 2]
    assert sessions, "the demo has an open session with places"
    session = sessions[0]["session_id"]

    pages = []
    for _ in range(2):
        page = new_page("desktop")
        page.goto(f"/departments/{DEPARTMENT}?h={HOSPITAL}")
        page.locator(f"button.slot[data-session-id='{session}']").wait_for()
        page.evaluate("window.__notReloaded = true")
        pages.append(page)
    before = [remaining(p, session) for p in pages]
    assert before[0] == before[1] == sessions[0]["remaining"]["web"], before
    for page in pages:  # the stream is open before the booking is made
        page.locator("body[data-live='open']").wait_for(state="attached")

    api.book(session)
    answered = time.monotonic()
    deadline = answered + SOON
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [remaining(p, session) for p in pages]
        if all(n == before[0] - 1 for n in seen):
            break
        pages[0].wait_for_timeout(25)  # lets the page's own event loop run between two looks
    else:
        raise AssertionError(f"remaining places still {seen} {SOON}s after the booking (was {before})")
    took = time.monotonic() - answered
    for page in pages:
        assert page.evaluate("window.__notReloaded === true"), "the page was not reloaded"
    print(f"new count on both pages {took * 1000:.0f} ms after the booking's answer")
