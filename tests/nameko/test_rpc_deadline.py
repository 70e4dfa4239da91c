"""A request past its caller's deadline is dropped by infra.rpc instead of run (issue 14).

The fault run (tests/faults) found a booking stored 26 s after its caller had been answered: a
second copy of the request, published again by kombu's retry once the broker was back, ran long
after the first copy had answered "full". The gateway sends its deadline with every request
(services/gateway/api.py `set_deadline`, header `nameko.deadline`); here a real container on the
real broker gets one request whose deadline has passed and one whose deadline is ahead.
"""

from __future__ import annotations

import time

import eventlet
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from infra.rpc import rpc

pytestmark = pytest.mark.integration


def test_a_request_past_its_deadline_is_dropped_and_the_next_one_runs(container_factory, rabbit_config,
                                                                      unique_name):
    ran: list[int] = []

    class Deadlined:
        name = unique_name("deadlined")

        @rpc
        def work(self, n: int) -> int:
            ran.append(n)
            return n * 2

    container = container_factory(Deadlined, rabbit_config)
    container.start()

    with ClusterRpcProxy(rabbit_config, context_data={"deadline": f"{time.time() - 5:.3f}"}) as late:
        pending = getattr(late, Deadlined.name).work.call_async(1)
        with ClusterRpcProxy(rabbit_config, context_data={"deadline": f"{time.time() + 30:.3f}"}) as fresh:
            assert getattr(fresh, Deadlined.name).work(2) == 4
        # The same queue, one consumer: the late request was taken before the fresh one answered.
        answered = None
        with eventlet.Timeout(1.0, False):
            answered = pending.result()
        assert answered is None, "a request past its deadline was answered"
    assert ran == [2], f"a request past its deadline ran: {ran}"
    assert not container._being_killed

    with ClusterRpcProxy(rabbit_config) as anyone:  # no deadline (the importer, his_sync): runs
        assert getattr(anyone, Deadlined.name).work(3) == 6
    assert ran == [2, 3]
