"""schedule: the nameko entrypoints. A command validates its contract, is dispatched through the
handlers' table, and is answered once the read model has applied it (read-your-writes); a query
reads the read model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from contracts import (
    Actor,
    ApproveDoctorStop,
    CancelHoliday,
    ChangeBookingRules,
    ChangeFee,
    ChangeSessionQuota,
    Command,
    CreateDepartment,
    DeclareHoliday,
    GenerateSessions,
    ImportPlan,
    InvalidInput,
    NotFound,
    RegisterDoctor,
    RegisterHospital,
    RejectDoctorStop,
    RequestDoctorStop,
    ScheduleQuery,
    SetWeeklyPlan,
    UpdateDepartment,
    UpdateDoctor,
    UpdateHospital,
    WithdrawDoctorStop,
    invalid_from_validation,
)
from infra.health import HealthChecks
from infra.metrics import Metrics
from infra.projections import ProjectionRunner
from infra.providers import Clock, LogContext, ServiceDatabase, Store, contract
from infra.rpc import rpc as _rpc
from services.schedule import domain, readmodel
from services.schedule.domain import HOSPITAL_TZ, SessionRequest
from services.schedule.handlers import APP

F = TypeVar("F", bound=Callable[..., Any])


def rpc(fn: F) -> F:
    """nameko's @rpc, typed (it returns the function it registers)."""
    return cast(F, _rpc(fn))


class ScheduleService:
    name = "schedule"

    log = LogContext()
    store = Store()
    db = ServiceDatabase(readmodel.SCHEMA)
    projection = ProjectionRunner(readmodel.PROJECTOR)
    now = Clock(HOSPITAL_TZ)
    metrics = Metrics()
    checks = HealthChecks()

    @rpc
    def health(self) -> dict[str, Any]:
        """The service's facts (infra.health): database, store, broker, relay, the read model's lag."""
        return self.checks.report()

    def _command(self, cmd: Command) -> dict[str, Any]:
        answer: dict[str, Any] = APP.handle(cmd, self)
        self.projection.wait_for(answer["position"])  # a query right after this command sees what it did
        return answer

    # --- read-model queries the handlers are given by name --------------------------------------

    def planned_doctors(self, hospital_id: str) -> list[str]:
        """For generate_sessions: the hospital's doctors with a weekly plan."""
        with self.db.transaction() as cur:
            return readmodel.planned_doctors(cur, hospital_id)

    def department_chain(self, department_id: str) -> list[str]:
        """For update_department: the new parent's ancestors, to load them at once."""
        with self.db.transaction() as cur:
            return readmodel.department_chain(cur, department_id)

    def sessions_of_day(self, hospital_id: str, day: date) -> list[str]:
        """For declare_holiday: the hospital's sessions of that day, to load them at once."""
        with self.db.transaction() as cur:
            return [s["session_id"] for s in readmodel.sessions_of_day(cur, hospital_id, day)]

    # --- commands (SessionRequest: ScheduleSession, its shape refusals naming their field) ---------

    @rpc
    @contract(RegisterHospital)
    def register_hospital(self, cmd: RegisterHospital) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(UpdateHospital)
    def update_hospital(self, cmd: UpdateHospital) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(ChangeBookingRules)
    def change_booking_rules(self, cmd: ChangeBookingRules) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(ChangeFee)
    def change_fee(self, cmd: ChangeFee) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(DeclareHoliday)
    def declare_holiday(self, cmd: DeclareHoliday) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(CancelHoliday)
    def cancel_holiday(self, cmd: CancelHoliday) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(CreateDepartment)
    def create_department(self, cmd: CreateDepartment) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(UpdateDepartment)
    def update_department(self, cmd: UpdateDepartment) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(RegisterDoctor)
    def register_doctor(self, cmd: RegisterDoctor) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(UpdateDoctor)
    def update_doctor(self, cmd: UpdateDoctor) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(SetWeeklyPlan)
    def set_weekly_plan(self, cmd: SetWeeklyPlan) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(GenerateSessions)
    def generate_sessions(self, cmd: GenerateSessions) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(SessionRequest)
    def schedule_session(self, cmd: SessionRequest) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(ChangeSessionQuota)
    def change_session_quota(self, cmd: ChangeSessionQuota) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(ImportPlan)
    def import_plan(self, cmd: ImportPlan) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(RequestDoctorStop)
    def request_doctor_stop(self, cmd: RequestDoctorStop) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(ApproveDoctorStop)
    def approve_doctor_stop(self, cmd: ApproveDoctorStop) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(RejectDoctorStop)
    def reject_doctor_stop(self, cmd: RejectDoctorStop) -> dict[str, Any]: return self._command(cmd)

    @rpc
    @contract(WithdrawDoctorStop)
    def withdraw_doctor_stop(self, cmd: WithdrawDoctorStop) -> dict[str, Any]: return self._command(cmd)

    # --- queries ----------------------------------------------------------------------------------

    @rpc
    @contract()
    def list_hospitals(self) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.hospitals(cur, self.now().date())

    @rpc
    @contract()
    def get_hospital(self, hospital_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            found = readmodel.hospital(cur, hospital_id, self.now().date())
        if found is None:
            raise NotFound(f"医院 {hospital_id} 不存在 / unknown hospital", field="hospital_id")
        return found

    @rpc
    @contract()
    def holiday_preview(self, hospital_id: str, date: str, actor: dict[str, Any]) -> dict[str, Any]:
        """The sessions a holiday on `date` would stop (the gateway asks booking for their bookings);
        declare_holiday's confirm_stops is the length of `sessions`."""
        day, who = _day(date), _actor(actor)
        with self.db.transaction() as cur:
            found = readmodel.hospital(cur, hospital_id, day)
            sessions = readmodel.sessions_of_day(cur, hospital_id, day) if found else []
        return domain.holiday_preview(who, hospital_id, day, found, sessions, self.now())

    @rpc
    @contract()
    def list_departments(self, hospital_id: str) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.departments(cur, hospital_id)

    @rpc
    @contract()
    def list_doctors(self, hospital_id: str, department_id: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.doctors(cur, hospital_id, department_id)

    @rpc
    @contract()
    def get_doctor(self, doctor_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            found = readmodel.doctor(cur, doctor_id)
        if found is None:
            raise NotFound(f"医生 {doctor_id} 不存在 / unknown doctor", field="doctor_id")
        return found

    @rpc
    @contract(ScheduleQuery)
    def department_schedule(self, query: ScheduleQuery) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.department_schedule(cur, query.department_id, query.date_from, query.date_to,
                                                 self.now(), query.include_subdepartments)

    @rpc
    @contract()
    def get_session(self, session_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            found = readmodel.session(cur, session_id, self.now())
        if found is None:
            raise NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")
        return found

    @rpc
    @contract()
    def list_doctor_stops(self, hospital_id: str, state: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.doctor_stops(cur, hospital_id, state)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"日期 {value} 无效，应为 YYYY-MM-DD / invalid date", field="date") from None


def _actor(value: dict[str, Any]) -> Actor:
    try:
        return Actor.model_validate(value)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None
