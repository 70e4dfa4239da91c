"""One real booking through every service, each its own process (issue 2's walking skeleton).

Starts the relay, schedule, booking, notification, his_sync, stats, gateway and the HIS simulator
with the same launcher `make run` uses, loads the demo through the schedule import path, then
books over HTTP and checks each service did its part: the SMS in the outbox, the SIU^S12 received
on the simulator's MLLP socket with an AA, the count in stats (from the event store).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from scripts.launcher import Platform
from services.gateway.staff import ApiClient
from tests.conftest import until
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "hebmu2-zhang-d3-am"


@pytest.fixture(scope="module")
def platform():
    with running_platform("skeleton", ["demo/walking-skeleton.json"], env={"LOG_FORMAT": "json"}) as p:
        yield p


def _url(p: Platform, path: str) -> str:
    return f"http://{p.gateway_address}{path}"


def _admin(p: Platform) -> ApiClient:
    return ApiClient(p.gateway_address).login("admin", "admin-pass-2024")


def _outbox(p: Platform) -> requests.Response:
    """The SMS outbox, as only the platform admin may read it."""
    return requests.get(_url(p, "/api/v1/dev/sms"), headers={"Authorization": f"Bearer {_admin(p).token}"},
                        timeout=30)


def _register(p: Platform, name: str, id_number: str, phone: str) -> str:
    """Registers (the phone proved by the code in the outbox) and answers the new session's bearer token."""
    admin = _admin(p)
    code = admin.sms_code(phone, operator=admin)
    r = requests.post(_url(p, "/api/v1/patients"),
                      json={"name": name, "id_number": id_number, "phone": phone, "password": "pw-123456",
                            "sms_code": code}, timeout=30)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id_masked"] == id_number[:6] + "********" + id_number[-4:]
    assert id_number not in r.text and phone not in r.text
    return str(body["token"])


def _book(p: Platform, token: str, key: str) -> requests.Response:
    return requests.post(_url(p, "/api/v1/appointments"), json={"session_id": SESSION},
                         headers={"Idempotency-Key": key, "Authorization": f"Bearer {token}"}, timeout=30)


def test_a_booking_travels_through_every_service(platform: Platform) -> None:
    p = platform
    # The session reaches booking through the relay and RabbitMQ: wait until it is bookable.
    until("the demo session to be visible with web quota",
           lambda: any(s["session_id"] == SESSION and s["remaining"]["web"] == 2 for s in requests.get(
               _url(p, "/api/v1/departments/hebmu2-xnk/schedule"), timeout=30).json().get("sessions", [])))

    first = _register(p, "李明", "11010519491231002X", "13800138000")
    second = _register(p, "王芳", "130102198803150023", "13912345678")
    third = _register(p, "赵强", "13010419900101123X", "13700001111")

    r1 = _book(p, first, "k-first-0001")
    assert r1.status_code == 201, r1.text
    a1 = r1.json()
    assert a1["sequence_number"] == 1 and len(a1["code"]) == 8 and a1["status"] == "booked"

    again = _book(p, first, "k-first-0001")  # the same idempotency key: the same answer
    assert again.status_code == 201 and again.json() == a1

    a2 = _book(p, second, "k-second-001").json()
    assert a2["sequence_number"] == 2

    full = _book(p, third, "k-third-0001")
    assert full.status_code == 409
    assert full.json()["error"]["code"] == "session_full"

    # notification: the confirmation SMS is in the outbox, masked phone, code and sequence number in it
    def sms():
        page = _outbox(p).text
        return page if a1["code"] in page and a2["code"] in page else None
    page = until("both confirmation SMS in the outbox", sms)
    assert "138****8000" in page and "13800138000" not in page
    assert "就诊序号1" in page and "河北医科大学第二医院" in page

    # his_sync: the simulator got an SIU^S12 per booking over MLLP, and answered AA
    his_log = Path(p.run_dir) / "his-received.jsonl"

    def received():
        if not his_log.exists():
            return None
        lines = [json.loads(x) for x in his_log.read_text(encoding="utf-8").splitlines() if x.strip()]
        got = {x.get("appointment_id") or x.get("placer_appointment_id"): x for x in lines}
        return got if {a1["appointment_id"], a2["appointment_id"]} <= set(got) else None
    got = until("two SIU^S12 at the HIS simulator", received)
    assert got[a1["appointment_id"]]["message_type"] == "SIU^S12"
    assert "11010519491231002X" not in his_log.read_text(encoding="utf-8")

    # a cancellation reaches the HIS as SIU^S15, built from the appointment as booked
    cancelled = requests.post(_url(p, f"/api/v1/appointments/{a1['appointment_id']}/cancel"),
                              headers={"Authorization": f"Bearer {first}"}, timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text

    def cancel_received():
        lines = [json.loads(x) for x in his_log.read_text(encoding="utf-8").splitlines() if x.strip()]
        return [x for x in lines if x["message_type"] == "SIU^S15"
                and (x.get("appointment_id") or x.get("placer_appointment_id")) == a1["appointment_id"]]
    assert len(until("SIU^S15 for the cancelled booking", cancel_received)) == 1

    def cancel_sms():
        page = _outbox(p).json()["messages"]
        return [m for m in page if m["template"] == "cancelled" and a1["code"] in m["text"]]
    assert "已取消" in until("the cancellation SMS", cancel_sms)[0]["text"]

    # stats: counted from the event store (analysts only)
    assert requests.get(_url(p, "/api/v1/stats/summary"), timeout=30).status_code == 401
    login = requests.post(_url(p, "/api/v1/auth/login"), json={"username": "analyst", "password": "analyst-pass-2024"},
                          timeout=30)
    assert login.status_code == 200, login.text
    analyst = {"Authorization": f"Bearer {login.json()['token']}"}

    def counted():
        s = requests.get(_url(p, "/api/v1/stats/summary"), headers=analyst, timeout=30).json()
        return s if s["metrics"].get("booked", {}).get("web") == 2 else None
    until("stats to count two web bookings", counted)

    # nothing leaked into any log
    for log in (Path(p.run_dir) / "logs").glob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        for secret in ("11010519491231002X", "130102198803150023", "13800138000", "13912345678"):
            assert secret not in text, f"{secret[:3]}… in {log.name}"
