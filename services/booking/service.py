"""booking: the nameko entrypoints. Business decisions live in domain.py and handlers.py."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from contracts import BookAppointment, BookingAnswer, Envelope, RegisterPatient
from infra.handling import reliable_event_handler
from infra.providers import LogContext, ProjectionRunner, ServiceDatabase, Store, Vault, contract
from services.booking import handlers, readmodel


class Ledgers(DependencyProvider):
    def setup(self) -> None:
        self.cache = handlers.LedgerCache()

    def get_dependency(self, worker_ctx: Any) -> handlers.LedgerCache:
        return self.cache


class BookingService:
    name = "booking"

    log = LogContext()
    store = Store()
    db = ServiceDatabase(readmodel.SCHEMA)
    vault = Vault()
    ledgers = Ledgers()
    projection = ProjectionRunner("booking-appointments", readmodel.apply, readmodel.PROJECTED_TYPES)

    @rpc
    @contract(RegisterPatient)
    def register_patient(self, cmd: RegisterPatient) -> dict[str, Any]:
        return handlers.register_patient(self.store, self.db, self.vault, cmd)

    @rpc
    @contract(BookAppointment)
    def book_appointment(self, cmd: BookAppointment) -> BookingAnswer:
        answer = handlers.book_appointment(self.store, self.db, self.ledgers, cmd)
        self.log.info("appointment_booked", appointment_id=answer.appointment_id, session_id=answer.session_id)
        return answer

    @rpc
    @contract()
    def appointments_of(self, patient_id: str) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.appointments_of(cur, patient_id)

    @rpc
    @contract()
    def session_availability(self, session_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            info = readmodel.session_info(cur, session_id)
        if info is None:
            return {"session_id": session_id, "known": False}
        ledger = self.ledgers.refresh(self.store, session_id)
        return {"session_id": session_id, "known": True, "remaining": ledger.remaining(info.quota)}

    @rpc
    @contract()
    def patient_contact(self, patient_id: str) -> dict[str, str]:
        return handlers.patient_contact(self.db, self.vault, patient_id)

    @reliable_event_handler("schedule", "SessionScheduled")
    def on_session_scheduled(self, body: dict[str, Any]) -> None:
        handlers.on_session_scheduled(self.db, "booking.on_session_scheduled", Envelope.model_validate(body))
