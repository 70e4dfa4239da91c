"""Verification codes through the real notification service: RPC over the broker, its SQL on
PostgreSQL, two replicas of it consuming one RPC queue (the limits and the count of wrong tries
must hold across them), and the security SMS reactions with a redelivered event.

The code is read back where an operator would find it: the outbox, filtered by the number.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from nameko.rpc import RpcProxy, rpc
from nameko.standalone.rpc import ClusterRpcProxy

from contracts import (
    Envelope,
    Event,
    InvalidInput,
    PatientPasswordReplaced,
    PatientRegistrationRefused,
    TooManyRequests,
    from_wire,
)
from infra.providers import ServiceDatabase
from services.notification.service import NotificationService

pytestmark = pytest.mark.integration

PHONE = "13812345678"
OTHER = "13900001111"


@contextlib.contextmanager
def cluster(config: dict[str, Any]) -> Iterator[Any]:
    proxy = ClusterRpcProxy(config, timeout=60)
    try:
        with proxy as calls:
            yield calls
    finally:
        # The proxy's reply queue would only expire after nameko's 5 min x-expires: delete it now.
        conn = pika.BlockingConnection(pika.URLParameters(config["AMQP_URI"]))
        try:
            conn.channel().queue_delete(queue=proxy._reply_listener.queue.name)
        finally:
            conn.close()


@pytest.fixture
def notification(container_factory, rabbit_config, unique_name) -> Iterator[Any]:
    """Two replicas of one notification service (same name, same database) and an RPC client."""
    booking_name = unique_name("booking")
    asked: list[str] = []

    class FakeBooking:
        name = booking_name

        @rpc
        def patient_contact(self, patient_id):
            asked.append(patient_id)
            return {"phone": PHONE, "phone_masked": "138****5678"}

    class Notification(NotificationService):
        name = unique_name("notification")
        booking = RpcProxy(booking_name)

    container_factory(FakeBooking, rabbit_config).start()
    replicas = [container_factory(Notification, rabbit_config) for _ in range(2)]
    for replica in replicas:
        replica.start()
    with cluster(rabbit_config) as calls:
        yield Service(calls[Notification.name], replicas[0], asked)


class Service:
    def __init__(self, rpc: Any, container: Any, asked: list[str]) -> None:
        self.rpc = rpc
        self.container = container
        self.booking_asked = asked

    def send(self, phone: str = PHONE, purpose: str = "register") -> Any:
        return self.rpc.send_verification_code({"phone": phone, "purpose": purpose})

    def check_async(self, code: str, phone: str = PHONE, purpose: str = "register") -> Any:
        return self.rpc.check_verification_code.call_async({"phone": phone, "purpose": purpose, "code": code})

    def check(self, code: str, phone: str = PHONE, purpose: str = "register") -> Any:
        return self.check_async(code, phone, purpose).result()

    def code_sent_to(self, phone: str) -> str:
        [sms, *_] = self.rpc.outbox(10, phone=phone)
        assert sms["template"] == "verification_code"
        found = re.search(r"验证码(\d{6})", sms["text"])
        assert found is not None, sms["text"]
        return found.group(1)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self._db().fetchall(sql)

    def execute(self, sql: str) -> None:
        self._db().execute(sql)

    def _db(self) -> Any:
        return next(e for e in self.container.extensions if isinstance(e, ServiceDatabase)).db


def refusal(answer: Any) -> Any:
    err = from_wire(answer)
    assert err is not None, f"expected a refusal, got {answer!r}"
    return err


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_a_code_sent_is_found_in_the_outbox_by_its_number_and_checks_right_and_wrong(notification):
    assert notification.send() == {"expires_in": 300, "resend_after": 60}
    notification.send(OTHER)
    code = notification.code_sent_to(PHONE)

    [mine] = notification.rpc.outbox(10, phone=PHONE)  # only this number's message
    assert mine["phone_masked"] == "138****5678" and PHONE not in json.dumps(mine, ensure_ascii=False)
    assert len(notification.rpc.outbox(10)) == 2
    [(stored,)] = notification.rows("SELECT count(*) FROM verification_codes WHERE code_hash LIKE '%%' || "
                                    f"'{code}' || '%%'")
    assert stored == 0  # only a keyed hash of the code is kept

    wrong_answer = refusal(notification.check(wrong(code)))
    assert isinstance(wrong_answer, InvalidInput)
    assert (wrong_answer.code, wrong_answer.field) == ("wrong_sms_code", "sms_code")
    assert "还可尝试4次" in wrong_answer.message
    assert notification.check(code) == {"verified": True}
    assert notification.check(code) == {"verified": True}  # good until it expires: a retry must not fail
    assert refusal(notification.check(code, purpose="reset_password")).code == "sms_code_expired"


def test_ten_concurrent_wrong_guesses_count_five_and_then_the_right_code_is_refused(notification):
    notification.send()
    code = notification.code_sent_to(PHONE)

    pending = [notification.check_async(wrong(code)) for _ in range(10)]
    answers = [refusal(p.result()) for p in pending]

    codes = sorted(a.code for a in answers)
    assert codes == ["sms_code_expired"] * 5 + ["wrong_sms_code"] * 5, [a.message for a in answers]
    left = sorted(re.search(r"/ wrong code, (\d+|no) tries", a.message).group(1)  # type: ignore[union-attr]
                  for a in answers if a.code == "wrong_sms_code")
    assert left == ["1", "2", "3", "4", "no"]  # each guess saw the ones before it
    [(tries,)] = notification.rows("SELECT wrong_tries FROM verification_codes")
    assert tries == 5
    assert refusal(notification.check(code)).code == "sms_code_expired"


def test_a_second_send_within_a_minute_answers_429_with_retry_after_across_replicas(notification):
    notification.send()
    answers = [notification.rpc.send_verification_code.call_async({"phone": PHONE, "purpose": "reset_password"})
               for _ in range(4)]
    for answer in (a.result() for a in answers):
        body = answer["domain_error"]
        assert (body["status"], body["code"], body["field"]) == (429, "too_many_requests", "phone")
        err = refusal(answer)
        assert isinstance(err, TooManyRequests) and 1 <= err.retry_after <= 60
    assert len(notification.rpc.outbox(10, phone=PHONE)) == 1


def test_concurrent_first_sends_for_one_number_send_one_sms(notification):
    answers = [notification.rpc.send_verification_code.call_async({"phone": OTHER, "purpose": "register"})
               for _ in range(12)]
    results = [a.result() for a in answers]
    assert sum(1 for r in results if "domain_error" not in r) == 1, results
    assert len(notification.rpc.outbox(10, phone=OTHER)) == 1


def test_concurrent_sends_once_the_minute_has_passed_send_one_sms(notification):
    notification.send(OTHER)
    # The minute passes (the number's last send is moved back rather than waited for).
    notification.execute("UPDATE verification_sends SET sent_at = ARRAY[now() - interval '2 minutes']")
    answers = [notification.rpc.send_verification_code.call_async({"phone": OTHER, "purpose": "register"})
               for _ in range(12)]
    results = [a.result() for a in answers]
    assert sum(1 for r in results if "domain_error" not in r) == 1, results
    assert len(notification.rpc.outbox(10, phone=OTHER)) == 2


def test_an_expired_code_is_refused_and_swept_by_a_later_send(notification):
    notification.send()
    code = notification.code_sent_to(PHONE)
    notification.execute("UPDATE verification_codes SET expires_at = now() - interval '1 second'")
    assert refusal(notification.check(code)).code == "sms_code_expired"
    notification.send(OTHER)  # any send forgets some expired codes
    assert notification.rows("SELECT count(*) FROM verification_codes") == [(1,)]


def body(event: Event) -> dict[str, Any]:
    env = Envelope(type=event.type_name(), stream="patient-test", source="booking", correlation_id="corr-svc",
                   data=event.model_dump(mode="json"))
    return env.model_dump(mode="json")


def test_a_refused_registration_delivered_twice_sends_one_sms_to_the_owner(notification, broker, wait_for):
    refused = body(PatientRegistrationRefused(patient_id="patient-5b1e", attempt_phone_masked="139****1111"))
    broker.publish_event("booking", refused, copies=2)
    broker.publish_event("booking", body(PatientPasswordReplaced(patient_id="patient-5b1e")))
    wait_for(lambda: len(notification.rpc.outbox(10, phone=PHONE)) == 2, 30, "the two security SMS")
    time.sleep(0.5)  # an absence check: give the second copy time to (wrongly) queue a second SMS

    messages = notification.rpc.outbox(10, phone=PHONE)
    assert sorted(m["template"] for m in messages) == ["password_replaced", "registration_refused"]
    [warning] = [m for m in messages if m["template"] == "registration_refused"]
    assert "139****1111" in warning["text"] and warning["patient_id"] == "patient-5b1e"
    # Asked once: the redelivery asked nothing, the second event found the contact remembered.
    assert notification.booking_asked == ["patient-5b1e"]
    [kept] = notification.rows("SELECT data FROM patient_contacts WHERE patient_id = 'patient-5b1e'")
    assert PHONE not in str(kept) and kept[0]["phone_masked"] == warning["phone_masked"]
