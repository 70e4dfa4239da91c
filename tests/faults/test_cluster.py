"""A three-node RabbitMQ cluster keeps every confirmed message when the node leading a queue dies.

Three nodes of the test's own (tests/faults/cluster.py), clustered with `join_cluster`. A handler
queue is declared by the platform's own declaration code (infra.queues.event_queues, the kombu
queues ReliableEventHandler gives nameko) and bound to `<source>.events` as the relay's exchange.
A publisher sends booking events the way the relay does (persistent, publisher confirms) and a
consumer acks them, both through kombu's failover list (`amqp://a;amqp://b;amqp://c`, what nameko
passes to kombu as AMQP_URI), both first connected to the queue's leader. Mid-load the leader is
stopped (`stop_app`) or its VM killed; clients fail over to the other nodes, the quorum elects a
new leader, and every message the broker confirmed is consumed (duplicates are allowed: consumers
de-duplicate by event id).

Not covered here: the whole platform on the cluster. The relay publishes with pika, whose
URLParameters take one broker address, so it does not fail over; nameko services and the gateway
accept the `;` list (kombu).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection
from kombu.entity import Exchange

from infra.queues import event_queue_name, event_queues
from tests.faults.cluster import Cluster, Node

pytestmark = pytest.mark.integration

MESSAGES = 3000
STOP_AFTER = 800
RETRY = {"max_retries": 60, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1.0}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster.started(3, prefix="qcluster") as cluster:
        yield cluster


def _running_nodes(node: Node) -> str:
    return node.ctl("cluster_status", "--formatter", "json").stdout


def _leader(cluster: Cluster, queue: str, ask: Node) -> Node:
    out = ask.ctl("list_queues", "name", "leader", "--quiet", "--no-table-headers").stdout
    leaders = dict(line.split("\t") for line in out.splitlines() if line.strip())
    return next(n for n in cluster.nodes if n.name == leaders[queue].strip())


class Publisher(threading.Thread):
    """Booking events onto `<source>.events`, each remembered once the broker confirmed it."""

    def __init__(self, uri: str, exchange: Exchange, event_type: str) -> None:
        super().__init__(daemon=True)
        self.uri, self.exchange, self.event_type = uri, exchange, event_type
        self.confirmed: list[str] = []
        self.failed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Connection(self.uri, failover_strategy="round-robin",
                            transport_options={"confirm_publish": True}) as conn:
                producer = conn.Producer(serializer="json")
                for i in range(MESSAGES):
                    event_id = str(uuid.uuid4())
                    body = {"event_id": event_id, "type": self.event_type, "source": "booking",
                            "data": {"seq": i, "session_id": "s-1", "patient": f"p-{i}"}}
                    try:
                        # retry: a publish cut off by the node's death is sent again to the next
                        # node; a confirm that never came makes it unconfirmed, not lost.
                        producer.publish(body, exchange=self.exchange, routing_key=self.event_type,
                                         delivery_mode=2, message_id=event_id,
                                         retry=True, retry_policy=RETRY, declare=[self.exchange])
                    except Exception:  # noqa: BLE001 -- counted: an unconfirmed publish is the publisher's to redo
                        self.failed += 1
                        continue
                    self.confirmed.append(event_id)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            self.error = exc


class Consumer(threading.Thread):
    def __init__(self, uri: str, queue) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.uri, self.queue = uri, queue
        self.seen: list[str] = []
        self.reconnects = 0
        self.stop = threading.Event()

    def _on_message(self, body, message) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(json.loads(body)["event_id"] if isinstance(body, (str, bytes)) else body["event_id"])
        message.ack()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with Connection(self.uri, failover_strategy="round-robin") as conn:
                    conn.ensure_connection(**RETRY)
                    with conn.Consumer([self.queue], callbacks=[self._on_message], accept=["json"],
                                       prefetch_count=100):
                        while not self.stop.is_set():
                            try:
                                conn.drain_events(timeout=0.5)
                            except TimeoutError:
                                pass
            except Exception:  # noqa: BLE001 -- the node went away: connect to the next one
                self.reconnects += 1
                time.sleep(0.3)


@pytest.mark.parametrize("failure", ["stop_app", "kill"])
def test_no_confirmed_message_is_lost_when_the_leader_dies(cluster, failure):
    status = _running_nodes(cluster.nodes[0])
    assert all(n.name in status for n in cluster.nodes), status
    event_type = "AppointmentBooked"
    name = event_queue_name("booking", event_type, f"cluster_{failure}", "on_booked")
    exchange = Exchange("booking.events", type="topic", durable=True)
    queue, retry, dead = event_queues(name, exchange, event_type)
    with Connection(cluster.uri(0)) as conn:
        for q in (queue, retry, dead):
            q(conn.default_channel).declare()
    listed = cluster.nodes[0].ctl("list_queues", "name", "type", "members", "--quiet", "--no-table-headers").stdout
    row = next(line for line in listed.splitlines() if line.startswith(name + "\t"))
    assert "\tquorum\t" in row and all(n.name in row for n in cluster.nodes), row  # replicated on all three

    leader = _leader(cluster, name, cluster.nodes[0])
    others = [n for n in cluster.nodes if n is not leader]
    first = cluster.nodes.index(leader)
    publisher = Publisher(cluster.failover_uri(first), exchange, event_type)
    consumer = Consumer(cluster.failover_uri(first), queue)
    consumer.start()
    publisher.start()
    try:
        deadline = time.monotonic() + 60
        while len(publisher.confirmed) < STOP_AFTER and publisher.is_alive():
            assert time.monotonic() < deadline, "publishing is too slow"
            time.sleep(0.05)
        confirmed_before = len(publisher.confirmed)
        if failure == "kill":
            leader.kill()
        else:
            leader.stop_app()

        publisher.join(90)
        assert not publisher.is_alive(), "the publisher did not finish"
        assert publisher.error is None, publisher.error
        confirmed = set(publisher.confirmed)
        assert len(confirmed) > confirmed_before, "nothing was confirmed after the leader died"
        deadline = time.monotonic() + 60
        while not confirmed <= set(consumer.seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        lost = confirmed - set(consumer.seen)
        assert not lost, f"{len(lost)} of {len(confirmed)} confirmed messages were never consumed"
        assert _leader(cluster, name, others[0]) is not leader  # a surviving node leads now
        assert consumer.reconnects >= 1  # the consumer did lose its node and moved on
        print(f"{failure}: {len(confirmed)} confirmed ({confirmed_before} before the leader died), "
              f"{publisher.failed} unconfirmed, {len(consumer.seen) - len(set(consumer.seen))} duplicates, "
              f"{consumer.reconnects} consumer reconnects")
    finally:
        consumer.stop.set()
        consumer.join(10)
        if failure == "kill":
            leader.start()
        else:
            leader.start_app()


def _crowd_demo(path) -> None:  # type: ignore[no-untyped-def]
    path.write_text(json.dumps({
        "hospitals": [{"hospital_id": "qc", "name": "河北省人民医院", "level": "三级甲等"}],
        "departments": [{"department_id": "qc-xnk", "hospital_id": "qc", "name": "心血管内科"}],
        "doctors": [{"doctor_id": "qc-li", "hospital_id": "qc", "department_id": "qc-xnk",
                     "name": "李专家", "title": "主任医师"}],
        "sessions": [{"session_id": PLATFORM_SESSION, "doctor_id": "qc-li", "day_offset": 3, "period": "morning",
                      "start": "08:00", "end": "11:30", "capacity": 100,
                      "quota": {"web": 90, "phone": 5, "window": 5}, "fee": "100.00"}],
    }, ensure_ascii=False), encoding="utf-8")


PLATFORM_SESSION = "qc-li-d3-am"
PLATFORM_PATIENTS = 40


def test_the_platform_on_the_cluster_books_through_the_loss_of_a_node(cluster, tmp_path):
    """Every service, the relay and the gateway on the cluster (AMQP_URI = the failover list), over
    classic queues an older version left: the launcher migrates them; bookings before and after
    the node leading every queue is killed are all confirmed, and each one's SMS is sent (its
    AppointmentBooked crossed the cluster to notification)."""
    import subprocess
    import sys

    import requests

    from bench.loadgen import post_json, proved, run
    from infra.db import drop_database
    from infra.settings import pg_dsn
    from scripts.launcher import ROOT, Platform
    from services.gateway.staff import ApiClient
    from tests.conftest import free_port, with_check_digit

    seeded = "evt-booking-AppointmentBooked--notification.confirm_booking"
    with Connection(cluster.uri(0)) as conn:  # what the previous version declared: classic queues
        channel = conn.default_channel
        channel.exchange_declare("booking.events", "topic", durable=True, auto_delete=False)
        channel.queue_declare(seeded, durable=True, auto_delete=False)
        channel.queue_bind(seeded, "booking.events", "AppointmentBooked")
        channel.queue_declare("rpc-booking", durable=True, auto_delete=False)
    tag = uuid.uuid4().hex[:6]
    prefix = f"appt_test_qcluster_{tag}"
    unlimited = {k: "100000" for k in ("RATE_PER_CLIENT", "RATE_BURST_CLIENT", "SMS_PER_CLIENT", "SMS_BURST_CLIENT",
                                       "RATE_PER_PATIENT", "RATE_BURST_PATIENT")}
    platform = Platform(run_dir=ROOT / ".run" / f"faults-cluster-{tag}",
                        env={"APPT_DB_PREFIX": prefix, "AMQP_URI": cluster.failover_uri(0), **unlimited},
                        gateway_address=f"127.0.0.1:{free_port()}", his_port=free_port(),
                        his_listen_port=free_port(), his_http_port=free_port())
    crowd = tmp_path / "crowd.json"
    _crowd_demo(crowd)
    killed = cluster.nodes[0]
    try:
        platform.start(wait=150)
        types = cluster.nodes[0].ctl("list_queues", "name", "type", "--quiet", "--no-table-headers").stdout
        assert f"{seeded}\tquorum" in types and "rpc-booking\tquorum" in types, types
        for argv in (["services.schedule.importer", str(crowd)], ["services.gateway.staff", "demo"]):
            subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=platform.process_env(), check=True,
                           timeout=120)
        address = platform.gateway_address

        def remaining() -> int:
            answer = requests.get(f"http://{address}/api/v1/departments/qc-xnk/schedule", timeout=30).json()
            return next((s["remaining"]["web"] for s in answer.get("sessions", [])
                         if s["session_id"] == PLATFORM_SESSION), -1)

        deadline = time.monotonic() + 60
        while remaining() != 90:
            assert time.monotonic() < deadline, "booking never learned the session"
            time.sleep(0.3)
        people = proved(address, [{"name": f"患者{n}", "id_number": with_check_digit(f"13010219800101{n:03d}"),
                                   "phone": f"139{n:08d}", "password": f"pw-{n:06d}-x"}
                                  for n in range(PLATFORM_PATIENTS)])
        registered, summary = run(address, [post_json("/api/v1/patients", p) for p in people], concurrency=10)
        assert summary.statuses == {201: PLATFORM_PATIENTS}, summary
        tokens = [json.loads(r.body)["token"] for r in registered]

        def book(i: int) -> dict:  # type: ignore[type-arg]
            """Retried with the same idempotency key while the platform fails over (503/timeouts)."""
            deadline = time.monotonic() + 90
            while True:
                try:
                    r = requests.post(f"http://{address}/api/v1/appointments", json={"session_id": PLATFORM_SESSION},
                                      headers={"Idempotency-Key": f"qc-{tag}-{i:04d}",
                                               "Authorization": f"Bearer {tokens[i]}"}, timeout=20)
                    if r.status_code == 201:
                        return dict(r.json())
                    assert r.status_code in (502, 503, 504), r.text
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, f"booking {i} never confirmed"
                time.sleep(0.5)

        half = PLATFORM_PATIENTS // 2
        booked = [book(i) for i in range(half)]
        killed.kill()  # the first address of every client, and the leader of the queues declared through it
        booked += [book(i) for i in range(half, PLATFORM_PATIENTS)]
        assert sorted(b["sequence_number"] for b in booked) == list(range(1, PLATFORM_PATIENTS + 1))

        admin = ApiClient(address).login("admin", "admin-pass-2024")
        codes = {b["code"] for b in booked}
        deadline = time.monotonic() + 90
        while True:
            outbox = requests.get(f"http://{address}/api/v1/dev/sms", timeout=30,
                                  headers={"Authorization": f"Bearer {admin.token}"}).text
            missing = {c for c in codes if c not in outbox}
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} of {len(codes)} confirmation SMS never sent"
            time.sleep(1)
        status = platform.status()  # nothing died on the way (the supervisor would have restarted it)
        assert all(info["state"] == "running" and not info.get("restarts") for info in status.values()), status
    finally:
        platform.stop()
        saved = os.environ.get("APPT_DB_PREFIX", "")
        os.environ["APPT_DB_PREFIX"] = prefix
        try:
            for name in ("events", "schedule", "booking", "notification", "his_sync", "stats", "gateway"):
                drop_database(pg_dsn(name))
        finally:
            os.environ["APPT_DB_PREFIX"] = saved
        if not killed.answers():
            killed.start()
