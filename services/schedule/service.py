"""schedule: the nameko entrypoints. Each validates its contract, calls one handler, answers."""

from __future__ import annotations

from datetime import date
from typing import Any

from nameko.rpc import rpc

from contracts import (
    CreateDepartment,
    NotFound,
    RegisterDoctor,
    RegisterHospital,
    ScheduleQuery,
    ScheduleSession,
)
from infra.providers import LogContext, ProjectionRunner, ServiceDatabase, Store, contract
from services.schedule import handlers, readmodel


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

    @rpc
    @contract(RegisterHospital)
    def register_hospital(self, cmd: RegisterHospital) -> dict[str, Any]:
        return self._answer(handlers.register_hospital(self.store, cmd))

    @rpc
    @contract(CreateDepartment)
    def create_department(self, cmd: CreateDepartment) -> dict[str, Any]:
        return self._answer(handlers.create_department(self.store, cmd))

    @rpc
    @contract(RegisterDoctor)
    def register_doctor(self, cmd: RegisterDoctor) -> dict[str, Any]:
        return self._answer(handlers.register_doctor(self.store, cmd))

    @rpc
    @contract(ScheduleSession)
    def schedule_session(self, cmd: ScheduleSession) -> dict[str, Any]:
        return self._answer(handlers.schedule_session(self.store, cmd, today=date.today()))

    @rpc
    @contract()
    def list_hospitals(self) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.hospitals(cur)

    @rpc
    @contract()
    def list_departments(self, hospital_id: str) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.departments(cur, hospital_id)

    @rpc
    @contract(ScheduleQuery)
    def department_schedule(self, query: ScheduleQuery) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.department_schedule(cur, query.department_id, query.date_from, query.date_to)

    @rpc
    @contract()
    def get_session(self, session_id: str) -> dict[str, Any]:
        with self.db.transaction() as cur:
            found = readmodel.session(cur, session_id)
        if found is None:
            raise NotFound(f"出诊 {session_id} 不存在 / unknown session", field="session_id")
        return found
