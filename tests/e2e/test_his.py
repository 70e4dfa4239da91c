"""The HIS interface layer end to end, the platform as real processes with the HIS simulator as
the hospital's HIS: the 16:00 hand-over reaches it as one ADT^A05 per paid phone booking, each
acknowledged and shown to the admin (AE, AR and a down HIS are tested on the real tables in
tests/integration/test_his_delivery.py); the hospital's HIS blocks a slot (SIU^S23 over MLLP) and it becomes a stop
request the admin approves; a duplicate is answered the same without a second request; a
stranger is refused; visit totals arrive over signed HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from services.gateway.staff import ApiClient
from tests.conftest import with_check_digit
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
DOCTOR = "hebmu2-zhang"


class His:
    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.base = f"http://{platform.gateway_address}"
        self.admin = ApiClient(self.base).login("admin", "admin-pass-2024")
        self.hadmin = ApiClient(self.base).login("hebmu2-admin", "admin-pass-2024")
        self.operator = ApiClient(self.base).login("op-12580", "op-pass-2024")

    def wait_for(self, what: str, check: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := check():
                return found
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def journal(self) -> list[dict[str, Any]]:
        path = self.platform.run_dir / "his-received.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []

    def send(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.his_sync.simulator", "send", "--to",
                               f"127.0.0.1:{self.platform.his_listen_port}", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def caller(self, n: int) -> str:
        phone = f"135{n:08d}"
        code = self.admin.sms_code(phone, operator=self.admin)
        status, answer = self.operator.call("POST", "/api/v1/patients", {
            "name": f"孙{n}", "id_number": with_check_digit(f"13040519700101{n:03d}"), "phone": phone,
            "sms_code": code})
        assert status == 201, answer
        return str(answer["patient_id"])

    def phone_book(self, session_id: str, patient_id: str) -> dict[str, Any]:
        r = requests.post(self.base + "/api/v1/appointments", json={"session_id": session_id, "patient_id": patient_id},
                          headers={"Authorization": f"Bearer {self.operator.token}",
                                   "Idempotency-Key": uuid.uuid4().hex}, timeout=30)
        assert r.status_code == 201, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def his() -> Any:
    env = {"SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000", "RATE_BURST_CLIENT": "5000",
           "HIS_RETRY_BASE_S": "0.5", "HIS_MAX_ATTEMPTS": "2"}
    with running_platform("his", ["demo/walking-skeleton.json"], env=env) as p:
        yield His(p)


def _rules(his: His, **rules: Any) -> None:
    status, answer = his.hadmin.call("POST", "/api/v1/admin/schedule/change_booking_rules",
                                     {"hospital_id": "hebmu2", "rules": rules})
    assert status == 200, answer


def test_the_handover_reaches_the_his_per_booking_and_the_admin_sees_each_answer(his):
    now = datetime.now(TZ)
    if now.hour == 23 and now.minute >= 50:
        pytest.skip("within ten minutes of midnight in Hebei: 'tomorrow' would change during the test")
    tomorrow = (now + timedelta(days=1)).date()
    # Bookable until the day itself, the hand-over not yet due: book, then make it due.
    _rules(his, cutoff_days_before=0, cutoff_time="23:59", phone_handover_time="23:59")
    session_id = f"hebmu2-zhang-{tomorrow:%m%d}-pm"
    status, answer = his.hadmin.call("POST", "/api/v1/admin/schedule/schedule_session", {
        "session_id": session_id, "doctor_id": DOCTOR, "date": tomorrow.isoformat(), "period": "afternoon",
        "start": "14:00", "end": "17:00", "capacity": 20, "quota": {"web": 5, "phone": 10, "window": 5},
        "fee": "50.00"})
    assert status == 200, answer
    patients = [his.caller(n) for n in (1, 2)]
    booked = his.wait_for("the session to take phone bookings", lambda: _try_book(his, session_id, patients[0]))
    second = his.phone_book(session_id, patients[1])
    _rules(his, cutoff_days_before=0, cutoff_time="23:59", phone_handover_time="00:00")

    def handed_over() -> dict[str, Any] | None:
        _, answer = his.hadmin.call("GET", f"/api/v1/hospitals/hebmu2/handover?date={tomorrow}")
        return answer if answer and len(answer.get("messages", [])) == 2 and \
            all(m["status"] == "acked" for m in answer["messages"]) else None

    report = his.wait_for("the hand-over to be acknowledged", handed_over, timeout=120)
    assert sorted(m["appointment_id"] for m in report["messages"]) == sorted(
        [booked["appointment_id"], second["appointment_id"]])
    assert report["summary"]["acked"] == 2
    a05 = [r for r in his.journal() if r["message_type"] == "ADT^A05"]
    assert len(a05) == 2 and all(r["ack_code"] == "AA" for r in a05)
    assert all(r["receiving_facility"] == "HEBMU2" for r in a05)
    raw = "".join(r["raw"] for r in his.journal())
    assert "13040519700101" not in raw  # the simulator's log is masked; the HIS itself got PID

    # 对账: today's messages to the HIS, all acknowledged; the CSV opens in Excel (BOM, two languages).
    today = datetime.now(TZ).date().isoformat()
    status, report = his.hadmin.call("GET", f"/api/v1/hospitals/hebmu2/his/reconciliation?date={today}")
    assert status == 200 and report["balanced"] is True, report
    kinds = {k["message_type"]: k for k in report["kinds"]}
    assert kinds["ADT^A05"]["sent"] == kinds["ADT^A05"]["acked"] == 2 and kinds["SIU^S12"]["acked"] >= 2
    csv_answer = requests.get(f"{his.base}/api/v1/hospitals/hebmu2/his/reconciliation.csv?date={today}",
                              headers={"Authorization": f"Bearer {his.hadmin.token}"}, timeout=30)
    assert csv_answer.status_code == 200 and csv_answer.content.startswith("\ufeff".encode())
    assert "HIS确认 acknowledged" in csv_answer.content.decode("utf-8-sig")
    cli = subprocess.run([sys.executable, "-m", "services.his_sync.reconcile", "--hospital", "hebmu2", "--date", today],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=his.platform.process_env())
    assert cli.returncode == 0 and "balanced" in cli.stdout, cli.stdout + cli.stderr


def _try_book(his: His, session_id: str, patient_id: str) -> dict[str, Any] | None:
    r = requests.post(his.base + "/api/v1/appointments", json={"session_id": session_id, "patient_id": patient_id},
                      headers={"Authorization": f"Bearer {his.operator.token}", "Idempotency-Key": uuid.uuid4().hex},
                      timeout=30)
    return dict(r.json()) if r.status_code == 201 else None


def test_a_slot_blocked_by_the_his_becomes_a_stop_request_the_admin_approves(his):
    session = "hebmu2-zhang-d3-am"
    stranger = his.send("--facility", "NOBODY-HIS", "--block", "--doctor", DOCTOR, "--session", session,
                        "--reason", "医生出差")
    assert stranger.returncode == 2 and "AR" in stranger.stdout, stranger.stdout + stranger.stderr

    sent = his.send("--facility", "HEBMU2-HIS", "--block", "--doctor", DOCTOR, "--session", session,
                    "--reason", "医生外出会诊", "--block-id", "B1", "--control-id", "HISCTL0001")
    assert sent.returncode == 0 and "AA" in sent.stdout, sent.stdout + sent.stderr
    again = his.send("--facility", "HEBMU2-HIS", "--block", "--doctor", DOCTOR, "--session", session,
                     "--reason", "医生外出会诊", "--block-id", "B1", "--control-id", "HISCTL0001")
    assert again.returncode == 0 and again.stdout == sent.stdout  # a duplicate: the same answer

    status, stops = his.hadmin.call("GET", "/api/v1/hospitals/hebmu2/stops?state=requested")
    assert status == 200, stops
    mine = [s for s in stops["stops"] if s["session_id"] == session]
    assert len(mine) == 1 and mine[0]["requested_by"] == "HIS hebmu2" and mine[0]["reason"] == "医生外出会诊"

    # Withdrawn by the HIS (S24), then blocked again and approved by the admin.
    withdrawn = his.send("--facility", "HEBMU2-HIS", "--unblock", "--doctor", DOCTOR, "--session", session,
                         "--block-id", "B1")
    assert withdrawn.returncode == 0, withdrawn.stdout
    status, stops = his.hadmin.call("GET", "/api/v1/hospitals/hebmu2/stops?state=requested")
    assert not [s for s in stops["stops"] if s["session_id"] == session]
    blocked = his.send("--facility", "HEBMU2-HIS", "--block", "--doctor", DOCTOR, "--session", session,
                       "--reason", "医生外出会诊", "--block-id", "B2")
    assert blocked.returncode == 0, blocked.stdout
    status, stops = his.hadmin.call("GET", "/api/v1/hospitals/hebmu2/stops?state=requested")
    [stop] = [s for s in stops["stops"] if s["session_id"] == session]
    status, approved = his.hadmin.call("POST", "/api/v1/admin/schedule/approve_doctor_stop",
                                       {"session_id": session, "stop_id": stop["stop_id"]})
    assert status == 200, approved
    unknown = his.send("--facility", "HEBMU2-HIS", "--block", "--doctor", DOCTOR, "--session", "no-such-session")
    assert unknown.returncode == 2 and "AE" in unknown.stdout


def test_visit_totals_arrive_over_signed_http_and_a_bad_signature_is_refused(his):
    secret = "hebmu2-his-secret-0123456789"
    status, endpoint = his.admin.call("GET", "/api/v1/his/endpoints")
    assert status == 200, endpoint
    [mine] = [e for e in endpoint["endpoints"] if e["hospital_id"] == "hebmu2"]
    body = {k: mine[k] for k in ("host", "port", "charset", "rate_per_s", "inbound_facility")}
    status, saved = his.admin.call("PUT", "/api/v1/hospitals/hebmu2/his", {**body, "inbound_secret": secret})
    assert status == 200 and saved["inbound_secret_set"] is True and secret not in json.dumps(saved), saved
    status, _ = his.hadmin.call("PUT", "/api/v1/hospitals/hebmu2/his", {**body, "inbound_secret": secret})
    assert status == 403  # the platform admin's

    url = f"http://127.0.0.1:{his.platform.his_http_port}/his/v1/visits"
    day = (datetime.now(TZ) - timedelta(days=1)).date().isoformat()
    payload = json.dumps({"date": day, "visits": 4321}).encode()

    def signed(key: str) -> dict[str, str]:
        ts, nonce = str(int(time.time())), uuid.uuid4().hex
        sig = hmac.new(key.encode(), f"{ts}\n{nonce}\n{hashlib.sha256(payload).hexdigest()}".encode(),
                       hashlib.sha256).hexdigest()
        return {"X-Hospital": "hebmu2", "X-Timestamp": ts, "X-Nonce": nonce, "X-Signature": sig,
                "Content-Type": "application/json"}

    refused = requests.post(url, data=payload, headers=signed("wrong-secret-000000000"), timeout=30)
    assert refused.status_code == 401, refused.text
    accepted = requests.post(url, data=payload, headers=signed(secret), timeout=30)
    assert accepted.status_code == 200 and accepted.json()["visits"] == 4321, accepted.text
    repeat = requests.post(url, data=payload, headers=signed(secret), timeout=30)
    assert repeat.status_code == 200 and repeat.json()["duplicate"] is True, repeat.text


def test_a_fhir_bundle_from_the_his_publishes_sessions_and_says_what_it_refused(his):
    from services.his_sync import fhir

    secret = "hebmu2-his-secret-for-fhir-42"
    status, endpoints = his.admin.call("GET", "/api/v1/his/endpoints")
    [mine] = [e for e in endpoints["endpoints"] if e["hospital_id"] == "hebmu2"]
    body = {k: mine[k] for k in ("host", "port", "charset", "rate_per_s", "inbound_facility")}
    assert his.admin.call("PUT", "/api/v1/hospitals/hebmu2/his", {**body, "inbound_secret": secret})[0] == 200
    day = (datetime.now(TZ) + timedelta(days=5)).date()
    bundle = fhir.bundle_example(DOCTOR, day)
    url = f"http://127.0.0.1:{his.platform.his_http_port}/his/v1/fhir/Bundle"

    def post(document: dict[str, Any]) -> requests.Response:
        payload = json.dumps(document).encode()
        ts, nonce = str(int(time.time())), uuid.uuid4().hex
        sig = hmac.new(secret.encode(), f"{ts}\n{nonce}\n{hashlib.sha256(payload).hexdigest()}".encode(),
                       hashlib.sha256).hexdigest()
        return requests.post(url, data=payload, timeout=60, headers={
            "X-Hospital": "hebmu2", "X-Timestamp": ts, "X-Nonce": nonce, "X-Signature": sig,
            "Content-Type": "application/fhir+json"})

    first = post(bundle)
    assert first.status_code == 200, first.text
    answer = first.json()
    pm = f"{DOCTOR}-{day:%Y%m%d}-pm"
    assert answer["created"] == [pm], answer  # the slot with its fee
    reasons = " ".join(r["reason"] for r in answer["refused"])
    assert "fee" in reasons and "unknown session" in reasons, answer  # no fee for 主任医师; no such session to stop
    again = post(bundle)
    assert again.json() == answer  # the same bundle: the same answer, nothing published twice

    status, session = his.hadmin.call("GET", "/api/v1/departments/hebmu2-xnk/schedule?from=" + day.isoformat())
    assert status == 200 and pm in [s["session_id"] for s in session["sessions"]], session

    changed = json.loads(json.dumps(bundle))
    changed["id"] = "bundle-quota-change"
    for entry in changed["entry"]:
        resource = entry["resource"]
        for ext in resource.get("extension", []):
            if ext["url"].endswith("session-quota"):
                for sub in ext["extension"]:
                    if sub["url"] == "web":
                        sub["valueInteger"] = 8
    second = post(changed).json()
    assert pm in second["changed"], second
    invalid = post({"resourceType": "Bundle", "type": "searchset"})
    assert invalid.status_code == 400 and "FHIR" in invalid.json()["error"]["message"], invalid.text
