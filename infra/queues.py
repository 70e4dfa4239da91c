"""The platform's durable queues are quorum queues, and the migration of an older broker to them.

A quorum queue is replicated on (up to) every node of a RabbitMQ cluster by Raft: a message the
broker confirmed survives the loss of a minority of nodes, where a classic queue lives on one node
only. These are the queues the platform declares, all durable and `x-queue-type: quorum`:

| queue | declared by | bound to |
| --- | --- | --- |
| `rpc-<service>` | `infra.rpc.rpc` (nameko's RpcConsumer) | exchange `nameko-rpc`, key `<service>.*` |
| `evt-<source>-<Type>--<service>.<handler>` | `infra.handling` (reliable handlers) | `<source>.events`, key `<Type>` |
| `<that>.retry` | the same handler, on its first retry | default exchange; dead-letters into `<that>` |
| `<that>.dead` | the same handler, on its first parked message | default exchange |

Queues of one process stay classic, since a quorum queue cannot be exclusive or auto-delete and
there is nothing to replicate: nameko's RPC reply queues (`rpc.reply-...`; `infra.rpc.RpcProxy`
declares them transient so that a caller is not tied to one node, see infra/rpc.py) and the
gateway's live-stream queues (services/gateway/live.py). The relay only publishes to exchanges.

What RabbitMQ 3.10 (the Debian 12 package, 3.10.8 here) gives quorum queues, and how it is used:
- per-message TTL (since 3.10): the retry queue keeps its design, every message carries its own
  back-off as `expiration`. As in a classic queue, a message expires only at the head of the queue.
- dead-lettering: the retry queue dead-letters expired messages back into the handler's queue
  with `x-dead-letter-strategy: at-least-once` (since 3.10; RabbitMQ then requires
  `x-overflow: reject-publish`), so a message in flight between the two is not dropped when the
  target is briefly unavailable (the default for quorum queues is at-most-once).
- `x-delivery-limit` is not set: every handler acks each delivery itself after a retry or a park
  (infra.handling) and an RPC request is acked after its reply, so the only redeliveries are those
  of a consumer's lost connection, and a limit would drop a request after a few broker restarts.

Migration. RabbitMQ refuses to redeclare a queue with a different `x-queue-type` or other
arguments (PRECONDITION_FAILED, 406), and an installation that ran an older version has classic
queues of these names, possibly holding messages. With the services stopped,

    python -m infra.queues migrate [--amqp URI] [service ...]

redeclares each queue of the platform (every service by default); a queue that is refused is
converted without losing a message: a holding queue `<name>.migrating` (quorum) is bound like the
old one, which is unbound (so events published during the swap land there), its messages are moved
one by one (each publish confirmed before the original is acked; a retry message's TTL is kept in
a header so that it cannot expire while held), the old queue is deleted only when empty, the new
one declared and bound, and the held messages moved into it. A run interrupted at any point is
finished by running it again. The launcher (`make run`, the e2e tests) runs it before it starts the
services; a service started against a queue that was not migrated fails to consume (406).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from kombu.entity import Exchange, Queue
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.rpc import RPC_QUEUE_TEMPLATE, get_rpc_exchange

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
HOLDING_SUFFIX = ".migrating"
HELD_EXPIRATION_HEADER = "x-appt-held-expiration"
SERVICES = ("schedule", "booking", "notification", "his_sync", "stats", "gateway")

_DEFAULT_EXCHANGE = Exchange("", type="direct")


def quorum_queue(name: str, exchange: Exchange | None = None, routing_key: str | None = None,
                 arguments: dict[str, Any] | None = None) -> Queue:
    """A durable quorum queue; `arguments` are added to `x-queue-type` (e.g. dead-lettering)."""
    return Queue(name, exchange=exchange or _DEFAULT_EXCHANGE, routing_key=routing_key or name, durable=True,
                 auto_delete=False, exclusive=False, queue_arguments={**QUORUM, **(arguments or {})})


def arguments_of(queue: Any) -> dict[str, Any]:
    return dict(queue.queue_arguments or {})


def retry_queue_name(queue_name: str) -> str:
    return f"{queue_name}.retry"


def dead_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dead"


def event_queue_name(source_service: str, event_type: str, service_name: str, method_name: str) -> str:
    """nameko's name of a SERVICE_POOL event handler's queue (nameko.events.EventHandler.setup)."""
    return f"evt-{source_service}-{event_type}--{service_name}.{method_name}"


def event_queues(queue_name: str, exchange: Exchange, event_type: str) -> tuple[Queue, Queue, Queue]:
    """An event handler's queue, its retry queue (per-message TTL, dead-letters back) and its
    dead-letter queue."""
    main = quorum_queue(queue_name, exchange, event_type)
    retry = quorum_queue(
        retry_queue_name(queue_name),
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue_name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",  # required by at-least-once dead-lettering
        },
    )
    dead = quorum_queue(dead_queue_name(queue_name))
    return main, retry, dead


def rpc_queue(service_name: str, config: dict[str, Any]) -> Queue:
    return quorum_queue(RPC_QUEUE_TEMPLATE.format(service_name), get_rpc_exchange(config), f"{service_name}.*")


def declared_by(service_cls: type, config: dict[str, Any] | None = None) -> list[Queue]:
    """Every durable queue a nameko service class declares, read from its entrypoints."""
    from infra.handling import ReliableEventHandler  # they import this module
    from infra.rpc import Rpc

    config = config or {}
    service_name = service_cls.name  # type: ignore[attr-defined]
    queues: dict[str, Queue] = {}
    for method_name, member in inspect.getmembers(service_cls):
        for entrypoint in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, ReliableEventHandler):
                name = event_queue_name(entrypoint.source_service, entrypoint.event_type, service_name, method_name)
                exchange = Exchange(f"{entrypoint.source_service}.events", type="topic", durable=True)
                for q in event_queues(name, exchange, entrypoint.event_type):
                    queues[q.name] = q
            elif isinstance(entrypoint, Rpc):
                q = rpc_queue(service_name, config)
                queues[q.name] = q
    return list(queues.values())


def platform_queues(services: Iterable[str] = SERVICES, config: dict[str, Any] | None = None) -> list[Queue]:
    out: list[Queue] = []
    for service in services:
        module = importlib.import_module(f"services.{service}.service")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and isinstance(getattr(cls, "name", None), str):
                out.extend(declared_by(cls, config))
    return out


class QueueBusy(Exception):
    """A queue to convert still has consumers: the services must be stopped first."""


@dataclass(frozen=True)
class Outcome:
    queue: str
    action: str   # "exists", "created" or "converted"
    moved: int    # messages moved through the holding queue


class Migrator:
    """Brings queues to their declared arguments on one broker (a pika connection)."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection

    def ensure(self, queue: Queue) -> Outcome:
        existed = self._message_count(queue.name) is not None
        if self._try_declare(queue):
            action = "exists" if existed else "created"
            moved = 0
        else:
            action = "converted"
            moved = self._convert(queue)
        held = self._release_holding(queue)  # also finishes a conversion an earlier run began
        return Outcome(queue.name, action, max(moved, held))

    def _channel(self) -> Any:
        channel = self.connection.channel()
        channel.confirm_delivery()  # basic_publish returns once the broker has the message
        return channel

    def _message_count(self, name: str) -> int | None:
        channel = self.connection.channel()
        try:
            return int(channel.queue_declare(queue=name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise
        finally:
            if channel.is_open:
                channel.close()

    def _try_declare(self, queue: Queue) -> bool:
        channel = self._channel()
        try:
            _declare(channel, queue)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:  # PRECONDITION_FAILED: declared before with other arguments
                return False
            raise
        channel.close()
        return True

    def _convert(self, queue: Queue) -> int:
        channel = self._channel()
        consumers = int(channel.queue_declare(queue=queue.name, passive=True).method.consumer_count)
        if consumers:
            raise QueueBusy(f"{queue.name} has {consumers} consumer(s): stop the services, then migrate")
        holding = queue.name + HOLDING_SUFFIX
        channel.queue_declare(queue=holding, durable=True, arguments=QUORUM)
        if queue.exchange.name:  # from here on, arrivals go to the holding queue only
            channel.queue_bind(queue=holding, exchange=queue.exchange.name, routing_key=queue.routing_key)
            channel.queue_unbind(queue=queue.name, exchange=queue.exchange.name, routing_key=queue.routing_key)
        moved = _drain_and_delete(channel, queue.name, holding, hold_expiration=True)
        _declare(channel, queue)
        channel.close()
        return moved

    def _release_holding(self, queue: Queue) -> int:
        holding = queue.name + HOLDING_SUFFIX
        if self._message_count(holding) is None:
            return 0
        channel = self._channel()
        if queue.exchange.name:
            channel.queue_unbind(queue=holding, exchange=queue.exchange.name, routing_key=queue.routing_key)
        moved = _drain_and_delete(channel, holding, queue.name, hold_expiration=False)
        channel.close()
        return moved


def _declare(channel: Any, queue: Queue) -> None:
    channel.queue_declare(queue=queue.name, durable=True, arguments=arguments_of(queue))
    if queue.exchange.name:
        channel.exchange_declare(exchange=queue.exchange.name, exchange_type=queue.exchange.type, durable=True)
        channel.queue_bind(queue=queue.name, exchange=queue.exchange.name, routing_key=queue.routing_key)


def _drain_and_delete(channel: Any, source: str, target: str, hold_expiration: bool) -> int:
    """Move `source` into `target`, then delete it once it is seen empty. `source` is bound to
    no exchange by now, so only a publish by its name could still arrive, and nothing of the
    platform does that while its services are stopped. (`queue.delete` with `if-empty` would
    close that gap, but quorum queues refuse it with NOT_IMPLEMENTED, ending the connection.)"""
    moved = 0
    while True:
        moved += _move(channel, source, target, hold_expiration)
        if int(channel.queue_declare(queue=source, passive=True).method.message_count) == 0:
            channel.queue_delete(queue=source)
            break
    # Seen on a loaded node: a quorum queue was still there after its delete-ok. Make sure it is gone.
    deadline = time.monotonic() + 30
    while _exists(channel.connection, source):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{source} is still there after being deleted")
        time.sleep(0.5)
        probe = channel.connection.channel()
        probe.queue_delete(queue=source)
        probe.close()
    return moved


def _exists(connection: Any, name: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(queue=name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    channel.close()
    return True


def _move(channel: Any, source: str, target: str, hold_expiration: bool) -> int:
    """Move every message of `source` to `target`, in order; each is acked only after the broker
    confirmed its copy. A message's TTL is parked in a header on the way to a holding queue
    (which would otherwise drop it on expiry) and restored on the way out."""
    moved = 0
    while True:
        method, props, body = channel.basic_get(queue=source, auto_ack=False)
        if method is None:
            return moved
        headers = dict(props.headers or {})
        if hold_expiration and props.expiration is not None:
            headers[HELD_EXPIRATION_HEADER] = props.expiration
            props.expiration = None
        elif not hold_expiration and HELD_EXPIRATION_HEADER in headers:
            props.expiration = str(headers.pop(HELD_EXPIRATION_HEADER))
        props.headers = headers
        channel.basic_publish(exchange="", routing_key=target, body=body, properties=props)
        channel.basic_ack(method.delivery_tag)
        moved += 1


def amqp_parameters(amqp_uri: str, timeout: float | None = None) -> list[pika.URLParameters]:
    """pika's parameters for AMQP_URI, which may list a cluster's nodes separated by ';' (as kombu
    takes it): one URLParameters per node, tried in turn by BlockingConnection. Parsed whole,
    the list became one URL whose vhost was ';amqp:…' and every broker check on a cluster failed.
    With `timeout`, one attempt per node, each bounded by it."""
    found = []
    for uri in (u.strip() for u in amqp_uri.split(";")):
        if not uri:
            continue
        params = pika.URLParameters(uri)
        if timeout is not None:
            params.socket_timeout = params.stack_timeout = params.blocked_connection_timeout = timeout
            params.connection_attempts = 1
        found.append(params)
    return found


def migrate(amqp_uri: str, queues: Sequence[Queue]) -> list[Outcome]:
    connection = pika.BlockingConnection(amqp_parameters(amqp_uri))
    try:
        migrator = Migrator(connection)
        return [migrator.ensure(q) for q in queues]
    finally:
        if connection.is_open:
            connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["migrate", "list"])
    parser.add_argument("services", nargs="*", default=list(SERVICES))
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
                        help="the broker; a ';'-separated list is tried in turn")
    args = parser.parse_intermixed_args(argv)
    queues = platform_queues(args.services)
    if args.action == "list":
        for q in queues:
            print(f"{q.name}\t{arguments_of(q)}")
        return 0
    try:
        outcomes = migrate(args.amqp, queues)
    except QueueBusy as exc:
        print(f"migration stopped: {exc}", file=sys.stderr)
        return 2
    converted = [o for o in outcomes if o.action == "converted" or o.moved]
    for o in converted:
        print(f"{o.queue}: {o.action}, {o.moved} message(s) moved")
    print(f"{len(outcomes)} queue(s) are quorum queues; {len(converted)} converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
