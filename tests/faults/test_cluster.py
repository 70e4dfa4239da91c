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
