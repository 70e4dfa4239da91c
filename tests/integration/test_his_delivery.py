"""The HIS dispatcher on the real his_sync tables (PostgreSQL): order per appointment, AE retried
then parked, AR parked at once, a HIS that is down waited out without a counted attempt (the
breaker), the lease that keeps two replicas off one hospital, the rate, and a parked message
sent again or skipped by an operator. The HIS is scripted here (the boundary); the real MLLP
exchange with the simulator is in tests/nameko and tests/e2e."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from contracts import Actor, Forbidden, InvalidInput
from infra.db import Database, apply_schema, ensure_database
from infra.handling import INBOX_SCHEMA
from infra.pii import PiiVault
from services.his_sync import handlers, hl7, readmodel
from services.his_sync.mllp import MllpError

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 9, 8, 0, tzinfo=UTC)
APPT = {"appointment_id": "a1", "hospital_id": "hb3", "department_id": "card", "doctor_id": "dr-wang",
        "patient_id": "p1", "session_id": "s1", "code": "K7M2QX9P", "channel": "web", "sequence_number": 1,
        "date": "2025-03-10", "period": "morning", "start": "08:00:00"}


class ScriptedHis:
    """Answers each message from a script: an ACK code, "down" (cannot connect) or "silent"."""

    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.down = False
        self.connects = 0

    def connect(self, endpoint: dict[str, Any]) -> Any:
        with self.lock:
            self.connects += 1
            if self.down:
                raise MllpError("cannot connect to HIS: connection refused")
        return self

    def send(self, message: str) -> str:
        with self.lock:
            outcome = self.script.pop(0) if self.script else "AA"
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if outcome == "silent":
                raise MllpError("no ACK within 5s")
            self.received.append(message)
            info = hl7.describe(message)
            return hl7.build_ack(info, outcome, f"A{info.control_id}"[:20], NOW, "" if outcome == "AA" else "busy")
        finally:
            with self.lock:
                self.in_flight -= 1

    def close(self) -> None:
        pass

    def types(self) -> list[tuple[str, str]]:
        return [(hl7.describe(m).message_type, hl7.describe(m).appointment_id) for m in self.received]


class His:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.vault = PiiVault(Fernet.generate_key().decode())
        self.clock = NOW
        with db.transaction() as cur:
            readmodel.HIS_ENDPOINTS.put(cur, {
                "hospital_id": "hb3", "host": "127.0.0.1", "port": 9, "receiving_application": "HIS",
                "receiving_facility": "HB3", "sending_facility": "HEBEI-APPT", "charset": "UNICODE UTF-8",
                "rate_per_s": 1000, "inbound_facility": "HB3-HIS", "enabled": True})

    def queue(self, trigger: str, appointment_id: str = "a1") -> str:
        control_id = uuid.uuid4().hex[:20]
        appt = {**APPT, "appointment_id": appointment_id}
        raw = hl7.build_siu(trigger, appt, control_id, NOW)
        with self.db.transaction() as cur:
            readmodel.HIS_OUTBOX.add(cur, hospital_id="hb3", appointment_id=appointment_id, control_id=control_id,
                                     event_id=uuid.uuid4(), message_type=f"SIU^{trigger}",
                                     raw_enc=self.vault.encrypt(raw), now=self.clock)
        return control_id

    def drain(self, his: ScriptedHis, owner: str = "me", **kw: Any) -> int:
        return handlers.drain("hb3", owner, self.db, self.vault, readmodel.HIS_OUTBOX, readmodel.HIS_ENDPOINTS,
                              his.connect, lambda: self.clock, handlers.Delivery(max_attempts=3, slice_s=2), **kw)

    def states(self) -> dict[str, tuple[str, int]]:
        with self.db.transaction() as cur:
            return {m["control_id"]: (m["status"], m["attempts"]) for m in readmodel.HIS_OUTBOX.messages(cur, 100)}

    def endpoint(self) -> dict[str, Any]:
        with self.db.transaction() as cur:
            return readmodel.HIS_ENDPOINTS.of(cur, "hb3") or {}


@pytest.fixture
def his(fresh_dsn) -> Iterator[His]:
    dsn = fresh_dsn("his")
    ensure_database(dsn)
    db = Database(dsn, size=6)
    apply_schema(db, INBOX_SCHEMA + readmodel.SCHEMA)
    apply_schema(db, INBOX_SCHEMA + readmodel.SCHEMA)
    yield His(db)
    db.close()


def test_messages_go_in_order_and_each_is_acknowledged_once(his):
    ids = [his.queue("S12", "a1"), his.queue("S12", "a2"), his.queue("S15", "a1")]
    scripted = ScriptedHis()
    assert his.drain(scripted) == 3
    assert scripted.types() == [("SIU^S12", "a1"), ("SIU^S12", "a2"), ("SIU^S15", "a1")]
    assert his.states() == {i: ("acked", 1) for i in ids}
    assert his.drain(scripted) == 0 and len(scripted.received) == 3


def test_an_ae_is_retried_with_back_off_holding_back_its_appointment_only_then_parked(his):
    s12, other, s15 = his.queue("S12", "a1"), his.queue("S12", "a2"), his.queue("S15", "a1")
    scripted = ScriptedHis(["AE"])
    his.drain(scripted)
    # a1's S12 waits for its retry; a2 went on; a1's S15 did not overtake its S12.
    assert his.states() == {s12: ("queued", 1), other: ("acked", 1), s15: ("queued", 0)}
    his.clock = NOW + timedelta(seconds=1)
    his.drain(scripted)
    assert his.states()[s12] == ("queued", 1)  # its back-off (2 s) has not passed
    scripted.script = ["AE", "AE"]
    for step in (3, 10):
        his.clock = NOW + timedelta(seconds=step)
        his.drain(scripted)
    assert his.states()[s12] == ("failed", 3) and his.states()[s15] == ("queued", 0)  # parked holds it back

    admin = Actor(kind="hospital_admin", id="adm", hospital_id="hb3")
    with pytest.raises(Forbidden):
        handlers.requeue(_message_id(his, s12), Actor(kind="hospital_admin", id="x", hospital_id="hb4"), his.db,
                         readmodel.HIS_OUTBOX, his.clock)
    handlers.requeue(_message_id(his, s12), admin, his.db, readmodel.HIS_OUTBOX, his.clock)
    his.drain(scripted)
    assert his.states()[s12] == ("acked", 1) and his.states()[s15] == ("acked", 1)
    with pytest.raises(InvalidInput):
        handlers.requeue(_message_id(his, s12), admin, his.db, readmodel.HIS_OUTBOX, his.clock)


def test_an_ar_is_parked_at_once_and_skipping_it_lets_the_appointment_go_on(his):
    s12, s15 = his.queue("S12"), his.queue("S15")
    his.drain(ScriptedHis(["AR"]))
    assert his.states() == {s12: ("failed", 1), s15: ("queued", 0)}
    handlers.requeue(_message_id(his, s12), Actor(kind="platform_admin", id="root"), his.db, readmodel.HIS_OUTBOX,
                     his.clock, skip=True)
    his.drain(ScriptedHis())
    assert his.states() == {s12: ("skipped", 1), s15: ("acked", 1)}


def test_a_his_that_is_down_is_waited_out_in_order_however_long_with_no_attempt_counted(his):
    ids = [his.queue("S12", f"a{i}") for i in range(3)]
    scripted = ScriptedHis()
    scripted.down = True
    for second in range(0, 300, 5):  # five minutes of outage, far beyond any retry budget
        his.clock = NOW + timedelta(seconds=second)
        his.drain(scripted)
    assert his.states() == {i: ("queued", 0) for i in ids}
    endpoint = his.endpoint()
    assert endpoint["circuit"] == "open" and endpoint["failures"] >= 5 and "refused" in endpoint["last_error"]
    # The breaker spaces the tries (doubling to 10 s): about one per 10 s, not one per drain (60).
    assert 5 <= scripted.connects <= 40
    scripted.down = False
    his.clock = NOW + timedelta(minutes=10)
    assert his.drain(scripted) == 3
    assert [t[1] for t in scripted.types()] == ["a0", "a1", "a2"]
    assert his.endpoint()["circuit"] == "closed" and his.endpoint()["failures"] == 0


def test_a_silent_his_opens_the_breaker_and_the_message_keeps_its_place(his):
    first, second = his.queue("S12", "a1"), his.queue("S12", "a2")
    his.drain(ScriptedHis(["silent"]))
    assert his.states() == {first: ("queued", 0), second: ("queued", 0)}
    assert his.drain(ScriptedHis()) == 0  # the breaker is open: not yet
    his.clock = NOW + timedelta(minutes=1)
    assert his.drain(ScriptedHis()) == 2


def test_two_replicas_never_drain_one_hospital_at_once(his):
    for i in range(40):
        his.queue("S12", f"a{i}")
    scripted = ScriptedHis()
    barrier = threading.Barrier(3)
    done: list[int] = []

    def replica(owner: str) -> None:
        barrier.wait()
        for _ in range(5):
            done.append(his.drain(scripted, owner=owner))

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(done) == 40 and scripted.most_in_flight == 1
    assert len({hl7.describe(m).control_id for m in scripted.received}) == 40 == len(scripted.received)


def test_the_hospitals_rate_is_kept(his):
    with his.db.transaction() as cur:
        cur.execute("UPDATE his_endpoints SET rate_per_s = 20")
    for i in range(10):
        his.queue("S12", f"a{i}")
    started = time.monotonic()
    assert his.drain(ScriptedHis()) == 10
    assert time.monotonic() - started >= 9 / 20 * 0.9  # 10 messages at 20/s: 0.45 s at least


def _message_id(his: His, control_id: str) -> str:
    with his.db.transaction() as cur:
        cur.execute("SELECT message_id FROM his_outbox WHERE control_id = %s", (control_id,))
        return str(cur.fetchone()[0])


def test_the_days_reconciliation_lists_what_the_his_did_not_acknowledge(his, tmp_path):
    from zoneinfo import ZoneInfo

    for trigger, appointment in (("S12", "a1"), ("S12", "a2"), ("S15", "a1")):
        his.queue(trigger, appointment)
    his.drain(ScriptedHis(["AA", "AR"]))  # a1's S12 acked, a2's refused; a1's S15 was sent next: acked
    his.queue("S15", "a2")  # waits behind a2's parked S12
    tz = ZoneInfo("Asia/Shanghai")
    report = handlers.reconciliation("hb3", NOW.astimezone(tz).date(), his.db, readmodel.HIS_OUTBOX, tz)
    kinds = {k["message_type"]: k for k in report["kinds"]}
    s12 = kinds["SIU^S12"]
    assert (s12["sent"], s12["acked"], s12["refused"], s12["waiting"], s12["label_zh"]) == (2, 1, 1, 0, "预约")
    assert kinds["SIU^S15"]["sent"] == 2 and kinds["SIU^S15"]["acked"] == 1 and kinds["SIU^S15"]["waiting"] == 1
    assert {(d["appointment_id"], d["message_type"], d["status"]) for d in report["differences"]} == {
        ("a2", "SIU^S12", "failed"), ("a2", "SIU^S15", "queued")}
    assert report["balanced"] is False and "busy" in next(
        d["reason"] for d in report["differences"] if d["status"] == "failed")
    text = handlers.reconciliation_csv(report)
    assert text.startswith("\ufeff") and "HIS确认 acknowledged" in text and "a2" in text


def test_a_dispatcher_that_died_mid_send_is_taken_over_after_its_lease_in_order(his):
    s12, s15 = his.queue("S12", "a1"), his.queue("S15", "a1")
    with his.db.transaction() as cur:  # replica A takes the hospital and claims the S12, then dies
        assert readmodel.HIS_ENDPOINTS.take_lease(cur, "hb3", "replica-a", his.clock, 20)
        assert readmodel.HIS_OUTBOX.claim_next(cur, "hb3", his.clock)["control_id"] == s12
    scripted = ScriptedHis()
    assert his.drain(scripted, owner="replica-b") == 0  # A's lease still holds: B waits
    assert his.states() == {s12: ("sending", 0), s15: ("queued", 0)}
    his.clock = NOW + timedelta(seconds=21)
    assert his.drain(scripted, owner="replica-b") == 2
    assert [hl7.describe(m).control_id for m in scripted.received] == [s12, s15]


class CountingEndpoints(readmodel.HisEndpoints):
    """The real endpoint table, counting the dispatcher's lease renewals and breaker closings."""

    def __init__(self) -> None:
        self.leases = 0
        self.closings = 0

    def take_lease(self, cur: Any, *args: Any) -> bool:
        self.leases += 1
        return super().take_lease(cur, *args)

    def circuit_closed(self, cur: Any, hospital_id: str) -> bool:
        self.closings += 1
        return super().circuit_closed(cur, hospital_id)


class SlowHis(ScriptedHis):
    """Each answer takes a second of the test's clock; `on_send(n)` runs before the n-th (from 1)."""

    def __init__(self, his: His, on_send: Any = None) -> None:
        super().__init__()
        self.his, self.on_send = his, on_send

    def send(self, message: str) -> str:
        self.his.clock += timedelta(seconds=1)
        if self.on_send is not None:
            self.on_send(len(self.received) + 1)
        return super().send(message)


def _drain_counted(his: His, scripted: ScriptedHis, endpoints: CountingEndpoints, owner: str = "me") -> int:
    return handlers.drain("hb3", owner, his.db, his.vault, readmodel.HIS_OUTBOX, endpoints, scripted.connect,
                          lambda: his.clock, handlers.Delivery(lease_s=20, slice_s=30))


def test_a_drain_renews_its_lease_by_time_and_closes_only_a_breaker_that_was_set(his):
    ids = [his.queue("S12", f"a{i}") for i in range(20)]
    endpoints = CountingEndpoints()
    assert _drain_counted(his, SlowHis(his), endpoints) == 20
    assert his.states() == {i: ("acked", 1) for i in ids}
    # 20 messages, a second each, a 20 s lease renewed after a quarter of it: the first take and
    # about one renewal per 5 s, not one per message; a closed breaker is not written at all.
    assert 1 + 3 <= endpoints.leases <= 1 + 5, endpoints.leases
    assert endpoints.closings == 0
    with his.db.transaction() as cur:  # a failure counted before (the HIS answered nothing once)
        cur.execute("UPDATE his_endpoints SET failures = 1, last_error = 'no ACK within 5s'")
    more = [his.queue("S12", f"b{i}") for i in range(5)]
    endpoints = CountingEndpoints()
    assert _drain_counted(his, SlowHis(his), endpoints) == 5
    assert endpoints.closings == 1  # the first answer closes it, the others need not
    assert his.endpoint()["failures"] == 0 and his.endpoint()["last_error"] is None
    assert all(his.states()[i] == ("acked", 1) for i in more)


def test_a_dispatcher_that_stalled_past_its_lease_stops_when_another_replica_holds_the_hospital(his):
    ids = [his.queue("S12", f"a{i}") for i in range(10)]

    def stall(n: int) -> None:
        if n == 3:  # replica A hangs for longer than its lease; replica B takes the hospital meanwhile
            his.clock += timedelta(seconds=25)
            with his.db.transaction() as cur:
                assert readmodel.HIS_ENDPOINTS.take_lease(cur, "hb3", "replica-b", his.clock, 20)

    a = SlowHis(his, stall)
    assert _drain_counted(his, a, CountingEndpoints(), owner="replica-a") == 3
    assert [hl7.describe(m).control_id for m in a.received] == ids[:3]
    with his.db.transaction() as cur:  # A let go of nothing that was not its own
        cur.execute("SELECT lease_owner FROM his_endpoints WHERE hospital_id = 'hb3'")
        assert cur.fetchone()[0] == "replica-b"
    b = ScriptedHis()
    assert _drain_counted(his, b, CountingEndpoints(), owner="replica-b") == 7
    assert [hl7.describe(m).control_id for m in b.received] == ids[3:]
