"""Notification: SMS to patients and doctors through a provider port (an outbox by default)."""
