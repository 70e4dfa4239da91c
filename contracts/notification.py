"""Notification: what the SMS outbox holds."""

from __future__ import annotations

from contracts.envelope import Event


class SmsQueued(Event):
    message_id: str
    patient_id: str
    phone_masked: str
    template: str
    text: str
