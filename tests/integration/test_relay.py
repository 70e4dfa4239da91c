"""The relay as a real process: crash safety, message format, one active relay (DESIGN §3.3).

`python -m infra.relay` is started as a subprocess against a fresh event store and the vhost
`appt_test_relay`. Each test declares its own durable queue bound with "#" to the topic exchange
`relaytest.events`, so what the relay published can be counted and drained with pika. Run in the
unpatched pytest invocation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import psycopg2
import pytest

from contracts.envelope import Envelope
from infra.eventstore import EventStore
from infra.relay import LOCK_KEY
from tests.conftest import ensure_vhost

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VHOST = os.environ.get("APPT_TEST_RELAY_VHOST", "appt_test_relay")
SOURCE = "relaytest"
EXCHANGE = f"{SOURCE}.events"
CHECKPOINT = "relay"  # the name infra.relay.Relay keeps its checkpoint under


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def relay_vhost() -> str:
    return ensure_vhost(VHOST)


class Queue:
    """A durable queue of this test bound to everything on relaytest.events; deleted afterwards."""

    def __init__(self, uri: str) -> None:
        self.name = f"relaytest-{uuid.uuid4().hex[:12]}"
        self.conn = pika.BlockingConnection(pika.URLParameters(uri))
        self.channel = self.conn.channel()
        self.channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
        self.channel.queue_declare(queue=self.name, durable=True)
        self.channel.queue_bind(queue=self.name, exchange=EXCHANGE, routing_key="#")

    def count(self) -> int:
        return int(self.channel.queue_declare(queue=self.name, passive=True).method.message_count)

    def get(self) -> tuple[Any, Any, dict[str, Any]] | None:
        method, props, body = self.channel.basic_get(queue=self.name, auto_ack=True)
        if method is None:
            return None
        return method, props, json.loads(body)

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while (got := self.get()) is not None:
            out.append(got[2])
        return out

    def delete(self) -> None:
        try:
            if self.channel.is_open:
                self.channel.queue_delete(queue=self.name)
        finally:
            if self.conn.is_open:
                self.conn.close()


@pytest.fixture
def queue(relay_vhost) -> Iterator[Queue]:
    q = Queue(relay_vhost)
    yield q
    q.delete()


class RelayProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.relay", "--config", str(config)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[str]:
        """The `event` names of the relay's JSON log lines."""
        names = []
        for line in self.log().splitlines():
            try:
                names.append(json.loads(line)["event"])
            except (ValueError, KeyError, TypeError):
                continue
        return names

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._log.close()
        return rc


@pytest.fixture
def relays(tmp_path, store, relay_vhost) -> Iterator[Callable[[int], RelayProcess]]:
    """Start relay processes on the test's store; every one is killed at teardown."""
    started: list[RelayProcess] = []
    config = tmp_path / "relay.yaml"

    def start(batch_size: int = 500) -> RelayProcess:
        config.write_text(
            "SERVICE_NAME: relay\n"
            f"AMQP_URI: {relay_vhost}\n"
            f"EVENTSTORE_DSN: {store.dsn}\n"
            "LOG_FORMAT: json\n"
            "LOG_LEVEL: INFO\n"
            f"BATCH_SIZE: {batch_size}\n",
            encoding="utf-8",
        )
        relay = RelayProcess(config, tmp_path / f"relay-{len(started)}.log")
        started.append(relay)
        return relay

    yield start
    for relay in started:
        if relay.proc.poll() is None:
            relay.proc.kill()
            relay.proc.wait(timeout=30)
        if not relay._log.closed:
            relay._log.close()


def append_round_robin(store: EventStore, streams: list[str], per_stream: int, type_: str = "ThingHappened",
                       first_version: int = 1) -> None:
    """per_stream appends, each putting the next event of every stream in one atomic append, so
    the streams interleave in the global order."""
    for i in range(per_stream):
        version = first_version + i
        store.append({
            s: (version - 1, [Envelope(type=type_, stream=s, source=SOURCE, correlation_id=f"corr-{s}-{version}",
                                       data={"stream": s, "v": version})])
            for s in streams
        })


def advisory_lock_held(dsn: str) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (LOCK_KEY,),
            )
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def test_a_relay_killed_mid_stream_loses_nothing_and_keeps_each_stream_in_order(store, queue, relays):
    streams = [f"crash-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(30)]
    append_round_robin(store, streams, per_stream=100)
    stored = store.read_all_raw(0, limit=10_000)
    assert len(stored) == 3000
    head = store.head()
    positions = [int(r[0]) for r in stored]
    assert positions[-1] == head

    first = relays(100)
    wait_for(lambda: queue.count() > 300, 120, "the first relay to publish part of the stream")
    assert first.kill(signal.SIGKILL) == -signal.SIGKILL
    # The killed process's sessions end when PostgreSQL sees its sockets close: the advisory lock
    # going away says the relay is gone from the database, so its checkpoint no longer moves.
    wait_for(lambda: not advisory_lock_held(store.dsn), 30, "the killed relay's lock to be released")
    at_kill = store.checkpoint(CHECKPOINT)
    assert 0 < at_kill < head, f"checkpoint {at_kill}: the kill did not land mid-stream"

    second = relays(100)
    wait_for(lambda: store.checkpoint(CHECKPOINT) == head, 120, "the restarted relay to reach the head")
    assert second.kill(signal.SIGTERM) == 0  # a graceful stop
    assert "relay_stopped" in second.events()

    got = queue.drain()
    # Every stored event arrived, at least once.
    assert {m["event_id"] for m in got} == {str(r[3]) for r in stored}
    # Exactly: the first run's prefix, then everything after the checkpoint the second run read.
    # (One channel, one queue: the broker keeps publish order.)
    arrived = [m["position"] for m in got]
    replayed = [p for p in positions if p > at_kill]
    first_run = arrived[: len(arrived) - len(replayed)]
    assert arrived[len(first_run):] == replayed
    assert first_run == positions[: len(first_run)]
    assert len(first_run) >= positions.index(at_kill) + 1  # it had published what it checkpointed
    # Per stream: versions arrive in order, a replay only repeating what came before (one crash,
    # so at most one step back per stream, never a gap).
    by_stream: dict[str, list[int]] = defaultdict(list)
    for m in got:
        by_stream[m["stream"]].append(m["version"])
    assert set(by_stream) == set(streams)
    for stream, versions in by_stream.items():
        assert versions[0] == 1, stream
        steps_back = 0
        for prev, cur in zip(versions, versions[1:], strict=False):
            if cur != prev + 1:
                assert cur <= prev, f"{stream}: gap after version {prev}: {cur}"
                steps_back += 1
        assert steps_back <= 1, stream
        assert max(versions) == 100, stream


def test_published_messages_are_in_the_nameko_event_format(store, queue, relays):
    stream = f"format-{uuid.uuid4().hex[:8]}"
    events = [
        Envelope(type="ThingHappened", stream=stream, source=SOURCE, correlation_id="corr-format-1",
                 data={"note": "挂号成功", "n": 1}),
        Envelope(type="ThingChanged", stream=stream, source=SOURCE, correlation_id="corr-format-2",
                 data={"note": "改约", "n": 2}),
    ]
    store.append_to(stream, 0, *events)
    relay = relays(500)
    wait_for(lambda: queue.count() == 2, 60, "the relay to publish two events")

    for envelope in events:
        got = queue.get()
        assert got is not None
        method, props, body = got
        assert method.exchange == EXCHANGE
        assert method.routing_key == envelope.type
        assert props.content_type == "application/json"
        assert props.delivery_mode == 2
        assert props.message_id == str(envelope.event_id)
        assert props.headers["nameko.correlation_id"] == envelope.correlation_id
        assert body["event_id"] == str(envelope.event_id)
        assert body["type"] == envelope.type
        assert body["data"] == envelope.data
        assert body["stream"] == stream and body["source"] == SOURCE
    assert relay.proc.poll() is None


def test_a_second_relay_stays_standby_and_takes_over_when_the_first_dies(store, queue, relays):
    stream = f"standby-{uuid.uuid4().hex[:8]}"
    append_round_robin(store, [stream], per_stream=5)

    active = relays(500)
    wait_for(lambda: store.checkpoint(CHECKPOINT) == store.head(), 60, "the first relay to catch up")
    assert queue.count() == 5
    assert "relay_leading" in active.events()

    standby = relays(500)
    wait_for(lambda: "relay_standby" in standby.events(), 60, "the second relay to report standby")
    append_round_robin(store, [stream], per_stream=5, first_version=6)
    wait_for(lambda: store.checkpoint(CHECKPOINT) == store.head(), 60, "the active relay to publish")
    time.sleep(1.0)  # an absence check: a second publisher would show as duplicates
    assert queue.count() == 10
    assert "relay_leading" not in standby.events()

    active.kill(signal.SIGKILL)
    wait_for(lambda: "relay_leading" in standby.events(), 60, "the standby relay to take over")
    append_round_robin(store, [stream], per_stream=5, first_version=11)
    wait_for(lambda: store.checkpoint(CHECKPOINT) == store.head(), 60, "the new active relay to publish")
    got = queue.drain()
    assert [m["version"] for m in got] == list(range(1, 16))  # each once, in order
