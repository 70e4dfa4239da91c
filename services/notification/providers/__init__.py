"""The SMS provider port and its adapters.

A provider sends one message and says what became of it:
- `send(Outgoing)` returns `Accepted` with the provider's id(s) of what it took (one per part of a
  long SMS for SMPP), or raises `SendFailed`: `permanent` (the number is invalid, the carrier
  refuses the content: parked at once) or not (throttled, a system error: retried with back-off
  and parked after the attempts run out). `Unavailable` (a `SendFailed`) means the provider is
  not connected at all: it is waited out without counting an attempt (a down SMSC is not the
  message's fault).
- Delivery receipts arrive later, on the provider's own connection, and are handed to the
  `on_receipt` callback given to `start` (a `Receipt` per provider id).
- `ready()` says whether a send could go now (the dispatcher does not claim messages otherwise).

Adapters: `outbox` (the default: the message stays in the service's own table, shown on the
operator's outbox page; "sending" it is recording that it was taken), `smpp` (SMPP 3.4 to a
carrier's SMSC, services.notification.providers.smpp) and `http` (a carrier's JSON API over HTTPS
with a signature, services.notification.providers.http). `make_provider(settings)` picks one.

An adapter is used from several greenlets (nameko workers) or threads at once, and must never
log a phone number or a message text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Outgoing:
    message_id: str  # ours: a carrier that takes a client reference gets it (its idempotency key)
    phone: str       # 11-digit mainland mobile, in clear only for the send
    text: str


@dataclass(frozen=True)
class Accepted:
    provider_ids: tuple[str, ...]


@dataclass(frozen=True)
class Receipt:
    provider_id: str
    delivered: bool
    status: str          # the carrier's word for it: DELIVRD, UNDELIV, EXPIRED, REJECTD, ...
    at: datetime


class SendFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Unavailable(SendFailed):
    """Not connected: nothing was handed over; waited out, not counted as an attempt."""


ReceiptHandler = Callable[[Receipt], None]


class SmsProvider(Protocol):
    name: str

    def start(self, on_receipt: ReceiptHandler) -> None: ...

    def stop(self) -> None: ...

    def ready(self) -> bool: ...

    def send(self, message: Outgoing) -> Accepted: ...


class OutboxProvider:
    """The message stays where it is: in the outbox table, for the operator's page. Nothing is
    delivered anywhere, so no receipt ever comes; the message stays `sent`."""

    name = "outbox"

    def start(self, on_receipt: ReceiptHandler) -> None:
        pass

    def stop(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def send(self, message: Outgoing) -> Accepted:
        return Accepted((f"outbox-{message.message_id}",))


def make_provider(config: dict[str, Any]) -> SmsProvider:
    """The adapter named by `SMS_PROVIDER` (outbox, smpp, http), configured from `config`."""
    kind = str(config.get("SMS_PROVIDER") or "outbox").strip().lower()
    if kind == "outbox":
        return OutboxProvider()
    if kind == "smpp":
        from services.notification.providers.smpp import SmppProvider
        return SmppProvider.from_config(config)
    if kind == "http":
        from services.notification.providers.http import HttpProvider
        return HttpProvider.from_config(config)
    raise ValueError(f"SMS_PROVIDER must be outbox, smpp or http, not {kind!r}")
