"""notification: the nameko class. Its reactions come from handlers.APP; its RPCs validate their
contract, call one handler and answer (refusals as contracts.to_wire); its timers run the
dispatcher (every second), the reminders and the doctors' digests (every minute)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer
from pydantic import Field

from contracts import Actor, CheckVerificationCode, InvalidInput, SendVerificationCode, VerificationSent
from infra.application import bind_reactions
from infra.db import shared_database
from infra.handling import outage_tolerant
from infra.health import Check, HealthChecks, degraded, ok, service_label
from infra.metrics import SMS_BACKLOG, Metrics
from infra.providers import Clock, LogContext, ServiceDatabase, SettingsProvider, Vault, contract
from infra.rpc import RpcProxy, rpc
from infra.settings import Settings, settings_for
from services.notification import domain, handlers, readmodel
from services.notification.handlers import APP
from services.notification.providers import Receipt, SmsProvider, make_provider


class NotificationSettings(Settings):
    # One SMS a minute per number is the rule; an end-to-end test that must register a phone and
    # then reset its password within seconds shortens it.
    verification_resend_s: int = Field(default=60, ge=1, le=3600, alias="VERIFICATION_RESEND_S")
    sms_provider: str = Field(default="outbox", alias="SMS_PROVIDER")
    sms_max_attempts: int = Field(default=6, ge=1, le=100, alias="SMS_MAX_ATTEMPTS")
    sms_retry_base_s: float = Field(default=5.0, gt=0, le=3600, alias="SMS_RETRY_BASE_S")
    sms_retry_max_s: float = Field(default=600.0, gt=0, le=86400, alias="SMS_RETRY_MAX_S")

    def rules(self) -> domain.VerificationRules:
        return replace(domain.RULES, resend_after=timedelta(seconds=self.verification_resend_s))

    def delivery(self) -> handlers.Delivery:
        return handlers.Delivery(max_attempts=self.sms_max_attempts, base_delay_s=self.sms_retry_base_s,
                                 max_delay_s=self.sms_retry_max_s)


class SmsSender(DependencyProvider):
    """The provider adapter (SMS_PROVIDER: outbox, smpp, http), one per process: started with the
    container (an SMPP bind, an HTTP receipt poll), its receipts recorded as they arrive."""

    def setup(self) -> None:
        cfg = settings_for(self.container)
        self.provider: SmsProvider = make_provider(dict(self.container.config))
        self.db = shared_database(str(cfg.database_dsn), cfg.db_pool_size, idle_s=cfg.db_idle_s)

    def start(self) -> None:
        self.provider.start(self._on_receipt)

    def stop(self) -> None:
        self.provider.stop()

    def _on_receipt(self, receipt: Receipt) -> None:
        handlers.record_receipt(self.db, readmodel.SMS_OUTBOX, receipt)

    def get_dependency(self, worker_ctx: Any) -> SmsProvider:
        return self.provider


def sms_backlog(cur: Any, cfg: Settings, now: datetime) -> Check:
    """SMS due and not sent yet: degraded past HEALTH_SMS_BACKLOG_MAX messages or when the oldest
    has waited HEALTH_SMS_BACKLOG_AGE_S seconds (the provider does not take them)."""
    found = readmodel.SMS_OUTBOX.backlog(cur, now)
    for state in ("waiting", "parked"):
        SMS_BACKLOG.labels(service_label(), state).set(found[state])
    if found["waiting"] > cfg.health_sms_backlog_max or found["oldest_waiting_s"] > cfg.health_sms_backlog_age_s:
        return degraded(f"{found['waiting']} SMS waiting to be sent, the oldest {found['oldest_waiting_s']:.0f} s "
                        f"(provider {cfg.model_extra.get('SMS_PROVIDER', '?') if cfg.model_extra else '?'})", **found)
    return ok(**found)


@bind_reactions(APP)
class NotificationService:
    name = "notification"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    vault = Vault()
    settings: NotificationSettings = SettingsProvider(NotificationSettings)
    sender = SmsSender()
    booking = RpcProxy("booking")
    now = Clock()
    # The read model's surfaces, injected into the reactions by these names.
    names = readmodel.NAMES
    hospitals = readmodel.HOSPITALS
    doctors = readmodel.DOCTORS
    appointments = readmodel.APPOINTMENTS
    contacts = readmodel.CONTACTS
    sms_outbox = readmodel.SMS_OUTBOX
    verification_codes = readmodel.VERIFICATION_CODES
    metrics = Metrics()
    checks = HealthChecks(sms_backlog=sms_backlog)

    @rpc
    def health(self) -> dict[str, Any]:
        """The service's facts (infra.health): database, store, broker, relay, dead letters, the SMS backlog."""
        return self.checks.report()

    # --- verification codes ---------------------------------------------------------------

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

    # --- the timers ------------------------------------------------------------------------

    @timer(interval=1)
    @outage_tolerant
    def dispatch_due(self) -> None:
        """Due messages to the provider; nameko waits for a tick to end before the next."""
        handlers.dispatch(self.db, self.vault, self.sms_outbox, self.sender, self.now(), self.settings.delivery(),
                          clock=self.now)

    @timer(interval=60)
    @outage_tolerant
    def reminders_and_digests(self) -> None:
        now = self.now()
        handlers.run_reminders(self.db, self.vault, self.booking, self.names, self.hospitals, self.appointments,
                               self.sms_outbox, now)
        handlers.run_digests(self.db, self.vault, self.names, self.hospitals, self.doctors, self.appointments,
                             self.sms_outbox, now)

    # --- the operators' side ---------------------------------------------------------------

    @rpc
    @contract()
    def run_reminders(self, visit_date: str, hospital_id: str | None = None,
                      actor: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue the reminders of `visit_date` now (the operator's run; a second run queues nothing)."""
        who = Actor.model_validate(actor or {"kind": "system", "id": "platform"})
        if who.kind not in ("platform_admin", "system", "service"):
            if hospital_id is None:
                raise InvalidInput("请选择医院 / hospital_id is required", field="hospital_id")
            handlers._may_manage(who, hospital_id)
        day = _day(visit_date, "visit_date")
        queued = handlers.run_reminders(self.db, self.vault, self.booking, self.names, self.hospitals,
                                        self.appointments, self.sms_outbox, self.now(), visit_day=day,
                                        hospital_id=hospital_id)
        return {"visit_date": day.isoformat(), "queued": queued}

    @rpc
    @contract()
    def outbox(self, limit: int = 50, phone: str | None = None) -> list[dict[str, Any]]:
        """The newest messages with their text, of one number when `phone` is given; the phone masked."""
        phone_hash = self.vault.lookup_hash(phone.strip()) if phone else None
        with self.db.transaction() as cur:
            return readmodel.SMS_OUTBOX.latest(cur, limit, phone_hash)

    @rpc
    @contract()
    def messages(self, status: str | None = None, limit: int = 100,
                 hospital_id: str | None = None) -> list[dict[str, Any]]:
        """Delivery states, newest first, without text and with the phone masked."""
        if status is not None and status not in readmodel.MESSAGE_STATES:
            raise InvalidInput(f"status: one of {', '.join(readmodel.MESSAGE_STATES)}", field="status")
        with self.db.transaction() as cur:
            return readmodel.SMS_OUTBOX.messages(cur, max(1, min(limit, 500)), status, hospital_id)

    @rpc
    @contract()
    def retry_message(self, message_id: str, actor: dict[str, Any]) -> dict[str, Any]:
        return handlers.retry_message(message_id, Actor.model_validate(actor), self.db, self.sms_outbox, self.now(),
                                      self.hospitals)

    @rpc
    @contract()
    def delivery_counts(self, date_from: str, date_to: str, hospital_id: str | None = None) -> list[dict[str, Any]]:
        """Messages queued from `date_from` to `date_to` (hospital days, inclusive) by template and state."""
        since = datetime.combine(_day(date_from, "from"), datetime.min.time(), domain.HOSPITAL_TZ)
        until = datetime.combine(_day(date_to, "to") + timedelta(days=1), datetime.min.time(), domain.HOSPITAL_TZ)
        with self.db.transaction() as cur:
            return readmodel.SMS_OUTBOX.counts(cur, since, until, hospital_id)

    @rpc
    @contract()
    def sms_settings(self, hospital_id: str) -> dict[str, Any]:
        return handlers.sms_settings(self.db, self.hospitals, hospital_id)

    @rpc
    @contract()
    def set_sms_settings(self, payload: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
        return handlers.set_sms_settings(payload, Actor.model_validate(actor), self.db, self.hospitals)

    @rpc
    @contract()
    def doctor_contact(self, doctor_id: str, actor: dict[str, Any]) -> dict[str, Any]:
        return handlers.doctor_contact(doctor_id, Actor.model_validate(actor), self.db, self.doctors)

    @rpc
    @contract()
    def doctor_contacts(self, hospital_id: str, actor: dict[str, Any]) -> list[dict[str, Any]]:
        return handlers.doctor_contacts(hospital_id, Actor.model_validate(actor), self.db, self.doctors)

    @rpc
    @contract()
    def set_doctor_contact(self, payload: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
        return handlers.set_doctor_contact(payload, Actor.model_validate(actor), self.db, self.vault, self.doctors)


def _day(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field}: a date, YYYY-MM-DD", field=field) from None
