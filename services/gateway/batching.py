"""Bookings that arrive together go to booking together: one RPC for what queued up.

Why: under a flash crowd (5,000 patients, 30 places) almost every answer is "full", decided by
booking from memory in microseconds, yet each cost a whole RPC round trip through RabbitMQ
(publish, consume, reply, confirm: bench/flash_crowd.py's profile, the broker and the proxies'
serialisation on top of the gateway's own HTTP work). The batcher lets at most `max_in_flight`
`book_appointments` requests be outstanding per gateway process; bookings that arrive while they
are in flight wait in a queue and leave together, up to `max_batch` in one request, as soon as one
comes back. With one booking at a time nothing waits: a lone request leaves at once, alone, so a
quiet platform answers as fast as before.

Each booking is still its own command with its own idempotency key and answer (booking's
`handlers.book_many` answers each as `book_appointment` would). A batch that fails as a whole
(broker down, no answer in time) fails each of its bookings with that error, and each client
repeats with its key as it would after a single failed call. A booking that waited in the queue
past its own deadline is answered 503 without being sent: it never reaches booking, so nothing
is booked behind the client's back.

Green threads only (the gateway's workers are eventlet green threads of one process): the queue
and the counter are touched between switches, never concurrently.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventlet.queue import LightQueue

from contracts import from_wire
from services.gateway.api import Unavailable

Send = Callable[[list[Any], float], Any]  # (payloads, timeout) -> answers, in order


@dataclass(eq=False)
class _Pending:
    payload: Any
    deadline: float
    wake: LightQueue = field(default_factory=LightQueue)
    sent: bool = False
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self.wake.put(None)


class Batcher:
    def __init__(self, max_in_flight: int = 4, max_batch: int = 64) -> None:
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.pending: deque[_Pending] = deque()
        self.in_flight = 0
        self.batches = 0  # sent, for the gateway's metrics and the tests
        self.sent_items = 0

    def submit(self, send: Send, payload: Any, timeout: float) -> Any:
        """The answer to `payload`, sent alone or with others by whichever caller leads (it sends
        with its own `send`). A refusal on the wire is raised as its DomainError."""
        item = _Pending(payload, time.monotonic() + timeout)
        self.pending.append(item)
        while not item.done:
            if self.in_flight < self.max_in_flight and self.pending:
                self._lead(send)
                continue
            if item.sent:
                item.wake.get()  # the leader finishes every item it sent, come what may
                continue
            remaining = item.deadline - time.monotonic()
            if remaining <= 0:
                self.pending.remove(item)
                raise Unavailable("服务繁忙，请稍后再试 / service did not answer in time")
            try:
                item.wake.get(timeout=remaining)
            except Exception:  # noqa: BLE001 -- eventlet's queue.Empty: look at the deadline again
                pass
        if item.error is not None:
            raise item.error
        if (err := from_wire(item.result)) is not None:
            raise err
        return item.result

    def _lead(self, send: Send) -> None:
        batch: list[_Pending] = []
        while self.pending and len(batch) < self.max_batch:
            batch.append(item := self.pending.popleft())
            item.sent = True
        self.in_flight += 1
        self.batches += 1
        self.sent_items += len(batch)
        timeout = max(0.5, min(i.deadline for i in batch) - time.monotonic())
        try:
            answers = send([i.payload for i in batch], timeout)
        except BaseException as exc:  # every item learns the batch's fate, then the leader goes on
            self._finish(batch, error=exc if isinstance(exc, Exception) else Unavailable(
                "服务繁忙，请稍后再试 / service did not answer in time"))
            if not isinstance(exc, Exception):
                raise
            return
        if not isinstance(answers, Sequence) or isinstance(answers, str | bytes) or len(answers) != len(batch):
            self._finish(batch, error=Unavailable("服务暂时不可用 / service error"))
        else:
            self._finish(batch, answers=answers)

    def _finish(self, batch: list[_Pending], answers: Sequence[Any] | None = None,
                error: BaseException | None = None) -> None:
        self.in_flight -= 1
        for i, item in enumerate(batch):
            item.finish(answers[i] if answers is not None else None, error)
        if self.pending and self.in_flight < self.max_in_flight:
            self.pending[0].wake.put(None)  # the oldest waiting booking leads the next batch
