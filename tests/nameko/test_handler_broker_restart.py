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

import uuid
from collections.abc import Iterator

import pytest
from eventlet.event import Event
from nameko.containers import ServiceContainer

from infra import handling
from infra.handling import Transient, reliable_event_handler
from tests.faults.cluster import Node
from tests.nameko.conftest import Broker, container_on, green_wait

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
def container(own_node: Node, rabbit_config, monkeypatch) -> Iterator[ServiceContainer]:
    # nameko's and our publish retries would wait a minute for the broker: the point here is what
    # happens when they give up, so they give up at once.
    monkeypatch.setattr(handling, "PUBLISH_RETRY_POLICY", {"max_retries": 0})
    with container_on(Held, own_node, rabbit_config) as container:
        yield container


def test_a_delivery_the_broker_cannot_settle_leaves_the_service_alive_and_comes_back(own_node, container):
    event_id = str(uuid.uuid4())
    Broker(own_node.uri).publish_event("heldsource", {"type": "ThingHappened", "event_id": event_id})
    green_wait(lambda: seen == [event_id], 15, "the handler to start")

    own_node.stop()
    release.send(True)  # the handler fails now: its retry has no broker to go to
    green_wait(lambda: not container._worker_threads, 60, "the worker to finish")
    assert not container._being_killed and not container._died.ready(), \
        "the container killed itself when the delivery could not be settled"

    own_node.start()
    green_wait(lambda: len(seen) >= 2, 90, "the unsettled delivery to come back once the broker is up")
    assert set(seen) == {event_id}
    assert not container._being_killed and not container._died.ready()
