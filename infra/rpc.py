"""nameko's `@rpc` on a quorum request queue, and a reply that cannot be sent no longer kills the service.

    from infra.rpc import rpc      # instead of nameko.rpc.rpc, in every service

The request queue `rpc-<service>` is a durable quorum queue (infra/queues.py). A service must use
this `rpc` for all of its methods: nameko's own would declare the same queue as a classic one.

Why a broker restart killed both booking replicas (issue 14, finding 3), in nameko 2.14.1's source:
`RpcConsumer.handle_result` runs in the worker's greenthread once the method has returned. It
publishes the reply (`Responder.send_response` -> `nameko.amqp.publish.Publisher.publish`, kombu's
connection retry of 3 attempts) and then acks the request. With the broker down the publish raises
(kombu `OperationalError`, ECONNREFUSED) out of the worker thread, and
`ServiceContainer._handle_thread_exited` takes any exception of a managed thread for a bug
("thread exited with error") and kills the container, every other worker and the consumer with it.
`QueueConsumer.ack_message` has the same hole: it catches the builtin ConnectionError only, not
amqp's `RecoverableConnectionError` of a channel that died with its connection.

Here a reply that cannot be published is logged (masked) and dropped: its caller has timed out or
gone, and what the method did is already confirmed where it lives (the event store), so nothing of
it is lost; a caller that repeats the command with its idempotency key gets the same answer. The
request is then acked if its channel is still alive. When the channel died with the broker the ack
is impossible and not needed: the broker still holds the request (durable queue, persistent
message) and redelivers it once a consumer is back, the method runs again, and the idempotency key
makes the repeat answer the same. The consumer itself (nameko's QueueConsumer, a kombu
ConsumerMixin) reconnects on its own, with back-off, for as long as the broker is away.

    from infra.rpc import RpcProxy  # instead of nameko.rpc.RpcProxy

nameko's RpcProxy declares its reply queue `rpc.reply-<service>-<uuid>` *durable* (kombu's default;
only `x-expires` is set). On a cluster that ties a caller to the node that holds it: when that
node dies, every redeclare is refused ("home node ... of durable queue ... is down", 404) and the
caller, the gateway, gets no reply at all until the node returns (found by
tests/faults/test_cluster.py). Here the reply queue is transient: RabbitMQ drops a transient queue
whose node went down, the listener redeclares it on the node it reconnected to, and a caller only
loses the replies that were in flight. It stays a classic queue: it belongs to one process.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.entity import Queue
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.rpc import RPC_REPLY_QUEUE_TTL, Responder, RpcConsumer, get_rpc_exchange
from nameko.rpc import ReplyListener as NamekoReplyListener
from nameko.rpc import Rpc as NamekoRpc
from nameko.rpc import RpcProxy as NamekoRpcProxy

from infra.handling import is_transient
from infra.logging import get_logger, mask_text
from infra.queues import rpc_queue

_log = get_logger(__name__)
TRANSIENT_DELIVERY_MODE = 1  # AMQP 0-9-1 delivery-mode: 1 non-persistent, 2 persistent


class _ReplyPublisher(Publisher):
    """A reply is published without a publisher confirm and as a transient message.

    Why: the confirm made every reply wait a broker round trip (and cost the broker the confirm)
    for nothing the responder can act on: a reply that fails is dropped (handle_result below),
    and the caller, timed out, repeats its command with its idempotency key. The reply queue is
    transient (ReplyListener), so a persistent mark bought nothing either: RabbitMQ keeps no
    message of a queue that does not survive it. Requests keep their confirms: a request lost
    unconfirmed would leave its caller waiting for its whole timeout. (issue 15: the steady
    bench's booking process spent about a fifth of its samples in Responder.send_response.)"""

    use_confirms = False
    delivery_mode = TRANSIENT_DELIVERY_MODE


class _Responder(Responder):
    publisher_cls = _ReplyPublisher


class QuorumRpcConsumer(RpcConsumer):
    queue: Any

    def setup(self) -> None:
        if self.queue is None:
            # nameko's setup builds a classic queue and registers with the QueueConsumer, which
            # reads `self.queue` only when it starts consuming: replaced here before that.
            super().setup()
            self.queue = rpc_queue(self.container.service_name, self.container.config)

    def handle_result(self, message: Any, result: Any, exc_info: Any) -> Any:
        config = self.container.config
        serializer = config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER)
        responder = _Responder(
            config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config), serializer, message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        try:
            result, exc_info = responder.send_response(result, exc_info)
        except Exception as exc:  # noqa: BLE001 -- one lost reply must not kill every worker (see above)
            log = _log.warning if is_transient(exc) else _log.error
            log("rpc_reply_dropped", method=message.delivery_info.get("routing_key"),
                correlation_id=message.properties.get("correlation_id"),
                error=mask_text(f"{type(exc).__name__}: {exc}")[:500])
        try:
            self.queue_consumer.ack_message(message)
        except Exception as exc:  # noqa: BLE001 -- the channel died with the broker: it redelivers
            _log.warning("rpc_ack_lost_request_redelivered", method=message.delivery_info.get("routing_key"),
                         error=mask_text(f"{type(exc).__name__}: {exc}")[:500])
        return result, exc_info


DEADLINE_HEADER = "nameko.deadline"  # set by the gateway's `call` (services/gateway/api.py)


class Rpc(NamekoRpc):
    """nameko's @rpc on the quorum request queue, and a request past its caller's deadline, or a
    redelivered one that carries a deadline, is dropped unanswered instead of run.

    Why: a request can reach a service long after its caller stopped waiting, as a second copy
    published by kombu's retry once the broker is back or redelivered after a restart. Run then, it
    acts for a caller who has been answered already: issue 14's fault run found a booking stored
    26 s after the first copy of its request had answered "full" (the caller told "full" and
    holding a place). The caller's deadline (wall-clock seconds, header `nameko.deadline`, passed
    on by nameko to the calls the method makes) ends that: a copy that arrives later is acked,
    logged and not run; the caller, answered 503, repeats with the same idempotency key if it
    still wants to. Clocks of the hosts are assumed within a second of each other (NTP)."""

    rpc_consumer = QuorumRpcConsumer()

    def handle_message(self, body: Any, message: Any) -> None:
        deadline = (message.headers or {}).get(DEADLINE_HEADER)
        if deadline is not None:
            try:
                late = time.time() - float(deadline)
            except (TypeError, ValueError):
                late = 0.0
            redelivered = bool(message.delivery_info.get("redelivered"))
            if late > 0 or redelivered:
                # Redelivered: a first delivery ran (and may have answered) on a consumer whose
                # channel died before its ack, or died with it. Run again, it could act after its
                # caller was answered by the first run: the fault run saw a place booked a second
                # after the first run had answered "full". The caller (the gateway, which alone
                # sends deadlines) is answered 503 by its deadline at the latest, and its client
                # repeats with the same idempotency key, answered from the store.
                _log.warning("rpc_request_dropped", method=message.delivery_info.get("routing_key"),
                             late_s=round(late, 3), redelivered=redelivered)
                try:
                    self.rpc_consumer.queue_consumer.ack_message(message)
                except Exception as exc:  # noqa: BLE001 -- a dead channel: redelivered, and dropped again
                    _log.warning("rpc_ack_lost_request_redelivered", error=mask_text(str(exc))[:300])
                return
        super().handle_message(body, message)


rpc = Rpc.decorator


class ReplyListener(NamekoReplyListener):
    """Transient reply queues, and a reply whose ack cannot be sent does not kill the caller.

    nameko's `handle_message` acks first; on a channel that died with a restarting broker the ack
    raises ConnectionResetError (nameko's QueueConsumer.ack_message catches amqp's ConnectionError,
    which is not the builtin one) out of the consumer's thread and the container is killed: the
    fault run saw the gateway die so twice in one broker restart. The reply is delivered to its
    waiting caller anyway; unacked, it is requeued with the dead channel and comes back for a
    correlation id nobody waits for any more, which is ignored."""

    queue: Any
    routing_key: str

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            self.queue_consumer.ack_message(message)
        except Exception as exc:  # noqa: BLE001 -- see above
            _log.warning("rpc_reply_ack_lost", error=mask_text(f"{type(exc).__name__}: {exc}")[:300])
        event = self._reply_events.pop(message.properties.get("correlation_id"), None)
        if event is not None:
            event.send(body)

    def setup(self) -> None:
        super().setup()  # registers with the QueueConsumer, which reads `self.queue` when it starts
        self.queue = Queue(self.queue.name, exchange=get_rpc_exchange(self.container.config),
                           routing_key=self.routing_key, durable=False,
                           queue_arguments={"x-expires": RPC_REPLY_QUEUE_TTL})


class RpcProxy(NamekoRpcProxy):
    rpc_reply_listener = ReplyListener()
