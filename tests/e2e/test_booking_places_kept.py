"""DESIGN guarantee 1 with real processes: a check-in does not free the place it used. A session
of today, its web quota booked to full over two booking replicas; the window clerk checks one
patient in; a new web booking is still refused as full, and the schedule table still shows no
place left. (Seen before the fix: web quota 3 ended with 4 web patients after one check-in and a
same-day booking.)

A no-show keeps its place too, but a lapse needs the lapse time (after the session's start,
when booking has closed): it is proved in tests/unit/booking and tests/nameko instead.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bench.loadgen import Result, post_json, proved, run
from services.booking.domain import HOSPITAL_TZ
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

HOSPITAL = "hebmu2"  # the demo staff (services.gateway.staff demo) work here: hebmu2-clerk checks in
DEPARTMENT = "hebmu2-places-nk"
SESSION = "hebmu2-places-today"
WEB_QUOTA = 3


def resident_id(n: int) -> str:
    body = f"130102{1970 + n % 30:04d}{1 + n % 12:02d}{1 + n % 28:02d}{(n * 7) % 1000:03d}"
    return with_check_digit(body)


def session_times(now: datetime) -> tuple[str, str] | None:
    """A session later today: booking closes at its start, 15 minutes from now (time enough for the
    test); check-in until its end (the rules lapse nothing before it). None only in the last half
    hour of the day."""
    start = (now + timedelta(minutes=15)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=15)
    if end.date() != now.date():
        return None
    return start.strftime("%H:%M"), end.strftime("%H:%M")


def demo(path: Path, start: str, end: str) -> None:
    path.write_text(json.dumps({
        # Booking open until the session starts, so that a session of today can be booked at all.
        "hospitals": [{"hospital_id": HOSPITAL, "name": "河北医科大学第二医院", "level": "三级甲等",
                       "rules": {"cutoff_days_before": 0, "cutoff_time": "23:59",
                                 "lapse_minutes_before_end": 0}}],
        "departments": [{"department_id": DEPARTMENT, "hospital_id": HOSPITAL, "name": "神经内科"}],
        "doctors": [{"doctor_id": "hebmu2-places-zhao", "hospital_id": HOSPITAL, "department_id": DEPARTMENT,
                     "name": "赵医生", "title": "主治医师"}],
        "sessions": [{"session_id": SESSION, "doctor_id": "hebmu2-places-zhao", "day_offset": 0,
                      "period": "afternoon" if start >= "12:00" else "morning", "start": start, "end": end,
                      "capacity": 10, "quota": {"web": WEB_QUOTA, "phone": 1, "window": 1}, "fee": "30.00"}],
    }, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    times = session_times(datetime.now(HOSPITAL_TZ))
    if times is None:
        pytest.skip("the last half hour of the day (Asia/Shanghai): no session can start and end later today")
    path = tmp_path_factory.mktemp("places") / "places.json"
    demo(path, *times)
    with running_platform("places", [str(path)], env={"SMS_PER_CLIENT": "1000", "SMS_BURST_CLIENT": "1000"},
                          replicas={"booking": 2}) as p:
        yield p


def one(address: str, method: str, path: str, body: object = None, token: str | None = None,
        key: str | None = None) -> Result:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if key:
        headers["Idempotency-Key"] = key
    request = post_json(path, body, headers) if method == "POST" else (method, path, None, headers)
    (result,), _ = run(address, [request], 1)
    assert result.error is None, result.error
    return result


def web_remaining(address: str) -> int | None:
    today = datetime.now(HOSPITAL_TZ).date().isoformat()
    answer = one(address, "GET", f"/api/v1/departments/{DEPARTMENT}/schedule?from={today}&to={today}")
    for s in json.loads(answer.body).get("sessions", []):
        if s["session_id"] == SESSION:
            return int(s["remaining"]["web"])
    return None


def test_a_check_in_keeps_its_place_and_the_full_session_stays_full(platform):
    address = platform.gateway_address
    people = [{"name": f"患者{n}", "id_number": resident_id(n), "phone": f"137{n:08d}", "password": f"pw-{n:06d}-y"}
              for n in range(WEB_QUOTA + 1)]
    tokens = []
    for person in proved(address, people, concurrency=4):
        answer = one(address, "POST", "/api/v1/patients", person)
        assert answer.status == 201, answer.body[:300]
        tokens.append(json.loads(answer.body)["token"])

    deadline = time.monotonic() + 60
    while web_remaining(address) != WEB_QUOTA:
        assert time.monotonic() < deadline, "booking never learned today's session"
        time.sleep(0.3)

    codes = []
    for i, token in enumerate(tokens[:WEB_QUOTA]):
        booked = one(address, "POST", "/api/v1/appointments", {"session_id": SESSION}, token, f"places-{i:04d}")
        assert booked.status == 201, booked.body[:300]
        codes.append(json.loads(booked.body)["code"])
    assert web_remaining(address) == 0

    login = one(address, "POST", "/api/v1/auth/login", {"username": "hebmu2-clerk", "password": "clerk-pass-2024"})
    assert login.status == 200, login.body[:300]
    clerk = json.loads(login.body)["token"]
    checked = one(address, "POST", f"/api/v1/appointments/{codes[0]}/check-in", {"id_number": people[0]["id_number"]},
                  clerk)
    assert checked.status == 200, checked.body[:300]
    assert json.loads(checked.body)["status"] == "checked_in"

    # Both replicas must agree: ask more than once (the gateway spreads calls over them), after the
    # sold-out memory (half a second in booking) has expired.
    time.sleep(1.5)
    for i in range(4):
        late = one(address, "POST", "/api/v1/appointments", {"session_id": SESSION}, tokens[WEB_QUOTA],
                   f"places-late-{i:04d}")
        assert late.status == 409, f"a checked-in booking freed its place: {late.status} {late.body[:300]!r}"
        assert json.loads(late.body)["error"]["code"] == "session_full"
        time.sleep(1.1)
    assert web_remaining(address) == 0
