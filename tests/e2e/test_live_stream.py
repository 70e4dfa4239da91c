"""Live notices (GET /api/v1/live) against the whole platform as processes: a booking made over the
API reaches an open event stream as a public notice, a reconnect with Last-Event-ID is sent what it
missed (or told to resync), and the stream's bounds answer as documented."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from services.gateway.staff import ApiClient
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e

SESSION = "hebmu2-zhang-d3-am"
DEPARTMENT = "hebmu2-xnk"
MAX_STREAMS = 4
PUBLIC_KEYS = {"type", "session_id", "department_id", "hospital_id", "date"}


class SseClient:
    """An event stream read over a plain socket (HTTP/1.0: the body is the raw stream)."""

    def __init__(self, address: str, query: str, headers: dict[str, str] | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        head = [f"GET /api/v1/live?{query} HTTP/1.0", f"Host: {address}", "Accept: text/event-stream"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        self.buffer = b""
        raw_head = self._until(b"\r\n\r\n", time.monotonic() + 10)
        lines = raw_head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        self.raw = b""  # every byte of the body read so far

    def _until(self, marker: bytes, deadline: float) -> bytes:
        while marker not in self.buffer:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"nothing complete within the deadline; buffered {self.buffer[-300:]!r}") from None
            if not data:
                raise AssertionError(f"stream closed; buffered {self.buffer[-300:]!r}")
            self.buffer += data
        part, _, self.buffer = self.buffer.partition(marker)
        return part

    def frames(self, timeout: float = 20.0) -> Iterator[dict[str, str]]:
        """Each frame's fields (id, event, data, retry; a comment only frame as {":": text})."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            block = self._until(b"\n\n", deadline)
            self.raw += block + b"\n\n"
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                name, _, value = line.partition(":")
                fields[name or ":"] = value[1:] if value.startswith(" ") else value
            yield fields

    def next_event(self, kind: str | None = None, timeout: float = 20.0) -> dict[str, str]:
        for frame in self.frames(timeout):
            if "event" in frame and (kind is None or frame["event"] == kind):
                return frame
        raise AssertionError(f"no {kind or 'event'} within {timeout}s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def site() -> Iterator[Any]:
    env = {"SMS_PER_CLIENT": "100", "SMS_BURST_CLIENT": "1000", "RATE_PER_CLIENT": "1000",
           "RATE_BURST_CLIENT": "5000", "LIVE_MAX_STREAMS": str(MAX_STREAMS), "LIVE_HEARTBEAT_S": "1"}
    with running_platform("live", ["demo/walking-skeleton.json"], env=env) as p:
        base = f"http://{p.gateway_address}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the imported session reaches booking through the relay
            r = requests.get(f"{base}/api/v1/departments/{DEPARTMENT}/schedule?to=2099-01-01", timeout=30)
            if r.status_code != 200:
                r = requests.get(f"{base}/api/v1/departments/{DEPARTMENT}/schedule", timeout=30)
            if r.status_code == 200 and any(s["session_id"] == SESSION and s["state"] == "open"
                                            for s in r.json()["sessions"]):
                break
            time.sleep(0.5)
        yield p


def patient_token(base: str, phone: str, id_number: str) -> str:
    admin = ApiClient(base).login("admin", "admin-pass-2024")
    code = admin.sms_code(phone, "register", operator=admin)
    r = requests.post(f"{base}/api/v1/patients", json={"name": "实时", "id_number": id_number, "phone": phone,
                                                       "password": "good-pass-77", "sms_code": code}, timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_a_booking_reaches_an_open_stream_and_a_reconnect_resumes(site: Any) -> None:
    base = f"http://{site.gateway_address}"
    stream = SseClient(site.gateway_address, f"department={DEPARTMENT}")
    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    token = patient_token(base, "13512345601", "11010519491231002X")
    auth = {"Authorization": f"Bearer {token}"}
    booked = requests.post(f"{base}/api/v1/appointments", json={"session_id": SESSION},
                           headers={**auth, "Idempotency-Key": uuid.uuid4().hex}, timeout=30)
    assert booked.status_code == 201, booked.text
    answer = booked.json()

    notice = stream.next_event("AppointmentBooked")
    data = json.loads(notice["data"])
    assert set(data) == PUBLIC_KEYS
    assert data["session_id"] == SESSION and data["department_id"] == DEPARTMENT and data["hospital_id"] == "hebmu2"
    booked_id = int(notice["id"])
    for private in (answer["appointment_id"], answer["code"], "11010519491231002X", "13512345601"):
        assert private.encode() not in stream.raw, "a notice carries nothing about the patient"

    cancelled = requests.post(f"{base}/api/v1/appointments/{answer['appointment_id']}/cancel", headers=auth,
                              timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    # the cancel names only the session: the department comes from what the gateway learnt
    later = stream.next_event("AppointmentCancelled")
    assert json.loads(later["data"])["department_id"] == DEPARTMENT
    assert int(later["id"]) > booked_id
    stream.close()

    resumed = SseClient(site.gateway_address, f"department={DEPARTMENT}", {"Last-Event-ID": str(booked_id)})
    again = resumed.next_event()
    assert (again["event"], again["id"]) == ("AppointmentCancelled", later["id"])
    resumed.close()

    stale = SseClient(site.gateway_address, f"session={SESSION}", {"Last-Event-ID": "0"})
    assert stale.next_event()["event"] == "resync"  # older than anything this replica holds
    stale.close()


def test_the_stream_refuses_what_it_cannot_serve(site: Any) -> None:
    base = f"http://{site.gateway_address}"
    plain = requests.get(f"{base}/api/v1/live?department={DEPARTMENT}", timeout=10)
    assert plain.status_code == 406 and plain.json()["error"]["code"] == "not_acceptable"
    sse = {"Accept": "text/event-stream"}
    nothing = requests.get(f"{base}/api/v1/live", headers=sse, timeout=10)
    assert nothing.status_code == 400 and nothing.json()["error"]["field"] == "department"
    bad = requests.get(f"{base}/api/v1/live?session=a%20b", headers=sse, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "session"

    time.sleep(2.5)  # closed streams of the other test are noticed at their next heartbeat (1 s here)
    opened: list[SseClient] = []
    try:
        refused = None
        for _ in range(MAX_STREAMS + 2):
            client = SseClient(site.gateway_address, f"hospital=hebmu2&n={len(opened)}")
            if client.status == 503:
                refused = client
                break
            assert client.status == 200
            opened.append(client)
        assert refused is not None and len(opened) == MAX_STREAMS, "the cap is LIVE_MAX_STREAMS"
        assert int(refused.headers["retry-after"]) >= 1
        body = json.loads(refused.buffer or refused.sock.recv(4096))
        assert body["error"]["code"] == "live_busy"
        refused.close()
        # the cap counts open streams, not workers: other requests are answered meanwhile
        assert requests.get(f"{base}/api/v1/hospitals", timeout=10).status_code == 200
    finally:
        for client in opened:
            client.close()
