"""No overbooking under concurrency across booking replicas: hundreds of simultaneous bookings,
over HTTP, at one session served by two booking processes; exactly the quota is booked."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.loadgen import post_json, proved, run
from infra.eventstore import PostgresEventStore
from infra.settings import pg_dsn
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "crowd-d3-am"
QUOTA = 30
PATIENTS = 300


def resident_id(n: int) -> str:
    body = f"130102{1950 + n % 50:04d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    return with_check_digit(body)


def demo(path: Path) -> None:
    path.write_text(json.dumps({
        "hospitals": [{"hospital_id": "crowd", "name": "河北省人民医院", "level": "三级甲等"}],
        "departments": [{"department_id": "crowd-xnk", "hospital_id": "crowd", "name": "心血管内科"}],
        "doctors": [{"doctor_id": "crowd-li", "hospital_id": "crowd", "department_id": "crowd-xnk",
                     "name": "李专家", "title": "主任医师"}],
        "sessions": [{"session_id": SESSION, "doctor_id": "crowd-li", "day_offset": 3, "period": "morning",
                      "start": "08:00", "end": "11:30", "capacity": 60,
                      "quota": {"web": QUOTA, "phone": 5, "window": 5}, "fee": "100.00"}],
    }, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    crowd = tmp_path_factory.mktemp("crowd") / "crowd.json"
    demo(crowd)
    # One load generator on one address: the per-client rate limit is lifted for it.
    with running_platform("crowd", [str(crowd)], env={"RATE_PER_CLIENT": "100000", "RATE_BURST_CLIENT": "100000",
                                                       "SMS_PER_CLIENT": "100000", "SMS_BURST_CLIENT": "100000"},
                          replicas={"booking": 2}) as p:
        yield p, p.env["APPT_DB_PREFIX"]


def test_hundreds_at_once_over_two_replicas_book_exactly_the_quota(platform):
    p, prefix = platform
    people = proved(p.gateway_address, [{"name": f"患者{n}", "id_number": resident_id(n), "phone": f"138{n:08d}",
                                         "password": f"pw-{n:06d}-x"} for n in range(PATIENTS)])
    registrations = [post_json("/api/v1/patients", person) for person in people]
    results, summary = run(p.gateway_address, registrations, concurrency=50)
    assert summary.statuses == {201: PATIENTS}, summary
    tokens = [json.loads(r.body)["token"] for r in results]

    # Wait until booking knows the session (it learns it from schedule's event through the relay).
    def known() -> bool:
        probe = run(p.gateway_address, [("GET", "/api/v1/departments/crowd-xnk/schedule", None, {})], 1)[0][0]
        sessions = json.loads(probe.body).get("sessions", [])
        return any(s["session_id"] == SESSION and s["remaining"]["web"] == QUOTA for s in sessions)

    deadline = time.monotonic() + 60
    while not known():
        assert time.monotonic() < deadline, "booking never learned the session"
        time.sleep(0.3)

    crowd = [post_json("/api/v1/appointments", {"session_id": SESSION},
                       {"Idempotency-Key": f"crowd-{i:05d}", "Authorization": f"Bearer {token}"})
             for i, token in enumerate(tokens)]
    results, summary = run(p.gateway_address, crowd, concurrency=PATIENTS)
    assert summary.errors == 0, [r.error for r in results if r.error][:3]
    codes = Counter(json.loads(r.body).get("error", {}).get("code", "booked") for r in results)
    assert summary.statuses.get(201) == QUOTA, (summary.statuses, codes)
    assert codes == {"booked": QUOTA, "session_full": PATIENTS - QUOTA}
    numbers = sorted(json.loads(r.body)["sequence_number"] for r in results if r.status == 201)
    assert numbers == list(range(1, QUOTA + 1))

    saved = os.environ.get("APPT_DB_PREFIX", "")
    os.environ["APPT_DB_PREFIX"] = prefix
    try:
        store = PostgresEventStore(pg_dsn("events"))
        ledger = store.read_stream(f"ledger-{SESSION}")
        store.close()
    finally:
        os.environ["APPT_DB_PREFIX"] = saved
    assert [e.type for e in ledger].count("AppointmentBooked") == QUOTA

    per_replica = {log.stem: log.read_text(encoding="utf-8").count('"appointment_booked"')
                   for log in (p.run_dir / "logs").glob("booking-*.log")}
    assert sum(per_replica.values()) == QUOTA
    assert all(n > 0 for n in per_replica.values()), f"one replica booked nothing: {per_replica}"
