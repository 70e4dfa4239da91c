"""his_sync: keeps the hospital's HIS in step over HL7 v2.5 / MLLP, and checks every ACK.

A booking becomes an SIU^S12. The inbox claim and the record of the ACK commit together only after
the HIS accepted the message; any failure (no connection, AE/AR, a wrong ACK) raises, so the
reliable handler retries with back-off and finally parks the event for an operator. The control
id is derived from the event id, so a resend after a crash carries the same id and the HIS can
recognise the duplicate.
"""

from __future__ import annotations

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
        self._send(Envelope.model_validate(body), "S12")

    def _send(self, env: Envelope, trigger: str) -> None:
        control_id = control_id_for(env)
        with self.db.transaction() as cur:
            if not claim(cur, f"his_sync.siu_{trigger.lower()}", env.event_id):
                return
            message = hl7.build_siu(trigger, env.data, control_id, datetime.now(HOSPITAL_TZ))
            with self._client() as client:
                ack = hl7.parse_ack(client.send(message), control_id)
            if not ack.accepted:
                raise HisRejected(f"HIS answered {ack.code} to SIU^{trigger} {control_id}: {ack.text}")
            cur.execute(
                "INSERT INTO his_messages VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (control_id, env.event_id, env.data["appointment_id"], f"SIU^{trigger}", ack.code),
            )
        self.log.info("his_acknowledged", message_type=f"SIU^{trigger}", control_id=control_id)

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
