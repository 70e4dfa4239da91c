"""booking: the nameko entrypoints. Business decisions live in domain.py and handlers.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.timer import timer
from pydantic import Field

from contracts import (
    BookAppointment,
    BookingAnswer,
    CancelAppointment,
    CheckInAppointment,
    Envelope,
    Forbidden,
    NotFound,
    RegisterPatient,
)
from infra.handling import reliable_event_handler
from infra.providers import LogContext, ProjectionRunner, ServiceDatabase, SettingsProvider, Store, Vault, contract
from infra.settings import Settings
from services.booking import domain, handlers, readmodel


class BookingSettings(Settings):
    no_show_limit: int = Field(default=3, ge=1, alias="NO_SHOW_LIMIT")
    no_show_window_days: int = Field(default=90, ge=1, alias="NO_SHOW_WINDOW_DAYS")
    ban_days: int = Field(default=90, ge=1, alias="BAN_DAYS")
    phone_max_patients: int = Field(default=3, ge=1, alias="PHONE_MAX_PATIENTS")

    def no_show_rules(self) -> domain.NoShowRules:
        return domain.NoShowRules(self.no_show_limit, self.no_show_window_days, self.ban_days)


class Ledgers(DependencyProvider):
    def setup(self) -> None:
        self.cache = handlers.LedgerCache()

    def get_dependency(self, worker_ctx: Any) -> handlers.LedgerCache:
        return self.cache


def _now() -> datetime:
    return datetime.now(UTC)


def _staff_of(actor: dict[str, Any] | None, hospital_id: str) -> None:
    if not actor or actor.get("kind") not in ("clerk", "hospital_admin", "platform_admin"):
        raise Forbidden("仅限医院工作人员 / hospital staff only", field="actor")
    if actor.get("kind") != "platform_admin" and actor.get("hospital_id") != hospital_id:
        raise Forbidden("只能查看本院数据 / staff see only their own hospital", field="actor")


class BookingService:
    name = "booking"

    log = LogContext()
    settings = SettingsProvider(BookingSettings)
    store = Store()
    db = ServiceDatabase(readmodel.SCHEMA)
    vault = Vault()
    ledgers = Ledgers()
    projection = ProjectionRunner("booking-appointments", readmodel.apply, readmodel.PROJECTED_TYPES)

    # --- patients -------------------------------------------------------------------------

    @rpc
    @contract(RegisterPatient)
    def register_patient(self, cmd: RegisterPatient) -> dict[str, Any]:
        return handlers.register_patient(self.store, self.db, self.vault, cmd, self.settings.phone_max_patients)

    @rpc
    @contract()
    def authenticate_patient(self, username: str, password: str) -> dict[str, Any]:
        return handlers.authenticate_patient(self.db, self.vault, username, password)

    @rpc
    @contract()
    def find_patient(self, id_number: str) -> dict[str, Any]:
        """A caller found by resident ID, for the hotline (masked; the gateway audits the read)."""
        return handlers.find_patient(self.db, self.vault, id_number)

    @rpc
    @contract()
    def phone_list(self, hospital_id: str, visit_date: str) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.paid_phone_bookings(cur, hospital_id, visit_date)

    @rpc
    @contract()
    def patient_contact(self, patient_id: str) -> dict[str, str]:
        return handlers.patient_contact(self.db, self.vault, patient_id)

    # --- the lifecycle --------------------------------------------------------------------

    @rpc
    @contract(BookAppointment)
    def book_appointment(self, cmd: BookAppointment) -> BookingAnswer:
        answer = handlers.book_appointment(self.store, self.db, self.ledgers, cmd, _now())
        self.log.info("appointment_booked", appointment_id=answer.appointment_id, session_id=answer.session_id)
        return answer

    @rpc
    @contract(CancelAppointment)
    def cancel_appointment(self, cmd: CancelAppointment) -> dict[str, Any]:
        return handlers.cancel_appointment(self.store, self.db, self.ledgers, cmd, _now())

    @rpc
    @contract(CheckInAppointment)
    def check_in(self, cmd: CheckInAppointment) -> dict[str, Any]:
        return handlers.check_in(self.store, self.db, self.vault, self.ledgers, cmd, _now())

    @timer(interval=30)
    def lapse_due_appointments(self) -> None:
        lapsed = handlers.lapse_due(self.store, self.db, self.ledgers, _now(), self.settings.no_show_rules())
        if lapsed:
            self.log.info("appointments_lapsed", count=lapsed)

    @timer(interval=60)
    def hand_over_phone_bookings(self) -> None:
        """At each hospital's hand-over time (16:00 by default) its next day's paid phone bookings
        go to the HIS side as one event; a stream per hospital and day makes it happen once."""
        now = _now().astimezone(domain.HOSPITAL_TZ)
        with self.db.transaction() as cur:
            cur.execute("SELECT hospital_id FROM hospitals")
            hospitals = [r[0] for r in cur.fetchall()]
        for hospital_id in hospitals:
            with self.db.transaction() as cur:
                rules = readmodel.hospital_rules(cur, hospital_id)
            if now.time() >= rules.phone_handover_time:
                handlers.hand_over_phone_bookings(self.store, self.db, hospital_id, now.date() + timedelta(days=1))

    # --- queries --------------------------------------------------------------------------

    @rpc
    @contract()
    def appointments_of(self, patient_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            return {"appointments": readmodel.appointments_of(cur, patient_id),
                    "banned_until": readmodel.ban_of(cur, patient_id)}

    @rpc
    @contract()
    def appointment_of_patient(self, patient_id: str, appointment_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            mine = [a for a in readmodel.appointments_of(cur, patient_id) if a["appointment_id"] == appointment_id]
        if not mine:
            raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
        return mine[0]

    @rpc
    @contract()
    def session_list(self, session_id: str, actor: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The day's list of one session, for staff of its hospital (masked ID and phone)."""
        with self.db.transaction() as cur:
            info = readmodel.session_info(cur, session_id)
            if info is None:
                raise NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")
            _staff_of(actor, info.hospital_id)
            return readmodel.session_list(cur, session_id)

    @rpc
    @contract()
    def session_availability(self, session_id: str) -> dict[str, Any]:
        return self._availability(session_id)

    @rpc
    @contract()
    def sessions_availability(self, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Remaining places of many sessions in one call: the schedule table asks for a week at once."""
        return {session_id: self._availability(session_id) for session_id in session_ids[:500]}

    def _availability(self, session_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            info = readmodel.session_info(cur, session_id)
        if info is None:
            return {"session_id": session_id, "known": False}
        ledger = self.ledgers.refresh(self.store, session_id)
        return {"session_id": session_id, "known": True, "stopped": info.stopped or ledger.stopped,
                "remaining": ledger.remaining(info.quota), "opens_at": info.opens_at.isoformat(),
                "closes_at": info.closes_at.isoformat()}

    # --- what schedule publishes ----------------------------------------------------------

    @reliable_event_handler("schedule", "SessionScheduled")
    def on_session_scheduled(self, body: dict[str, Any]) -> None:
        handlers.on_session_scheduled(self.db, "booking.on_session_scheduled", Envelope.model_validate(body))

    @reliable_event_handler("schedule", "SessionQuotaChanged")
    def on_session_quota_changed(self, body: dict[str, Any]) -> None:
        handlers.on_session_quota_changed(self.db, "booking.on_session_quota_changed", Envelope.model_validate(body))

    @reliable_event_handler("schedule", "HospitalRegistered")
    def on_hospital_registered(self, body: dict[str, Any]) -> None:
        handlers.on_hospital_rules(self.db, "booking.on_hospital_registered", Envelope.model_validate(body))

    @reliable_event_handler("schedule", "HospitalRulesChanged")
    def on_hospital_rules_changed(self, body: dict[str, Any]) -> None:
        handlers.on_hospital_rules(self.db, "booking.on_hospital_rules_changed", Envelope.model_validate(body))

    @reliable_event_handler("schedule", "DoctorStopApproved")
    def on_doctor_stop_approved(self, body: dict[str, Any]) -> None:
        outcome = handlers.on_doctor_stop_approved(self.store, self.db, self.ledgers, Envelope.model_validate(body))
        self.log.info("doctor_stop_applied", **outcome)

