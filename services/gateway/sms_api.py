"""gateway: the SMS endpoints (a mixin of GatewayService, as pages.Pages is): delivery states and
the retry of a parked message for operators, the counts for the analyst, each hospital's SMS
settings and each doctor's contact for the hospital's admin, and the operator's reminder run.
Message texts are not shown here (a text may hold a verification code): only the development
outbox (/dev/sms) shows them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from contracts import InvalidInput
from services.gateway.api import api, call, day_param, json_response, listing_query
from services.gateway.auth import Principal, Role
from services.gateway.bodies import DoctorContactBody, ReminderRunBody, SmsSettingsBody
from services.gateway.openapi import DAY, query

ADMINS: tuple[Role, ...] = ("hospital_admin", "platform_admin")
STATES = ("queued", "sending", "sent", "delivered", "failed", "withdrawn")
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")


class SmsEndpoints:
    notification: Any  # RpcProxy("notification"), declared on GatewayService
    schedule: Any

    @api("GET", "/api/v1/sms/messages", "SMS delivery states, newest first, without text (a hospital admin sees "
         "their hospital's)", "sms", roles=ADMINS,
         query=(query("status", {"type": "string", "enum": list(STATES)}), query("hospital_id"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 500})))
    def sms_messages(self, request: Request, principal: Principal) -> Response:
        hospital_id, status, limit = listing_query(request, principal, STATES)
        return json_response({"messages": call(self.notification.messages, status, limit,
                                               hospital_id)})

    @api("POST", "/api/v1/sms/messages/<string:message_id>/retry", "send a failed (parked) SMS again", "sms",
         roles=ADMINS)
    def sms_retry(self, request: Request, principal: Principal, message_id: str) -> Response:
        return json_response(call(self.notification.retry_message, message_id, principal.actor()))

    @api("GET", "/api/v1/sms/counts", "SMS queued in a date range (default: the last 30 days) by template and "
         "state", "sms", roles=("analyst", *ADMINS),
         query=(query("from", DAY), query("to", DAY), query("hospital_id")))
    def sms_counts(self, request: Request, principal: Principal) -> Response:
        hospital_id = request.args.get("hospital_id") or None
        if principal.role == "hospital_admin":
            hospital_id = principal.hospital_id
        today = datetime.now(HOSPITAL_TZ).date()
        last = day_param(request.args.get("to"), today, "to")
        first = day_param(request.args.get("from"), last - timedelta(days=29), "from")
        if first > last:
            raise InvalidInput("开始日期晚于结束日期 / from is after to", field="from")
        return json_response({"from": first.isoformat(), "to": last.isoformat(), "hospital_id": hospital_id,
                              "counts": call(self.notification.delivery_counts, first.isoformat(), last.isoformat(),
                                             hospital_id)})

    @api("POST", "/api/v1/sms/reminders", "queue the reminders of a visit day now (a second run queues nothing)",
         "sms", roles=ADMINS, body=ReminderRunBody)
    def sms_reminders(self, request: Request, principal: Principal, body: ReminderRunBody) -> Response:
        hospital_id = body.hospital_id or (principal.hospital_id if principal.role != "platform_admin" else None)
        return json_response(call(self.notification.run_reminders, body.visit_date, hospital_id, principal.actor()))

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/sms-settings",
         "the hospital's reminder hour, quiet hours and window location", "sms", roles=ADMINS)
    def sms_settings(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        return json_response(call(self.notification.sms_settings, hospital_id))

    @api("PUT", "/api/v1/hospitals/<string:hospital_id>/sms-settings", "change the hospital's SMS settings", "sms",
         roles=ADMINS, body=SmsSettingsBody)
    def change_sms_settings(self, request: Request, principal: Principal, body: SmsSettingsBody,
                            hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        return json_response(call(self.notification.set_sms_settings,
                                  {**body.model_dump(exclude_none=True), "hospital_id": hospital_id},
                                  principal.actor()))

    @api("GET", "/api/v1/doctors/<string:doctor_id>/contact", "a doctor's SMS contact (masked) and choice", "sms",
         roles=("doctor", *ADMINS))
    def doctor_contact(self, request: Request, principal: Principal, doctor_id: str) -> Response:
        return json_response(call(self.notification.doctor_contact, doctor_id, _doctor_actor(principal)))

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/doctor-contacts",
         "every doctor's SMS contact (masked) and choice at the hospital", "sms", roles=ADMINS)
    def doctor_contacts(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        return json_response({"contacts": call(self.notification.doctor_contacts, hospital_id, principal.actor())})

    @api("PUT", "/api/v1/doctors/<string:doctor_id>/contact", "set a doctor's mobile and SMS choice: none, each "
         "booking, or a daily digest of the next session", "sms", roles=ADMINS, body=DoctorContactBody)
    def change_doctor_contact(self, request: Request, principal: Principal, body: DoctorContactBody,
                              doctor_id: str) -> Response:
        return json_response(call(self.notification.set_doctor_contact,
                                  {**body.model_dump(), "doctor_id": doctor_id}, principal.actor()))


def _doctor_actor(principal: Principal) -> dict[str, Any]:
    """A doctor reads their own contact: the actor's id is the doctor's."""
    actor = dict(principal.actor())
    if principal.role == "doctor":
        actor["id"] = principal.doctor_id or ""
    return actor



