"""infra.health's deadline and the gateway's summary of the reports, without any server."""

from __future__ import annotations

import threading
import time

import pytest

from infra.health import degraded, ok, overall, reasons, run_checks
from services.gateway.ops_api import DEAD_QUEUE, summarise

pytestmark = pytest.mark.unit


def test_a_hanging_check_is_degraded_and_the_others_still_answer_in_time() -> None:
    release = threading.Event()

    def hangs() -> dict[str, object]:
        release.wait(10)
        return ok()

    def fails() -> dict[str, object]:
        raise ConnectionRefusedError("[Errno 111] Connection refused\nmore")

    started = time.monotonic()
    checks = run_checks({"slow": hangs, "broken": fails, "fine": lambda: ok(pending=3)}, timeout=0.3)
    elapsed = time.monotonic() - started
    release.set()
    assert elapsed < 0.6
    assert checks["slow"] == {"status": "degraded", "reason": "no answer within 0.3 s"}
    assert checks["broken"]["status"] == "degraded"
    assert checks["broken"]["reason"] == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert checks["fine"]["status"] == "ok" and checks["fine"]["pending"] == 3
    assert overall(checks) == "degraded"
    assert reasons({"fine": checks["fine"]}) == []
    assert overall({"fine": checks["fine"]}) == "ok"


def test_a_reason_is_masked() -> None:
    assert "13800138000" not in str(degraded("SMS to 13800138000 failed")["reason"])


def _report(status: str, **checks: dict[str, object]) -> dict[str, object]:
    return {"status": status, "checks": checks}


def test_the_summary_keeps_the_shape_and_says_why() -> None:
    relay = ok(behind=0, lock_held=True)
    answers = {
        "gateway": _report("ok", relay=relay, database=ok()),
        "booking": _report("ok", relay=relay, **{"projection:booking-readmodel": ok(pending=0, seconds_behind=0.0)}),
        "notification": _report("degraded", dead_letters=degraded("2 parked", total=2, queues={"a.dead": 2}),
                                sms_backlog=ok(waiting=0)),
        "stats": {"status": "degraded", "down": True, "checks": {"rpc": degraded("no answer within 2.5 s")}},
    }
    health = summarise(answers)  # type: ignore[arg-type]
    assert health["status"] == "degraded"
    assert health["services"] == {"gateway": "ok", "booking": "ok", "notification": "degraded", "stats": "down"}
    assert health["reasons"] == ["notification: dead_letters: 2 parked", "stats: rpc: no answer within 2.5 s"]
    assert health["dead_letters"] == {"total": 2, "queues": {"a.dead": 2}}
    assert health["relay"]["lock_held"] is True
    assert health["projections"]["booking-readmodel"]["pending"] == 0
    assert health["backlogs"]["sms"]["waiting"] == 0
    assert summarise({"gateway": answers["gateway"]})["status"] == "ok"  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "accepted"), [
    ("evt-booking-AppointmentBooked--notification.confirm_booking.dead", True),
    ("evt-booking-AppointmentBooked--notification.confirm_booking", False),
    ("rpc-booking", False),
    ("evt-booking-AppointmentBooked--notification.confirm_booking.dead/../x", False),
])
def test_only_dead_letter_queues_of_event_handlers_can_be_requeued(name: str, accepted: bool) -> None:
    assert bool(DEAD_QUEUE.match(name)) is accepted


def test_the_dead_letter_queues_are_derived_from_every_service_application() -> None:
    from infra.deadletters import candidate_queues

    found = candidate_queues()
    assert set(found) == {"booking", "notification", "his_sync"}  # the services that react to events
    assert "evt-booking-AppointmentBooked--notification.confirm_booking.dead" in found["notification"]
    assert "evt-schedule-DoctorStopApproved--booking.on_doctor_stop_approved.dead" in found["booking"]
    assert all(DEAD_QUEUE.match(q) for qs in found.values() for q in qs)
    assert sum(len(qs) for qs in found.values()) == len({q for qs in found.values() for q in qs})
