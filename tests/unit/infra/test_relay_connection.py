"""The relay's broker connection at its boundary: a connection that breaks while closing, or that
the broker dropped during a quiet spell, is replaced without ending the relay (issue 14 item 2)."""

from __future__ import annotations

from typing import Any

import pytest
from pika.exceptions import StreamLostError

from infra.eventstore import InMemoryEventStore
from infra.relay import Relay

pytestmark = pytest.mark.unit


class BrokenConnection:
    """What pika's BlockingConnection looks like after the broker, then the kernel, dropped it."""

    is_open = True

    def __init__(self) -> None:
        self.serviced = 0

    def process_data_events(self, time_limit: float = 0) -> None:
        self.serviced += 1
        raise StreamLostError("Stream connection lost: ConnectionResetError(104, 'Connection reset by peer')")

    def close(self) -> None:
        raise OSError(9, "Bad file descriptor")


def test_closing_a_connection_that_fails_with_an_os_error_does_not_end_the_relay():
    relay = Relay(InMemoryEventStore(), "amqp://guest:guest@127.0.0.1:9/")
    relay._connection = BrokenConnection()  # type: ignore[assignment]
    relay._channel = object()
    relay.close_channel()
    assert relay._connection is None and relay._channel is None


def test_a_connection_dropped_while_quiet_is_replaced_before_publishing(monkeypatch: Any):
    relay = Relay(InMemoryEventStore(), "amqp://guest:guest@127.0.0.1:9/")
    broken = BrokenConnection()
    relay._connection = broken  # type: ignore[assignment]
    relay._channel = type("Open", (), {"is_closed": False})()
    opened: list[str] = []

    class Fresh:
        is_open = True

        def __init__(self, params: Any) -> None:
            opened.append("connection")

        def channel(self) -> Any:
            return type("Channel", (), {"is_closed": False, "confirm_delivery": lambda self: None})()

    monkeypatch.setattr("infra.relay.pika.BlockingConnection", Fresh)
    relay._ensure_channel()
    assert broken.serviced == 1 and opened == ["connection"], "found dead at once and reconnected, no retry pause"
