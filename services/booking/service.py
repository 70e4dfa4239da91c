"""booking: the nameko entrypoints. Each validates its contract, dispatches to handlers.APP (or a
query), and answers. Decisions live in domain.py, the command path in handlers.py, SQL in
readmodel.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import eventlet
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from pydantic import Field, ValidationError

from contracts import (
    Actor,
    BookAppointment,
    BookingAnswer,
    CancelAppointment,
    CheckInAppointment,
    HandOverPhoneBookings,
    InvalidInput,
    LapseDueAppointments,
    NotFound,
    RefundAtWindow,
    RegisterPatient,
    ResetPatientPassword,
)
from infra.application import bind_reactions
from infra.handling import outage_tolerant
from infra.health import HealthChecks
from infra.metrics import Metrics
from infra.passwords import PASSWORDS
from infra.projections import ProjectionRunner
from infra.providers import Clock, LogContext, ServiceDatabase, SettingsProvider, Store, Vault, contract
from infra.rpc import rpc
from infra.settings import Settings
from services.booking import domain, handlers, readmodel
from services.booking.handlers import APP

BATCH_LIMIT = 200  # commands in one book_appointments request
# The bookings of one batch that are not answered "full" at once run concurrently (each session's
# lock makes those of one session take turns); a pool per process bounds what one batch holds.
_BOOKERS = eventlet.GreenPool(8)


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


@bind_reactions(APP)
class BookingService:
    name = "booking"

    log = LogContext()
    settings = SettingsProvider(BookingSettings)
    store = Store()
    db = ServiceDatabase(readmodel.SCHEMA)
    readmodel = ProjectionRunner(readmodel.PROJECTOR, view=readmodel.BookingReadModel)
    vault = Vault()
    cache = Ledgers()
    now = Clock()
    metrics = Metrics()
    checks = HealthChecks()
    passwords = PASSWORDS  # argon2id, a dummy hash for unknown accounts (infra.passwords)

    @rpc
    def health(self) -> dict[str, Any]:
        """The service's facts (infra.health): database, store, broker, relay, the read model's lag, dead letters."""
        return self.checks.report()

    # --- patients -------------------------------------------------------------------------

    @rpc
    @contract(RegisterPatient)
    def register_patient(self, cmd: RegisterPatient) -> dict[str, Any]:
        return APP.handle(cmd, self)  # type: ignore[no-any-return]

    @rpc
    @contract()
    def authenticate_patient(self, username: str, password: str) -> dict[str, Any]:
        return handlers.authenticate_patient(self.readmodel, self.vault, self.passwords, username, password)

    @rpc
    @contract()
    def change_patient_password(self, patient_id: str, old: str, new: str) -> dict[str, Any]:
        return handlers.change_patient_password(self.store, self.readmodel, self.passwords, patient_id, old, new)

    @rpc
    @contract(ResetPatientPassword)
    def reset_patient_password(self, cmd: ResetPatientPassword) -> dict[str, Any]:
        return APP.handle(cmd, self)  # type: ignore[no-any-return]

    @rpc
    @contract()
    def find_patient(self, id_number: str, actor: dict[str, Any] | None = None) -> dict[str, Any]:
        """A patient found by resident ID (masked; the gateway audits the read). A clerk or hospital
        admin finds only patients with a booking at their hospital. The one-argument call is the
        province-wide lookup of a gateway that does not pass its actor yet."""
        return handlers.find_patient(self.readmodel, self.vault, id_number,
                                     Actor.model_validate(actor) if actor else None)

    @rpc
    @contract()
    def patient_contact(self, patient_id: str) -> dict[str, str]:
        return handlers.patient_contact(self.readmodel, self.vault, patient_id)

    @rpc
    @contract()
    def patient_for_his(self, patient_id: str) -> dict[str, str]:
        """Name, resident ID, sex, birth date and phone in clear: for his_sync, which passes them
        only to the hospital's own HIS (real-name registration). Never for the gateway."""
        return handlers.patient_for_his(self.readmodel, self.vault, patient_id)

    # --- the lifecycle --------------------------------------------------------------------

    @rpc
    @contract(BookAppointment)
    def book_appointment(self, cmd: BookAppointment) -> BookingAnswer:
        answer: BookingAnswer = APP.handle(cmd, self)
        self.log.info("appointment_booked", appointment_id=answer.appointment_id, session_id=answer.session_id)
        return answer

    @rpc
    @contract()
    def book_appointments(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Many BookAppointment commands in one request (the gateway's batcher sends what queued up
        while its earlier batches were in flight), each answered as `book_appointment` answers it,
        a refusal as its {"domain_error": ...}, in the order given (handlers.book_many)."""
        if not isinstance(commands, list) or len(commands) > BATCH_LIMIT:
            raise InvalidInput(f"commands: a list of at most {BATCH_LIMIT}", field="commands")
        answers = handlers.book_many(commands, self, run_all=_BOOKERS.imap)
        for answer in answers:
            if "appointment_id" in answer:
                self.log.info("appointment_booked", appointment_id=answer["appointment_id"],
                              session_id=answer.get("session_id"))
        return answers

    @rpc
    @contract(CancelAppointment)
    def cancel_appointment(self, cmd: CancelAppointment) -> dict[str, Any]:
        return APP.handle(cmd, self)  # type: ignore[no-any-return]

    @rpc
    @contract(CheckInAppointment)
    def check_in(self, cmd: CheckInAppointment) -> dict[str, Any]:
        return APP.handle(cmd, self)  # type: ignore[no-any-return]

    @rpc
    @contract(RefundAtWindow)
    def refund_at_window(self, cmd: RefundAtWindow) -> dict[str, Any]:
        """退号 at the window: {appointment_id, status: refunded, refund_due, place_released}."""
        return APP.handle(cmd, self)  # type: ignore[no-any-return]

    @timer(interval=30)
    @outage_tolerant
    def lapse_due_appointments(self) -> None:
        now = self.now()
        lapsed = APP.handle(LapseDueAppointments(now=now, idempotency_key=f"lapse-{now.isoformat()}"), self)
        if lapsed:
            self.log.info("appointments_lapsed", count=lapsed)

    @timer(interval=60)
    @outage_tolerant
    def hand_over_phone_bookings(self) -> None:
        """At each hospital's hand-over time (16:00 by default) its next day's paid phone bookings
        go to the HIS side as one event; a stream per hospital and day makes it happen once."""
        now = self.now().astimezone(domain.HOSPITAL_TZ)
        for hospital_id in self.readmodel.hospitals():
            if now.time() >= self.readmodel.hospital_rules(hospital_id).phone_handover_time:
                day = now.date() + timedelta(days=1)
                APP.handle(HandOverPhoneBookings(hospital_id=hospital_id, visit_date=day,
                                                 idempotency_key=f"handover-{hospital_id}-{day}"), self)

    # --- queries --------------------------------------------------------------------------

    @rpc
    @contract()
    def phone_list(self, hospital_id: str, visit_date: str) -> list[dict[str, Any]]:
        return self.readmodel.paid_phone_bookings(hospital_id, visit_date)  # type: ignore[no-any-return]

    @rpc
    @contract()
    def appointments_of(self, patient_id: str) -> dict[str, Any]:
        return {"appointments": self.readmodel.appointments_of(patient_id),
                "banned_until": self.readmodel.ban_of(patient_id)}

    @rpc
    @contract()
    def appointment_of_patient(self, patient_id: str, appointment_id: str) -> dict[str, Any]:
        mine = [a for a in self.readmodel.appointments_of(patient_id) if a["appointment_id"] == appointment_id]
        if not mine:
            raise NotFound("预约不存在 / unknown appointment", field="appointment_id")
        return mine[0]  # type: ignore[no-any-return]

    @rpc
    @contract()
    def session_list(self, session_id: str, actor: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The day's list of one session, for staff of its hospital (masked ID and phone)."""
        return handlers.session_list(self.readmodel, session_id, Actor.model_validate(actor) if actor else None)

    @rpc
    @contract()
    def patient_bookings_at(self, id_number: str, hospital_id: str, actor: dict[str, Any] | None) -> dict[str, Any]:
        """A patient's bookings at one hospital, by resident ID, for its staff (masked; names never)."""
        return handlers.patient_bookings_at(self.readmodel, self.vault, id_number, hospital_id, _actor(actor))

    @rpc
    @contract()
    def appointment_by_code(self, code: str, actor: dict[str, Any] | None) -> dict[str, Any]:
        """One appointment by its booking code, for staff of its hospital (masked)."""
        return handlers.appointment_by_code(self.readmodel, self.vault, code, _actor(actor))

    @rpc
    @contract()
    def hospital_day_list(self, hospital_id: str, date: str, actor: dict[str, Any] | None,
                          department_id: str | None = None, doctor_id: str | None = None) -> list[dict[str, Any]]:
        """Every booking of the hospital's sessions on one day (masked), optionally one department or doctor."""
        return handlers.hospital_day_list(self.readmodel, self.vault, hospital_id, date, _actor(actor),
                                          department_id, doctor_id)

    @rpc
    @contract()
    def session_availability(self, session_id: str) -> dict[str, Any]:
        return handlers.availability(self.store, self.readmodel, self.cache, [session_id])[session_id]

    @rpc
    @contract()
    def sessions_availability(self, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Remaining places of many sessions in one call: the schedule table asks for a week at once."""
        return handlers.availability(self.store, self.readmodel, self.cache, session_ids[:500])


def _actor(actor: dict[str, Any] | None) -> Actor | None:
    """The caller's actor as the gateway passes it; a malformed one is invalid input naming `actor`."""
    if actor is None:
        return None
    try:
        return Actor.model_validate(actor)
    except ValidationError:
        raise InvalidInput("actor 无效 / invalid actor", field="actor") from None
