"""The gateway's booking batcher (services/gateway/batching.py) with eventlet green threads and a
fake `send` at its boundary: concurrent bookings leave together, each gets its own answer, a
lone booking leaves at once, a failed batch fails its own bookings only, and a booking that waits
past its deadline is refused without being sent."""

from __future__ import annotations

from typing import Any

import eventlet
import pytest

from contracts import SessionFull, to_wire
from services.gateway.api import Unavailable
from services.gateway.batching import Batcher

pytestmark = pytest.mark.unit


class Booking:
    """A fake booking service: answers each payload with its double, after `delay` seconds."""

    def __init__(self, delay: float = 0.01, fail_batch: int | None = None) -> None:
        self.delay = delay
        self.batches: list[list[Any]] = []
        self.in_flight = self.most_in_flight = 0
        self.fail_batch = fail_batch

    def send(self, payloads: list[Any], timeout: float) -> list[Any]:
        self.batches.append(list(payloads))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            eventlet.sleep(self.delay)
            if self.fail_batch == len(self.batches):
                raise Unavailable("broker went away")
            return [to_wire(SessionFull("full")) if p % 7 == 0 else {"n": p * 2} for p in payloads]
        finally:
            self.in_flight -= 1


def crowd(batcher: Batcher, booking: Booking, n: int, timeout: float = 5.0) -> list[Any]:
    def one(p: int) -> Any:
        try:
            return batcher.submit(booking.send, p, timeout)
        except Exception as exc:  # noqa: BLE001 -- the answer under test
            return exc

    pool = eventlet.GreenPool(n)
    return list(pool.imap(one, range(1, n + 1)))


def test_a_crowd_leaves_in_few_batches_each_booking_answered_with_its_own_answer():
    batcher, booking = Batcher(max_in_flight=3, max_batch=20), Booking()
    answers = crowd(batcher, booking, 200)
    for p, answer in zip(range(1, 201), answers, strict=True):
        if p % 7 == 0:
            assert isinstance(answer, SessionFull)
        else:
            assert answer == {"n": p * 2}
    sent = [p for batch in booking.batches for p in batch]
    assert sorted(sent) == list(range(1, 201))  # each sent exactly once
    assert booking.most_in_flight <= 3
    assert max(len(b) for b in booking.batches) <= 20
    assert len(booking.batches) <= 200 / 20 + 3  # full batches after the first few
    assert batcher.in_flight == 0 and not batcher.pending


def test_a_lone_booking_leaves_at_once_alone():
    batcher, booking = Batcher(), Booking(delay=0)
    assert batcher.submit(booking.send, 3, 1.0) == {"n": 6}
    assert batcher.submit(booking.send, 4, 1.0) == {"n": 8}
    assert booking.batches == [[3], [4]]


def test_a_failed_batch_fails_its_own_bookings_and_the_next_batches_go_on():
    batcher, booking = Batcher(max_in_flight=1, max_batch=10), Booking(fail_batch=2)
    answers = crowd(batcher, booking, 40)
    failed = {p for p, a in zip(range(1, 41), answers, strict=True) if isinstance(a, Unavailable)}
    assert failed == set(booking.batches[1])
    assert len(booking.batches) >= 3  # later batches were sent after the failure
    assert all(a == {"n": p * 2} or isinstance(a, SessionFull | Unavailable)
               for p, a in zip(range(1, 41), answers, strict=True))


def test_a_booking_that_waits_past_its_deadline_is_refused_and_never_sent():
    batcher, booking = Batcher(max_in_flight=1, max_batch=1), Booking(delay=0.3)
    first = eventlet.spawn(batcher.submit, booking.send, 1, 5.0)
    eventlet.sleep(0)  # the first is in flight, alone
    with pytest.raises(Unavailable):
        batcher.submit(booking.send, 2, 0.05)
    assert first.wait() == {"n": 2}
    assert booking.batches == [[1]]
    assert not batcher.pending


def test_a_leader_killed_while_sending_leaves_no_booking_waiting_forever():
    batcher, booking = Batcher(max_in_flight=1, max_batch=10), Booking(delay=0.2)
    leader = eventlet.spawn(batcher.submit, booking.send, 1, 5.0)
    eventlet.sleep(0)
    others = [eventlet.spawn(batcher.submit, booking.send, p, 5.0) for p in (2, 3)]
    eventlet.sleep(0.05)
    leader.kill()  # e.g. the HTTP worker torn down
    results = [o.wait() for o in others]
    assert results == [{"n": 4}, {"n": 6}]
    assert batcher.in_flight == 0
