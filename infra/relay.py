"""The relay: every stored event, in global order, onto RabbitMQ in nameko's event format.

Exchange `<source>.events` (topic, durable: what nameko's EventDispatcher declares), routing key
= event type, JSON body = the envelope, publisher confirms. The checkpoint moves only after the
broker confirmed every message up to it, so a relay killed at any point republishes from its
last checkpoint: duplicates are possible, losses are not (consumers de-duplicate by event_id).

One relay is active at a time: it holds a PostgreSQL advisory lock; a second one started for
availability waits for the lock and takes over when the first dies. The lock lives on its own
connection, which a database restart ends: the relay checks it before every batch and, when it
is gone, stops publishing until it holds the lock again (else two relays could interleave).

A lost broker or database is an outage, not an end: the relay retries with back-off (0.5 s
doubling to 10 s) on a fresh subscription each time, and logs one line when the outage starts and
one when it is over.

    python -m infra.relay --config infra/relay.yaml
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pika
import psycopg2
from pika.exceptions import AMQPError
from pydantic import Field

from infra import metrics
from infra.eventstore import CatchUpSubscription, EventStore, PostgresEventStore
from infra.logging import configure, get_logger
from infra.queues import amqp_parameters
from infra.settings import Settings, load_config

LOCK_KEY = 7_100_001
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0


class LeadershipLost(Exception):
    """The connection that held the relay lock is gone: another relay may be publishing."""


class RelaySettings(Settings):
    batch_size: int = Field(default=500, ge=1, le=10_000, alias="BATCH_SIZE")
_log = get_logger("relay")


def body_of(row: Sequence[Any]) -> dict[str, Any]:
    position, stream, version, event_id, type_, schema_version, source, data, meta, occurred_at = row
    return {
        "event_id": str(event_id),
        "type": type_,
        "schema_version": schema_version,
        "stream": stream,
        "source": source,
        "occurred_at": occurred_at.isoformat(),
        "correlation_id": meta.get("correlation_id"),
        "causation_id": meta.get("causation_id"),
        "actor": meta.get("actor"),
        "data": data,
        "position": position,
        "version": version,
    }


class Relay:
    def __init__(self, store: EventStore, amqp_uri: str, name: str = "relay", batch_size: int = 500,
                 lock_dsn: str | None = None) -> None:
        """`lock_dsn`: hold the relay lock on this database while publishing (the process does;
        tests that drive one relay by hand leave it out)."""
        self.store = store
        self.lock_dsn = lock_dsn
        self._lock: Any = None
        self._stopping = threading.Event()
        self.amqp_uri = amqp_uri
        self.name = name
        self.batch_size = batch_size
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._declared: set[str] = set()
        self.published = 0
        self.outage: str | None = None  # what went wrong, while it lasts
        self.subscription = self._subscription()

    def _subscription(self) -> CatchUpSubscription:
        return CatchUpSubscription(self.store, self.publish_batch, lambda: self.store.checkpoint(self.name),
                                   batch_size=self.batch_size, raw=True)

    def _ensure_channel(self) -> Any:
        if self._connection is not None and self._connection.is_open:
            # Heartbeats are only serviced when pika is called: after a quiet spell the broker may
            # have dropped us. Find out now and reconnect at once, rather than fail the publish
            # and wait for the retry.
            try:
                self._connection.process_data_events(time_limit=0)
            except (AMQPError, OSError):
                self.close_channel()
        if self._channel is None or self._channel.is_closed or self._connection is None \
                or not self._connection.is_open:
            # A ';'-separated list (AMQP_URI of a cluster, as kombu takes it): pika tries each in turn.
            self._connection = pika.BlockingConnection(amqp_parameters(self.amqp_uri))
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
            self._declared.clear()
        return self._channel

    def publish_batch(self, rows: Sequence[Any]) -> None:
        if self.lock_dsn is not None:
            self._check_leadership()
        channel = self._ensure_channel()
        for row in rows:
            body = body_of(row)
            exchange = f"{body['source']}.events"
            if exchange not in self._declared:
                channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
                self._declared.add(exchange)
            # BlockingChannel with confirms: basic_publish returns once the broker acked it.
            channel.basic_publish(
                exchange=exchange,
                routing_key=body["type"],
                body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    message_id=body["event_id"],
                    headers={
                        "nameko.correlation_id": body["correlation_id"] or body["event_id"],
                        "nameko.event_id": body["event_id"],
                    },
                ),
            )
        self.store.save_checkpoint(self.name, int(rows[-1][0]))
        self.published += len(rows)
        metrics.RELAY_PUBLISHED.labels(self.name).inc(len(rows))

    def run(self) -> None:
        """Follow the store; on broker or database trouble, reconnect and resume from the
        checkpoint, on a fresh subscription (never a used one: issue 14 finding 1)."""
        backoff = BACKOFF_START
        while not self._stopping.is_set():
            try:
                if self.lock_dsn is not None and self._lock is None:
                    self._lock = hold_leadership(self.lock_dsn, self._stopping)
                    if self._stopping.is_set():
                        return
                    _log.info("relay_leading", checkpoint=self.store.checkpoint(self.name))
                self.subscription = self._subscription()
                if self.outage is not None:
                    self.subscription.catch_up()  # raises again while the outage lasts
                    _log.warning("relay_recovered", outage=self.outage)
                    self.outage, backoff = None, BACKOFF_START
                self.subscription.run()
            except (AMQPError, psycopg2.Error, OSError, LeadershipLost) as exc:
                if self.outage is None:
                    self.outage = f"{type(exc).__name__}: {exc}"[:300]
                    _log.warning("relay_outage", error=self.outage, retry_max_s=BACKOFF_MAX)
                self.close_channel()
                if isinstance(exc, LeadershipLost) or isinstance(exc, psycopg2.Error):
                    self._release_lock()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def stop(self) -> None:
        self._stopping.set()
        self.subscription.stop()

    def _check_leadership(self) -> None:
        try:
            with self._lock.cursor() as cur:
                cur.execute("SELECT 1")
        except (psycopg2.Error, AttributeError) as exc:
            raise LeadershipLost(f"the relay lock's connection is gone: {exc}") from None

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            try:
                lock.close()
            except psycopg2.Error:
                pass

    def close_channel(self) -> None:
        """Forget the broker connection; closing one the broker or the kernel already broke may
        fail with either kind of error (an OSError here once ended the relay: issue 14)."""
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except (AMQPError, OSError):
            pass
        self._connection = None
        self._channel = None


def hold_leadership(dsn: str, stop: threading.Event) -> Any:
    """Block until this process holds the relay lock; the connection keeps it. While the
    database is unreachable this keeps trying (quietly: the caller logged the outage)."""
    announced = False
    while not stop.is_set():
        try:
            conn = psycopg2.connect(dsn, application_name="appt-relay-lock", connect_timeout=5)
        except psycopg2.OperationalError:
            stop.wait(2.0)
            continue
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                row = cur.fetchone()
                if row and row[0]:
                    return conn
        except psycopg2.Error:
            pass
        conn.close()
        if not announced:
            _log.info("relay_standby", reason="another relay holds the lock")
            announced = True
        stop.wait(2.0)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="event store → RabbitMQ relay")
    parser.add_argument("--config", default="infra/relay.yaml")
    args = parser.parse_args(argv)
    cfg = RelaySettings.model_validate({"SERVICE_NAME": "relay", **load_config(args.config)})
    configure("relay", cfg.log_format, cfg.log_level)
    metrics.serve(cfg.metrics_address or "")
    store = PostgresEventStore(cfg.eventstore_dsn, pool_size=2, idle_s=cfg.db_idle_s)
    store.setup()
    relay = Relay(store, cfg.amqp_uri, batch_size=cfg.batch_size, lock_dsn=store.dsn)

    def on_signal(signum: int, _frame: Any) -> None:
        relay.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _log.info("relay_started", checkpoint=store.checkpoint(relay.name))
    try:
        relay.run()
    finally:
        relay.close_channel()
        relay._release_lock()
        _log.info("relay_stopped", published=relay.published)
    return 0


if __name__ == "__main__":
    sys.exit(main())
