"""notification as a real nameko container sending through the SMPP adapter to a real SMSC
process (tests/tools/smppd): booking events become SMS that the dispatcher submits and the
SMSC's receipts mark delivered; the SMSC killed in the middle of a run and restarted loses
nothing and doubles nothing: every message is submitted once and ends sent or delivered."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from nameko.rpc import RpcProxy, rpc

from contracts import AppointmentBooked, HospitalRegistered
from services.notification.service import NotificationService
from tests.nameko.test_sms_his_services import body, rows
from tests.tools.smppd import SmppServer, require_node

pytestmark = pytest.mark.integration


def booked(n: int) -> AppointmentBooked:
    return AppointmentBooked(
        appointment_id=f"appt-s{n}", code=f"K{n:07d}", session_id="s-hb3-card-0310-am", hospital_id="hb3",
        department_id="hb3-card", doctor_id="dr-wang", patient_id=f"patient-{n}", channel="web",
        sequence_number=n, date="2025-03-10", period="morning", start="08:00:00", fee="50.00")


def test_sms_go_through_a_real_smsc_and_survive_its_crash(container_factory, rabbit_config, broker, unique_name,
                                                           wait_for, tmp_path):
    require_node()
    booking_name = unique_name("booking")

    class FakeBooking:
        name = booking_name

        @rpc
        def patient_contact(self, patient_id: str) -> dict[str, Any]:
            n = int(patient_id.split("-")[1])
            return {"phone": f"138{n:08d}", "phone_masked": f"138****{n:04d}"}

    class Notification(NotificationService):
        name = unique_name("notification")
        booking = RpcProxy(booking_name)

    with SmppServer(tmp_path, system_id="hospital", password="secret") as smsc:
        config = {**rabbit_config, "SMS_PROVIDER": "smpp", "SMPP_HOST": "127.0.0.1", "SMPP_PORT": smsc.port,
                  "SMPP_SYSTEM_ID": "hospital", "SMPP_PASSWORD": "secret", "SMPP_SOURCE_ADDR": "106900001234",
                  "SMPP_RATE": 20, "SMPP_RECONNECT_MAX_S": 1, "SMS_RETRY_BASE_S": 0.5}
        container_factory(FakeBooking, rabbit_config).start()
        notification = container_factory(Notification, config)
        notification.start()
        broker.publish_event("schedule", body(HospitalRegistered(hospital_id="hb3", name="河北医科大学第三医院",
                                                                 level="3A", address="石家庄"), "schedule"))
        wait_for(lambda: rows(notification, "SELECT 1 FROM hospitals"), 30, "the hospital")
        # Every message may go at once: no quiet hours at this hospital.
        _sql(notification, "UPDATE hospitals SET quiet_start = '00:00', quiet_end = '00:00'")

        for n in range(1, 21):
            broker.publish_event("booking", body(booked(n), "booking"))
        wait_for(lambda: _count(notification, "status = 'delivered'") >= 5, 60, "the first receipts")
        smsc.kill()  # in the middle of the run: submits in flight, a bind lost
        for n in range(21, 41):
            broker.publish_event("booking", body(booked(n), "booking"))
        time.sleep(2)  # messages wait for the SMSC, costing no attempt
        assert _count(notification, "status = 'failed'") == 0
        smsc.start()
        wait_for(lambda: _count(notification, "status IN ('sent', 'delivered')") == 40, 90, "all 40 to be taken")
        wait_for(lambda: _count(notification, "status = 'delivered'") >= 35, 60, "the receipts after the restart")

        # A confirmation is long (UCS2, two parts): a message is one concatenation reference.
        messages = {(s["destination"], _reference(s)) for s in smsc.submits()}
        submitted = Counter(phone for phone, _ in messages)
        assert set(submitted) == {f"138{n:08d}" for n in range(1, 41)}  # nothing lost
        doubled = {phone: c for phone, c in submitted.items() if c > 1}
        # A submit whose answer the crash swallowed may be sent again (the adapter's documented
        # window); there are at most as many as were in flight at the kill.
        assert len(doubled) <= 2, doubled
        [(attempts,)] = rows(notification, "SELECT max(attempts) FROM outbox")
        assert attempts <= 3


def _reference(submit: dict[str, Any]) -> str:
    """The UDH concatenation reference of a part (IE 0x00: 8-bit, IE 0x08: 16-bit), or the
    server's message id for a message of one part."""
    data = bytes.fromhex(submit["short_message"])
    if not submit["esm_class"] & 0x40:
        return str(submit["message_id"])
    ie, length = data[1], data[2]
    return data[3:3 + length - 2].hex() if ie in (0x00, 0x08) else str(submit["message_id"])


def _count(container: Any, where: str) -> int:
    [(n,)] = rows(container, f"SELECT count(*) FROM outbox WHERE {where}")
    return int(n)


def _sql(container: Any, sql: str) -> None:
    from infra.providers import ServiceDatabase

    provider = next(e for e in container.extensions if isinstance(e, ServiceDatabase))
    provider.db.execute(sql)
