"""HIS synchronisation outcomes."""

from __future__ import annotations

from contracts.envelope import Event


class HisMessageAcknowledged(Event):
    appointment_id: str
    message_type: str
    control_id: str
    ack_code: str
