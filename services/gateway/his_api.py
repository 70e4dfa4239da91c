"""gateway: the HIS endpoints (a mixin of GatewayService): each hospital's HIS connection (the
platform admin), each message's state and the retry or skip of a parked one (the hospital's
admin too), the 16:00 hand-over per booking. No HL7 text is shown: it carries the patient's
name and resident ID."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from contracts import InvalidInput
from services.gateway.api import api, call, day_param, json_response, listing_query
from services.gateway.auth import Principal, Role
from services.gateway.bodies import HisEndpointBody
from services.gateway.openapi import DAY, query

ADMINS: tuple[Role, ...] = ("hospital_admin", "platform_admin")
STATES = ("queued", "sending", "acked", "failed", "skipped")
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")


class HisEndpoints:
    his_sync: Any  # RpcProxy("his_sync"), declared on GatewayService

    @api("GET", "/api/v1/his/endpoints", "every hospital's HIS connection, its breaker and backlog", "his",
         roles=("platform_admin",))
    def his_endpoints(self, request: Request, principal: Principal) -> Response:
        return json_response({"endpoints": call(self.his_sync.endpoints)})

    @api("PUT", "/api/v1/hospitals/<string:hospital_id>/his", "set the hospital's HIS connection", "his",
         roles=("platform_admin",), body=HisEndpointBody)
    def set_his_endpoint(self, request: Request, principal: Principal, body: HisEndpointBody,
                         hospital_id: str) -> Response:
        return json_response(call(self.his_sync.set_endpoint,
                                  {**body.model_dump(exclude_none=True), "hospital_id": hospital_id},
                                  principal.actor()))

    @api("GET", "/api/v1/his/messages", "messages to the HIS and their state, newest first (no HL7 text)", "his",
         roles=ADMINS, query=(query("hospital_id"), query("status", {"type": "string", "enum": list(STATES)}),
                              query("limit", {"type": "integer", "minimum": 1, "maximum": 500})))
    def his_messages(self, request: Request, principal: Principal) -> Response:
        hospital_id, status, limit = listing_query(request, principal, STATES)
        return json_response({"messages": call(self.his_sync.messages, hospital_id, status,
                                               limit)})

    @api("POST", "/api/v1/his/messages/<string:message_id>/<string:action>",
         "send a parked message again (retry) or give it up (skip)", "his", roles=ADMINS)
    def his_requeue(self, request: Request, principal: Principal, message_id: str, action: str) -> Response:
        if action not in ("retry", "skip"):
            raise InvalidInput("action: retry or skip", field="action")
        return json_response(call(self.his_sync.requeue, message_id, principal.actor(), action == "skip"))

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/handover",
         "the 16:00 hand-over of a visit day: each paid phone booking and what the HIS answered", "his",
         roles=ADMINS, query=(query("date", DAY),))
    def his_handover(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        day = day_param(request.args.get("date"), datetime.now(HOSPITAL_TZ).date() + timedelta(days=1), "date")
        found = call(self.his_sync.handover, hospital_id, day.isoformat())
        rows = found["messages"]
        summary = {state: sum(1 for r in rows if r["status"] == state) for state in STATES}
        return json_response({"hospital_id": hospital_id, "date": day.isoformat(), "summary": summary,
                              "handed_over": found["handed_over"], "bookings": found["bookings"],
                              "handed_over_at": found["handed_over_at"], "messages": rows})

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/his/reconciliation",
         "对账: a day's messages to the HIS, sent vs acknowledged, every difference listed", "his", roles=ADMINS,
         query=(query("date", DAY),))
    def his_reconciliation(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        day = day_param(request.args.get("date"), datetime.now(HOSPITAL_TZ).date(), "date")
        return json_response(call(self.his_sync.reconciliation, hospital_id, day.isoformat()))

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/his/reconciliation.csv",
         "the reconciliation as CSV (UTF-8 with BOM, Chinese and English headers)", "his", roles=ADMINS,
         query=(query("date", DAY),), media_type="text/csv")
    def his_reconciliation_csv(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        day = day_param(request.args.get("date"), datetime.now(HOSPITAL_TZ).date(), "date")
        text = call(self.his_sync.reconciliation_csv, hospital_id, day.isoformat())
        return Response(text, mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="his-reconciliation-{hospital_id}-{day}.csv"'})
