"""SMPP 3.4 adapter: a carrier's SMSC over one bind_transceiver, with smpplib.

Bind. One TCP connection to `SMPP_HOST:SMPP_PORT`, bound as a transceiver (submits and receipts on
the same connection) with `SMPP_SYSTEM_ID`, `SMPP_PASSWORD` and `SMPP_SYSTEM_TYPE`. A fresh
smpplib client is built for every connection; nothing of a dead one is reused.

Encoding. Every text is sent as UCS2 (data_coding 0x08, UTF-16BE). Chinese needs it, and the
platform's texts are Chinese; for pure ASCII the SMSC default alphabet (data_coding 0) is not used,
because what 0 means (GSM 03.38, ASCII or Latin-1) differs between SMSCs and a wrong guess garbles
`@`, `_` or `$` in a verification text.

Splitting. A text longer than 70 UCS2 characters is split by `smpplib.gsm.make_parts` into parts
of 67 characters, each with a concatenation UDH (05 00 03 ref total seq) and esm_class UDHI (0x40);
each part is its own submit_sm and gets its own SMSC message_id: `Accepted.provider_ids` holds
them in order, and a receipt comes for each. More than 255 parts is refused (permanent).

Addresses. Source `SMPP_SOURCE_ADDR` (the 106... service number) with TON 0 / NPI 0 (unknown:
the SMSC applies its own rules to a service code); destination the 11-digit mainland mobile
without +86, TON 2 (national) / NPI 1 (ISDN/E.164). A carrier that wants other values sets
`SMPP_SOURCE_TON`, `SMPP_SOURCE_NPI`, `SMPP_DEST_TON`, `SMPP_DEST_NPI`. A phone that is not
11 digits starting with 1 fails permanently before anything is sent.

Sending. `send` takes a token per part from the bucket, writes the submit_sm (one writer at a time
on the socket) and waits up to `SMPP_TIMEOUT_S` for each submit_sm_resp, matched by sequence
number. A non-zero command_status is a `SendFailed`: permanent for what the message itself gets
wrong (destination, source, length, esm_class, ...: `_PERMANENT`), not permanent for everything
else (throttled 0x58, queue full 0x14, system error 0x08, unknown codes): a wrongly temporary
answer costs a few retries, a wrongly permanent one would drop a patient's message. Not bound:
`Unavailable`, nothing was handed over.

At-least-once window. If the connection drops (or the answer does not come in time) after a
submit_sm was written, the send raises a non-permanent `SendFailed` and the dispatcher retries.
The SMSC may have taken that submit before the drop: the patient then gets the text twice. SMPP
has no idempotency key, so this narrow window is at-least-once by design, not exactly-once.

Receipts. registered_delivery=1 asks for a receipt on success and on failure. The reader turns a
deliver_sm with esm_class 0x04 into a `Receipt`: the id from the `receipted_message_id` TLV (else
the `id:` of the receipt text), the status from `stat:` (else the `message_state` TLV), the time
from `done date:` read as China Standard Time (UTC+8; else the time it arrived). It is handed to
`on_receipt` on the reader (keep the callback short: submits' answers wait behind it), then
answered with deliver_sm_resp: ESME_ROK, or ESME_RX_T_APPN (0x64, "temporary, send again") when
the callback raised, so the SMSC redelivers instead of the receipt being lost. Other deliver_sm
(a patient's reply) are answered and ignored.

Keep-alive and reconnect. One reader thread (a greenlet under eventlet's monkey patching: it only
blocks in socket, select and threading calls) reads every PDU, answers enquire_link and unbind
from the SMSC, and sends its own enquire_link after `SMPP_ENQUIRE_S` without traffic. A read error,
an unreadable PDU or an enquire_link unanswered for `SMPP_TIMEOUT_S` ends the connection: the
waiting sends fail (not permanent), and the reader reconnects with exponential back-off and
jitter, 0.5 s doubling up to `SMPP_RECONNECT_MAX_S`. One log line per outage ("smpp connection
lost", or "smpp cannot bind" at start) and one when bound again, never one per retry. A refused
bind (wrong password) is retried the same way: `ready()` stays False meanwhile.

Cap. A token bucket shared by every caller of this provider: `SMPP_RATE` parts a second, a burst
of a tenth of a second's worth (at least 1), so that no second holds much more than the carrier's
per-bind limit. Callers are served in the order they asked.

A carrier configures: host and port, system_id, password, system_type if it uses one, the
service number (source address), the per-bind rate it allows, its enquire_link expectations, and
that receipts come as deliver_sm on the transceiver bind.

Never logged: phone numbers, message texts, the password, raw PDUs (smpplib's own debug hex dump
is capped at WARNING).
"""

from __future__ import annotations

import logging
import random
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import smpplib.client
import smpplib.consts as smpp_consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp

from infra.logging import get_logger
from services.notification.providers import Accepted, Outgoing, Receipt, ReceiptHandler, SendFailed, Unavailable

__all__ = ["SmppProvider", "TokenBucket", "parse_receipt"]

log = get_logger(__name__)

# smpplib logs every PDU as hex at DEBUG (phone numbers and texts inside): never let that through.
_WIRE_LOGGER = "services.notification.providers.smpp.wire"
logging.getLogger(_WIRE_LOGGER).setLevel(logging.ERROR)

_MOBILE = re.compile(r"1\d{10}")
_ESM_SMSC_RECEIPT = 0x04
_BACKOFF_START_S = 0.5
_POLL_S = 0.5  # how often the reader looks at the stop flag and the keep-alive while idle
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))

# What the message itself gets wrong: sending it again cannot help.
_PERMANENT = frozenset({
    smpp_consts.SMPP_ESME_RINVMSGLEN,
    smpp_consts.SMPP_ESME_RINVCMDLEN,
    smpp_consts.SMPP_ESME_RINVCMDID,
    smpp_consts.SMPP_ESME_RINVPRTFLG,
    smpp_consts.SMPP_ESME_RINVREGDLVFLG,
    smpp_consts.SMPP_ESME_RINVSRCADR,
    smpp_consts.SMPP_ESME_RINVDSTADR,
    smpp_consts.SMPP_ESME_RINVSERTYP,
    smpp_consts.SMPP_ESME_RINVESMCLASS,
    smpp_consts.SMPP_ESME_RINVSRCTON,
    smpp_consts.SMPP_ESME_RINVSRCNPI,
    smpp_consts.SMPP_ESME_RINVDSTTON,
    smpp_consts.SMPP_ESME_RINVDSTNPI,
    smpp_consts.SMPP_ESME_RINVSCHED,
    smpp_consts.SMPP_ESME_RINVEXPIRY,
    smpp_consts.SMPP_ESME_RX_P_APPN,
    smpp_consts.SMPP_ESME_RX_R_APPN,
    smpp_consts.SMPP_ESME_RINVOPTPARSTREAM,
    smpp_consts.SMPP_ESME_ROPTPARNOTALLWD,
    smpp_consts.SMPP_ESME_RINVPARLEN,
    smpp_consts.SMPP_ESME_RMISSINGOPTPARAM,
    smpp_consts.SMPP_ESME_RINVOPTPARAMVAL,
})

_MESSAGE_STATES = {
    smpp_consts.SMPP_MESSAGE_STATE_ENROUTE: "ENROUTE",
    smpp_consts.SMPP_MESSAGE_STATE_DELIVERED: "DELIVRD",
    smpp_consts.SMPP_MESSAGE_STATE_EXPIRED: "EXPIRED",
    smpp_consts.SMPP_MESSAGE_STATE_DELETED: "DELETED",
    smpp_consts.SMPP_MESSAGE_STATE_UNDELIVERABLE: "UNDELIV",
    smpp_consts.SMPP_MESSAGE_STATE_ACCEPTED: "ACCEPTD",
    smpp_consts.SMPP_MESSAGE_STATE_UNKNOWN: "UNKNOWN",
    smpp_consts.SMPP_MESSAGE_STATE_REJECTED: "REJECTD",
}
_RECEIPT_ID = re.compile(r"\bid:(\S+)")
_RECEIPT_STAT = re.compile(r"\bstat:(\w+)")
_RECEIPT_DONE = re.compile(r"\bdone date:(\d{10}(?:\d{2})?)\b")


class SmppProvider:
    name = "smpp"

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        source_addr: str,
        *,
        system_type: str = "",
        rate: float = 50.0,
        enquire_s: float = 30.0,
        timeout_s: float = 10.0,
        reconnect_max_s: float = 30.0,
        source_ton: int = smpp_consts.SMPP_TON_UNK,
        source_npi: int = smpp_consts.SMPP_NPI_UNK,
        dest_ton: int = smpp_consts.SMPP_TON_NATNL,
        dest_npi: int = smpp_consts.SMPP_NPI_ISDN,
    ) -> None:
        if rate <= 0 or enquire_s <= 0 or timeout_s <= 0 or reconnect_max_s <= 0:
            raise ValueError("SMPP_RATE, SMPP_ENQUIRE_S, SMPP_TIMEOUT_S and SMPP_RECONNECT_MAX_S must be > 0")
        self.host = host
        self.port = port
        self.system_id = system_id
        self._password = password
        self.system_type = system_type
        self.source_addr = source_addr
        self.enquire_s = enquire_s
        self.timeout_s = timeout_s
        self.reconnect_max_s = reconnect_max_s
        self._addressing = {
            "source_addr_ton": source_ton,
            "source_addr_npi": source_npi,
            "dest_addr_ton": dest_ton,
            "dest_addr_npi": dest_npi,
        }
        self.bucket = TokenBucket(rate, burst=max(1, int(rate / 10)))
        self._on_receipt: ReceiptHandler | None = None
        self._session: _Session | None = None
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SmppProvider:
        def required(key: str) -> str:
            value = str(config.get(key) or "").strip()
            if not value:
                raise ValueError(f"{key} is required for SMS_PROVIDER=smpp")
            return value

        def number(key: str, default: float) -> float:
            value = config.get(key)
            return default if value is None or str(value).strip() == "" else float(value)

        return cls(
            host=required("SMPP_HOST"),
            port=int(number("SMPP_PORT", 2775)),
            system_id=required("SMPP_SYSTEM_ID"),
            password=required("SMPP_PASSWORD"),
            source_addr=required("SMPP_SOURCE_ADDR"),
            system_type=str(config.get("SMPP_SYSTEM_TYPE") or ""),
            rate=number("SMPP_RATE", 50),
            enquire_s=number("SMPP_ENQUIRE_S", 30),
            timeout_s=number("SMPP_TIMEOUT_S", 10),
            reconnect_max_s=number("SMPP_RECONNECT_MAX_S", 30),
            source_ton=int(number("SMPP_SOURCE_TON", smpp_consts.SMPP_TON_UNK)),
            source_npi=int(number("SMPP_SOURCE_NPI", smpp_consts.SMPP_NPI_UNK)),
            dest_ton=int(number("SMPP_DEST_TON", smpp_consts.SMPP_TON_NATNL)),
            dest_npi=int(number("SMPP_DEST_NPI", smpp_consts.SMPP_NPI_ISDN)),
        )

    # --- the port -------------------------------------------------------------------------------

    def start(self, on_receipt: ReceiptHandler) -> None:
        """Starts the reader, which connects and binds in the background: `ready()` says when."""
        if self._reader is not None:
            raise RuntimeError("SmppProvider already started")
        self._on_receipt = on_receipt
        self._stopping.clear()
        self._reader = threading.Thread(target=self._run, name="smpp-reader", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        """Unbinds, closes the connection and ends the reader; sends still waiting fail."""
        self._stopping.set()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.join(2 * self.timeout_s + 2 * _POLL_S)  # a connect and a bind may be under way
        session = self._session
        if session is not None:  # the reader did not finish in time: cut the connection
            session.close("stopped")
            self._session = None

    def ready(self) -> bool:
        session = self._session
        return session is not None and session.bound and not self._stopping.is_set()

    def send(self, message: Outgoing) -> Accepted:
        if not _MOBILE.fullmatch(message.phone):
            raise SendFailed("destination is not an 11-digit mainland mobile number", permanent=True)
        try:
            parts, data_coding, esm_class = smpplib.gsm.make_parts(
                message.text, encoding=smpp_consts.SMPP_ENCODING_ISO10646)
        except smpplib.exceptions.MessageTooLong:
            raise SendFailed("text needs more than 255 SMS parts", permanent=True) from None
        session = self._session
        if session is None or not session.bound:
            raise Unavailable("SMPP not bound")
        submitted: list[_Pending] = []
        try:
            for part in parts:
                self.bucket.take()
                submitted.append(session.submit(
                    short_message=part,
                    data_coding=data_coding,
                    esm_class=esm_class,
                    destination_addr=message.phone,
                    handed_over=bool(submitted),
                    fields=self._submit_fields(),
                ))
            return Accepted(tuple(self._answer(session, pending) for pending in submitted))
        finally:
            for pending in submitted:
                session.forget(pending)

    # --- sending --------------------------------------------------------------------------------

    def _submit_fields(self) -> dict[str, Any]:
        return {
            "service_type": "",
            "source_addr": self.source_addr,
            "registered_delivery": smpp_consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH,
            **self._addressing,
        }

    def _answer(self, session: _Session, pending: _Pending) -> str:
        remaining = pending.sent_at + self.timeout_s - time.monotonic()
        if not pending.done.wait(max(0.0, remaining)):
            raise SendFailed(f"no submit_sm_resp within {self.timeout_s:g}s (the SMSC may have taken it)")
        if pending.lost is not None:
            raise SendFailed(f"connection lost before submit_sm_resp: {pending.lost} (the SMSC may have taken it)")
        status = pending.status
        if status != smpp_consts.SMPP_ESME_ROK:
            description = smpp_consts.DESCRIPTIONS.get(status, "unknown status")
            raise SendFailed(f"SMSC refused submit_sm: 0x{status:02x} {description}", permanent=status in _PERMANENT)
        if not pending.message_id:
            raise SendFailed("SMSC accepted submit_sm without a message_id")
        return pending.message_id

    # --- the reader: connect, bind, read, reconnect ---------------------------------------------

    def _run(self) -> None:
        backoff = _Backoff(_BACKOFF_START_S, self.reconnect_max_s)
        outage: _Outage | None = None  # since when, and why, nothing is bound
        while not self._stopping.is_set():
            try:
                session = self._connect()
            except _ConnectFailed as failure:
                if outage is None:  # only at start: a lost connection has logged its outage already
                    outage = _Outage(time.monotonic(), str(failure))
                    log.warning("smpp cannot bind", host=self.host, port=self.port, reason=str(failure))
                outage.attempts += 1
                outage.last_error = str(failure)
                self._stopping.wait(backoff.next())
                continue
            if outage is None:
                log.info("smpp bound", host=self.host, port=self.port, system_id=self.system_id)
            else:
                log.info("smpp bound again", host=self.host, port=self.port,
                         down_s=round(time.monotonic() - outage.since, 1), attempts=outage.attempts,
                         last_error=outage.last_error)
            outage = None
            self._session = session
            reason = self._read(session)
            self._session = None
            session.close(reason)
            if self._stopping.is_set():
                break
            outage = _Outage(time.monotonic(), reason)
            log.warning("smpp connection lost", host=self.host, port=self.port, reason=reason)
            # A connection that lived is retried at once; one that the SMSC drops again and again
            # right after the bind keeps backing off, or the SMSC would see a bind storm.
            if time.monotonic() - session.bound_at >= self.reconnect_max_s:
                backoff.reset()
            else:
                self._stopping.wait(backoff.next())

    def _connect(self) -> _Session:
        client = smpplib.client.Client(self.host, self.port, timeout=self.timeout_s,
                                       logger_name=_WIRE_LOGGER, allow_unknown_opt_params=True)
        try:
            client.connect()
            client.bind_transceiver(system_id=self.system_id, password=self._password,
                                    system_type=self.system_type)
        except smpplib.exceptions.PDUError as refused:
            _disconnect(client)
            status = refused.args[1] if len(refused.args) > 1 else smpp_consts.SMPP_ESME_RUNKNOWNERR
            description = smpp_consts.DESCRIPTIONS.get(status, "unknown status")
            raise _ConnectFailed(f"bind refused: 0x{status:02x} {description}") from None
        except (smpplib.exceptions.ConnectionError, OSError) as failed:
            _disconnect(client)
            raise _ConnectFailed(f"cannot connect and bind: {_why(failed)}") from None
        except Exception as failed:  # an unreadable bind answer: smpplib raises what its parser hits
            _disconnect(client)
            raise _ConnectFailed(f"unreadable bind answer: {type(failed).__name__}") from None
        if client.state != smpp_consts.SMPP_CLIENT_STATE_BOUND_TRX:
            _disconnect(client)
            raise _ConnectFailed("bind answered with something other than bind_transceiver_resp")
        return _Session(client)

    def _read(self, session: _Session) -> str:
        """Reads until the connection ends; returns why."""
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if session.enquire_sent_at is not None:
                    if now - session.enquire_sent_at > self.timeout_s:
                        return f"enquire_link unanswered within {self.timeout_s:g}s"
                    wait = session.enquire_sent_at + self.timeout_s - now
                elif now - session.last_heard >= self.enquire_s:
                    session.send_request("enquire_link")
                    session.enquire_sent_at = now
                    wait = self.timeout_s
                else:
                    wait = session.last_heard + self.enquire_s - now
                if session.lost is not None:
                    return session.lost
                readable, _, _ = select.select([session.socket], [], [], min(max(wait, 0.0), _POLL_S))
                if not readable:
                    continue
                pdu = session.client.read_pdu()
                session.last_heard = time.monotonic()
                session.enquire_sent_at = None
                ended = self._dispatch(session, pdu)
                if ended is not None:
                    return ended
            self._unbind(session)
            return "stopped"
        except TimeoutError:  # socket.timeout
            return f"a PDU arrived incomplete within {self.timeout_s:g}s"
        except (smpplib.exceptions.ConnectionError, OSError, ValueError) as failed:
            return session.lost or f"read failed: {_why(failed)}"
        except (smpplib.exceptions.PDUError, smpplib.exceptions.UnknownCommandError, struct.error) as unreadable:
            return f"unreadable PDU: {type(unreadable).__name__}"
        except Exception as bug:  # the reader must survive anything: reconnecting is the way out
            log.exception("smpp reader failed", error=type(bug).__name__)
            return f"reader failed: {type(bug).__name__}"

    def _dispatch(self, session: _Session, pdu: Any) -> str | None:
        command = pdu.command
        if command in ("submit_sm_resp", "generic_nack"):
            session.resolve(pdu.sequence, pdu.status, _text(getattr(pdu, "message_id", None)))
        elif command == "deliver_sm":
            session.send_response("deliver_sm_resp", pdu.sequence, self._deliver(pdu))
        elif command == "enquire_link":
            session.send_response("enquire_link_resp", pdu.sequence)
        elif command == "unbind":
            session.send_response("unbind_resp", pdu.sequence)
            return "the SMSC unbound"
        elif command == "unbind_resp":
            return "unbound"
        elif command not in ("enquire_link_resp", "alert_notification") and not pdu.is_response():
            session.send_response("generic_nack", pdu.sequence, smpp_consts.SMPP_ESME_RINVCMDID)
        return None

    def _deliver(self, pdu: Any) -> int:
        """What to answer to a deliver_sm: ESME_ROK, or 'temporary, send again' if the receipt
        could not be handed over."""
        receipt = parse_receipt(pdu)
        if receipt is None:
            log.info("smpp mobile-originated message ignored")
            return int(smpp_consts.SMPP_ESME_ROK)
        handler = self._on_receipt
        if handler is None:
            return int(smpp_consts.SMPP_ESME_RX_T_APPN)
        try:
            handler(receipt)
        except Exception as failed:  # the reader must not die of a callback; the SMSC sends it again
            log.error("smpp receipt handler failed", provider_id=receipt.provider_id,
                      error=type(failed).__name__)
            return int(smpp_consts.SMPP_ESME_RX_T_APPN)
        return int(smpp_consts.SMPP_ESME_ROK)

    def _unbind(self, session: _Session) -> None:
        """A polite goodbye, bounded by the answer timeout: the reader is the socket's only reader."""
        try:
            session.send_request("unbind")
            deadline = time.monotonic() + self.timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([session.socket], [], [], remaining)
                if not readable:
                    return
                pdu = session.client.read_pdu()
                if pdu.command == "unbind_resp":
                    return
                if pdu.command == "submit_sm_resp":
                    session.resolve(pdu.sequence, pdu.status, _text(getattr(pdu, "message_id", None)))
        except Exception:  # noqa: BLE001 - closing anyway
            return


class TokenBucket:
    """`rate` tokens a second, at most `burst` at once; `take()` blocks until a token is there.

    Each caller reserves its slot under the lock and sleeps outside it (a generic cell rate
    algorithm): callers are served in the order they asked, and the sleep is `time.sleep`, which
    eventlet makes cooperative."""

    def __init__(self, rate: float, burst: int = 1, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._theoretical = clock()

    def take(self) -> None:
        with self._lock:
            now = self._clock()
            self._theoretical = max(self._theoretical, now)
            departure = self._theoretical - self._tolerance
            self._theoretical += self._interval
        if departure > now:
            self._sleep(departure - now)


def parse_receipt(pdu: Any) -> Receipt | None:
    """The delivery receipt a deliver_sm carries, or None if it is not one."""
    if not (pdu.esm_class or 0) & _ESM_SMSC_RECEIPT:
        return None
    raw = pdu.short_message or getattr(pdu, "message_payload", None) or b""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    provider_id = _text(getattr(pdu, "receipted_message_id", None))
    if not provider_id and (found := _RECEIPT_ID.search(text)):
        provider_id = found.group(1)
    if not provider_id:
        return None
    if stat := _RECEIPT_STAT.search(text):
        status = stat.group(1).upper()
    else:
        status = _MESSAGE_STATES.get(getattr(pdu, "message_state", None) or 0, "UNKNOWN")
    delivered = status in ("DELIVRD", "DELIVERED")
    return Receipt(provider_id=provider_id, delivered=delivered, status=status, at=_done_at(text))


# --- inside ---------------------------------------------------------------------------------------


@dataclass
class _Pending:
    sequence: int
    sent_at: float
    done: threading.Event = field(default_factory=threading.Event)
    status: int = smpp_consts.SMPP_ESME_ROK
    message_id: str = ""
    lost: str | None = None


class _Session:
    """One connection and its bind; built fresh for each connection, never reused."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.socket: socket.socket = client._socket  # smpplib has no public accessor; select needs it
        self.bound = True
        self.bound_at = time.monotonic()
        self.last_heard = self.bound_at
        self.enquire_sent_at: float | None = None
        self.lost: str | None = None
        self._write = threading.Lock()  # one PDU on the wire at a time (and smpplib's sequence counter)
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()

    def submit(self, *, handed_over: bool, fields: dict[str, Any], **part: Any) -> _Pending:
        """Writes one submit_sm; `handed_over` says whether earlier parts already went out."""
        with self._write:
            if not self.bound:
                if handed_over:
                    raise SendFailed(f"connection lost between parts: {self.lost}")
                raise Unavailable("SMPP not bound")
            pdu = smpplib.smpp.make_pdu("submit_sm", client=self.client, **fields, **part)
            pending = _Pending(pdu.sequence, time.monotonic())
            with self._pending_lock:
                self._pending[pdu.sequence] = pending
            try:
                self.client.send_pdu(pdu)
            except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as failed:
                self.forget(pending)
                self._fail(f"write failed: {_why(failed)}")
                raise SendFailed("connection lost while writing submit_sm") from None
            return pending

    def send_request(self, command: str) -> None:
        with self._write:
            self.client.send_pdu(smpplib.smpp.make_pdu(command, client=self.client))

    def send_response(self, command: str, sequence: int, status: int = smpp_consts.SMPP_ESME_ROK) -> None:
        with self._write:
            answer = smpplib.smpp.make_pdu(command, client=self.client, status=status)
            answer.sequence = sequence
            self.client.send_pdu(answer)

    def resolve(self, sequence: int, status: int, message_id: str) -> None:
        with self._pending_lock:
            pending = self._pending.pop(sequence, None)
        if pending is None:
            return  # a late answer: its sender gave up already
        pending.status = status
        pending.message_id = message_id
        pending.done.set()

    def forget(self, pending: _Pending) -> None:
        with self._pending_lock:
            self._pending.pop(pending.sequence, None)

    def close(self, reason: str) -> None:
        """Ends the connection: every send still waiting fails with `reason`."""
        self.bound = False
        self.lost = self.lost or reason
        with self._pending_lock:
            waiting, self._pending = list(self._pending.values()), {}
        for pending in waiting:
            pending.lost = reason
            pending.done.set()
        with self._write:
            _disconnect(self.client)

    def _fail(self, reason: str) -> None:
        """A writer saw the connection break: wake the reader, which closes it."""
        self.bound = False
        self.lost = self.lost or reason
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@dataclass
class _Outage:
    since: float
    last_error: str
    attempts: int = 0


class _Backoff:
    """Exponential back-off with jitter: each delay is drawn from [d/2, d], d doubling to `ceiling`."""

    def __init__(self, start: float, ceiling: float) -> None:
        self.start = min(start, ceiling)
        self.ceiling = ceiling
        self._delay = self.start

    def next(self) -> float:
        delay = random.uniform(self._delay / 2, self._delay)
        self._delay = min(self._delay * 2, self.ceiling)
        return delay

    def reset(self) -> None:
        self._delay = self.start


class _ConnectFailed(Exception):
    pass


def _disconnect(client: Any) -> None:
    try:
        client.state = smpp_consts.SMPP_CLIENT_STATE_OPEN  # no "disconnecting in the bound state" warning
        client.disconnect()
    except OSError:
        pass


def _why(failed: BaseException) -> str:
    if isinstance(failed, smpplib.exceptions.ConnectionError) and not str(failed):
        return "connection closed by the SMSC"  # smpplib raises it bare on EOF
    return str(failed) or type(failed).__name__


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00")
    return "" if value is None else str(value)


def _done_at(text: str) -> datetime:
    found = _RECEIPT_DONE.search(text)
    if found:
        digits = found.group(1)
        try:
            local = datetime.strptime(digits, "%y%m%d%H%M%S" if len(digits) == 12 else "%y%m%d%H%M")
            return local.replace(tzinfo=CHINA_STANDARD_TIME).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)
