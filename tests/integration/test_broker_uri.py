"""AMQP_URI may list a cluster's nodes separated by ';' (kombu's failover form). Every pika user
(the health checks' broker probe and dead-letter counts, the ops page, the dead-letter tool, the
relay, the queue migration) must read it as that list: parsed as one URL, the vhost became
';amqp:…' and each broker check on a cluster failed (seen in the cluster fault run's logs)."""

from __future__ import annotations

import pika
import pytest

from infra.health import broker_check
from infra.queues import amqp_parameters
from tests.conftest import AMQP_URI, free_port

pytestmark = pytest.mark.integration


def test_a_failover_list_is_one_set_of_parameters_per_node() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    params = amqp_parameters(f"{dead};{AMQP_URI}", timeout=2)
    assert [(p.port, p.virtual_host) for p in params] == [(pika.URLParameters(dead).port, "/"),
                                                          (pika.URLParameters(AMQP_URI).port,
                                                           pika.URLParameters(AMQP_URI).virtual_host)]
    assert all(p.socket_timeout == 2 and p.connection_attempts == 1 for p in params)


def test_the_broker_check_passes_when_the_first_node_is_down_and_another_answers() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    assert broker_check(f"{dead};{AMQP_URI}", 3)["status"] == "ok"


def test_the_broker_check_fails_when_no_node_answers() -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
    with pytest.raises(pika.exceptions.AMQPError):
        broker_check(";".join(dead), 2)
