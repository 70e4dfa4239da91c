"""gateway: the only door from the internet. Each HTTP entrypoint is declared with `@api` (api.py),
which limits, authenticates, authorises and validates before the handler makes one or two RPCs and
answers JSON; pages come from pages.py."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from werkzeug.wrappers import Request, Response

from contracts import Forbidden, InvalidInput, NotFound
from infra.health import HealthChecks
from infra.logging import mask_id
from infra.metrics import Metrics
from infra.passwords import PASSWORDS
from infra.pii import PiiVault
from infra.providers import LogContext, ServiceDatabase, SettingsProvider, Vault
from infra.rpc import RpcProxy
from services.gateway import his_api, ops_api, pages, readmodel, sms_api, stats_api
from services.gateway.api import (
    ANYONE,
    NO_PUBLISH_RETRY,
    RPC_TIMEOUT,
    acting_for,
    api,
    call,
    correlation_id,
    idempotency_key,
    json_response,
    session_token,
)
from services.gateway.api import (
    day_param as _day,
)
from services.gateway.auth import SESSION_COOKIE, Principal, Role, Unauthenticated, log_in
from services.gateway.batching import Batcher
from services.gateway.bodies import (
    ADMIN_BODIES,
    PHONE,
    BookBody,
    CancelBody,
    CheckInBody,
    HospitalBody,
    LoginBody,
    PasswordChangeBody,
    PasswordResetBody,
    RefundBody,
    RegisterBody,
    StaffBody,
    VerificationBody,
)
from services.gateway.limits import GatewaySettings, Limits, LimitsProvider
from services.gateway.live import LiveFeed
from services.gateway.openapi import APPOINTMENT, DAY, document, query

HOSPITAL_STAFF: tuple[Role, ...] = ("clerk", "hospital_admin", "platform_admin")  # and the platform admin
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
BOOKINGS = Batcher()  # one per gateway process: bookings that arrive together leave in one RPC (batching.py)


def _today() -> date:
    return datetime.now(HOSPITAL_TZ).date()


def _state(session: dict[str, Any], avail: dict[str, Any], remaining: dict[str, int], now: datetime) -> str:
    """open / full / not_yet_open / closed / stopped, as a patient on the web sees it."""
    if avail.get("stopped") or session.get("state") == "stopped":
        return "stopped"
    if session.get("opens_at") and now < datetime.fromisoformat(session["opens_at"]):
        return "not_yet_open"
    if session.get("closes_at") and now >= datetime.fromisoformat(session["closes_at"]):
        return "closed"
    return "open" if remaining.get("web", 0) > 0 else "full"


def _entry(s: dict[str, Any], avail: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One line of the schedule table."""
    remaining = avail.get("remaining") or {"web": 0, "phone": 0, "window": 0}
    return {
        "session_id": s["session_id"],
        "doctor": {"doctor_id": s["doctor_id"], "name": s["doctor_name"], "title": s["doctor_title"]},
        "date": s["date"], "period": s["period"], "start": s["start"], "end": s["end"],
        "fee": s["fee"], "remaining": remaining, "opens_at": s.get("opens_at"),
        "closes_at": s.get("closes_at"), "state": _state(s, avail, remaining, now),
        "time_bands": s.get("time_bands") or [], "quota": s.get("quota"), "capacity": s.get("capacity"),
    }


class GatewayService(pages.Pages, ops_api.OpsEndpoints, sms_api.SmsEndpoints, his_api.HisEndpoints,
                     stats_api.StatsEndpoints):
    """Each endpoint is declared once with `@api` (route, roles, body model, limit class): the gate in
    api.py checks all of it before the handler runs, and openapi.py documents it from the same line."""

    name = "gateway"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    settings: GatewaySettings = SettingsProvider(GatewaySettings)
    limits: Limits = LimitsProvider()
    vault: PiiVault = Vault()
    schedule = RpcProxy("schedule", retry_policy=NO_PUBLISH_RETRY)
    booking = RpcProxy("booking", retry_policy=NO_PUBLISH_RETRY)
    notification = RpcProxy("notification", retry_policy=NO_PUBLISH_RETRY)
    stats = RpcProxy("stats", retry_policy=NO_PUBLISH_RETRY)
    his_sync = RpcProxy("his_sync", retry_policy=NO_PUBLISH_RETRY)
    live: LiveFeed = LiveFeed()
    metrics = Metrics()
    checks: HealthChecks = HealthChecks()
    passwords = PASSWORDS  # argon2id, a dummy hash for unknown accounts (infra.passwords)

    # --- documents (health: ops_api.py) --------------------------------------------------------

    @api("GET", "/api/v1/openapi.json", "this document", "development", limit=None)
    def openapi(self, request: Request) -> Response:
        return json_response(document(type(self)))

    # --- accounts ---------------------------------------------------------------------------

    @api("POST", "/api/v1/verification-codes",
         "send a 6-digit SMS code that proves the caller holds this mobile (registration, password reset)",
         "accounts", body=VerificationBody, limit="sms", status=202)
    def send_verification_code(self, request: Request, body: VerificationBody) -> Response:
        return json_response(call(self.notification.send_verification_code, body.model_dump()), 202)

    @api("POST", "/api/v1/patients", "register a patient (real name, a mobile proved by its SMS code); "
         "answers a login session", "accounts", body=RegisterBody, optional_login=True, status=201)
    def register_patient(self, request: Request, principal: Principal | None, body: RegisterBody) -> Response:
        """Whether a resident ID has an account is told only to a caller who proved a phone: the
        code is checked first, then booking answers 409 with the existing account's masked phone."""
        operator = principal if principal is not None and principal.role == "operator" else None
        if operator is None and not body.password:
            raise InvalidInput("请设置密码 / a password is required", field="password")
        self._verified(body.phone, "register", body.sms_code)
        actor = operator.actor() if operator else {"kind": "patient", "id": "self-registration"}
        answer = call(self.booking.register_patient, {
            **body.model_dump(exclude_unset=True, exclude={"sms_code"}),
            "idempotency_key": idempotency_key(request, uuid.uuid4().hex),
            "correlation_id": correlation_id(request), "actor": actor})
        if operator:
            readmodel.audit(self.db, operator, "register_caller", answer["patient_id"])
            return json_response(answer, 201)
        if not answer.get("created"):
            return json_response({**answer, "message": "已注册，请登录 / already registered: please log in"}, 200)
        token, csrf = readmodel.open_session(self.db, self.vault, "patient", answer["patient_id"], None, body.name)
        return self._login_answer({**answer, "role": "patient", "subject": answer["patient_id"],
                                   "hospital_id": None, "name": body.name}, token, csrf, 201)

    @api("POST", "/api/v1/auth/password-reset", "a new password, proved by an SMS code to the registered mobile",
         "accounts", body=PasswordResetBody)
    def reset_password(self, request: Request, body: PasswordResetBody) -> Response:
        self._verified(body.phone, "reset_password", body.sms_code)
        answer = call(self.booking.reset_patient_password, {
            "id_number": body.id_number, "phone": body.phone, "password": body.password,
            "idempotency_key": idempotency_key(request, uuid.uuid4().hex),
            "correlation_id": correlation_id(request), "actor": {"kind": "patient", "id": "password-reset"}})
        # whoever held the old password is logged out (other gateways' caches within 10 s)
        readmodel.close_sessions_of(self.db, "patient", answer["patient_id"])
        self.limits.sessions.forget_subject("patient", answer["patient_id"])
        return json_response({"phone_masked": answer["phone_masked"],
                              "message": "密码已重置，请登录 / password reset: please log in"})

    @api("POST", "/api/v1/auth/login", "log in (patients by mobile or ID number, staff by username)", "accounts",
         body=LoginBody, limit="login")
    def login(self, request: Request, body: LoginBody, attempt: list[str]) -> Response:
        """The attempt was counted as failed by the gate before any password is checked; a right
        password gives it back. Patients (a mobile or ID) are checked by booking, staff here: one
        argon2 verification either way, for a known account or not (auth.log_in)."""
        who = log_in(body.username, body.password, lambda username: readmodel.staff_credentials(self.db, username),
                     self._authenticate_patient, self.passwords)
        if who is None:
            raise Unauthenticated("用户名或密码错误 / wrong username or password")
        readmodel.login_succeeded(self.db, attempt)
        token, csrf = readmodel.open_session(self.db, self.vault, who.role, who.subject, who.hospital_id, who.name,
                                             who.doctor_id)
        return self._login_answer({"role": who.role, "subject": who.subject, "hospital_id": who.hospital_id,
                                   "name": who.name, "doctor_id": who.doctor_id}, token, csrf)

    @api("POST", "/api/v1/auth/logout", "log out", "accounts", roles=ANYONE, status=204)
    def logout(self, request: Request, principal: Principal) -> Response:
        token, _ = session_token(request)
        readmodel.close_session(self.db, token)
        self.limits.sessions.forget(token)
        response = Response(status=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @api("GET", "/api/v1/me", "who is logged in, with the CSRF token for pages", "accounts", roles=ANYONE)
    def me(self, request: Request, principal: Principal) -> Response:
        p = principal
        hospital_name = self._hospital_names().get(p.hospital_id or "") if p.hospital_id else None
        return json_response({"role": p.role, "subject": p.subject, "name": p.name, "hospital_id": p.hospital_id,
                              "hospital_name": hospital_name, "doctor_id": p.doctor_id, "csrf_token": p.csrf})

    @api("POST", "/api/v1/auth/password", "change my password (staff; patients reset theirs by SMS)", "accounts",
         body=PasswordChangeBody, roles=ANYONE, status=204)
    def change_password(self, request: Request, principal: Principal, body: PasswordChangeBody) -> Response:
        if principal.role == "patient":
            try:
                call(self.booking.change_patient_password, principal.subject, body.old_password, body.new_password)
            except Forbidden as err:
                if err.code == "wrong_password":
                    raise Unauthenticated("原密码错误 / the current password is wrong") from None
                raise
        elif not readmodel.change_staff_password(self.db, principal.subject, body.old_password, body.new_password,
                                                self.passwords):
            raise Unauthenticated("原密码错误 / the current password is wrong")
        return Response(status=204)

    @api("GET", "/api/v1/staff", "staff accounts (a hospital admin sees their hospital's)", "accounts",
         roles=("hospital_admin", "platform_admin"), query=(query("hospital_id"),))
    def staff_accounts(self, request: Request, principal: Principal) -> Response:
        hospital_id = principal.hospital_id if principal.role == "hospital_admin" else request.args.get("hospital_id")
        return json_response({"staff": readmodel.staff_accounts(self.db, hospital_id)})

    @api("POST", "/api/v1/staff", "create a staff account", "accounts", body=StaffBody,
         roles=("hospital_admin", "platform_admin"), status=201)
    def create_staff(self, request: Request, principal: Principal, body: StaffBody) -> Response:
        """The platform admin creates any account (hospital admins included); a hospital admin the
        clerks and doctors of their own hospital. A doctor account names a doctor of that hospital."""
        hospital_id = body.hospital_id or (principal.hospital_id if principal.role == "hospital_admin" else None)
        principal.may_manage(body.role, hospital_id)
        if body.doctor_id:
            doctor = call(self.schedule.get_doctor, body.doctor_id)
            if doctor.get("hospital_id") != hospital_id:
                raise InvalidInput("该医生不属于此医院 / the doctor is not of this hospital", field="doctor_id")
        made = readmodel.create_staff(self.db, body.username, body.password, body.role, hospital_id, body.name,
                                      doctor_id=body.doctor_id, passwords=self.passwords)
        readmodel.audit(self.db, principal, "create_staff", body.username, role=body.role, hospital_id=hospital_id)
        return json_response(made, 201)

    @api("POST", "/api/v1/staff/<string:username>/<string:action>", "disable or enable a staff account; its "
         "sessions end at once (accounts are never deleted)", "accounts", roles=("hospital_admin", "platform_admin"),
         path_help={"action": "disable or enable"})
    def disable_staff(self, request: Request, principal: Principal, username: str, action: str) -> Response:
        if action not in ("disable", "enable"):
            raise NotFound(f"没有这个操作 / no action {action}", field="action")
        account = readmodel.staff_account(self.db, username)
        if account is None:
            raise NotFound("没有这个账号 / no such account", field="username")
        principal.may_manage(account["role"], account["hospital_id"])
        if username == principal.subject:
            raise InvalidInput("不能停用自己的账号 / you cannot disable your own account", field="username")
        readmodel.set_staff_disabled(self.db, username, action == "disable")
        readmodel.audit(self.db, principal, f"{action}_staff", username)
        return json_response({**account, "disabled": action == "disable"})

    @api("GET", "/api/v1/patients", "find a caller by resident ID (audited)", "accounts",
         roles=("operator", "clerk", "hospital_admin", "platform_admin"),
         query=(query("id_number", {"type": "string", "minLength": 18, "maxLength": 18}, required=True),))
    def find_patient(self, request: Request, principal: Principal) -> Response:
        id_number = (request.args.get("id_number") or "").strip()
        if len(id_number) != 18:
            raise InvalidInput("身份证号应为18位 / resident ID must have 18 characters", field="id_number")
        try:
            found = call(self.booking.find_patient, id_number, principal.actor())
        except NotFound:
            readmodel.audit(self.db, principal, "find_patient_not_found", mask_id(id_number))
            raise
        readmodel.audit(self.db, principal, "find_patient", found["patient_id"])
        return json_response(found)

    # --- what hospitals publish -------------------------------------------------------------

    @api("GET", "/api/v1/hospitals", "hospitals", "schedule")
    def hospitals(self, request: Request) -> Response:
        return json_response({"hospitals": call(self.schedule.list_hospitals)})

    @api("POST", "/api/v1/hospitals", "register a hospital (platform operators)", "hospital", body=HospitalBody,
         roles=("platform_admin",), status=201)
    def register_hospital(self, request: Request, principal: Principal, body: BaseModel) -> Response:
        answer = call(self.schedule.register_hospital, {
            **body.model_dump(mode="json", exclude_unset=True),
            "idempotency_key": idempotency_key(request, uuid.uuid4().hex),
            "correlation_id": correlation_id(request), "actor": principal.actor()})
        return json_response(answer, 201)

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/holiday-preview",
         "the sessions a holiday on that day would stop, and the bookings they hold", "hospital",
         roles=("hospital_admin", "platform_admin"), query=(query("date", DAY, required=True),))
    def holiday_preview(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        day = _day(request.args.get("date"), date.today(), "date")
        preview = call(self.schedule.holiday_preview, hospital_id, day.isoformat(), principal.actor())
        sessions = preview.get("sessions", [])
        rows = call(self.booking.hospital_day_list, hospital_id, day.isoformat(), principal.actor(), None, None) \
            if sessions else []
        to_cancel = Counter(r["session_id"] for r in rows if r["status"] in ("booked", "moved"))
        for x in sessions:
            x["booked"] = to_cancel.get(x["session_id"], 0)
        return json_response({**preview, "bookings": sum(x["booked"] for x in sessions)})

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/departments", "departments of a hospital", "schedule")
    def departments(self, request: Request, hospital_id: str) -> Response:
        return json_response({"departments": call(self.schedule.list_departments, hospital_id)})

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/doctors", "doctors of a hospital", "schedule")
    def doctors(self, request: Request, hospital_id: str) -> Response:
        return json_response({"doctors": call(self.schedule.list_doctors, hospital_id)})

    @api("GET", "/api/v1/departments/<string:department_id>/schedule", "the schedule table of a department",
         "schedule", query=(query("from", DAY), query("to", DAY)))
    def department_schedule(self, request: Request, department_id: str) -> Response:
        start = _day(request.args.get("from"), date.today(), "from")
        end = _day(request.args.get("to"), start + timedelta(days=6), "to")
        if end < start or (end - start).days > 31:
            raise InvalidInput("日期范围无效（最多31天）/ date range invalid (at most 31 days)", field="to")
        sessions = call(self.schedule.department_schedule,
                        {"department_id": department_id, "date_from": start.isoformat(), "date_to": end.isoformat()})
        availability = call(self.booking.sessions_availability, [s["session_id"] for s in sessions]) \
            if sessions else {}
        now = datetime.now(UTC)
        entries = [_entry(s, availability.get(s["session_id"], {}), now) for s in sessions]
        return json_response({"department_id": department_id, "sessions": entries})

    @api("GET", "/api/v1/live", "live notices of schedule changes: text/event-stream (send Accept: "
         "text/event-stream), id = store position, Last-Event-ID resumes; public, no patient data", "schedule",
         query=(query("department"), query("hospital"), query("session"), query("last_event_id")))
    def live_notices(self, request: Request) -> Response:
        """The stream is served after this worker returns (see live.py): it holds no worker."""
        return self.live.respond(request)

    # --- appointments -----------------------------------------------------------------------

    @api("POST", "/api/v1/appointments", "book (patients: web; operators: phone, for the caller)", "appointments",
         body=BookBody, roles=("patient", "operator"), limit="patient", idempotency_key=True, status=201,
         answer=APPOINTMENT)
    def book(self, request: Request, principal: Principal, body: BookBody) -> Response:
        key, patient_id = idempotency_key(request), acting_for(principal, body.patient_id)
        channel, operator_id = ("web", None) if principal.role == "patient" else ("phone", principal.subject)
        # No sold-out memory here any more: it answered a retry "full" without asking booking when
        # the gateway that had forwarded the first attempt was restarted (its memory of forwarded
        # keys gone), while the first attempt had booked the place (issue 14's fault run). Booking's
        # own sold-out path answers a repeat from its key event.
        command = {"session_id": body.session_id, "patient_id": patient_id, "channel": channel,
                   "operator_id": operator_id, "idempotency_key": key,
                   "correlation_id": correlation_id(request), "actor": principal.actor()}
        proxy = self.booking
        answer = BOOKINGS.submit(lambda commands, timeout: call(proxy.book_appointments, commands, timeout=timeout),
                                 command, RPC_TIMEOUT)
        return json_response(answer, 201)

    @api("GET", "/api/v1/appointments", "my bookings; a session's list (staff); a caller's bookings (operators)",
         "appointments", roles=("patient", "operator", "clerk", "hospital_admin", "platform_admin"),
         query=(query("session_id"), query("patient_id")))
    def appointments(self, request: Request, principal: Principal) -> Response:
        if principal.role == "patient":
            return json_response(call(self.booking.appointments_of, principal.subject))
        if request.args.get("session_id"):
            return self._session_list(principal, request.args["session_id"])
        if principal.role == "operator" and request.args.get("patient_id"):
            patient_id = request.args["patient_id"]
            readmodel.audit(self.db, principal, "read_appointments", patient_id)
            return json_response(call(self.booking.appointments_of, patient_id))
        raise InvalidInput("请指定 session_id / session_id is required", field="session_id")

    @api("GET", "/api/v1/appointments/<string:appointment_id>", "one of my bookings", "appointments",
         roles=("patient",), answer=APPOINTMENT)
    def appointment(self, request: Request, principal: Principal, appointment_id: str) -> Response:
        """Someone else's booking is answered as unknown (404), not forbidden."""
        return json_response(call(self.booking.appointment_of_patient, principal.subject, appointment_id))

    @api("GET", "/api/v1/sessions/<string:session_id>/appointments",
         "the day's list of a session (staff of its hospital; audited)", "hospital", roles=HOSPITAL_STAFF)
    def session_appointments(self, request: Request, principal: Principal, session_id: str) -> Response:
        return self._session_list(principal, session_id)

    @api("POST", "/api/v1/appointments/<string:appointment_id>/cancel", "cancel until the cut-off", "appointments",
         body=CancelBody, body_required=False, roles=("patient", "operator"))
    def cancel(self, request: Request, principal: Principal, body: CancelBody, appointment_id: str) -> Response:
        return json_response(call(self.booking.cancel_appointment, {
            "appointment_id": appointment_id,
            "idempotency_key": idempotency_key(request, f"cancel:{appointment_id}:{principal.subject}"),
            "correlation_id": correlation_id(request), "actor": principal.actor(),
        }))

    @api("POST", "/api/v1/appointments/<string:code>/check-in",
         "check in at the window with the booking code and resident ID", "appointments", body=CheckInBody,
         roles=("clerk", "hospital_admin"), path_help={"code": "the 8-character booking code"})
    def check_in(self, request: Request, principal: Principal, body: CheckInBody, code: str) -> Response:
        """取号: the path carries the booking code the patient shows; the body their resident ID."""
        answer = call(self.booking.check_in, {
            "code": code.upper(), "id_number": body.id_number,
            "idempotency_key": idempotency_key(request, f"check-in:{code}:{uuid.uuid4().hex}"),
            "correlation_id": correlation_id(request), "actor": principal.actor(),
        })
        readmodel.audit(self.db, principal, "check_in", answer["appointment_id"])
        return json_response(answer)

    @api("POST", "/api/v1/appointments/<string:code>/refund",
         "退号 at the window on the visit day: the fee goes back; the place is freed if the session has not started",
         "appointments", body=RefundBody, roles=("clerk", "hospital_admin"),
         path_help={"code": "the 8-character booking code"})
    def refund(self, request: Request, principal: Principal, body: RefundBody, code: str) -> Response:
        answer = call(self.booking.refund_at_window, {
            "code": code.upper(), "reason": body.reason,
            "idempotency_key": idempotency_key(request, f"refund:{code.upper()}:{uuid.uuid4().hex}"),
            "correlation_id": correlation_id(request), "actor": principal.actor()})
        readmodel.audit(self.db, principal, "refund", answer["appointment_id"], reason=body.reason)
        return json_response(answer)

    @api("GET", "/api/v1/appointments/by-code/<string:code>", "a booking by its code (the window; audited)",
         "hospital", roles=HOSPITAL_STAFF)
    def appointment_by_code(self, request: Request, principal: Principal, code: str) -> Response:
        row = call(self.booking.appointment_by_code, code.upper(), principal.actor())
        readmodel.audit(self.db, principal, "read_appointment", row["appointment_id"])
        return json_response(self._named([row], row.get("hospital_id") or principal.hospital_id)[0])

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/patient-bookings",
         "a patient's bookings at this hospital by resident ID, for one who lost the code (audited)", "hospital",
         roles=HOSPITAL_STAFF, query=(query("id_number", {"type": "string", "minLength": 18, "maxLength": 18},
                                            required=True),))
    def patient_bookings(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        id_number = (request.args.get("id_number") or "").strip().upper()
        if len(id_number) != 18:
            raise InvalidInput("身份证号应为18位 / resident ID must have 18 characters", field="id_number")
        try:
            found = call(self.booking.patient_bookings_at, id_number, hospital_id, principal.actor())
        except NotFound:
            readmodel.audit(self.db, principal, "find_bookings_not_found", mask_id(id_number))
            raise
        readmodel.audit(self.db, principal, "find_bookings", found["patient"]["patient_id"], hospital_id=hospital_id)
        return json_response({**found, "appointments": self._named(found["appointments"], hospital_id)})

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/day-list",
         "every booking of the hospital's sessions on a day, by department and doctor (the window; audited)",
         "hospital", roles=HOSPITAL_STAFF,
         query=(query("date", DAY), query("department_id"), query("doctor_id")))
    def day_list(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        day = _day(request.args.get("date"), _today(), "date")
        rows = call(self.booking.hospital_day_list, hospital_id, day.isoformat(), principal.actor(),
                    request.args.get("department_id") or None, request.args.get("doctor_id") or None)
        readmodel.audit(self.db, principal, "read_day_list", hospital_id, date=day.isoformat(), patients=len(rows))
        return json_response({"hospital_id": hospital_id, "hospital_name": self._hospital_names().get(hospital_id),
                              "date": day.isoformat(), "appointments": self._named(rows, hospital_id)})

    @api("GET", "/api/v1/doctors/<string:doctor_id>/day-list",
         "a doctor's bookings of a day, before the session (the doctor, staff of the hospital; audited)",
         "hospital", roles=("doctor", *HOSPITAL_STAFF), query=(query("date", DAY),))
    def doctor_day_list(self, request: Request, principal: Principal, doctor_id: str) -> Response:
        if principal.role == "doctor" and principal.doctor_id != doctor_id:
            raise Forbidden("医生只能查看本人的预约名单 / a doctor sees their own list", field="doctor_id")
        hospital_id = str(call(self.schedule.get_doctor, doctor_id)["hospital_id"])
        principal.require_hospital(hospital_id)
        day = _day(request.args.get("date"), _today(), "date")
        rows = call(self.booking.hospital_day_list, hospital_id, day.isoformat(), principal.actor(), None, doctor_id)
        readmodel.audit(self.db, principal, "read_doctor_list", doctor_id, date=day.isoformat(), patients=len(rows))
        return json_response({"hospital_id": hospital_id, "hospital_name": self._hospital_names().get(hospital_id),
                              "doctor_id": doctor_id, "date": day.isoformat(),
                              "appointments": self._named(rows, hospital_id)})

    # --- hospital staff -----------------------------------------------------------------------

    @api("POST", "/api/v1/admin/schedule/<string:command>",
         "schedule command {} (the idempotency key and the actor are added by the gateway)", "hospital",
         body=ADMIN_BODIES, body_by="command", roles=("hospital_admin", "platform_admin"))
    def admin_schedule(self, request: Request, principal: Principal, body: BaseModel, command: str) -> Response:
        """Schedule commands for hospital admins; schedule itself checks the hospital scope too."""
        return json_response(call(getattr(self.schedule, command), {
            **body.model_dump(mode="json", exclude_unset=True),
            "idempotency_key": idempotency_key(request, uuid.uuid4().hex),
            "correlation_id": correlation_id(request), "actor": principal.actor()}))

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/stops", "doctor stops (hospital staff)", "hospital",
         roles=HOSPITAL_STAFF, query=(query("state"),))
    def stops(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        principal.require_hospital(hospital_id)
        state = request.args.get("state") or None
        return json_response({"stops": call(self.schedule.list_doctor_stops, hospital_id, state)})

    @api("GET", "/api/v1/hospitals/<string:hospital_id>/phone-list",
         "paid phone bookings of a day, the 16:00 hand-over (hospital staff)", "hospital",
         roles=HOSPITAL_STAFF, query=(query("date", DAY),))
    def phone_list(self, request: Request, principal: Principal, hospital_id: str) -> Response:
        """The paid phone bookings of a day, as handed to the HIS at 16:00 the day before."""
        principal.require_hospital(hospital_id)
        day = _day(request.args.get("date"), date.today() + timedelta(days=1), "date")
        rows = call(self.booking.phone_list, hospital_id, day.isoformat())
        readmodel.audit(self.db, principal, "read_phone_list", hospital_id, date=day.isoformat(), patients=len(rows))
        return json_response({"hospital_id": hospital_id, "date": day.isoformat(), "appointments": rows})

    @api("GET", "/api/v1/audit", "staff reads of patient data", "hospital", roles=("platform_admin",))
    def audit_log(self, request: Request, principal: Principal) -> Response:
        return json_response({"entries": readmodel.audit_entries(self.db)})

    # --- statistics and development -------------------------------------------------------

    @api("GET", "/api/v1/stats/summary", "province-wide statistics", "stats", roles=("analyst", "platform_admin"))
    def stats_summary(self, request: Request, principal: Principal) -> Response:
        return json_response(call(self.stats.summary))

    @api("GET", "/api/v1/dev/sms", "the SMS outbox (platform operators; on where DEV_PAGES is set)", "development",
         roles=("platform_admin",), query=(query("phone", {"type": "string", "pattern": r"^1[3-9]\d{9}$"}),))
    def sms_outbox(self, request: Request, principal: Principal) -> Response:
        if not self.settings.dev_pages:
            raise NotFound("发件箱未开启 / the outbox is not enabled here", field="path")
        phone = request.args.get("phone") or None
        if phone is not None and not PHONE.match(phone):
            raise InvalidInput("手机号格式不正确 / phone must be a mainland mobile number", field="phone")
        return json_response({"messages": call(self.notification.outbox, 100, phone)})

    # --- helpers ------------------------------------------------------------------------------

    def _session_list(self, principal: Principal, session_id: str) -> Response:
        principal.require(*HOSPITAL_STAFF)
        rows = call(self.booking.session_list, session_id, principal.actor())
        readmodel.audit(self.db, principal, "read_session_list", session_id, patients=len(rows))
        return json_response({"session_id": session_id, "appointments": rows})

    def _hospital_names(self) -> dict[str, str]:
        return self.limits.names.get("hospitals", lambda: {
            h["hospital_id"]: h["name"] for h in call(self.schedule.list_hospitals)})

    def _named(self, rows: list[dict[str, Any]], hospital_id: str | None) -> list[dict[str, Any]]:
        """Rows of bookings with the names staff know their departments by, not their codes."""
        if not rows or not hospital_id:
            return rows
        departments = self.limits.names.get(f"departments:{hospital_id}", lambda: {
            d["department_id"]: d["name"] for d in call(self.schedule.list_departments, hospital_id)})
        return [{**row, "department_name": departments.get(row.get("department_id", ""), "")} for row in rows]

    def _authenticate_patient(self, username: str, password: str) -> dict[str, Any] | None:
        try:
            return call(self.booking.authenticate_patient, username, password)  # type: ignore[no-any-return]
        except NotFound:
            return None

    def _verified(self, phone: str, purpose: str, code: str) -> None:
        """The caller holds this phone: the SMS code they typed is right (refused otherwise)."""
        call(self.notification.check_verification_code, {"phone": phone, "purpose": purpose, "code": code})

    def _login_answer(self, principal: dict[str, Any], token: str, csrf: str, status: int = 200) -> Response:
        response = json_response({**principal, "token": token, "csrf_token": csrf}, status)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", path="/",
                            secure=self.settings.cookie_secure, max_age=readmodel.SESSION_HOURS * 3600)
        return response
