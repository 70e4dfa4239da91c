"""schedule: the nameko entrypoints. Each validates its contract, calls one handler, answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nameko.rpc import rpc

from contracts import (
    ApproveDoctorStop,
    ChangeBookingRules,
    ChangeFee,
    ChangeSessionQuota,
    CreateDepartment,
    DeclareHoliday,
    GenerateSessions,
    ImportPlan,
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
)
from infra.providers import LogContext, ProjectionRunner, ServiceDatabase, Store, contract
from services.schedule import handlers, readmodel
from services.schedule.domain import HOSPITAL_TZ, SessionRequest


def _now() -> datetime:
    return datetime.now(HOSPITAL_TZ)


class ScheduleService:
    name = "schedule"

    log = LogContext()
    store = Store()
    db = ServiceDatabase(readmodel.SCHEMA)
    projection = ProjectionRunner("schedule-readmodel", readmodel.apply, readmodel.TYPES)

    def _answer(self, result: dict[str, Any]) -> dict[str, Any]:
        # Read-your-writes: a query right after this command sees what it did.
        self.projection.wait_for(result["position"])
        return result

    # --- hospitals, departments, doctors ----------------------------------------------------------

    @rpc
    @contract(RegisterHospital)
    def register_hospital(self, cmd: RegisterHospital) -> dict[str, Any]:
        return self._answer(handlers.register_hospital(self.store, cmd))

    @rpc
    @contract(UpdateHospital)
    def update_hospital(self, cmd: UpdateHospital) -> dict[str, Any]:
        return self._answer(handlers.update_hospital(self.store, cmd))

    @rpc
    @contract(ChangeBookingRules)
    def change_booking_rules(self, cmd: ChangeBookingRules) -> dict[str, Any]:
        return self._answer(handlers.change_booking_rules(self.store, cmd))

    @rpc
    @contract(ChangeFee)
    def change_fee(self, cmd: ChangeFee) -> dict[str, Any]:
        return self._answer(handlers.change_fee(self.store, cmd))

    @rpc
    @contract(DeclareHoliday)
    def declare_holiday(self, cmd: DeclareHoliday) -> dict[str, Any]:
        return self._answer(handlers.declare_holiday(self.store, cmd))

    @rpc
    @contract(CreateDepartment)
    def create_department(self, cmd: CreateDepartment) -> dict[str, Any]:
        return self._answer(handlers.create_department(self.store, cmd))

    @rpc
    @contract(UpdateDepartment)
    def update_department(self, cmd: UpdateDepartment) -> dict[str, Any]:
        return self._answer(handlers.update_department(self.store, cmd))

    @rpc
    @contract(RegisterDoctor)
    def register_doctor(self, cmd: RegisterDoctor) -> dict[str, Any]:
        return self._answer(handlers.register_doctor(self.store, cmd))

    @rpc
    @contract(UpdateDoctor)
    def update_doctor(self, cmd: UpdateDoctor) -> dict[str, Any]:
        return self._answer(handlers.update_doctor(self.store, cmd))

    # --- plans and sessions -----------------------------------------------------------------------

    @rpc
    @contract(SetWeeklyPlan)
    def set_weekly_plan(self, cmd: SetWeeklyPlan) -> dict[str, Any]:
        return self._answer(handlers.set_weekly_plan(self.store, cmd))

    @rpc
    @contract(GenerateSessions)
    def generate_sessions(self, cmd: GenerateSessions) -> dict[str, Any]:
        with self.db.transaction() as cur:
            planned = readmodel.planned_doctors(cur, cmd.hospital_id)
        return self._answer(handlers.generate_sessions(self.store, cmd, _now(), planned))

    @rpc
    @contract(SessionRequest)  # ScheduleSession, its shape refusals naming their field
    def schedule_session(self, cmd: SessionRequest) -> dict[str, Any]:
        return self._answer(handlers.schedule_session(self.store, cmd, _now()))

    @rpc
    @contract(ChangeSessionQuota)
    def change_session_quota(self, cmd: ChangeSessionQuota) -> dict[str, Any]:
        return self._answer(handlers.change_session_quota(self.store, cmd, _now()))

    @rpc
    @contract(ImportPlan)
    def import_plan(self, cmd: ImportPlan) -> dict[str, Any]:
        return self._answer(handlers.import_plan(self.store, cmd, _now()))

    # --- doctor stops (停诊) ----------------------------------------------------------------------

    @rpc
    @contract(RequestDoctorStop)
    def request_doctor_stop(self, cmd: RequestDoctorStop) -> dict[str, Any]:
        return self._answer(handlers.request_doctor_stop(self.store, cmd, _now()))

    @rpc
    @contract(ApproveDoctorStop)
    def approve_doctor_stop(self, cmd: ApproveDoctorStop) -> dict[str, Any]:
        return self._answer(handlers.approve_doctor_stop(self.store, cmd, _now()))

    @rpc
    @contract(RejectDoctorStop)
    def reject_doctor_stop(self, cmd: RejectDoctorStop) -> dict[str, Any]:
        return self._answer(handlers.reject_doctor_stop(self.store, cmd, _now()))

    # --- queries ----------------------------------------------------------------------------------

    @rpc
    @contract()
    def list_hospitals(self) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.hospitals(cur)

    @rpc
    @contract()
    def get_hospital(self, hospital_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            found = readmodel.hospital(cur, hospital_id, _now().date())
        if found is None:
            raise NotFound(f"医院 {hospital_id} 不存在 / unknown hospital", field="hospital_id")
        return found

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
            return readmodel.department_schedule(cur, query.department_id, query.date_from, query.date_to, _now(),
                                                 query.include_subdepartments)

    @rpc
    @contract()
    def get_session(self, session_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            found = readmodel.session(cur, session_id, _now())
        if found is None:
            raise NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")
        return found

    @rpc
    @contract()
    def list_doctor_stops(self, hospital_id: str, state: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.doctor_stops(cur, hospital_id, state)
