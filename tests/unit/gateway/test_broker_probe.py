"""Issue 14, finding 5: with the broker unreachable the gateway answers 503 with Retry-After at
once, instead of after nameko's ~13 s of publish retries or the 15 s RPC deadline. The probe and
`call` are tested here against real sockets (a listening one and a closed port) with a stand-in
for nameko's MethodProxy; tests/faults restarts a real broker under load."""

from __future__ import annotations

import socket
import time
from typing import Any

import eventlet
import pytest

from services.gateway import api
from services.gateway.api import BrokerDown, BrokerProbe, call, error_response


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Listening:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


class Reply:
    def __init__(self, seconds: float, value: Any) -> None:
        self.seconds, self.value = seconds, value

    def result(self) -> Any:
        eventlet.sleep(self.seconds)
        return self.value


class Method:
    """What `call` uses of nameko's MethodProxy: amqp_uri and call_async."""

    def __init__(self, port: int, seconds: float = 0.0, value: Any = "answer") -> None:
        self.amqp_uri = f"amqp://guest:guest@127.0.0.1:{port}/"
        self.seconds, self.value, self.calls = seconds, value, 0

    def call_async(self, *args: Any) -> Reply:
        self.calls += 1
        return Reply(self.seconds, self.value)


@pytest.fixture(autouse=True)
def fresh_probes():
    api._PROBES.clear()
    yield
    api._PROBES.clear()


def test_a_closed_broker_port_is_answered_503_with_retry_after_before_anything_is_published():
    method = Method(closed_port())
    started = time.monotonic()
    with pytest.raises(BrokerDown) as caught:
        call(method, "x")
    assert time.monotonic() - started < 1.0
    assert method.calls == 0  # nothing published into a reconnect loop
    answer = error_response(caught.value)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "2"


def test_a_reachable_broker_lets_the_call_through_and_its_answer_back():
    broker = Listening()
    try:
        method = Method(broker.port, seconds=0.6, value={"ok": 1})
        assert call(method, "x") == {"ok": 1}  # longer than a wait slice: the slicing loses nothing
        assert method.calls == 1
    finally:
        broker.close()


def test_a_broker_lost_while_waiting_for_the_reply_ends_the_wait_at_once():
    broker = Listening()
    method = Method(broker.port, seconds=10.0)
    eventlet.spawn_after(0.3, broker.close)
    started = time.monotonic()
    with pytest.raises(BrokerDown):
        call(method, "x", timeout=15.0)
    assert time.monotonic() - started < 2.0  # the deadline was 15 s


def test_the_probe_connects_at_most_once_per_interval_and_learns_a_return():
    port = closed_port()
    probe = BrokerProbe(f"amqp://guest:guest@127.0.0.1:{port}/")
    assert probe.is_up() is False
    checked = probe.checked_at
    assert probe.is_up() is False and probe.checked_at == checked  # the cached answer
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(4)
    try:
        time.sleep(BrokerProbe.PROBE_INTERVAL + 0.05)
        assert probe.is_up() is True
    finally:
        listener.close()


def test_failover_alternates_count_as_up_when_any_one_answers():
    broker = Listening()
    try:
        probe = BrokerProbe(f"amqp://g:g@127.0.0.1:{closed_port()}/;amqp://g:g@127.0.0.1:{broker.port}/")
        assert probe.is_up() is True
    finally:
        broker.close()


def test_the_deadline_is_sent_as_a_header_of_the_request():
    """nameko sends `worker_ctx.data` as `nameko.<key>` headers; `context_data` is a copy (a key set
    there is silently lost, as the first version of set_deadline did)."""
    from nameko.containers import WorkerContext
    from nameko.messaging import HeaderEncoder

    class Container:
        service_name = "gateway"
        config: dict[str, Any] = {}

    class Entrypoint:
        method_name = "book"

    worker_ctx = WorkerContext(Container(), None, Entrypoint())
    method = Method(closed_port())
    method.worker_ctx = worker_ctx  # type: ignore[attr-defined]
    api.set_deadline(method, 1234.5)
    assert HeaderEncoder().get_message_headers(worker_ctx)["nameko.deadline"] == "1234.500"


def test_a_broker_slow_to_accept_is_not_called_down_until_the_slowness_lasts(monkeypatch):
    """The flash-crowd bench: RabbitMQ's accept queue full under load made one probe time out and
    150 requests were answered 503. A timeout is not a refusal; only lasting timeouts are."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)  # never accepted: once the backlog is full, further connects hang
    port = int(sock.getsockname()[1])
    held = []
    try:
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            held.append(c)
        time.sleep(0.1)
        monkeypatch.setattr(BrokerProbe, "CONNECT_TIMEOUT", 0.1)
        monkeypatch.setattr(BrokerProbe, "PROBE_INTERVAL", 0.0)
        monkeypatch.setattr(BrokerProbe, "SLOW_IS_DOWN", 0.6)
        probe = BrokerProbe(f"amqp://guest:guest@127.0.0.1:{port}/")
        assert api._connects(("127.0.0.1", port), 0.1) is None  # the premise: a timeout, not a refusal
        assert probe.is_up()
        started = time.monotonic()
        while time.monotonic() - started < 0.4:
            assert probe.is_up()
        while time.monotonic() - started < 2.0 and probe.is_up():
            pass
        assert not probe.is_up()  # slow for longer than SLOW_IS_DOWN: away
    finally:
        for c in held:
            c.close()
        sock.close()
