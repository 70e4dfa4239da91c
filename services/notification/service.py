"""notification: the nameko class. Its reactions come from handlers.APP; its RPCs validate their
contract, call one handler and answer (refusals as contracts.to_wire)."""

from __future__ import annotations

from typing import Any

from nameko.rpc import RpcProxy, rpc

from contracts import CheckVerificationCode, SendVerificationCode, VerificationSent
from infra.application import bind_reactions
from infra.providers import Clock, LogContext, ServiceDatabase, Vault, contract
from services.notification import handlers, readmodel
from services.notification.handlers import APP


@bind_reactions(APP)
class NotificationService:
    name = "notification"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    vault = Vault()
    booking = RpcProxy("booking")
    now = Clock()
    # The read model's surfaces, injected into the reactions by these names.
    names = readmodel.NAMES
    appointments = readmodel.APPOINTMENTS
    sms_outbox = readmodel.SMS_OUTBOX
    verification_codes = readmodel.VERIFICATION_CODES

    @rpc
    @contract(SendVerificationCode)
    def send_verification_code(self, cmd: SendVerificationCode) -> VerificationSent:
        return handlers.send_verification_code(cmd, self.db, self.vault, self.verification_codes, self.sms_outbox,
                                               self.now())

    @rpc
    @contract(CheckVerificationCode)
    def check_verification_code(self, cmd: CheckVerificationCode) -> dict[str, bool]:
        return handlers.check_verification_code(cmd, self.db, self.vault, self.verification_codes, self.now())

    @rpc
    @contract()
    def outbox(self, limit: int = 50, phone: str | None = None) -> list[dict[str, Any]]:
        """The newest messages, of one number when `phone` is given; the phone masked."""
        phone_hash = self.vault.lookup_hash(phone.strip()) if phone else None
        with self.db.transaction() as cur:
            return readmodel.SMS_OUTBOX.latest(cur, limit, phone_hash)
