"""The request bodies of /api/v1: each endpoint validates its body with one of these models, and the
OpenAPI document draws its schema from the same model (openapi.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator, model_validator

from contracts import schedule as sc
from contracts.envelope import Command, Contract, no_control_characters
from contracts.notification import VerificationPurpose

PHONE = re.compile(r"^1[3-9]\d{9}$")
SMS_CODE = r"^\d{6}$"


class _Body(BaseModel):
    """Unknown fields refused; no text may hold a control character (PostgreSQL text cannot hold
    NUL; the others break pages, SMS and HL7 segments): the field's error, never a crash."""

    model_config = ConfigDict(extra="forbid")

    _text = field_validator("*", mode="after")(no_control_characters)


class VerificationBody(_Body):
    phone: str = Field(pattern=PHONE.pattern)
    purpose: VerificationPurpose = "register"
    locale: Literal["zh", "en"] = "zh"


class RegisterBody(_Body):
    name: str = Field(min_length=1, max_length=40)
    id_number: str = Field(min_length=18, max_length=18, description="18-digit resident ID (GB 11643)")
    phone: str = Field(pattern=PHONE.pattern)
    sms_code: str = Field(pattern=SMS_CODE, description="the code POST /api/v1/verification-codes sent to phone")
    password: str | None = Field(default=None, min_length=8, max_length=128)
    locale: Literal["zh", "en"] = Field(default="zh", description="the language of the patient's SMS")


class PasswordResetBody(_Body):
    id_number: str = Field(min_length=18, max_length=18)
    phone: str = Field(pattern=PHONE.pattern, description="the registered mobile")
    sms_code: str = Field(pattern=SMS_CODE)
    password: str = Field(min_length=8, max_length=128, description="the new password")


class LoginBody(_Body):
    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = Field(
        description="mobile, resident ID or staff username")
    password: str = Field(min_length=1, max_length=128)


class BookBody(_Body):
    session_id: str = Field(min_length=1, max_length=80)
    patient_id: str | None = Field(default=None, max_length=64, description="the caller, for operators")


class CancelBody(BaseModel):
    """Nothing is needed; a JSON object, if sent, is accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class CheckInBody(_Body):
    id_number: str = Field(min_length=18, max_length=18)


class StaffBody(_Body):
    username: str = Field(pattern=r"^[a-z][a-z0-9._-]{2,63}$")
    password: str = Field(min_length=8, max_length=128)
    role: str = Field(pattern=r"^(operator|clerk|hospital_admin|analyst|platform_admin)$")
    hospital_id: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,40}$")
    name: str = Field(default="", max_length=40)
    doctor_id: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,60}$", description="role doctor: whose list")


class PasswordChangeBody(_Body):
    old_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=8, max_length=128)


class RefundBody(_Body):
    reason: str = Field(min_length=1, max_length=200, description="why the registration is given back (退号)")


# Set by the gateway from the login and the headers; a caller's own values are dropped, as ever.
GATEWAY_FIELDS = frozenset(Command.model_fields)


class _AdminBody(Contract):

    @model_validator(mode="before")
    @classmethod
    def _drop_gateway_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in GATEWAY_FIELDS}
        return data


def _admin_body(command: type[Command]) -> type[BaseModel]:
    """The schedule command as a hospital admin sends it: its own fields, without the gateway's.
    The schedule service validates the whole command again (with its cross-field rules)."""
    fields: dict[str, Any] = {name: (info.annotation, info) for name, info in command.model_fields.items()
                              if name not in GATEWAY_FIELDS}
    model: type[BaseModel] = create_model(command.__name__, __base__=_AdminBody, __doc__=command.__doc__,
                                          __module__=__name__, **fields)
    return model


_ADMIN_COMMANDS: dict[str, type[Command]] = {
    "update_hospital": sc.UpdateHospital, "cancel_holiday": sc.CancelHoliday,
    "create_department": sc.CreateDepartment, "update_department": sc.UpdateDepartment,
    "register_doctor": sc.RegisterDoctor, "update_doctor": sc.UpdateDoctor, "set_weekly_plan": sc.SetWeeklyPlan,
    "generate_sessions": sc.GenerateSessions, "schedule_session": sc.ScheduleSession,
    "change_session_quota": sc.ChangeSessionQuota, "change_fee": sc.ChangeFee,
    "change_booking_rules": sc.ChangeBookingRules, "declare_holiday": sc.DeclareHoliday,
    "request_doctor_stop": sc.RequestDoctorStop, "approve_doctor_stop": sc.ApproveDoctorStop,
    "reject_doctor_stop": sc.RejectDoctorStop,
}
ADMIN_BODIES: dict[str, type[BaseModel]] = {name: _admin_body(command) for name, command in _ADMIN_COMMANDS.items()}
HospitalBody = _admin_body(sc.RegisterHospital)


HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class SmsSettingsBody(_Body):
    """A hospital's SMS settings (notification.set_sms_settings); an absent field stays as it is."""

    reminder_time: str | None = Field(default=None, pattern=HHMM, description="reminders of tomorrow's visits")
    quiet_start: str | None = Field(default=None, pattern=HHMM, description="quiet hours: nothing that can wait")
    quiet_end: str | None = Field(default=None, pattern=HHMM)
    window_location: str | None = Field(default=None, max_length=60, description="where patients take their number")


class DoctorContactBody(_Body):
    phone: str = Field(default="", pattern=r"^(1[3-9]\d{9})?$", description="the doctor's mobile; empty removes it")
    notice: Literal["none", "each", "digest"] = "none"
    digest_time: str = Field(default="07:00", pattern=HHMM)


class ReminderRunBody(_Body):
    visit_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    hospital_id: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,40}$")


class HisEndpointBody(_Body):
    """A hospital's HIS connection (his_sync.set_endpoint)."""

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    receiving_application: str = Field(default="HIS", min_length=1, max_length=40)
    receiving_facility: str | None = Field(default=None, min_length=1, max_length=40,
                                           description="the hospital's code in its HIS (MSH-6)")
    sending_facility: str | None = Field(default=None, min_length=1, max_length=40, description="MSH-4 we send")
    charset: Literal["UNICODE UTF-8", "GB 18030-2000"] = "UNICODE UTF-8"
    rate_per_s: float = Field(default=20, ge=0.1, le=1000, description="messages per second the HIS takes")
    inbound_facility: str | None = Field(default=None, min_length=1, max_length=40,
                                         description="MSH-4 the hospital's HIS sends from: only it is accepted")
    inbound_secret: str | None = Field(default=None, min_length=16, max_length=128,
                                       description="the key the HIS signs its HTTP requests with (write-only)")
    enabled: bool = True
