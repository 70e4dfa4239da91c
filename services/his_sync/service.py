"""his_sync: the nameko class. Its reactions come from handlers.APP; its one query answers."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from nameko.rpc import rpc
from pydantic import Field

from infra.application import bind_reactions
from infra.providers import Clock, LogContext, ServiceDatabase, SettingsProvider, contract
from infra.settings import Settings
from services.his_sync import readmodel
from services.his_sync.handlers import APP
from services.his_sync.mllp import MllpClient

# Hebei's clock for MSH-7 / EVN-2 (hl7 writes every time as +0800 anyway).
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")


class HisSettings(Settings):
    his_host: str = Field(default="127.0.0.1", alias="HIS_HOST")
    his_port: int = Field(default=2575, ge=1, le=65535, alias="HIS_PORT")
    his_timeout: float = Field(default=5.0, gt=0, alias="HIS_TIMEOUT")


@bind_reactions(APP)
class HisSyncService:
    name = "his_sync"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    settings: HisSettings = SettingsProvider(HisSettings)
    now = Clock(HOSPITAL_TZ)
    # The read model's surfaces, injected into the reactions by these names.
    appointments = readmodel.APPOINTMENTS
    his_messages = readmodel.HIS_MESSAGES

    def connect_his(self) -> MllpClient:
        """A fresh connection per message (injected into the reactions as their client factory)."""
        cfg = self.settings
        return MllpClient(cfg.his_host, cfg.his_port, timeout=cfg.his_timeout)

    @rpc
    @contract()
    def sent(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.HIS_MESSAGES.latest(cur, limit)
