"""A reliable event handler whose delivery cannot be settled because the broker went away does
not kill its service (issue 14).

tests/faults saw his_sync die so: a handler failed while RabbitMQ was restarting, the retry
publish in `ReliableEventHandler.handle_result` raised ECONNREFUSED out of the worker thread, and
nameko killed the whole container ("thread exited with error"). Here, on a RabbitMQ node of the
test's own (tests/faults/cluster.py): the handler is held until the node is stopped, then fails;
neither its retry nor its ack can reach a broker. The container must live on, and once the node is
back the unsettled delivery comes again and is handled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import eventlet
import pytest
from eventlet.event import Event
from nameko.containers import ServiceContainer

from infra import handling
from infra.handling import Transient, reliable_event_handler
from tests.faults.cluster import Cluster, Node
from tests.nameko.conftest import Broker

pytestmark = pytest.mark.integration

seen: list[str] = []
release = Event()


class Held:
    name = "held_handler"

    @reliable_event_handler("heldsource", "ThingHappened")
    def handle(self, body: dict) -> None:
        seen.append(body["event_id"])
        if len(seen) == 1:
            release.wait()  # until the test has stopped the broker
            raise Transient("the peer is not ready")


@pytest.fixture
def node() -> Iterator[Node]:
    with Cluster.started(1, prefix="hdlrestart") as cluster:
        yield cluster.nodes[0]


@pytest.fixture
def container(node: Node, rabbit_config, monkeypatch) -> Iterator[ServiceContainer]:
    # nameko's and our publish retries would wait a minute for the broker: the point here is what
    # happens when they give up, so they give up at once.
    monkeypatch.setattr(handling, "PUBLISH_RETRY_POLICY", {"max_retries": 0})
    container = ServiceContainer(Held, {**rabbit_config, "AMQP_URI": node.uri})
    container.start()
    yield container
    with eventlet.Timeout(30, False):
        container.kill()


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        eventlet.sleep(0.1)


def test_a_delivery_the_broker_cannot_settle_leaves_the_service_alive_and_comes_back(node, container):
    event_id = str(uuid.uuid4())
    Broker(node.uri).publish_event("heldsource", {"type": "ThingHappened", "event_id": event_id})
    _wait(lambda: seen == [event_id], 15, "the handler to start")

    node.stop()
    release.send(True)  # the handler fails now: its retry has no broker to go to
    _wait(lambda: not container._worker_threads, 60, "the worker to finish")
    assert not container._being_killed and not container._died.ready(), \
        "the container killed itself when the delivery could not be settled"

    node.start()
    _wait(lambda: len(seen) >= 2, 90, "the unsettled delivery to come back once the broker is up")
    assert set(seen) == {event_id}
    assert not container._being_killed and not container._died.ready()
