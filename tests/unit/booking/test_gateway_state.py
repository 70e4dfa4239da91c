"""How the gateway shows a session to a patient on the web: open / full / not_yet_open / closed / stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.gateway.service import _state

pytestmark = pytest.mark.unit

OPENS_AT = "2025-03-03T08:00:00+08:00"
CLOSES_AT = "2025-03-09T16:00:00+08:00"
OPEN = datetime(2025, 3, 5, 2, 0, tzinfo=UTC)  # 10:00 in the hospital, booking open
ROOM = {"web": 3, "phone": 2, "window": 1}
SECOND = timedelta(seconds=1)


def session(**changes: Any) -> dict[str, Any]:
    return {"session_id": "s-hb3-card-0310-am", "opens_at": OPENS_AT, "closes_at": CLOSES_AT, **changes}


def available(**changes: Any) -> dict[str, Any]:
    return {"session_id": "s-hb3-card-0310-am", "known": True, "stopped": False, "remaining": ROOM, **changes}


def test_open_while_the_web_channel_has_room():
    assert _state(session(), available(), ROOM, OPEN) == "open"


def test_full_when_the_web_channel_is_taken_even_if_phone_and_window_have_room():
    remaining = {"web": 0, "phone": 2, "window": 1}
    assert _state(session(), available(remaining=remaining), remaining, OPEN) == "full"


def test_a_missing_web_count_is_full():
    assert _state(session(), available(), {"phone": 2}, OPEN) == "full"


def test_not_yet_open_until_the_opening_instant_then_open():
    opens = datetime.fromisoformat(OPENS_AT)
    assert _state(session(), available(), ROOM, opens - SECOND) == "not_yet_open"
    assert _state(session(), available(), ROOM, opens) == "open"


def test_the_opening_time_is_compared_as_an_instant_across_time_zones():
    # 23:59 UTC on 2 March is 07:59 on 3 March in the hospital: one minute before opening.
    assert _state(session(), available(), ROOM, datetime(2025, 3, 2, 23, 59, tzinfo=UTC)) == "not_yet_open"
    assert _state(session(), available(), ROOM, datetime(2025, 3, 3, 0, 0, tzinfo=UTC)) == "open"


def test_closed_from_the_closing_instant_on():
    closes = datetime.fromisoformat(CLOSES_AT)
    assert _state(session(), available(), ROOM, closes - SECOND) == "open"
    assert _state(session(), available(), ROOM, closes) == "closed"
    assert _state(session(), available(), ROOM, closes + timedelta(days=2)) == "closed"


def test_closed_wins_over_full():
    closes = datetime.fromisoformat(CLOSES_AT)
    empty = {"web": 0, "phone": 0, "window": 0}
    assert _state(session(), available(remaining=empty), empty, closes) == "closed"


@pytest.mark.parametrize(
    ("the_session", "availability"),
    [(session(), available(stopped=True)), (session(state="stopped"), available())],
    ids=["booking-says-stopped", "schedule-says-stopped"],
)
@pytest.mark.parametrize(
    "now",
    [datetime(2025, 3, 1, tzinfo=UTC), OPEN, datetime(2025, 3, 10, tzinfo=UTC)],
    ids=["before-opening", "while-open", "after-closing"],
)
def test_stopped_wins_over_every_other_state(the_session, availability, now):
    assert _state(the_session, availability, ROOM, now) == "stopped"


def test_without_known_times_only_the_remaining_places_decide():
    bare = {"session_id": "s-1"}
    assert _state(bare, {"known": False}, ROOM, OPEN) == "open"
    assert _state(bare, {"known": False}, {"web": 0, "phone": 0, "window": 0}, OPEN) == "full"
