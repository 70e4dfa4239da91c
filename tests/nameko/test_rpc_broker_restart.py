"""A broker restart while a reply is pending does not kill an RPC service (issue 14, finding 3).

On a RabbitMQ node of the test's own (tests/faults/cluster.py): a call is in flight when the node
stops; its reply cannot be published. nameko's own `rpc` let that exception out of the worker
thread and the container killed itself ("thread exited with error"); `infra.rpc.rpc` logs and
drops the reply. Once the node is back, the same container answers the next call, and the request
whose reply was lost is redelivered (it was never acked), not lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import eventlet
import pytest
from eventlet.event import Event
from nameko.containers import ServiceContainer
from nameko.standalone.rpc import ClusterRpcProxy

from infra.queues import QUORUM
from infra.rpc import rpc
from tests.faults.cluster import Node
from tests.nameko.conftest import container_on, green_wait

pytestmark = pytest.mark.integration

calls: list[int] = []
release = Event()


class Slow:
    name = "slow_restart"

    @rpc
    def work(self, n: int) -> int:
        calls.append(n)
        release.wait()  # held until the test has stopped the broker
        return n * 2

    @rpc
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def node(own_node: Node) -> Node:
    return own_node


@pytest.fixture
def container(node: Node) -> Iterator[ServiceContainer]:
    with container_on(Slow, node) as container:
        yield container


def test_container_survives_a_broker_restart_with_a_reply_pending(node, container):
    config = {"AMQP_URI": node.uri}
    queues = node.ctl("list_queues", "name", "type", "arguments").stdout
    assert "rpc-slow_restart\tquorum" in queues, queues
    assert QUORUM["x-queue-type"] in queues

    with ClusterRpcProxy(config) as proxy:
        proxy.slow_restart.work.call_async(21)  # published with confirms before this returns
    green_wait(lambda: calls == [21], 10, "the worker to start")

    node.stop()
    release.send(True)  # the worker returns; its reply has no broker to go to
    green_wait(lambda: not container._worker_threads, 60, "the worker to finish handling its result")
    assert not container._being_killed, "the container killed itself when the reply could not be published"

    node.start()
    deadline = time.monotonic() + 60
    while True:  # the consumer reconnects with back-off (up to 5 s between attempts)
        try:
            with ClusterRpcProxy(config, timeout=5) as proxy:
                assert proxy.slow_restart.ping() == "pong"
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            eventlet.sleep(1)
    assert not container._being_killed and not container._died.ready()
    green_wait(lambda: calls.count(21) >= 2, 30, "the unacked request to be redelivered")
