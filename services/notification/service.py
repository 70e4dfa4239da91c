"""notification: the nameko class. Its reactions come from handlers.APP; its one query answers."""

from __future__ import annotations

from typing import Any

from nameko.rpc import RpcProxy, rpc

from infra.application import bind_reactions
from infra.providers import LogContext, ServiceDatabase, Vault, contract
from services.notification import readmodel
from services.notification.handlers import APP


@bind_reactions(APP)
class NotificationService:
    name = "notification"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    vault = Vault()
    booking = RpcProxy("booking")
    # The read model's surfaces, injected into the reactions by these names.
    names = readmodel.NAMES
    appointments = readmodel.APPOINTMENTS
    sms_outbox = readmodel.SMS_OUTBOX

    @rpc
    @contract()
    def outbox(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.SMS_OUTBOX.latest(cur, limit)
