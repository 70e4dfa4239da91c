"""Reliable event handling for nameko: retries with back-off, a dead-letter queue, an inbox.

nameko acks a message after the handler returns *even when it raised*, so a failure would drop
the event. `reliable_event_handler` replaces that: a failed delivery is republished to
`<queue>.retry` with a per-message TTL (base * 2^attempt); RabbitMQ dead-letters it back into
`<queue>` when the TTL runs out. After `RETRY_ATTEMPTS` failures the message is parked in
`<queue>.dead` with the error, for an operator (`python -m infra.deadletters`). Only then is
the original acked, so a crash in between redelivers rather than loses.

Dead letters are for poison messages, not for a peer that is down. A failure that says the
database or the broker is unreachable (`is_transient`) is retried for as long as it takes, the
delay doubling up to TRANSIENT_MAX_DELAY_MS, and never counts towards the parking budget: a
10-second PostgreSQL restart once parked every event that arrived during it (issue 14). Such an
outage is logged once when it starts and once when the handler succeeds again, not per retry.

The three queues are durable quorum queues, declared by `setup` (arguments: infra/queues.py).

Redelivery means a handler can see an event twice: consumers record the event id in their own
database in the same transaction as the effect (`claim`), and skip an id they already have.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import amqp.exceptions
import psycopg2
from kombu.entity import Exchange
from kombu.exceptions import OperationalError as KombuOperationalError
from nameko.amqp.publish import Publisher
from nameko.events import SERVICE_POOL, EventHandler, get_event_exchange

from infra import metrics
from infra.logging import get_logger, mask_text
from infra.queues import dead_queue_name as dead_queue_name  # re-exported: the tests' and operators' names
from infra.queues import event_queue_name, event_queues
from infra.queues import retry_queue_name as retry_queue_name
from infra.settings import settings_for

ATTEMPT_HEADER = "x-appt-attempt"
TRANSIENT_HEADER = "x-appt-transient"
TRANSIENT_MAX_DELAY_MS = 30_000
ERROR_HEADER = "x-appt-error"
INBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""

# About a minute of retries (0.5 s growing to 2 s) before a retry or park publish gives up.
PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2}

_log = get_logger(__name__)
_DEFAULT_EXCHANGE = Exchange("", type="direct")


def claim(cur: Any, consumer: str, event_id: Any) -> bool:
    """Record that `consumer` handles `event_id` in the caller's transaction.

    False when it was handled before (or is being handled by a concurrent delivery, which this
    call waits for): the caller then does nothing.
    """
    cur.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (consumer, str(event_id)),
    )
    return bool(cur.rowcount == 1)


class Transient(Exception):
    """Raised by a handler for a failure that will pass by itself (a peer not ready yet):
    retried without limit, like a lost database connection."""


_TRANSIENT = (
    Transient,
    psycopg2.OperationalError,       # connection lost, server starting or shutting down
    psycopg2.InterfaceError,         # connection already closed
    psycopg2.extensions.TransactionRollbackError,  # serialization failure, deadlock: try again
    KombuOperationalError,
    amqp.exceptions.RecoverableConnectionError,  # py-amqp's: a channel that died with its connection
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Will this failure pass if the same message is simply tried again later?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # raised `from` a connection error too
        if isinstance(current, _TRANSIENT):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def transient_delay_ms(base_ms: int, retry: int) -> int:
    return int(min(base_ms * 2 ** max(retry - 1, 0), TRANSIENT_MAX_DELAY_MS))


class ReliableEventHandler(EventHandler):
    _outage: str | None = None  # the first error of a transient outage, until a success
    def __init__(self, source_service: str, event_type: str, **kwargs: Any) -> None:
        super().__init__(source_service, event_type, reliable_delivery=True, requeue_on_error=False, **kwargs)

    def setup(self) -> None:
        # nameko's EventHandler.setup builds a classic queue (no way to pass queue arguments) and
        # registers with the QueueConsumer, which reads `self.queue` only when it starts consuming:
        # replacing it here makes the queue nameko declares and consumes a quorum queue.
        if self.handler_type is not SERVICE_POOL:
            raise ValueError("reliable_event_handler supports only SERVICE_POOL handlers (one durable queue)")
        super().setup()
        settings = settings_for(self.container)
        self.attempts = settings.retry_attempts
        self.base_delay_ms = settings.retry_base_delay_ms
        name = event_queue_name(self.source_service, self.event_type, self.container.service_name, self.method_name)
        exchange = get_event_exchange(self.source_service, self.container.config)
        self.queue, self.retry_queue, self.dead_queue = event_queues(name, exchange, self.event_type)
        # nameko's default (3 retries, about 3 s) is shorter than a quorum leader election after a
        # node dies; a retry publish that gives up raises out of handle_result, and nameko kills the
        # container for it ("thread exited with error", seen in tests/faults/test_cluster.py).
        self.publisher = Publisher(settings.amqp_uri, retry_policy=PUBLISH_RETRY_POLICY)

    def handle_result(self, message: Any, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> Any:
        try:
            if exc_info is not None:
                # Published (with confirms) before the ack below: a crash here redelivers instead of losing.
                self._retry_or_park(message, exc_info)
            else:
                metrics.event_handled(self.container.service_name, self.queue.name, "ok")
                if self._outage:
                    _log.warning("handler_recovered", queue=self.queue.name, outage=self._outage)
                    self._outage = None
            self.queue_consumer.ack_message(message)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The broker went away between the handler and the settlement of its delivery: the
            # retry could not be published, or the ack has no channel left. Unacked, the delivery
            # is requeued by the broker with the dead channel and comes back once a consumer is;
            # the inbox makes a second run of a handler that did succeed a no-op. Raised, it would
            # kill the whole container: nameko takes any exception of a worker thread for a bug
            # ("thread exited with error"; tests/faults/test_faults.py saw his_sync die so).
            _log.warning("handler_delivery_unsettled", queue=self.queue.name,
                         error=mask_text(f"{type(exc).__name__}: {exc}")[:300])
        return result, exc_info

    def _retry_or_park(self, message: Any, exc_info: Any) -> None:
        headers = dict(message.headers or {})
        error = mask_text("".join(traceback.format_exception_only(exc_info[0], exc_info[1])).strip())[:2000]
        headers[ERROR_HEADER] = error
        if is_transient(exc_info[1]):
            retry = int(headers.get(TRANSIENT_HEADER, 0)) + 1
            headers[TRANSIENT_HEADER] = retry
            delay_ms = transient_delay_ms(self.base_delay_ms, retry)
            if not self._outage:
                self._outage = error.splitlines()[0][:200]
                _log.warning("handler_waiting_out_outage", queue=self.queue.name, error=error,
                             max_delay_ms=TRANSIENT_MAX_DELAY_MS)
            self._publish_retry(message, headers, delay_ms)
            metrics.event_handled(self.container.service_name, self.queue.name, "retry")
            return
        attempt = int(headers.get(ATTEMPT_HEADER, 0)) + 1
        headers[ATTEMPT_HEADER] = attempt
        log = _log.bind(queue=self.queue.name, attempt=attempt, error=error)
        if attempt >= self.attempts:
            headers["x-appt-failed-at"] = datetime.now(UTC).isoformat()
            self.publisher.publish(
                message.payload,
                exchange=_DEFAULT_EXCHANGE,
                routing_key=self.dead_queue.name,
                headers=headers,
                declare=[self.dead_queue],
            )
            log.error("handler_failed_parked", dead_queue=self.dead_queue.name)
            metrics.event_handled(self.container.service_name, self.queue.name, "parked")
            return
        delay_ms = self.base_delay_ms * 2 ** (attempt - 1)
        self._publish_retry(message, headers, delay_ms)
        metrics.event_handled(self.container.service_name, self.queue.name, "retry")
        log.warning("handler_failed_retrying", delay_ms=delay_ms)

    def _publish_retry(self, message: Any, headers: dict[str, Any], delay_ms: int) -> None:
        self.publisher.publish(
            message.payload,
            exchange=_DEFAULT_EXCHANGE,
            routing_key=self.retry_queue.name,
            headers=headers,
            expiration=delay_ms / 1000.0,
            declare=[self.retry_queue],
        )


reliable_event_handler = ReliableEventHandler.decorator

F = TypeVar("F", bound=Callable[..., Any])


def outage_tolerant(fn: F) -> F:
    """For a periodic job (a nameko @timer): a lost database or broker skips this tick, logged
    once when the outage starts and once when a tick succeeds again, instead of a traceback per
    tick. Anything else is raised as before (nameko logs it; the timer goes on)."""
    outage: list[str] = []

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if not outage:
                outage.append(f"{type(exc).__name__}: {exc}"[:200])
                _log.warning("job_waiting_out_outage", job=fn.__qualname__, error=outage[0])
            return None
        if outage:
            _log.warning("job_recovered", job=fn.__qualname__, outage=outage.pop())
        return result

    return run  # type: ignore[return-value]
