"""notification: the nameko class. Its reactions come from handlers.APP; its RPCs validate their
contract, call one handler and answer (refusals as contracts.to_wire)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from nameko.rpc import RpcProxy, rpc
from pydantic import Field

from contracts import CheckVerificationCode, SendVerificationCode, VerificationSent
from infra.application import bind_reactions
from infra.providers import Clock, LogContext, ServiceDatabase, SettingsProvider, Vault, contract
from infra.settings import Settings
from services.notification import domain, handlers, readmodel
from services.notification.handlers import APP


class NotificationSettings(Settings):
    # One SMS a minute per number is the rule; an end-to-end test that must register a phone and
    # then reset its password within seconds shortens it.
    verification_resend_s: int = Field(default=60, ge=1, le=3600, alias="VERIFICATION_RESEND_S")

    def rules(self) -> domain.VerificationRules:
        return replace(domain.RULES, resend_after=timedelta(seconds=self.verification_resend_s))


@bind_reactions(APP)
class NotificationService:
    name = "notification"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    vault = Vault()
    settings: NotificationSettings = SettingsProvider(NotificationSettings)
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
                                               self.now(), self.settings.rules())

    @rpc
    @contract(CheckVerificationCode)
    def check_verification_code(self, cmd: CheckVerificationCode) -> dict[str, bool]:
        return handlers.check_verification_code(cmd, self.db, self.vault, self.verification_codes, self.now(),
                                                self.settings.rules())

    @rpc
    @contract()
    def outbox(self, limit: int = 50, phone: str | None = None) -> list[dict[str, Any]]:
        """The newest messages, of one number when `phone` is given; the phone masked."""
        phone_hash = self.vault.lookup_hash(phone.strip()) if phone else None
        with self.db.transaction() as cur:
            return readmodel.SMS_OUTBOX.latest(cur, limit, phone_hash)
