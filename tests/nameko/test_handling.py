"""infra.handling inside real nameko containers on the real broker (DESIGN §3, guarantees 2 and 6).

nameko acks an event after the handler returns even when it raised; `reliable_event_handler`
must instead retry with back-off, park a poison message in `<queue>.dead` (error masked), and an
operator must be able to move it back. `claim` must make a redelivered event a no-op, also when
two deliveries of it run at the same time on two replicas.

Events are put on the bus as the relay does: once through `infra.relay.Relay` itself, otherwise
with the same pika publish (topic exchange `sourcesvc.events`, routing key = type, JSON body).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nameko.extensions import DependencyProvider

from contracts.envelope import Envelope
from infra.eventstore import PostgresEventStore
from infra.handling import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    claim,
    dead_queue_name,
    reliable_event_handler,
    retry_queue_name,
)
from infra.providers import ServiceDatabase
from infra.relay import Relay

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "sourcesvc"
EVENT = "ThingHappened"
CLEAR_ID = "110105194912310020"
CLEAR_PHONE = "13800138000"


class WorkerContext(DependencyProvider):
    """Gives the handler its worker context: context_data holds the message headers."""

    def get_dependency(self, worker_ctx: Any) -> Any:
        return worker_ctx


@dataclass
class Attempt:
    at: float
    attempt_header: Any
    context: dict[str, Any]


@dataclass
class Recorder:
    """What the handlers of one test saw (all greenlets of one OS thread: no locking needed)."""

    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    handled: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    claims: list[bool] = field(default_factory=list)

    def attempt(self, payload: dict[str, Any], worker_ctx: Any) -> int:
        data = dict(worker_ctx.context_data)
        seen = self.attempts.setdefault(payload["event_id"], [])
        seen.append(Attempt(time.monotonic(), data.get(ATTEMPT_HEADER), data))
        return len(seen)

    def count(self, event_id: str) -> int:
        return len(self.attempts.get(event_id, []))


def thing(n: int = 1, **data: Any) -> dict[str, Any]:
    """A relay-format body (see infra.relay.body_of)."""
    event_id = str(uuid.uuid4())
    return {
        "event_id": event_id,
        "type": EVENT,
        "schema_version": 1,
        "stream": f"thing-{event_id[:8]}",
        "source": SOURCE,
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "correlation_id": f"corr-{event_id[:8]}",
        "causation_id": None,
        "actor": {"kind": "system", "id": "platform"},
        "data": data or {"n": n},
        "position": n,
        "version": 1,
    }


def handler_queue(service_name: str) -> str:
    # nameko's EventHandler queue name: evt-<source>-<type>--<service>.<method>
    return f"evt-{SOURCE}-{EVENT}--{service_name}.handle"


def test_failing_twice_then_succeeding_is_retried_with_backoff_and_handled(
    container_factory, rabbit_config, broker, unique_name, wait_for
):
    rec = Recorder()

    class Flaky:
        name = unique_name("flaky")
        ctx = WorkerContext()

        @reliable_event_handler(SOURCE, EVENT)
        def handle(self, payload):
            if rec.attempt(payload, self.ctx) <= 2:
                raise RuntimeError("transient failure")
            rec.handled.append(payload["event_id"])

    container = container_factory(Flaky, rabbit_config)
    container.start()

    # Put the event on the bus through the real relay, from a real store.
    store = PostgresEventStore(rabbit_config["EVENTSTORE_DSN"], pool_size=2)
    store.setup()
    envelope = Envelope(type=EVENT, stream="thing-1", source=SOURCE, correlation_id="corr-flaky", data={"n": 1})
    store.append_to("thing-1", 0, envelope)
    relay = Relay(store, rabbit_config["AMQP_URI"])
    try:
        relay.publish_batch(store.read_all_raw(0))
    finally:
        relay.close_channel()
        store.close()
    event_id = str(envelope.event_id)

    wait_for(lambda: rec.handled == [event_id], 30, "the third attempt to handle the event")
    attempts = rec.attempts[event_id]
    assert len(attempts) == 3
    # The attempt number travels in a header: none on the first delivery, then 1, 2.
    assert [a.attempt_header for a in attempts] == [None, 1, 2]
    # The relay's nameko headers reach the worker (LogContext binds correlation_id from them).
    assert attempts[0].context.get("correlation_id") == "corr-flaky"
    # Back-off: RabbitMQ holds a retry for at least its TTL, base * 2^(attempt-1) = 50 ms, 100 ms.
    # Lower bounds only: on a loaded machine the gaps can be longer, never shorter.
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.045, gaps
    assert gaps[1] >= 0.095, gaps

    # Handled means done: no further delivery, nothing parked, nothing waiting to come back.
    queue = handler_queue(Flaky.name)
    time.sleep(0.5)  # an absence check: give a wrong extra delivery time to show up
    assert rec.count(event_id) == 3
    assert broker.count(retry_queue_name(queue)) == 0
    assert broker.count(queue) == 0
    assert broker.count(dead_queue_name(queue)) in (None, 0)


def test_a_lost_database_is_waited_out_past_the_retry_budget_and_never_parked(
    container_factory, rabbit_config, broker, unique_name, wait_for
):
    """Issue 14: a PostgreSQL restart of a few seconds parked every event that arrived during it.
    A connection failure is retried for as long as it lasts; only poison is parked."""
    import psycopg2

    rec = Recorder()
    outage = rabbit_config["RETRY_ATTEMPTS"] + 3  # well past the budget for poison messages

    class DatabaseDown:
        name = unique_name("dbdown")
        ctx = WorkerContext()

        @reliable_event_handler(SOURCE, EVENT)
        def handle(self, payload):
            if rec.attempt(payload, self.ctx) <= outage:
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            rec.handled.append(payload["event_id"])

    container_factory(DatabaseDown, rabbit_config).start()
    queue = handler_queue(DatabaseDown.name)
    body = thing()
    broker.publish_event(SOURCE, body)
    wait_for(lambda: rec.handled == [body["event_id"]], 60, "the event handled once the database is back")
    assert rec.count(body["event_id"]) == outage + 1
    # Waiting out an outage does not spend the poison budget: no attempt header was counted.
    assert all(a.attempt_header is None for a in rec.attempts[body["event_id"]])
    assert broker.count(dead_queue_name(queue)) in (None, 0)
    assert broker.count(retry_queue_name(queue)) == 0


def test_a_handler_that_always_fails_is_parked_once_with_the_error_masked(
    container_factory, rabbit_config, broker, unique_name, wait_for
):
    rec = Recorder()

    class Poison:
        name = unique_name("poison")
        ctx = WorkerContext()

        @reliable_event_handler(SOURCE, EVENT)
        def handle(self, payload):
            rec.attempt(payload, self.ctx)
            raise ValueError(f"no patient for resident {CLEAR_ID}, phone {CLEAR_PHONE}")

    container = container_factory(Poison, rabbit_config)
    container.start()
    queue = handler_queue(Poison.name)
    dead = dead_queue_name(queue)

    body = thing()
    broker.publish_event(SOURCE, body)
    wait_for(lambda: broker.count(dead) == 1, 30, f"the event to be parked in {dead}")

    assert rec.count(body["event_id"]) == 3  # RETRY_ATTEMPTS = 3, then parked
    time.sleep(2.0)  # an absence check: a parked message must not be delivered again
    assert rec.count(body["event_id"]) == 3
    assert broker.count(dead) == 1
    assert broker.count(queue) == 0
    assert broker.count(retry_queue_name(queue)) == 0

    got = broker.get(dead, ack=False)
    assert got is not None
    _method, props, raw = got
    assert json.loads(raw)["event_id"] == body["event_id"]
    headers = props.headers or {}
    assert headers[ATTEMPT_HEADER] == 3
    error = headers[ERROR_HEADER]
    assert error.startswith("ValueError: no patient for resident")
    assert CLEAR_ID not in error and CLEAR_PHONE not in error
    assert "110105********0020" in error and "138****8000" in error
    assert broker.count(dead) == 1  # peeking put it back


def test_a_redelivered_event_has_its_effect_once(container_factory, rabbit_config, broker, unique_name, wait_for):
    rec = Recorder()

    class Inbox:
        name = unique_name("inbox")
        db = ServiceDatabase(schema="CREATE TABLE IF NOT EXISTS effects (event_id uuid NOT NULL);")

        @reliable_event_handler(SOURCE, EVENT)
        def handle(self, payload):
            with self.db.transaction() as cur:
                won = claim(cur, "inbox-test", payload["event_id"])
                if won:
                    cur.execute("INSERT INTO effects (event_id) VALUES (%s)", (payload["event_id"],))
            rec.claims.append(won)

    container = container_factory(Inbox, rabbit_config)
    container.start()

    body = thing()
    broker.publish_event(SOURCE, body)
    wait_for(lambda: len(rec.claims) == 1, 30, "the first delivery")
    broker.publish_event(SOURCE, body)  # the same event again, as after a relay crash
    wait_for(lambda: len(rec.claims) == 2, 30, "the second delivery")

    assert rec.claims == [True, False]
    # Read back through the service's own pool.
    provider = next(e for e in container.extensions if isinstance(e, ServiceDatabase))
    rows = provider.db.fetchall("SELECT event_id FROM effects")
    assert [str(r[0]) for r in rows] == [body["event_id"]]
    inbox = provider.db.fetchall("SELECT consumer, event_id FROM inbox")
    assert [(c, str(e)) for c, e in inbox] == [("inbox-test", body["event_id"])]


def test_two_concurrent_deliveries_on_two_replicas_have_one_effect(
    container_factory, rabbit_config, broker, unique_name, wait_for
):
    rec = Recorder()

    class Replica:
        name = unique_name("replica")
        db = ServiceDatabase(schema="CREATE TABLE IF NOT EXISTS effects (event_id uuid NOT NULL);")

        @reliable_event_handler(SOURCE, EVENT)
        def handle(self, payload):
            rec.in_flight += 1
            rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
            try:
                with self.db.transaction() as cur:
                    won = claim(cur, "replica-test", payload["event_id"])
                    if won:
                        cur.execute("INSERT INTO effects (event_id) VALUES (%s)", (payload["event_id"],))
                        # Hold the transaction open so the other delivery claims meanwhile:
                        # it must wait for this commit and then see the claim taken.
                        time.sleep(1.0)
                rec.claims.append(won)
            finally:
                rec.in_flight -= 1

    first = container_factory(Replica, rabbit_config)
    second = container_factory(Replica, rabbit_config)  # same service name: same queue
    first.start()
    second.start()

    body = thing()
    broker.publish_event(SOURCE, body, copies=2)
    wait_for(lambda: len(rec.claims) == 2, 30, "both deliveries")

    assert rec.max_in_flight == 2, "the two deliveries did not overlap: the test proved nothing"
    assert sorted(rec.claims) == [False, True]
    provider = next(e for e in first.extensions if isinstance(e, ServiceDatabase))
    rows = provider.db.fetchall("SELECT event_id FROM effects")
    assert [str(r[0]) for r in rows] == [body["event_id"]]


def test_deadletters_requeue_moves_a_parked_message_back_and_it_is_handled(
    container_factory, rabbit_config, broker, unique_name, wait_for
):
    rec = Recorder()
    state = {"broken": True}

    class Mendable:
        name = unique_name("mendable")
        ctx = WorkerContext()

        @reliable_event_handler(SOURCE, EVENT)
        def handle(self, payload):
            rec.attempt(payload, self.ctx)
            if state["broken"]:
                raise RuntimeError("downstream is down")
            rec.handled.append(payload["event_id"])

    container = container_factory(Mendable, rabbit_config)
    container.start()
    queue = handler_queue(Mendable.name)
    dead = dead_queue_name(queue)

    body = thing()
    broker.publish_event(SOURCE, body)
    wait_for(lambda: broker.count(dead) == 1, 30, f"the event to be parked in {dead}")
    assert rec.count(body["event_id"]) == 3
    assert rec.handled == []

    state["broken"] = False  # the operator fixed the cause; now move the message back
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "infra.deadletters", "requeue", dead, "--amqp", rabbit_config["AMQP_URI"]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"moved 1 message(s) back to {queue}" in done.stdout

    wait_for(lambda: rec.handled == [body["event_id"]], 30, "the requeued event to be handled")
    assert broker.count(dead) == 0
    attempts = rec.attempts[body["event_id"]]
    assert len(attempts) == 4
    # The requeue starts a fresh round of retries (the attempt counter is dropped).
    assert attempts[-1].attempt_header is None
