"""The OpenAPI 3.1 document of /api/v1, built from the same pydantic models that validate.

Every operation documents its success answer and, as `default`, the error shape every refusal
has; schemathesis fuzzes the running gateway against this document in the test suite.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts import schedule as sc


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterBody(_Body):
    name: str = Field(min_length=1, max_length=40)
    id_number: str = Field(min_length=18, max_length=18, description="18-digit resident ID (GB 11643)")
    phone: str = Field(pattern=r"^1[3-9]\d{9}$")
    password: str | None = Field(default=None, min_length=8, max_length=128)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=64, description="mobile, resident ID or staff username")
    password: str = Field(min_length=1, max_length=128)


class BookBody(_Body):
    session_id: str = Field(min_length=1, max_length=80)
    patient_id: str | None = Field(default=None, max_length=64, description="the caller, for operators")


class CheckInBody(_Body):
    id_number: str = Field(min_length=18, max_length=18)


class StaffBody(_Body):
    username: str = Field(min_length=3, max_length=64)
    password: str = Field(min_length=8, max_length=128)
    role: str = Field(pattern=r"^(operator|clerk|hospital_admin|analyst|platform_admin)$")
    hospital_id: str | None = None
    name: str = ""


_ADMIN_BODIES: dict[str, type[BaseModel]] = {
    "create_department": sc.CreateDepartment, "update_department": sc.UpdateDepartment,
    "register_doctor": sc.RegisterDoctor, "update_doctor": sc.UpdateDoctor, "set_weekly_plan": sc.SetWeeklyPlan,
    "generate_sessions": sc.GenerateSessions, "schedule_session": sc.ScheduleSession,
    "change_session_quota": sc.ChangeSessionQuota, "change_fee": sc.ChangeFee,
    "change_booking_rules": sc.ChangeBookingRules, "declare_holiday": sc.DeclareHoliday,
    "request_doctor_stop": sc.RequestDoctorStop, "approve_doctor_stop": sc.ApproveDoctorStop,
    "reject_doctor_stop": sc.RejectDoctorStop,
}

_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}},
}
_OBJECT = {"type": "object"}
_APPOINTMENT = {"type": "object", "required": ["appointment_id", "code", "sequence_number", "status"],
                "properties": {"appointment_id": {"type": "string"}, "code": {"type": "string"},
                               "sequence_number": {"type": "integer"}, "status": {"type": "string"},
                               "arrival_window": {"type": ["string", "null"]}}}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _op(summary: str, ok: int = 200, body: dict[str, Any] | None = None, answer: dict[str, Any] | None = None,
        auth: bool = True, params: list[dict[str, Any]] | None = None, tag: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "tags": [tag] if tag else [],
        "responses": {str(ok): {"description": "OK", "content": {"application/json": {"schema": answer or _OBJECT}}}
                      if ok != 204 else {"description": "no content"},
                      "default": {"description": "refusal", "content": {"application/json": {"schema": _ERROR}}}},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


def _path(name: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query(name: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema or {"type": "string"}}


_KEY = {"name": "Idempotency-Key", "in": "header", "required": True,
        "schema": {"type": "string", "minLength": 8, "maxLength": 100}}


@cache
def document() -> dict[str, Any]:
    c: dict[str, Any] = {}
    day = {"type": "string", "format": "date"}
    paths: dict[str, Any] = {
        "/api/v1/patients": {
            "post": _op("register a patient (real name); answers a login session", 201, _schema(RegisterBody, c),
                        auth=False, tag="accounts"),
            "get": _op("find a caller by resident ID (operators; audited)", params=[
                _query("id_number", {"type": "string", "minLength": 18, "maxLength": 18}, True)], tag="accounts"),
        },
        "/api/v1/auth/login": {"post": _op("log in (patients by mobile or ID number, staff by username)", 200,
                                           _schema(LoginBody, c), auth=False, tag="accounts")},
        "/api/v1/auth/logout": {"post": _op("log out", 204, tag="accounts")},
        "/api/v1/me": {"get": _op("who is logged in, with the CSRF token for pages", tag="accounts")},
        "/api/v1/staff": {"post": _op("create a staff account", 201, _schema(StaffBody, c), tag="accounts")},
        "/api/v1/hospitals": {"get": _op("hospitals", auth=False, tag="schedule")},
        "/api/v1/hospitals/{hospital_id}/departments": {
            "get": _op("departments of a hospital", auth=False, params=[_path("hospital_id")], tag="schedule")},
        "/api/v1/hospitals/{hospital_id}/doctors": {
            "get": _op("doctors of a hospital", auth=False, params=[_path("hospital_id")], tag="schedule")},
        "/api/v1/departments/{department_id}/schedule": {
            "get": _op("the schedule table of a department", auth=False, params=[
                _path("department_id"), _query("from", day), _query("to", day)], tag="schedule")},
        "/api/v1/appointments": {
            "post": _op("book (patients: web; operators: phone, for the caller)", 201, _schema(BookBody, c),
                        _APPOINTMENT, params=[_KEY], tag="appointments"),
            "get": _op("my bookings; a session's list (staff); a caller's bookings (operators)", params=[
                _query("session_id"), _query("patient_id")], tag="appointments"),
        },
        "/api/v1/appointments/{appointment_id}": {
            "get": _op("one of my bookings (patients)", answer=_APPOINTMENT, params=[_path("appointment_id")],
                       tag="appointments")},
        "/api/v1/appointments/{appointment_id}/cancel": {
            "post": _op("cancel until the cut-off", params=[_path("appointment_id")], tag="appointments")},
        "/api/v1/appointments/{code}/check-in": {
            "post": _op("check in at the window with the booking code and resident ID (clerks)",
                        body=_schema(CheckInBody, c), params=[_path("code", "the 8-character booking code")],
                        tag="appointments")},
        "/api/v1/sessions/{session_id}/appointments": {
            "get": _op("the day's list of a session (staff of its hospital; audited)",
                       params=[_path("session_id")], tag="hospital")},
        "/api/v1/hospitals/{hospital_id}/stops": {
            "get": _op("doctor stops (hospital staff)", params=[_path("hospital_id"), _query("state")],
                       tag="hospital")},
        "/api/v1/hospitals/{hospital_id}/phone-list": {
            "get": _op("paid phone bookings of a day, the 16:00 hand-over (hospital staff)",
                       params=[_path("hospital_id"), _query("date", day)], tag="hospital")},
        "/api/v1/audit": {"get": _op("staff reads of patient data (platform admin)", tag="hospital")},
        "/api/v1/stats/summary": {"get": _op("province-wide statistics (analysts)", tag="stats")},
        "/api/v1/dev/sms": {"get": _op("the SMS outbox (development)", auth=False, tag="development")},
        "/api/v1/openapi.json": {"get": _op("this document", auth=False, tag="development")},
    }
    for command, model in sorted(_ADMIN_BODIES.items()):
        paths[f"/api/v1/admin/schedule/{command}"] = {"post": _op(
            f"schedule command {command} (hospital admins; idempotency key and actor are added by the gateway)",
            body=_schema(model, c), tag="hospital")}
    for name in list(c):
        props = c[name].get("properties", {})
        for hidden in ("idempotency_key", "actor", "correlation_id"):
            props.pop(hidden, None)
        if "required" in c[name]:
            c[name]["required"] = [r for r in c[name]["required"] if r not in ("idempotency_key", "actor")]
    return {
        "openapi": "3.1.0",
        "info": {"title": "河北省预约诊疗服务平台 API / Hebei appointment platform API", "version": "1.0.0",
                 "description": "Errors are {\"error\": {\"code\", \"message\", \"field\"}}; 429 carries Retry-After."},
        "servers": [{"url": "/"}],
        "components": {"schemas": c, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "appt_session"}}},
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    }
