import eventlet  # noqa: I001 -- must be first: nameko interface tests need the patched stdlib

eventlet.monkey_patch()

# Everything below is imported after the patch. (pytest has already loaded tests/conftest.py,
# which imports infra.db and psycopg2; that is harmless: infra.db looks up threading/queue at call
# time and installs psycogreen's wait callback lazily, once it sees the patched socket module.)
# Fixtures of the monkey-patched nameko interface tests: run them on their own,
#
#     .venv/bin/pytest tests/nameko -q
#
# never in one invocation with the unpatched suites (tests/unit, tests/integration, tests/e2e).
#
# The broker side lives in the vhost `appt_test_nameko` (created idempotently with rabbitmqctl).
# It is not deleted at session end because another engineer's session may be using it at the same
# moment; instead every service a test starts carries this session's token in its name, so its
# queues are this session's alone, and they are deleted when the session ends.

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import pika  # noqa: E402
import pika.exceptions  # noqa: E402
import pytest  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from tests.conftest import ensure_vhost  # noqa: E402
from tests.faults.cluster import Cluster, Node  # noqa: E402

VHOST = os.environ.get("APPT_TEST_NAMEKO_VHOST", "appt_test_nameko")
SESSION_TOKEN = uuid.uuid4().hex[:8]


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="session")
def nameko_vhost() -> Any:
    """AMQP URI of the session's vhost; this session's queues are deleted at the end."""
    uri = ensure_vhost(VHOST)
    yield uri
    listed = _rabbitmqctl("list_queues", "-p", VHOST, "name", "--quiet", "--no-table-headers")
    mine = [q.strip() for q in listed.stdout.splitlines() if SESSION_TOKEN in q]
    if mine:
        conn = pika.BlockingConnection(pika.URLParameters(uri))
        try:
            channel = conn.channel()
            for name in mine:
                channel.queue_delete(queue=name)
        finally:
            conn.close()


@pytest.fixture
def unique_name(request) -> Callable[[str], str]:
    """Service names unique to this session and test (their queues are named after them)."""
    counter = iter(range(1000))

    def make(prefix: str) -> str:
        return f"{prefix}_{SESSION_TOKEN}_{uuid.uuid4().hex[:6]}_{next(counter)}"

    return make


@pytest.fixture
def container_factory(fresh_dsn):
    """nameko's own container_factory, re-declared so that it depends on `fresh_dsn`: pytest then
    kills the containers *before* it drops their databases (nameko's `fast_teardown` would
    otherwise order the drop first, under running workers)."""
    from nameko.containers import get_container_cls

    containers: list[Any] = []

    def make(service_cls: type, config: dict[str, Any]) -> Any:
        container = get_container_cls(config)(service_cls, config)
        containers.append(container)
        return container

    yield make
    for c in containers:
        try:
            c.kill()
        except Exception:  # noqa: BLE001 -- teardown must reach every container
            pass


@pytest.fixture
def rabbit_config(nameko_vhost, fresh_dsn) -> dict[str, Any]:
    """Overrides nameko's plugin fixture (which needs the management API, not installed here):
    the nameko config of a test, with fresh databases."""
    return {
        "AMQP_URI": nameko_vhost,
        "vhost": VHOST,
        "username": "guest",
        "EVENTSTORE_DSN": fresh_dsn("events"),
        "DATABASE_DSN": fresh_dsn("svc"),
        "PII_KEY": Fernet.generate_key().decode(),  # services refuse to start without their own key
        "RETRY_ATTEMPTS": 3,
        "RETRY_BASE_DELAY_MS": 50,
        "max_workers": 10,
    }


@pytest.fixture
def amqp_uri(rabbit_config) -> str:
    """The test vhost, for nameko's helper fixtures (tests/conftest.py's amqp_uri is the default vhost)."""
    return str(rabbit_config["AMQP_URI"])


class Broker:
    """Plain pika access to the test vhost, the way the relay and an operator see it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _channel(self) -> tuple[Any, Any]:
        conn = pika.BlockingConnection(pika.URLParameters(self.uri))
        return conn, conn.channel()

    def publish_event(self, source: str, body: dict[str, Any], copies: int = 1) -> None:
        """Publish as infra.relay does: topic exchange <source>.events, routing key = type."""
        conn, channel = self._channel()
        try:
            channel.confirm_delivery()
            exchange = f"{source}.events"
            channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
            for _ in range(copies):
                channel.basic_publish(
                    exchange=exchange,
                    routing_key=body["type"],
                    body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                    properties=pika.BasicProperties(
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=2,
                        message_id=body["event_id"],
                        headers={"nameko.correlation_id": body.get("correlation_id") or body["event_id"]},
                    ),
                )
        finally:
            conn.close()

    def count(self, queue: str) -> int | None:
        """Ready messages in `queue`, or None when the queue does not exist."""
        conn, channel = self._channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise
        finally:
            if conn.is_open:
                conn.close()

    def get(self, queue: str, ack: bool) -> tuple[Any, Any, bytes] | None:
        """One message (method, properties, body); put back unless `ack`."""
        conn, channel = self._channel()
        try:
            method, props, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                return None
            if ack:
                channel.basic_ack(method.delivery_tag)
            else:
                channel.basic_nack(method.delivery_tag, requeue=True)
            return method, props, body
        finally:
            conn.close()


@pytest.fixture
def broker(rabbit_config) -> Broker:
    return Broker(rabbit_config["AMQP_URI"])


@pytest.fixture
def wait_for() -> Callable[..., None]:
    def wait(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)  # green: lets the containers run

    return wait


@pytest.fixture
def own_node() -> Any:
    """A RabbitMQ node of the test's own (tests/faults/cluster.py), to stop and start under a
    container; always torn down."""
    with Cluster.started(1, prefix="nmk") as cluster:
        yield cluster.nodes[0]


def container_on(service_cls: type, node: Node, config: dict[str, Any] | None = None) -> Any:
    """A started container on `node`, killed at the end of the `with`. Not container_factory:
    nameko's pytest plugin reorders that fixture, and a container killed after its broker is gone
    waits for ever in kombu's reconnect loop, hence the bounded kill."""
    from contextlib import contextmanager

    from nameko.containers import ServiceContainer

    @contextmanager
    def run() -> Any:
        container = ServiceContainer(service_cls, {**(config or {}), "AMQP_URI": node.uri})
        container.start()
        try:
            yield container
        finally:
            with eventlet.Timeout(30, False):
                container.kill()

    return run()


def green_wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for `condition` without blocking the hub (eventlet.sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        eventlet.sleep(0.1)
