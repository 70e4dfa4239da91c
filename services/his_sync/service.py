"""his_sync: keeps the hospital's HIS in step over HL7 v2.5 / MLLP, and checks every ACK.

A booking becomes an SIU^S12, a move by a doctor stop S14, a cancellation S15, a no-show S26 and
a check-in ADT^A04 (the later ones are built from the appointment as booked, kept here). The
inbox claim and the record of the ACK commit together only after the HIS accepted the message;
any failure (no connection, AE/AR, a wrong ACK) raises, so the reliable handler retries with
back-off and finally parks the event for an operator. The control id is derived from the event
id, so a resend after a crash carries the same id and the HIS can recognise the duplicate.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from nameko.rpc import rpc
from pydantic import Field

from contracts import Envelope
from infra.handling import claim, reliable_event_handler
from infra.providers import LogContext, ServiceDatabase, SettingsProvider, contract
from infra.settings import Settings
from services.his_sync import hl7
from services.his_sync.mllp import MllpClient

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")

SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (
    appointment_id text PRIMARY KEY,
    data           jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS his_messages (
    control_id     text PRIMARY KEY,
    event_id       uuid NOT NULL,
    appointment_id text NOT NULL,
    message_type   text NOT NULL,
    ack_code       text NOT NULL,
    sent_at        timestamptz NOT NULL DEFAULT now()
);
"""


class HisSettings(Settings):
    his_host: str = Field(default="127.0.0.1", alias="HIS_HOST")
    his_port: int = Field(default=2575, ge=1, le=65535, alias="HIS_PORT")
    his_timeout: float = Field(default=5.0, gt=0, alias="HIS_TIMEOUT")


class HisRejected(Exception):
    """The HIS answered AE or AR: retried, then parked."""


def control_id_for(env: Envelope) -> str:
    return env.event_id.hex[:20]


class HisSyncService:
    name = "his_sync"

    log = LogContext()
    db = ServiceDatabase(SCHEMA)
    settings = SettingsProvider(HisSettings)

    def _client(self) -> MllpClient:
        cfg = self.settings
        return MllpClient(cfg.his_host, cfg.his_port, timeout=cfg.his_timeout)

    @reliable_event_handler("booking", "AppointmentBooked")
    def on_appointment_booked(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._send(env, "SIU^S12", env.data, remember=True)

    @reliable_event_handler("booking", "AppointmentMoved")
    def on_appointment_moved(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._send(env, "SIU^S14", env.data, remember=True)

    @reliable_event_handler("booking", "AppointmentCancelled")
    def on_appointment_cancelled(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._send(env, "SIU^S15", {**self._booked(env), "reason": env.data.get("reason", "")})

    @reliable_event_handler("booking", "AppointmentLapsed")
    def on_appointment_lapsed(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._send(env, "SIU^S26", self._booked(env))

    @reliable_event_handler("booking", "AppointmentCheckedIn")
    def on_appointment_checked_in(self, body: dict[str, Any]) -> None:
        env = Envelope.model_validate(body)
        self._send(env, "ADT^A04", self._booked(env))

    def _booked(self, env: Envelope) -> dict[str, Any]:
        """The appointment as booked (the later events carry only what changed). Not known yet:
        the booking's own message is still on its way; raising retries this one after it."""
        with self.db.transaction() as cur:
            cur.execute("SELECT data FROM appointments WHERE appointment_id = %s", (env.data["appointment_id"],))
            row = cur.fetchone()
        if row is None:
            raise LookupError(f"appointment {env.data['appointment_id']} not synchronised yet")
        return dict(row[0])

    def _send(self, env: Envelope, message_type: str, appointment: dict[str, Any], remember: bool = False) -> None:
        control_id = control_id_for(env)
        with self.db.transaction() as cur:
            if not claim(cur, f"his_sync.{message_type.lower().replace('^', '_')}", env.event_id):
                return
            now = datetime.now(HOSPITAL_TZ)
            if message_type == "ADT^A04":
                message = hl7.build_adt_a04(appointment, control_id, now)
            else:
                message = hl7.build_siu(message_type.split("^")[1], appointment, control_id, now)
            with self._client() as client:
                ack = hl7.parse_ack(client.send(message), control_id)
            if not ack.accepted:
                raise HisRejected(f"HIS answered {ack.code} to {message_type} {control_id}: {ack.text}")
            cur.execute(
                "INSERT INTO his_messages VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (control_id, env.event_id, appointment["appointment_id"], message_type, ack.code),
            )
            if remember:
                cur.execute(
                    "INSERT INTO appointments VALUES (%s, %s) ON CONFLICT (appointment_id) DO UPDATE "
                    "SET data = EXCLUDED.data",
                    (appointment["appointment_id"], json.dumps(appointment, ensure_ascii=False)),
                )
        self.log.info("his_acknowledged", message_type=message_type, control_id=control_id)

    @rpc
    @contract()
    def sent(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT control_id, appointment_id, message_type, ack_code FROM his_messages "
                "ORDER BY sent_at DESC LIMIT %s",
                (limit,),
            )
            return [
                dict(zip(("control_id", "appointment_id", "message_type", "ack_code"), r, strict=True))
                for r in cur.fetchall()
            ]
