"""his_sync's reactions: each booking event becomes one HL7 message, sent and acknowledged.

A booking is an SIU^S12, a move by a doctor stop S14, a cancellation S15, a no-show S26 and a
check-in ADT^A04; the later ones are built from the appointment as booked (or moved), remembered
here. The MLLP exchange happens inside the reaction's transaction on purpose: the inbox claim and
the record of the ACK commit only after the HIS accepted. Any failure (no connection, AE/AR, an
ACK for another control id) raises, the transaction rolls back, and the reliable handler retries
with back-off and finally parks the event for an operator. The control id is derived from the
event id, so a resend after a crash carries the same id and the HIS can recognise the duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    Envelope,
)
from infra.application import Application
from infra.logging import get_logger
from infra.memory import JsonMemory
from services.his_sync import hl7
from services.his_sync.readmodel import HisMessages

APP = Application("his_sync")

_log = get_logger(__name__)


class HisClient(Protocol):
    """What a reaction needs of an MLLP connection (services.his_sync.mllp.MllpClient)."""

    def send(self, message: str) -> str: ...

    def close(self) -> None: ...


ConnectHis = Callable[[], HisClient]


class HisRejected(Exception):
    """The HIS answered AE or AR: retried, then parked."""


def control_id_for(env: Envelope) -> str:
    return env.event_id.hex[:20]


@APP.on(AppointmentBooked)
def send_booking(cur: Any, event: AppointmentBooked, envelope: Envelope, appointments: JsonMemory,
                 his_messages: HisMessages, connect_his: ConnectHis, now: datetime) -> None:
    appt = event.model_dump(mode="json")
    _send(cur, envelope, "SIU^S12", appt, his_messages, connect_his, now)
    appointments.remember(cur, event.appointment_id, appt)


@APP.on(AppointmentMoved)
def send_move(cur: Any, event: AppointmentMoved, envelope: Envelope, appointments: JsonMemory,
              his_messages: HisMessages, connect_his: ConnectHis, now: datetime) -> None:
    appt = event.model_dump(mode="json")
    _send(cur, envelope, "SIU^S14", appt, his_messages, connect_his, now)
    appointments.remember(cur, event.appointment_id, appt)


@APP.on(AppointmentCancelled)
def send_cancellation(cur: Any, event: AppointmentCancelled, envelope: Envelope, appointments: JsonMemory,
                      his_messages: HisMessages, connect_his: ConnectHis, now: datetime) -> None:
    appt = {**appointments.recall(cur, event.appointment_id), "reason": event.reason}
    _send(cur, envelope, "SIU^S15", appt, his_messages, connect_his, now)


@APP.on(AppointmentLapsed)
def send_no_show(cur: Any, event: AppointmentLapsed, envelope: Envelope, appointments: JsonMemory,
                 his_messages: HisMessages, connect_his: ConnectHis, now: datetime) -> None:
    _send(cur, envelope, "SIU^S26", appointments.recall(cur, event.appointment_id), his_messages, connect_his, now)


@APP.on(AppointmentCheckedIn)
def send_check_in(cur: Any, event: AppointmentCheckedIn, envelope: Envelope, appointments: JsonMemory,
                  his_messages: HisMessages, connect_his: ConnectHis, now: datetime) -> None:
    _send(cur, envelope, "ADT^A04", appointments.recall(cur, event.appointment_id), his_messages, connect_his, now)


def _send(cur: Any, envelope: Envelope, message_type: str, appointment: dict[str, Any], his_messages: HisMessages,
          connect_his: ConnectHis, now: datetime) -> None:
    control_id = control_id_for(envelope)
    if message_type == "ADT^A04":
        message = hl7.build_adt_a04(appointment, control_id, now)
    else:
        message = hl7.build_siu(message_type.split("^")[1], appointment, control_id, now)
    client = connect_his()
    try:
        ack = hl7.parse_ack(client.send(message), control_id)
    finally:
        client.close()
    if not ack.accepted:
        raise HisRejected(f"HIS answered {ack.code} to {message_type} {control_id}: {ack.text}")
    his_messages.record(cur, control_id=control_id, event_id=envelope.event_id,
                        appointment_id=appointment["appointment_id"], message_type=message_type, ack_code=ack.code)
    _log.info("his_acknowledged", message_type=message_type, control_id=control_id)
