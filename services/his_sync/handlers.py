"""his_sync's reactions and loops: each booking event becomes one HL7 message queued for the
hospital's own HIS; a dispatcher per hospital sends them in order at the hospital's rate,
waiting out a HIS that is down; a listener takes what a HIS sends us.

Queueing. A reaction builds the message (SIU^S12 booked, S14 moved, S15 cancelled, S26 no-show,
ADT^A04 checked in, A11 退号 at the window, A05 each paid phone booking of the 16:00 hand-over)
from the appointment as booked, remembered here with the patient's real-name fields sealed (asked
of booking once per patient, `_sealed_identity`), and
adds it to `his_outbox` encrypted, in the transaction of its inbox claim. No HIS is called inside
the reaction: a down HIS no longer holds events, retries them and parks them as dead letters.
A hospital without an endpoint has nothing queued (its window works from the platform's lists).

Sending (`drain`). One dispatcher per hospital at a time, whichever replica, by a lease on the
hospital's endpoint row: the hospital's rate (a token bucket, `rate_per_s`) and its order hold.
The next message is the oldest one whose appointment has nothing earlier unfinished: an S15
never overtakes its S12, across restarts and replicas. Outcomes:
- AA → acked;
- AE (the HIS could not take it now) → retried with doubling back-off, parked as failed after
  `max_attempts`; AR (it never will) → parked at once; a parked message holds its appointment's
  later messages back until an operator sends it again or skips it;
- no connection, no answer in time → the HIS is down: nothing is counted against the message, the
  breaker opens (retried after 1 s, doubling to 30 s) and one line is logged per outage; every
  hospital has its own dispatcher, so one HIS down or slow starves no other.

Receiving (`receive`): SIU^S23 (a slot blocked) becomes a doctor stop request awaiting the
admin's approval, S24 (unblocked) withdraws it; only the hospital's registered sender (MSH-4) is
accepted; a duplicate control id is answered as the first time, without a second effect.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from contracts import (
    Actor,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentLapsed,
    AppointmentMoved,
    AppointmentRefunded,
    DomainError,
    Envelope,
    Forbidden,
    HospitalRegistered,
    InvalidInput,
    NotFound,
    OutpatientVisitsReported,
    PatientRegistered,
    PhoneBookingsHandedOver,
    from_wire,
)
from infra.application import Application
from infra.db import Database
from infra.eventstore import idempotent_event_id, new_envelope
from infra.logging import get_logger
from infra.memory import JsonMemory, NotKnownYet
from infra.pii import PiiVault
from services.his_sync import hl7
from services.his_sync.mllp import MllpError
from services.his_sync.readmodel import HisEndpoints, HisHandovers, HisInbound, HisOutbox

APP = Application("his_sync")

_log = get_logger(__name__)


class HisClient(Protocol):
    """What the dispatcher needs of an MLLP connection (services.his_sync.mllp.MllpClient)."""

    def send(self, message: str) -> str: ...

    def close(self) -> None: ...


ConnectHis = Callable[[dict[str, Any]], HisClient]  # an endpoint row -> a client


def control_id_for(env: Envelope, part: str = "") -> str:
    """MSH-10 from the event id (a resend carries the same id); a hand-over's messages, one per
    booking of one event, add the appointment."""
    if not part:
        return env.event_id.hex[:20]
    return hashlib.sha256(f"{env.event_id}:{part}".encode()).hexdigest()[:20]


def facility_of(endpoint: dict[str, Any]) -> hl7.Facility:
    return hl7.Facility(receiving_application=endpoint["receiving_application"],
                        receiving_facility=endpoint["receiving_facility"],
                        sending_facility=endpoint["sending_facility"], charset=endpoint["charset"])


# --- reactions: queue a message per booking event --------------------------------------------------

@APP.on(AppointmentBooked, backfill=False)
def send_booking(cur: Any, event: AppointmentBooked, envelope: Envelope, appointments: JsonMemory,
                 his_endpoints: HisEndpoints, his_outbox: HisOutbox, booking: Any, identities: JsonMemory,
                 vault: PiiVault, now: datetime) -> None:
    appt = event.model_dump(mode="json")
    endpoint = his_endpoints.of(cur, event.hospital_id)
    if endpoint is not None:
        appt["patient_enc"] = _sealed_identity(cur, identities, booking, event.patient_id, vault)
    _queue(cur, envelope, "SIU^S12", appt, his_endpoints, his_outbox, vault, now, endpoint=endpoint)
    appointments.remember(cur, event.appointment_id, appt)


@APP.on(AppointmentMoved, backfill=False)
def send_move(cur: Any, event: AppointmentMoved, envelope: Envelope, appointments: JsonMemory,
              his_endpoints: HisEndpoints, his_outbox: HisOutbox, vault: PiiVault, now: datetime) -> None:
    previous = appointments.recall(cur, event.appointment_id)
    appt = {**event.model_dump(mode="json"), "patient_enc": previous.get("patient_enc")}
    _queue(cur, envelope, "SIU^S14", appt, his_endpoints, his_outbox, vault, now)
    appointments.remember(cur, event.appointment_id, appt)


@APP.on(AppointmentCancelled, backfill=False)
def send_cancellation(cur: Any, event: AppointmentCancelled, envelope: Envelope, appointments: JsonMemory,
                      his_endpoints: HisEndpoints, his_outbox: HisOutbox, vault: PiiVault, now: datetime) -> None:
    appt = {**appointments.recall(cur, event.appointment_id), "reason": event.reason}
    _queue(cur, envelope, "SIU^S15", appt, his_endpoints, his_outbox, vault, now)


@APP.on(AppointmentLapsed, backfill=False)
def send_no_show(cur: Any, event: AppointmentLapsed, envelope: Envelope, appointments: JsonMemory,
                 his_endpoints: HisEndpoints, his_outbox: HisOutbox, vault: PiiVault, now: datetime) -> None:
    _queue(cur, envelope, "SIU^S26", appointments.recall(cur, event.appointment_id), his_endpoints, his_outbox,
           vault, now)


@APP.on(AppointmentCheckedIn, backfill=False)
def send_check_in(cur: Any, event: AppointmentCheckedIn, envelope: Envelope, appointments: JsonMemory,
                  his_endpoints: HisEndpoints, his_outbox: HisOutbox, vault: PiiVault, now: datetime) -> None:
    _queue(cur, envelope, "ADT^A04", appointments.recall(cur, event.appointment_id), his_endpoints, his_outbox,
           vault, now)


@APP.on(AppointmentRefunded, backfill=False)
def send_refund(cur: Any, event: AppointmentRefunded, envelope: Envelope, appointments: JsonMemory,
                his_endpoints: HisEndpoints, his_outbox: HisOutbox, vault: PiiVault, now: datetime) -> None:
    """退号 at the window: the HIS cancels the registration the check-in made (ADT^A11)."""
    appt = {**appointments.recall(cur, event.appointment_id), "reason": event.reason}
    _queue(cur, envelope, "ADT^A11", appt, his_endpoints, his_outbox, vault, now)


@APP.on(PhoneBookingsHandedOver)
def send_handover(cur: Any, event: PhoneBookingsHandedOver, envelope: Envelope, appointments: JsonMemory,
                  his_endpoints: HisEndpoints, his_outbox: HisOutbox, his_handovers: HisHandovers, vault: PiiVault,
                  now: datetime) -> None:
    """The 16:00 hand-over: each paid phone booking of the next day pre-registered in the HIS
    (ADT^A05), one message per booking, each acknowledged (or refused) on its own."""
    day = date.fromisoformat(event.visit_date)
    his_handovers.record(cur, event.hospital_id, day, len(event.appointments), envelope.occurred_at)
    for item in event.appointments:
        appt = appointments.recall(cur, str(item["appointment_id"]))
        _queue(cur, envelope, "ADT^A05", appt, his_endpoints, his_outbox, vault, now,
               part=str(item["appointment_id"]), handover_date=day)


@APP.on(HospitalRegistered)
def connect_new_hospital(cur: Any, event: HospitalRegistered, envelope: Envelope, his_endpoints: HisEndpoints,
                         default_his: tuple[str, int] | None) -> None:
    """Where the deployment names a default HIS (`make run`: the simulator), a new hospital gets
    an endpoint to it; otherwise a hospital has none until the platform admin sets one."""
    if default_his is not None:
        his_endpoints.add_default(cur, event.hospital_id, *default_his)


def _sealed_identity(cur: Any, identities: JsonMemory, booking: Any, patient_id: str, vault: PiiVault) -> str:
    """The patient's real-name fields for PID, as booking answers them, encrypted at once.

    Asked of booking once per patient and remembered sealed (`identities`, in the reaction's
    transaction): name, resident ID, sex, birth date and phone are fixed at registration, so the
    RPC per booking was pure cost (issue 15: about a sixth of his_sync's samples in the steady
    bench, and booking's replica answering it). Learnt when the patient registers
    (`learn_identity`), so a booking normally asks nothing."""
    with contextlib.suppress(NotKnownYet):
        return str(identities.recall(cur, patient_id)["patient_enc"])
    answer = booking.patient_for_his(patient_id)
    if (err := from_wire(answer)) is not None:
        raise err
    sealed = vault.encrypt(json.dumps(dict(answer), ensure_ascii=False))
    identities.remember(cur, patient_id, {"patient_enc": sealed})
    return sealed


@APP.on(PatientRegistered, backfill=False)
def learn_identity(cur: Any, event: PatientRegistered, envelope: Envelope, booking: Any, identities: JsonMemory,
                   vault: PiiVault) -> None:
    """A new patient's identity, sealed, before the first booking needs it (see `_sealed_identity`)."""
    _sealed_identity(cur, identities, booking, event.patient_id, vault)


def _queue(cur: Any, envelope: Envelope, message_type: str, appt: dict[str, Any], his_endpoints: HisEndpoints,
           his_outbox: HisOutbox, vault: PiiVault, now: datetime, part: str = "",
           handover_date: date | None = None, endpoint: dict[str, Any] | None = None) -> None:
    """`endpoint`: the hospital's, when the caller has read it already (one query less)."""
    endpoint = endpoint or his_endpoints.of(cur, appt["hospital_id"])
    if endpoint is None:
        _log.info("his_not_connected", hospital_id=appt["hospital_id"], message_type=message_type)
        return
    control_id = control_id_for(envelope, part)
    message = build(message_type, appt, control_id, now, facility_of(endpoint), vault)
    his_outbox.add(cur, hospital_id=appt["hospital_id"], appointment_id=appt["appointment_id"], control_id=control_id,
                   event_id=envelope.event_id, message_type=message_type, raw_enc=vault.encrypt(message), now=now,
                   handover_date=handover_date)
    _log.info("his_queued", message_type=message_type, control_id=control_id, hospital_id=appt["hospital_id"])


def build(message_type: str, appt: dict[str, Any], control_id: str, now: datetime, facility: hl7.Facility,
          vault: PiiVault) -> str:
    """The HL7 text of one message, the patient's real-name fields unsealed into PID."""
    full = dict(appt)
    sealed = full.pop("patient_enc", None)
    if sealed:
        full["patient"] = json.loads(vault.decrypt(sealed))
    if message_type == "ADT^A04":
        return hl7.build_adt_a04(full, control_id, now, facility=facility)
    if message_type == "ADT^A11":
        return hl7.build_adt_a11(full, control_id, now, facility=facility, reason=str(full.get("reason") or ""))
    if message_type == "ADT^A05":
        return hl7.build_adt_a05(full, control_id, now, facility=facility)
    return hl7.build_siu(message_type.split("^")[1], full, control_id, now, facility=facility)


# --- sending --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    max_attempts: int = 5         # AE answers before a message is parked
    base_delay_s: float = 2.0     # after an AE, doubling
    max_delay_s: float = 300.0
    breaker_base_s: float = 1.0   # a HIS that does not answer: retried after, doubling
    breaker_max_s: float = 10.0
    lease_s: float = 20.0
    slice_s: float = 30.0         # a dispatcher's turn before it lets go of the lease (and starts again)


def drain(hospital_id: str, owner: str, db: Database, vault: PiiVault, his_outbox: HisOutbox,
          his_endpoints: HisEndpoints, connect: ConnectHis, clock: Callable[[], datetime],
          delivery: Delivery = Delivery(), sleep: Callable[[float], None] = _time.sleep,
          stopping: Callable[[], bool] = lambda: False) -> int:
    """Send the hospital's due messages for one slice, in order, at its rate; answers how many
    were acknowledged. Returns at once when another replica holds the hospital, the endpoint is
    off, or its breaker is open. Each message costs one transaction of two statements: its outcome
    is recorded in the one that claims the next. The lease is renewed when a quarter of it has
    passed (not with every message), and the breaker is closed by the first answer only when it
    was not closed already: only this dispatcher, holding the lease, opens it (issue 15: five
    statements a message before; bench/his.py's one-drain baseline, 481-672 -> 686-937 a second)."""
    with db.transaction() as cur:
        if not his_endpoints.take_lease(cur, hospital_id, owner, clock(), delivery.lease_s):
            return 0
        endpoint = his_endpoints.of(cur, hospital_id)
        his_outbox.release_stale(cur, hospital_id)  # ours now: a dead dispatcher's `sending` rows go again
    leased_at = clock()
    acked = 0
    client: HisClient | None = None
    record: Callable[[Any, bool], str] | None = None  # the last outcome, written with the next claim
    try:
        if endpoint is None or not endpoint["enabled"]:
            return 0
        if endpoint["circuit"] == "open" and endpoint["open_until"] is not None and endpoint["open_until"] > clock():
            return 0
        breaker_set = endpoint["circuit"] != "closed" or bool(endpoint["failures"])
        bucket = TokenBucket(float(endpoint["rate_per_s"]))
        started = _time.monotonic()
        while True:
            with db.transaction() as cur:
                if record is not None:
                    acked += record(cur, breaker_set) == "AA"
                    record, breaker_set = None, False
                if stopping() or _time.monotonic() - started >= delivery.slice_s:
                    break
                now = clock()
                if (now - leased_at).total_seconds() >= delivery.lease_s / 4:
                    if not his_endpoints.take_lease(cur, hospital_id, owner, now, delivery.lease_s):
                        break  # we stalled past the lease and another replica holds the hospital now
                    leased_at = now
                message = his_outbox.claim_next(cur, hospital_id, now)
            if message is None:
                break
            bucket.take(sleep)
            try:
                client = client or connect(endpoint)
                answer = client.send(vault.decrypt(message["raw_enc"]))
            except (MllpError, OSError) as exc:
                _his_down(db, his_outbox, his_endpoints, hospital_id, message, str(exc), clock(), delivery)
                break
            record = _outcome(his_outbox, his_endpoints, hospital_id, message, answer, clock(), delivery)
    finally:
        if client is not None:
            client.close()
        with db.transaction() as cur:
            if record is not None:
                acked += record(cur, breaker_set) == "AA"
            his_endpoints.drop_lease(cur, hospital_id, owner)
    return acked


class TokenBucket:
    """At most `rate` sends a second, with a burst of a tenth of a second's worth: a send delayed
    by a slow database or answer is made up for, yet no second carries more than 1.1 × the rate."""

    def __init__(self, rate: float) -> None:
        self.rate = max(0.1, rate)
        self.capacity = max(1.0, self.rate / 10)
        self.tokens = 1.0
        self.at = _time.monotonic()

    def take(self, sleep: Callable[[float], None]) -> None:
        now = _time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            sleep((1 - self.tokens) / self.rate)
            self.at = _time.monotonic()
            self.tokens = 1.0
        self.tokens -= 1


def _outcome(his_outbox: HisOutbox, his_endpoints: HisEndpoints, hospital_id: str, message: dict[str, Any],
             answer: str, now: datetime, delivery: Delivery) -> Callable[[Any, bool], str]:
    """What to record of the HIS's answer, as a function of the cursor that records it and of
    whether the breaker may still be set (open, or failures counted): an answer closes it."""
    mid, what = message["message_id"], message["message_type"]
    try:
        ack = hl7.parse_ack(answer, message["control_id"])
        code, text = ack.code, ack.text
    except hl7.HL7Error as exc:  # an answer we cannot use: counted like an AE
        code, text = "AE", f"unreadable answer: {exc}"

    def record(cur: Any, breaker_set: bool = True) -> str:
        if breaker_set and his_endpoints.circuit_closed(cur, hospital_id):
            _log.info("his_back", hospital_id=hospital_id)
        if code == "AA":
            his_outbox.acked(cur, mid, code, text, now)
            _log.info("his_acknowledged", message_type=what, control_id=message["control_id"])
        elif code == "AR" or message["attempts"] + 1 >= delivery.max_attempts:
            his_outbox.park(cur, mid, f"HIS answered {code}: {text}", code, text)
            _log.warning("his_parked", message_type=what, control_id=message["control_id"], code=code,
                         attempts=message["attempts"] + 1)
        else:
            his_outbox.retry_later(cur, mid, f"HIS answered {code}: {text}", now + _backoff(
                message["attempts"] + 1, delivery.base_delay_s, delivery.max_delay_s), counted=True, code=code,
                text=text)
        return code

    return record


def _his_down(db: Database, his_outbox: HisOutbox, his_endpoints: HisEndpoints, hospital_id: str,
              message: dict[str, Any], reason: str, now: datetime, delivery: Delivery) -> None:
    """Not the message's fault: it goes back in its place, uncounted; the breaker opens."""
    with db.transaction() as cur:
        his_outbox.retry_later(cur, message["message_id"], reason, now, counted=False)
        endpoint = his_endpoints.of(cur, hospital_id) or {}
        failures = int(endpoint.get("failures") or 0) + 1
        his_endpoints.circuit_opened(cur, hospital_id, now + _backoff(failures, delivery.breaker_base_s,
                                                                      delivery.breaker_max_s), reason)
    if failures == 1:  # one line per outage, not one per retry
        _log.warning("his_down", hospital_id=hospital_id, reason=reason)


def _backoff(attempts: int, base: float, ceiling: float) -> timedelta:
    delay = min(ceiling, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=delay * (1 + random.random() * 0.2))  # noqa: S311 - jitter


def requeue(message_id: str, actor: Actor, db: Database, his_outbox: HisOutbox, now: datetime,
            skip: bool = False) -> dict[str, Any]:
    """An operator sends a parked message again, or gives it up (its appointment's later
    messages may then go): the platform admin, or the hospital's admin."""
    with db.transaction() as cur:
        hospital_id = his_outbox.hospital_of(cur, message_id)
        if hospital_id is None:
            raise NotFound("消息不存在 / unknown message", field="message_id")
        _may_manage(actor, hospital_id)
        done = his_outbox.skip(cur, message_id) if skip else his_outbox.requeue(cur, message_id, now)
        if done is None:
            raise InvalidInput("只有被搁置的消息可以重发或跳过 / only a parked message can be resent or skipped",
                               field="message_id", code="not_parked")
    _log.info("his_message_skipped" if skip else "his_message_requeued", message_id=message_id, actor=actor.id)
    return {"message_id": message_id, "status": "skipped" if skip else "queued"}


def _may_manage(actor: Actor, hospital_id: str) -> None:
    if actor.kind == "platform_admin" or (actor.kind == "hospital_admin" and actor.hospital_id == hospital_id):
        return
    raise Forbidden("只有本院管理员可以操作 / only this hospital's admin may do this", field="hospital_id")


# --- endpoints ----------------------------------------------------------------------------------

CHARSETS = ("UNICODE UTF-8", "GB 18030-2000")


def set_endpoint(payload: dict[str, Any], actor: Actor, db: Database, his_endpoints: HisEndpoints,
                 vault: PiiVault) -> dict[str, Any]:
    """A hospital's HIS connection (platform admin only): where it listens, the codes, the rate,
    and the key its HIS signs HTTP requests with (write-only: kept encrypted, never answered)."""
    if actor.kind != "platform_admin":
        raise Forbidden("只有平台管理员可以设置HIS接口 / only a platform admin sets HIS connections", field="actor")
    hospital_id = str(payload.get("hospital_id") or "")
    if not hospital_id:
        raise InvalidInput("hospital_id is required", field="hospital_id")
    row = {
        "hospital_id": hospital_id,
        "host": str(payload.get("host") or "").strip(),
        "port": payload.get("port"),
        "receiving_application": str(payload.get("receiving_application") or "HIS"),
        "receiving_facility": str(payload.get("receiving_facility") or hospital_id.upper()),
        "sending_facility": str(payload.get("sending_facility") or hl7.SENDING_FACILITY),
        "charset": str(payload.get("charset") or "UNICODE UTF-8"),
        "rate_per_s": payload.get("rate_per_s", 20),
        "inbound_facility": str(payload.get("inbound_facility") or f"{hospital_id.upper()}-HIS"),
        "enabled": bool(payload.get("enabled", True)),
    }
    if not row["host"] or len(row["host"]) > 255:
        raise InvalidInput("请填写HIS地址 / host is required", field="host")
    if not isinstance(row["port"], int) or not 1 <= row["port"] <= 65535:
        raise InvalidInput("端口应为1-65535 / port: 1 to 65535", field="port")
    if row["charset"] not in CHARSETS:
        raise InvalidInput(f"字符集 / charset: one of {', '.join(CHARSETS)}", field="charset")
    try:
        rate = float(row["rate_per_s"])
    except (TypeError, ValueError):
        rate = 0.0
    if not 0.1 <= rate <= 1000:
        raise InvalidInput("速率应在0.1到1000条/秒 / rate_per_s: 0.1 to 1000", field="rate_per_s")
    row["rate_per_s"] = rate
    for key in ("receiving_application", "receiving_facility", "sending_facility", "inbound_facility"):
        if not 1 <= len(row[key]) <= 40 or any(c in row[key] for c in "|^~\\&\r\n"):
            raise InvalidInput(f"{key}: 1 to 40 characters, no HL7 delimiters", field=key)
    with db.transaction() as cur:
        other = his_endpoints.by_inbound_facility(cur, row["inbound_facility"])
        if other is not None and other["hospital_id"] != hospital_id:
            raise InvalidInput("该发送方代码已被其他医院使用 / inbound_facility belongs to another hospital",
                               field="inbound_facility", code="taken")
        his_endpoints.put(cur, row)
        secret = payload.get("inbound_secret")
        if secret:
            if not 16 <= len(str(secret)) <= 128:
                raise InvalidInput("密钥长度16-128 / inbound_secret: 16 to 128 characters", field="inbound_secret")
            his_endpoints.set_secret(cur, hospital_id, vault.encrypt(str(secret)))
        found = his_endpoints.of(cur, hospital_id)
        found = found or row
    _log.info("his_endpoint_set", hospital_id=hospital_id, actor=actor.id)
    return _endpoint_answer(found)


def _endpoint_answer(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


# --- receiving ------------------------------------------------------------------------------------

def receive(raw: str, db: Database, his_endpoints: HisEndpoints, his_inbound: HisInbound, schedule: Any,
            now: datetime) -> str:
    """The answer to one message from a HIS: AA when done, AE when the platform refused what it
    asks (with the reason), AR when it cannot be read or its sender is not registered."""
    try:
        info = hl7.describe(raw)
    except hl7.HL7Error as exc:
        return hl7.build_inbound_ack(hl7.MessageInfo(), "AR", now, f"unreadable message: {exc}")
    with db.transaction() as cur:
        endpoint = his_endpoints.by_inbound_facility(cur, info.sending_facility)
        if endpoint is None:
            _log.warning("his_inbound_refused", sending_facility=info.sending_facility, reason="unknown sender")
            return hl7.build_inbound_ack(info, "AR", now, f"unknown sending facility {info.sending_facility!r}",
                                         error_field="MSH-4")
        hospital_id = endpoint["hospital_id"]
        answered = his_inbound.lock(cur, hospital_id, info.control_id)
        if answered is not None:
            return answered  # a duplicate: the same answer, no second effect
        code, text, field = _act(raw, hospital_id, info, schedule)
        answer = hl7.build_inbound_ack(info, code, now, text, error_field=field)
        his_inbound.record(cur, hospital_id, info.control_id, info.message_type, code, answer)
    _log.info("his_inbound", hospital_id=hospital_id, message_type=info.message_type, code=code)
    return answer


AckCode = Literal["AA", "AE", "AR"]


def _act(raw: str, hospital_id: str, info: hl7.MessageInfo, schedule: Any) -> tuple[AckCode, str, str]:
    """(ACK code, text, erroneous field). For an accepted S23 the text is the stop id."""
    try:
        inbound = hl7.parse_inbound(raw)
    except hl7.HL7Error as exc:
        return "AR", str(exc), ""
    actor = {"kind": "service", "id": f"his:{hospital_id}", "hospital_id": hospital_id}
    session = schedule.get_session(inbound.session_id) if inbound.session_id else None
    if session is None or from_wire(session) is not None:
        return "AE", f"unknown session {inbound.session_id!r}", "SCH-5"
    if session.get("hospital_id") != hospital_id:
        return "AE", f"session {inbound.session_id} is not at this hospital", "SCH-5"
    key = f"his-{hospital_id}-{info.control_id}"
    if inbound.kind == "block":
        answer = schedule.request_doctor_stop({"session_id": inbound.session_id,
                                               "reason": (inbound.reason or "HIS")[:200],
                                               "requested_by": f"HIS {hospital_id}"[:64], "idempotency_key": key,
                                               "correlation_id": key, "actor": actor})
    else:
        stop_id = _pending_stop_of(schedule, hospital_id, inbound.session_id)
        if stop_id is None:
            return "AE", f"no pending stop request for session {inbound.session_id}", "SCH-5"
        answer = schedule.withdraw_doctor_stop({"session_id": inbound.session_id, "stop_id": stop_id,
                                                "reason": (inbound.reason or "HIS unblocked the slot")[:200],
                                                "idempotency_key": key, "correlation_id": key, "actor": actor})
    if (err := from_wire(answer)) is not None:
        return "AE", _refusal(err), getattr(err, "field", "") or ""
    return "AA", str(answer.get("stop_id") or "ok"), ""


def _pending_stop_of(schedule: Any, hospital_id: str, session_id: str) -> str | None:
    stops = schedule.list_doctor_stops(hospital_id, "requested")
    if (err := from_wire(stops)) is not None:
        raise err
    return next((str(s["stop_id"]) for s in stops if s["session_id"] == session_id), None)


def _refusal(err: DomainError) -> str:
    return f"{err.code}: {err}"[:200]


# --- receiving over HTTP: signed requests of a hospital's HIS -------------------------------------

SIGNATURE_WINDOW_S = 300


class Unauthorized(Exception):
    """A request whose signature, key or timestamp does not check out (401, nothing done)."""


def check_signature(headers: Any, body: bytes, db: Database, his_endpoints: HisEndpoints,
                    vault: PiiVault, now: datetime) -> str:
    """The hospital whose HIS signed this request, or Unauthorized. The HIS sends `X-Hospital`,
    `X-Timestamp` (unix seconds, within 5 minutes), `X-Nonce` and `X-Signature` = hex
    HMAC-SHA256(secret, "<timestamp>\\n<nonce>\\n<sha256 hex of the body>"): the signing of
    services/notification/providers/http.py, the other way round."""
    hospital_id = str(headers.get("X-Hospital", ""))
    timestamp, nonce, signature = headers.get("X-Timestamp", ""), headers.get("X-Nonce", ""), \
        headers.get("X-Signature", "")
    try:
        age = abs(now.timestamp() - int(timestamp))
    except ValueError:
        raise Unauthorized("X-Timestamp: unix seconds required") from None
    if age > SIGNATURE_WINDOW_S:
        raise Unauthorized("X-Timestamp: more than 5 minutes away from the platform's clock")
    with db.transaction() as cur:
        sealed = his_endpoints.secret_of(cur, hospital_id) if hospital_id else None
    if not sealed:
        raise Unauthorized("unknown hospital or no key registered for its HIS")
    expected = hmac.new(vault.decrypt(sealed).encode(), f"{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
                        .encode(), hashlib.sha256).hexdigest()
    if not nonce or not hmac.compare_digest(expected, signature):
        raise Unauthorized("signature does not match")
    return hospital_id


def report_visits(hospital_id: str, payload: Mapping[str, Any], store: Any, now: datetime,
                  correlation_id: str | None = None) -> dict[str, Any]:
    """The day's outpatient visits as the HIS counts them (the booking share's denominator), an
    event in the store; the same report again is a duplicate, a different total a correction."""
    try:
        day = date.fromisoformat(str(payload.get("date")))
        visits = int(payload["visits"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("需要 date (YYYY-MM-DD) 和 visits (整数) / date and visits are required",
                           field="visits") from None
    if day > now.date():
        raise InvalidInput("不能报告未来的门诊量 / a future day cannot have visits yet", field="date")
    event = OutpatientVisitsReported(hospital_id=hospital_id, date=day, visits=visits, reported_by=f"HIS {hospital_id}")
    stream = f"his-visits-{hospital_id}-{day.isoformat()}"
    result = store.append_to(stream, None, new_envelope(
        event, stream, "his_sync", correlation_id,
        actor=Actor(kind="service", id=f"his:{hospital_id}", hospital_id=hospital_id),
        event_id=idempotent_event_id("outpatient-visits", f"{hospital_id}:{day.isoformat()}:{visits}")))
    _log.info("his_visits_reported", hospital_id=hospital_id, date=day.isoformat(), visits=visits)
    return {"hospital_id": hospital_id, "date": day.isoformat(), "visits": visits,
            "duplicate": bool(getattr(result, "duplicate", False))}


def receive_bundle(hospital_id: str, body: bytes, db: Database, his_inbound: HisInbound, schedule: Any,
                   now: datetime) -> dict[str, Any]:
    """A week's plan or a changed session from the hospital's HIS as a FHIR R4 Bundle of Schedule
    and Slot (services.his_sync.fhir): each free slot published as a session (or its quota
    changed), each busy-unavailable slot a stop request; what was refused is answered entry by
    entry. The same bundle (its id) again is answered as the first time, with no second effect."""
    from services.his_sync import fhir  # fhir.resources is large: loaded on the first bundle

    try:
        bundle = fhir.parse_bundle(body)
    except fhir.FhirError as exc:
        raise InvalidInput(f"FHIR: {exc.reason}", field=exc.location or "bundle") from None
    key = f"fhir:{bundle.id or hashlib.sha256(body).hexdigest()[:32]}"
    with db.transaction() as cur:
        answered = his_inbound.lock(cur, hospital_id, key)
        if answered is not None:
            return dict(json.loads(answered))
        doctors = schedule.list_doctors(hospital_id)
        if (err := from_wire(doctors)) is not None:
            raise err
        plan = fhir.commands_of(bundle, hospital_id, {d["doctor_id"]: hospital_id for d in doctors})
        actor = {"kind": "service", "id": f"his:{hospital_id}", "hospital_id": hospital_id}
        outcome: dict[str, Any] = {"bundle": key, "created": [], "changed": [], "unchanged": [], "stops": [],
                                   "refused": [{"index": r.index, "location": r.location, "reason": r.reason}
                                               for r in plan.refused]}
        for session in plan.sessions:
            _publish(session, hospital_id, key, actor, schedule, outcome)
        for stop in plan.stops:
            _stop_from_bundle(stop, hospital_id, key, actor, schedule, outcome)
        his_inbound.record(cur, hospital_id, key, "FHIR^Bundle", "AE" if outcome["refused"] else "AA",
                           json.dumps(outcome, ensure_ascii=False))
    _log.info("his_bundle", hospital_id=hospital_id, created=len(outcome["created"]), changed=len(outcome["changed"]),
              stops=len(outcome["stops"]), refused=len(outcome["refused"]))
    return outcome


def _publish(session: dict[str, Any], hospital_id: str, key: str, actor: dict[str, Any], schedule: Any,
             outcome: dict[str, Any]) -> None:
    sid = session["session_id"]
    existing = schedule.get_session(sid)
    idem = hashlib.sha256(f"{key}:{json.dumps(session, sort_keys=True)}".encode()).hexdigest()[:40]
    if from_wire(existing) is None:
        if existing.get("hospital_id") != hospital_id:
            outcome["refused"].append({"index": None, "location": sid, "reason": "the session is another hospital's"})
            return
        if dict(existing.get("quota") or {}) == session["quota"]:
            outcome["unchanged"].append(sid)
            return
        answer = schedule.change_session_quota({"session_id": sid, "quota": session["quota"], "idempotency_key": idem,
                                                "correlation_id": key[:100], "actor": actor})
        bucket = "changed"
    else:
        answer = schedule.schedule_session({**session, "idempotency_key": idem, "correlation_id": key[:100],
                                            "actor": actor})
        bucket = "created"
    if (err := from_wire(answer)) is not None:
        outcome["refused"].append({"index": None, "location": sid, "reason": _refusal(err)})
    else:
        outcome[bucket].append(sid)


def _stop_from_bundle(stop: dict[str, Any], hospital_id: str, key: str, actor: dict[str, Any], schedule: Any,
                      outcome: dict[str, Any]) -> None:
    sid = stop["session_id"]
    existing = schedule.get_session(sid)
    if from_wire(existing) is not None or existing.get("hospital_id") != hospital_id:
        outcome["refused"].append({"index": None, "location": sid, "reason": "unknown session at this hospital"})
        return
    answer = schedule.request_doctor_stop({"session_id": sid, "reason": str(stop.get("reason") or "HIS")[:200],
                                           "requested_by": f"HIS {hospital_id}"[:64],
                                           "idempotency_key": hashlib.sha256(f"{key}:{sid}".encode()).hexdigest()[:40],
                                           "correlation_id": key[:100],
                                           "actor": actor})
    if (err := from_wire(answer)) is not None:
        outcome["refused"].append({"index": None, "location": sid, "reason": _refusal(err)})
    else:
        outcome["stops"].append(str(answer.get("stop_id") or sid))


# --- reconciliation (对账) ----------------------------------------------------------------------

MESSAGE_LABELS = {
    "SIU^S12": ("预约", "booking"), "SIU^S14": ("改约", "move"), "SIU^S15": ("取消", "cancellation"),
    "SIU^S26": ("爽约", "no-show"), "ADT^A04": ("取号登记", "check-in"), "ADT^A11": ("退号", "refund at the window"),
    "ADT^A05": ("电话预约交接", "phone hand-over"),
}


def reconciliation(hospital_id: str, day: date, db: Database, his_outbox: HisOutbox,
                   tz: Any) -> dict[str, Any]:
    """A hospital day's messages (queued that day, hospital time): per kind what the platform sent
    and what the HIS acknowledged, refused, still has to take or was skipped, and every message
    that is not acknowledged, listed with its reason."""
    since = datetime.combine(day, datetime.min.time(), tz)
    with db.transaction() as cur:
        rows = his_outbox.of_day(cur, hospital_id, since, since + timedelta(days=1))
    kinds: dict[str, dict[str, Any]] = {}
    for row in rows:
        zh, en = MESSAGE_LABELS.get(row["message_type"], (row["message_type"], row["message_type"]))
        kind = kinds.setdefault(row["message_type"], {"message_type": row["message_type"], "label_zh": zh,
                                                      "label_en": en, "sent": 0, "acked": 0, "refused": 0,
                                                      "waiting": 0, "skipped": 0})
        kind["sent"] += 1
        bucket = {"acked": "acked", "failed": "refused", "skipped": "skipped"}.get(row["status"], "waiting")
        kind[bucket] += 1
    differences = [{"appointment_id": r["appointment_id"], "message_type": r["message_type"], "status": r["status"],
                    "control_id": r["control_id"], "attempts": r["attempts"],
                    "reason": r["ack_text"] or r["last_error"] or "", "created_at": r["created_at"]}
                   for r in rows if r["status"] != "acked"]
    return {"hospital_id": hospital_id, "date": day.isoformat(), "kinds": sorted(kinds.values(),
            key=lambda k: list(MESSAGE_LABELS).index(k["message_type"]) if k["message_type"] in MESSAGE_LABELS
            else 99), "differences": differences, "balanced": not differences}


RECONCILIATION_CSV_HEADER = ("类型 kind", "消息 message", "平台发送 sent", "HIS确认 acknowledged", "HIS拒绝 refused",
                             "待发送 waiting", "已跳过 skipped")
DIFFERENCE_CSV_HEADER = ("预约 appointment", "消息 message", "状态 state", "控制号 control id", "尝试 attempts",
                         "原因 reason", "时间 queued at")


def reconciliation_csv(report: Mapping[str, Any]) -> str:
    """The report as CSV for Excel: UTF-8 with a BOM, Chinese and English headers, ISO dates."""
    import csv
    import io

    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["医院 hospital", report["hospital_id"], "日期 date", report["date"]])
    writer.writerow(RECONCILIATION_CSV_HEADER)
    for k in report["kinds"]:
        writer.writerow([f"{k['label_zh']} {k['label_en']}", k["message_type"], k["sent"], k["acked"], k["refused"],
                         k["waiting"], k["skipped"]])
    writer.writerow([])
    writer.writerow(DIFFERENCE_CSV_HEADER)
    for d in report["differences"]:
        writer.writerow([d["appointment_id"], d["message_type"], d["status"], d["control_id"], d["attempts"],
                         d["reason"], d["created_at"]])
    return out.getvalue()
