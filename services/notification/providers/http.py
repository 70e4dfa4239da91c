"""SMS through a carrier's (or an aggregator's) JSON API over HTTPS, signed with a shared secret.

This module is the contract a carrier integration maps onto. It is modelled on the usual Chinese
carrier and aggregator APIs (an access key id, a secret, a signed timestamp and nonce, a sender
signature 签名, a client reference, receipts fetched by polling); a carrier whose API differs in
the details gets a small gateway or a subclass that speaks this, the rest of the platform does not
change.

Sending
-------
``POST {SMS_HTTP_URL}`` (e.g. ``https://sms.example.cn/v1/sms``), body UTF-8 JSON (not ASCII-escaped)::

    {"to": "13800138000", "text": "...", "sender": "<SMS_HTTP_SENDER>", "client_ref": "<our message id>"}

``to`` is the 11-digit mainland mobile number as the platform holds it. Every request carries:

- ``X-Key-Id``: SMS_HTTP_KEY_ID
- ``X-Timestamp``: unix seconds (the carrier refuses one more than 300 s off its clock)
- ``X-Nonce``: 32 random hex digits (the carrier refuses one it has seen within that window)
- ``X-Signature``: lower-case hex HMAC-SHA256(SMS_HTTP_SECRET, f"{timestamp}\\n{nonce}\\n{sha256_hex(body)}"),
  where ``body`` is the exact bytes sent (the empty string for a GET).

The signature covers the body, not the method, path or query: the nonce is what stops a replay.

Answers:

- 2xx ``{"message_id": "...", "parts": n}``: taken, ``Accepted((message_id,))``; ``parts`` (how many
  SMS a long text became) is informative only: receipts come per ``message_id``.
- ``client_ref`` is the carrier's idempotency key: a POST with a ``client_ref`` it has already taken
  is answered with the same ``message_id`` and sends nothing again. So a send whose answer was lost
  (a read timeout, a connection cut after the request went out) is safely retried with the same
  ``Outgoing.message_id``: at most one SMS reaches the phone.
- 400 / 422 ``{"error": "<CODE>", "message": "..."}``: this message can never go (the number is not
  a mobile number, the content is refused): ``SendFailed(permanent=True)`` with the carrier's code
  and message. The reason has the phone number and the text removed even if the carrier quotes
  them (and mobile numbers / ID numbers masked), so it can be stored and shown.
- 401 / 403: the carrier refuses our credentials (a wrong key or secret, an expired key, a clock
  far off): not the message's fault, an operator must fix the configuration, so
  ``SendFailed(permanent=False)`` whose reason says so: the messages are retried, not parked at once.
- 429, 5xx, any other status, a redirect, a malformed 2xx, a read timeout, a connection lost
  mid-request, a TLS failure (the certificate is not trusted): ``SendFailed(permanent=False)``.
- Nothing handed over because the carrier cannot be reached at all (connection refused, network or
  host unreachable, a connect timeout): ``Unavailable`` (a non-permanent ``SendFailed`` that the
  dispatcher waits out without counting an attempt).

Receipts
--------
``GET {SMS_HTTP_URL}/receipts?after=<cursor>`` (no ``after`` on the first poll of a process), signed
the same way over the empty body, answered::

    {"receipts": [{"message_id": "...", "status": "DELIVRD", "done_at": "2025-03-01T08:15:00+08:00"}, ...],
     "cursor": "<opaque, to send as `after` next time>"}

Each becomes ``Receipt(provider_id=message_id, delivered=(status == "DELIVRD"), status, at)``;
``done_at`` without an offset is read as China Standard Time (UTC+08:00), a missing or unreadable
one as the time it was received. A poll thread asks every SMS_HTTP_RECEIPTS_S seconds (at once again
while an answer had receipts, to catch up). The cursor lives in memory only: without ``after`` the
carrier answers from the oldest receipt it still keeps, so a restart replays receipts (the handler
must take a repeated one calmly) rather than losing them. A handler that raises is logged and the
poll goes on past that receipt (one bad receipt must not stop all the others).

Readiness
---------
``ready()`` is False for READY_HOLD_S seconds after a send or poll found the carrier unreachable
(the ``Unavailable`` cases), True otherwise (and again as soon as the carrier answers anything).
It does not probe: the next send or poll after the hold finds out again.

Configuration (values may be strings, as from the YAML/environment substitution)
------------------------------------------------------------------------------
SMS_HTTP_URL (https; plain http only to 127.0.0.1 / localhost / ::1), SMS_HTTP_KEY_ID,
SMS_HTTP_SECRET, SMS_HTTP_SENDER (the registered signature / sender id), SMS_HTTP_CA (a CA bundle to
trust instead of the system's), SMS_HTTP_TIMEOUT_S (10: for the connect and for each read, not the
whole exchange), SMS_HTTP_RECEIPTS_S (30; 0 = no polling). The usual HTTPS_PROXY / NO_PROXY
environment variables are honoured.

Nothing here logs a phone number, a message text or a response body (a carrier may quote both).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from infra.logging import get_logger, mask_text
from services.notification.providers import Accepted, Outgoing, Receipt, ReceiptHandler, SendFailed, Unavailable

log = get_logger(__name__)

READY_HOLD_S = 5.0
CLOCK_WINDOW_S = 300  # the carrier's tolerance, for the docs and the reason of a 401
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_CST = timezone(timedelta(hours=8))
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}
_MAX_REASON = 200


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The X-Signature of a request (see the module docstring)."""
    material = f"{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(secret.encode("utf-8"), material, hashlib.sha256).hexdigest()


class HttpProvider:
    name = "http"

    def __init__(self, url: str, key_id: str, secret: str, sender: str, *, ca: str | None = None,
                 timeout_s: float = 10.0, receipts_s: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("SMS_HTTP_URL must be an https:// URL")
        if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
            raise ValueError("SMS_HTTP_URL must be https:// (plain http only to 127.0.0.1 or localhost)")
        if not key_id or not secret:
            raise ValueError("SMS_HTTP_KEY_ID and SMS_HTTP_SECRET are required")
        if not sender:
            raise ValueError("SMS_HTTP_SENDER (the registered signature / sender id) is required")
        if ca is not None and not Path(ca).is_file():
            raise ValueError(f"SMS_HTTP_CA: no such file: {ca}")
        if not timeout_s > 0:  # NaN too
            raise ValueError("SMS_HTTP_TIMEOUT_S must be > 0")
        if not receipts_s >= 0:
            raise ValueError("SMS_HTTP_RECEIPTS_S must be >= 0 (0 = no polling)")
        self.url = url.rstrip("/")
        self.receipts_url = f"{self.url}/receipts"
        self.key_id = key_id
        self._secret = secret
        self.sender = sender
        # A path, passed with every request: a Session-level `verify` would lose to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = ca if ca is not None else True
        self.timeout_s = timeout_s
        self.receipts_s = receipts_s
        self._lock = threading.Lock()
        self._idle: list[requests.Session] = []   # a Session is used by one thread/greenlet at a time
        self._all: list[requests.Session] = []
        self._unreachable_at: float | None = None
        self._send_trouble: str | None = None     # logged once when it starts, once when it ends
        self._on_receipt: ReceiptHandler | None = None
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._cursor: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HttpProvider:
        def text(key: str) -> str:
            value = config.get(key)
            return "" if value is None else str(value).strip()

        def number(key: str, default: float) -> float:
            raw = text(key)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{key} must be a number of seconds, not {raw!r}") from None

        if not text("SMS_HTTP_URL"):
            raise ValueError("SMS_PROVIDER=http needs SMS_HTTP_URL")
        return cls(text("SMS_HTTP_URL"), text("SMS_HTTP_KEY_ID"), text("SMS_HTTP_SECRET"), text("SMS_HTTP_SENDER"),
                   ca=text("SMS_HTTP_CA") or None, timeout_s=number("SMS_HTTP_TIMEOUT_S", 10.0),
                   receipts_s=number("SMS_HTTP_RECEIPTS_S", 30.0))

    # -- the port -------------------------------------------------------------------------------

    def start(self, on_receipt: ReceiptHandler) -> None:
        self._on_receipt = on_receipt
        if self.receipts_s <= 0 or (self._poller is not None and self._poller.is_alive()):
            return
        self._stopping.clear()
        # Under nameko, eventlet has patched threading: this is a greenlet, Event.wait yields.
        self._poller = threading.Thread(target=self._poll_loop, name="sms-http-receipts", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stopping.set()
        poller, self._poller = self._poller, None
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=self.timeout_s + 1)
        with self._lock:
            sessions, self._all, self._idle = self._all, [], []
        for session in sessions:
            session.close()

    def ready(self) -> bool:
        at = self._unreachable_at
        return at is None or time.monotonic() - at >= READY_HOLD_S

    def send(self, message: Outgoing) -> Accepted:
        body = json.dumps({"to": message.phone, "text": message.text, "sender": self.sender,
                           "client_ref": message.message_id}, ensure_ascii=False, separators=(",", ":"))
        try:
            response = self._request("POST", self.url, body.encode("utf-8"))
        except SendFailed as failed:
            self._trouble(failed.reason)
            raise
        status = int(response.status_code)
        if 200 <= status < 300:
            provider_id = _field(response, "message_id")
            if not provider_id:
                malformed = SendFailed(f"carrier answered HTTP {status} without a message_id")
                self._trouble(malformed.reason)
                raise malformed
            self._trouble(None)
            return Accepted((provider_id,))
        if status in (400, 422):
            self._trouble(None)  # the carrier is fine, it is this message
            raise SendFailed(f"carrier refused the message (HTTP {status}): {_carrier_reason(response, message)}",
                             permanent=True)
        refused = SendFailed(_status_reason(status, response))
        self._trouble(refused.reason)
        raise refused

    # -- HTTP -----------------------------------------------------------------------------------

    def _headers(self, body: bytes) -> dict[str, str]:
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        return {"X-Key-Id": self.key_id, "X-Timestamp": timestamp, "X-Nonce": nonce,
                "X-Signature": sign(self._secret, timestamp, nonce, body),
                "Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}

    @contextmanager
    def _session(self) -> Iterator[requests.Session]:
        with self._lock:
            session = self._idle.pop() if self._idle else None
            if session is None:
                session = requests.Session()
                self._all.append(session)
        try:
            yield session
        finally:
            with self._lock:
                if session in self._all:   # not closed by stop() meanwhile
                    self._idle.append(session)

    def _request(self, method: str, url: str, body: bytes, params: dict[str, str] | None = None) -> Any:
        """The response (any status), or SendFailed / Unavailable when none came."""
        with self._session() as session:
            try:
                response = session.request(method, url, data=body if body else None, params=params,
                                           headers=self._headers(body), verify=self._verify,
                                           timeout=(self.timeout_s, self.timeout_s), allow_redirects=False)
            except requests.exceptions.SSLError as exc:
                if any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc)):
                    raise SendFailed("the carrier's TLS certificate is not trusted (see SMS_HTTP_CA): "
                                     "nothing was sent") from None
                raise SendFailed(f"TLS with the carrier failed ({_root_name(exc)})") from None
            except requests.exceptions.ConnectTimeout:
                self._unreachable_at = time.monotonic()
                raise Unavailable(f"carrier unreachable: no connection within {self.timeout_s:g} s") from None
            except requests.exceptions.Timeout:
                raise SendFailed(f"carrier did not answer within {self.timeout_s:g} s (the request may have "
                                 "been taken: a retry with the same message id is not sent twice)") from None
            except requests.exceptions.ConnectionError as exc:
                cause = _unreachable_cause(exc)
                if cause is not None:
                    self._unreachable_at = time.monotonic()
                    raise Unavailable(f"carrier unreachable: {cause}") from None
                raise SendFailed(f"connection to the carrier failed ({_root_name(exc)}): if the request had gone "
                                 "out, a retry with the same message id is not sent twice") from None
            except requests.exceptions.RequestException as exc:
                raise SendFailed(f"request to the carrier failed: {type(exc).__name__}") from None
        self._unreachable_at = None
        return response

    def _trouble(self, reason: str | None) -> None:
        """Logs a carrier-side problem of sending once when it starts and once when it is over."""
        with self._lock:
            before, self._send_trouble = self._send_trouble, reason
        if reason is not None and before is None:
            log.warning("sms_http_send_failing", reason=reason)
        elif reason is None and before is not None:
            log.info("sms_http_send_recovered", was=before)

    # -- receipts -------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        failing: str | None = None
        since = 0.0
        attempts = 0
        wait = self.receipts_s
        while not self._stopping.wait(wait):
            try:
                count = self.poll_receipts()
            except Exception as exc:  # the poller must outlive anything
                reason = exc.reason if isinstance(exc, SendFailed) else f"{type(exc).__name__}"
                attempts += 1
                if failing is None:
                    failing, since = reason, time.monotonic()
                    log.warning("sms_http_receipts_failing", reason=reason)
                wait = self.receipts_s
                continue
            if failing is not None:
                log.info("sms_http_receipts_recovered", was=failing, failed_polls=attempts,
                         seconds=round(time.monotonic() - since, 1))
                failing, attempts = None, 0
            wait = 0.0 if count else self.receipts_s

    def poll_receipts(self) -> int:
        """One poll: hands each receipt to the handler and moves the cursor on; how many came.
        Raises SendFailed (or Unavailable) when the carrier could not be asked or answered badly."""
        params = {"after": self._cursor} if self._cursor else None
        response = self._request("GET", self.receipts_url, b"", params=params)
        status = int(response.status_code)
        if status != 200:
            raise SendFailed(_status_reason(status, response))
        try:
            answer = response.json()
        except ValueError:
            raise SendFailed("carrier answered the receipt poll with something that is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("receipts", []), list):
            raise SendFailed("carrier answered the receipt poll without a list of receipts")
        receipts: list[Any] = answer.get("receipts") or []
        handler = self._on_receipt
        for item in receipts:
            receipt = _receipt(item)
            if receipt is None:
                log.warning("sms_http_receipt_malformed")
                continue
            if handler is None:
                continue
            try:
                handler(receipt)
            except Exception:  # one bad receipt must not stop the others
                log.exception("sms_http_receipt_handler_failed", provider_id=receipt.provider_id,
                              status=receipt.status)
        cursor = answer.get("cursor")
        if isinstance(cursor, str | int) and str(cursor):
            self._cursor = str(cursor)
        return len(receipts)


# -- helpers ------------------------------------------------------------------------------------

def _field(response: Any, key: str) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return str(value) if isinstance(value, str | int) and str(value) else None


def _status_reason(status: int, response: Any) -> str:
    if status in (401, 403):
        return (f"carrier refused our credentials (HTTP {status}): check SMS_HTTP_KEY_ID / SMS_HTTP_SECRET "
                f"and that this host's clock is within {CLOCK_WINDOW_S} s")
    if status == 429:
        retry_after = str(response.headers.get("Retry-After") or "").strip()
        return "carrier is throttling us (HTTP 429)" + (f", retry after {retry_after[:20]}" if retry_after else "")
    if 300 <= status < 400:
        return f"carrier redirected (HTTP {status}): SMS_HTTP_URL is probably wrong"
    if status >= 500:
        return f"carrier error (HTTP {status})"
    return f"carrier answered HTTP {status}"


def _carrier_reason(response: Any, message: Outgoing) -> str:
    """The carrier's code and message, without the phone number or the text even if it quotes them."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return "no reason given"
    parts = [str(data[key]) for key in ("error", "code", "message", "reason") if data.get(key) not in (None, "")]
    reason = ": ".join(dict.fromkeys(parts)) or "no reason given"
    for secret in sorted({message.text, message.text.strip(), message.phone}, key=len, reverse=True):
        if secret:
            reason = reason.replace(secret, "…")
    digits = "".join(ch for ch in message.phone if ch.isdigit())
    if len(digits) >= 7:
        reason = reason.replace(digits, "…")
    reason = mask_text(reason)
    return reason if len(reason) <= _MAX_REASON else reason[:_MAX_REASON - 1] + "…"


def _receipt(item: Any) -> Receipt | None:
    if not isinstance(item, dict):
        return None
    provider_id, status = item.get("message_id"), item.get("status")
    if not isinstance(provider_id, str | int) or not str(provider_id) or not isinstance(status, str) or not status:
        return None
    status = status.strip().upper()
    return Receipt(provider_id=str(provider_id), delivered=status == "DELIVRD", status=status,
                   at=_when(item.get("done_at")))


def _when(value: Any) -> datetime:
    if isinstance(value, str) and value:
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return datetime.now(UTC)
        return at if at.tzinfo is not None else at.replace(tzinfo=_CST)
    return datetime.now(UTC)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """An exception and what it wraps (requests -> urllib3 -> the socket error), each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def _unreachable_cause(exc: BaseException) -> str | None:
    for current in _chain(exc):
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, OSError) and current.errno in _UNREACHABLE_ERRNOS:
            return "network or host unreachable"
    return None


def _root_name(exc: BaseException) -> str:
    """The name of the error under requests' and urllib3's wrappers (RemoteDisconnected,
    ConnectionResetError, gaierror...): the names only, their messages may quote the URL."""
    for current in _chain(exc):
        if not type(current).__module__.startswith(("requests", "urllib3")):
            return type(current).__name__
    return type(exc).__name__
