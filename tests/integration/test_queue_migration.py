"""`python -m infra.queues migrate` turns an older installation's classic queues into quorum queues
without losing a message, on a RabbitMQ node of the test's own (tests/faults/cluster.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pika
import pytest

from infra.queues import HOLDING_SUFFIX, platform_queues
from scripts.launcher import ROOT
from tests.faults.cluster import Cluster, Node

pytestmark = pytest.mark.integration

EVT = "evt-schedule-DoctorStopApproved--booking.on_doctor_stop_approved"


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with Cluster.started(1, prefix="qmigrate") as cluster:
        yield cluster.nodes[0]


def _queues(node: Node) -> dict[str, tuple[str, int]]:
    """Each queue's type and ready messages (counted over AMQP: rabbitmqctl's count of a quorum
    queue is a metric that lags by seconds)."""
    out = node.ctl("list_queues", "name", "type", "--quiet", "--no-table-headers").stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    conn = pika.BlockingConnection(pika.URLParameters(node.uri))
    try:
        ch = conn.channel()
        return {name: (kind, ch.queue_declare(name, passive=True).method.message_count) for name, kind in rows}
    finally:
        conn.close()


def _migrate(node: Node, *services: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.queues", "migrate", "--amqp", node.uri, *services],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _publish(channel, queue: str, n: int, **props) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        channel.basic_publish("", queue, f"{queue}#{i}".encode(),
                              pika.BasicProperties(delivery_mode=2, headers={"n": i}, **props))


def test_classic_queues_of_an_old_installation_become_quorum_with_their_messages(node):
    conn = pika.BlockingConnection(pika.URLParameters(node.uri))
    ch = conn.channel()
    ch.confirm_delivery()
    # What the previous version declared: classic durable queues, the same names and bindings.
    ch.exchange_declare("schedule.events", "topic", durable=True)
    ch.exchange_declare("nameko-rpc", "topic", durable=True)
    ch.queue_declare(EVT, durable=True)
    ch.queue_bind(EVT, "schedule.events", "DoctorStopApproved")
    ch.queue_declare(EVT + ".retry", durable=True,
                     arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": EVT})
    ch.queue_declare(EVT + ".dead", durable=True)
    ch.queue_declare("rpc-booking", durable=True)
    ch.queue_bind("rpc-booking", "nameko-rpc", "booking.*")
    _publish(ch, EVT, 5)
    _publish(ch, EVT + ".retry", 2, expiration="600000")  # waiting out a back-off: must not expire while held
    _publish(ch, EVT + ".dead", 1)
    _publish(ch, "rpc-booking", 3, reply_to="rpc.reply-x", correlation_id="c1")
    # A conversion an earlier run left half done: the target is quorum already, messages still held.
    ch.queue_declare("rpc-stats", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare("rpc-stats" + HOLDING_SUFFIX, durable=True, arguments={"x-queue-type": "quorum"})
    _publish(ch, "rpc-stats" + HOLDING_SUFFIX, 2)
    conn.close()

    done = _migrate(node, "booking", "stats")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{EVT}: converted, 5 message(s) moved" in done.stdout

    queues = _queues(node)
    wanted = {q.name for q in platform_queues(["booking", "stats"])}
    assert {name for name in queues} == wanted, queues  # nothing left in a holding queue
    assert all(kind == "quorum" for kind, _ in queues.values()), queues
    assert queues[EVT][1] == 5 and queues[EVT + ".retry"][1] == 2 and queues[EVT + ".dead"][1] == 1
    assert queues["rpc-booking"][1] == 3 and queues["rpc-stats"][1] == 2

    conn = pika.BlockingConnection(pika.URLParameters(node.uri))
    ch = conn.channel()
    ch.confirm_delivery()
    method, props, body = ch.basic_get(EVT + ".retry", auto_ack=False)
    assert props.expiration == "600000" and body == f"{EVT}.retry#0".encode()  # TTL restored, order kept
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = ch.basic_get("rpc-booking", auto_ack=False)
    assert (props.reply_to, props.correlation_id, props.headers["n"]) == ("rpc.reply-x", "c1", 0)
    ch.basic_nack(method.delivery_tag, requeue=True)
    # The bindings came along: an event and a request reach the new queues.
    ch.basic_publish("schedule.events", "DoctorStopApproved", b"new", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("nameko-rpc", "booking.book", b"new", pika.BasicProperties(delivery_mode=2))
    conn.close()
    queues = _queues(node)
    assert queues[EVT][1] == 6 and queues["rpc-booking"][1] == 4

    again = _migrate(node, "booking", "stats")
    assert again.returncode == 0 and "0 converted" in again.stdout, again.stdout + again.stderr


def test_migration_refuses_a_queue_that_still_has_consumers(node):
    conn = pika.BlockingConnection(pika.URLParameters(node.uri))
    ch = conn.channel()
    ch.queue_declare("rpc-schedule", durable=True)
    ch.basic_publish("", "rpc-schedule", b"kept", pika.BasicProperties(delivery_mode=2))
    ch.basic_qos(prefetch_count=0)
    ch.basic_consume("rpc-schedule", lambda *a: None, auto_ack=False)
    try:
        done = _migrate(node, "schedule")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "rpc-schedule has 1 consumer(s): stop the services" in done.stderr
    finally:
        conn.close()
    assert _queues(node)["rpc-schedule"] == ("classic", 1)  # untouched, message kept
    assert _migrate(node, "schedule").returncode == 0
    assert _queues(node)["rpc-schedule"] == ("quorum", 1)
