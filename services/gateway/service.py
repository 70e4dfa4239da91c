"""gateway: the only door from the internet. Each HTTP entrypoint authenticates, authorises,
limits, validates, makes one or two RPCs and answers JSON; pages come from pages.py."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from nameko.rpc import RpcProxy
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from contracts import Forbidden, InvalidInput, NotFound, SessionFull
from infra.providers import LogContext, ServiceDatabase, SettingsProvider
from services.gateway import accounts, pages
from services.gateway.api import call, correlation_id, endpoint, json_response, read_json
from services.gateway.auth import CSRF_HEADER, SESSION_COOKIE, Principal, Unauthenticated, csrf_ok
from services.gateway.limits import GatewaySettings, Limits, LimitsProvider
from services.gateway.openapi import document

ADMIN_COMMANDS = frozenset({
    "create_department", "update_department", "register_doctor", "update_doctor", "set_weekly_plan",
    "generate_sessions", "schedule_session", "change_session_quota", "change_fee", "change_booking_rules",
    "declare_holiday", "request_doctor_stop", "approve_doctor_stop", "reject_doctor_stop",
})


def _day(value: str | None, default: date, field: str) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} 应为 YYYY-MM-DD / {field} must be YYYY-MM-DD", field=field) from None


def _state(session: dict[str, Any], avail: dict[str, Any], remaining: dict[str, int], now: datetime) -> str:
    """open / full / not_yet_open / closed / stopped, as a patient on the web sees it."""
    if avail.get("stopped") or session.get("state") == "stopped":
        return "stopped"
    if session.get("opens_at") and now < datetime.fromisoformat(session["opens_at"]):
        return "not_yet_open"
    if session.get("closes_at") and now >= datetime.fromisoformat(session["closes_at"]):
        return "closed"
    return "open" if remaining.get("web", 0) > 0 else "full"


class GatewayService(pages.Pages):
    name = "gateway"

    log = LogContext()
    db = ServiceDatabase(accounts.SCHEMA)
    settings: GatewaySettings = SettingsProvider(GatewaySettings)  # type: ignore[assignment]
    limits: Limits = LimitsProvider()  # type: ignore[assignment]
    schedule = RpcProxy("schedule")
    booking = RpcProxy("booking")
    notification = RpcProxy("notification")
    stats = RpcProxy("stats")

    # --- who is asking ----------------------------------------------------------------------

    def _principal(self, request: Request, required: bool = True) -> Principal | None:
        self.limits.client(request.remote_addr)
        auth = request.headers.get("Authorization", "")
        token, via_cookie = (auth[7:].strip(), False) if auth.startswith("Bearer ") else (
            request.cookies.get(SESSION_COOKIE, ""), True)
        principal = None
        if token:
            known, principal = self.limits.sessions.get(token, via_cookie)
            if not known:
                principal = accounts.session_principal(self.db, token, via_cookie)
                self.limits.sessions.put(token, via_cookie, principal)
        if principal is None:
            if required:
                raise Unauthenticated("请先登录 / please log in")
            return None
        if not csrf_ok(principal, request.method, request.headers.get(CSRF_HEADER)):
            raise Forbidden("CSRF 校验失败，请刷新页面 / missing or wrong CSRF token", field=CSRF_HEADER)
        return principal

    def _login_answer(self, principal: dict[str, Any], token: str, csrf: str, status: int = 200) -> Response:
        response = json_response({**principal, "token": token, "csrf_token": csrf}, status)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", path="/",
                            secure=self.settings.cookie_secure, max_age=accounts.SESSION_HOURS * 3600)
        return response

    # --- health and documents ---------------------------------------------------------------

    @http("GET", "/healthz")
    @endpoint
    def healthz(self, request: Request) -> Response:
        states = {}
        for name, method, args in (("schedule", self.schedule.list_hospitals, ()),
                                   ("stats", self.stats.summary, ()),
                                   ("notification", self.notification.outbox, (1,)),
                                   ("booking", self.booking.session_availability, ("-",))):
            try:
                call(method, *args, timeout=3)
                states[name] = "ok"
            except Exception:
                states[name] = "down"
        ok = all(v == "ok" for v in states.values())
        return json_response({"status": "ok" if ok else "degraded", "services": states}, 200 if ok else 503)

    @http("GET", "/api/v1/openapi.json")
    @endpoint
    def openapi(self, request: Request) -> Response:
        return json_response(document())

    # --- accounts ---------------------------------------------------------------------------

    @http("POST", "/api/v1/patients")
    @endpoint
    def register_patient(self, request: Request) -> Response:
        caller = self._principal(request, required=False)
        body = read_json(request)
        allowed = {"name", "id_number", "phone", "password"}
        if unknown := sorted(set(body) - allowed):
            raise InvalidInput(f"未知字段 / unknown field {unknown[0]}", field=unknown[0])
        operator = caller is not None and caller.role == "operator"
        if not operator and not body.get("password"):
            raise InvalidInput("请设置密码 / a password is required", field="password")
        key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        actor = caller.actor() if operator and caller else {"kind": "patient", "id": "self-registration"}
        answer = call(self.booking.register_patient, {**body, "idempotency_key": key[:100],
                                                      "correlation_id": correlation_id(request), "actor": actor})
        if operator:
            accounts.audit(self.db, caller, "register_caller", answer["patient_id"])  # type: ignore[arg-type]
            return json_response(answer, 201)
        if not answer.get("created"):
            return json_response({**answer, "message": "已注册，请登录 / already registered: please log in"}, 200)
        name = str(body.get("name") or "")[:40]
        token, csrf = accounts.open_session(self.db, "patient", answer["patient_id"], None, name)
        return self._login_answer({**answer, "role": "patient", "subject": answer["patient_id"],
                                   "hospital_id": None, "name": name}, token, csrf, 201)

    @http("POST", "/api/v1/auth/login")
    @endpoint
    def login(self, request: Request) -> Response:
        self.limits.client(request.remote_addr)
        body = read_json(request)
        username, password = str(body.get("username") or "").strip(), str(body.get("password") or "")
        if not username or not password:
            raise InvalidInput("请输入用户名和密码 / username and password are required", field="username")
        self.limits.login_allowed(username, request.remote_addr)
        staff = accounts.verify_staff(self.db, username, password)
        if staff is not None:
            subject, role, hospital_id, name = username, staff["role"], staff["hospital_id"], staff["name"]
        else:
            found = None
            if len(username) >= 11:
                try:
                    found = call(self.booking.authenticate_patient, username, password)
                except NotFound:
                    found = None
            if found is None:
                self.limits.login_failed(username, request.remote_addr)
                raise Unauthenticated("用户名或密码错误 / wrong username or password")
            subject, role, hospital_id, name = found["patient_id"], "patient", None, found.get("name", "")
        self.limits.login_succeeded(username)
        token, csrf = accounts.open_session(self.db, role, subject, hospital_id, name)
        return self._login_answer({"role": role, "subject": subject, "hospital_id": hospital_id, "name": name},
                                  token, csrf)

    @http("POST", "/api/v1/auth/logout")
    @endpoint
    def logout(self, request: Request) -> Response:
        self._principal(request)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else request.cookies.get(SESSION_COOKIE, "")
        accounts.close_session(self.db, token)
        self.limits.sessions.forget(token)
        response = Response(status=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @http("GET", "/api/v1/me")
    @endpoint
    def me(self, request: Request) -> Response:
        p = self._principal(request)
        assert p is not None
        return json_response({"role": p.role, "subject": p.subject, "name": p.name, "hospital_id": p.hospital_id,
                              "csrf_token": p.csrf})

    @http("POST", "/api/v1/staff")
    @endpoint
    def create_staff(self, request: Request) -> Response:
        p = self._principal(request)
        assert p is not None
        body = read_json(request)
        role, hospital_id = str(body.get("role") or ""), body.get("hospital_id")
        if p.role == "hospital_admin":
            if role not in ("clerk", "hospital_admin"):
                raise Forbidden("医院管理员只能添加本院工作人员 / a hospital admin adds staff of their hospital",
                                field="role")
            p.require_hospital(str(hospital_id))
        else:
            p.require("platform_admin")
        made = accounts.create_staff(self.db, str(body.get("username") or ""), str(body.get("password") or ""),
                                     role, hospital_id, str(body.get("name") or ""))
        return json_response(made, 201)

    @http("GET", "/api/v1/patients")
    @endpoint
    def find_patient(self, request: Request) -> Response:
        """The hotline finds a caller by resident ID (audited)."""
        p = self._principal(request)
        assert p is not None
        p.require("operator", "clerk", "hospital_admin", "platform_admin")
        id_number = (request.args.get("id_number") or "").strip()
        if len(id_number) != 18:
            raise InvalidInput("身份证号应为18位 / resident ID must have 18 characters", field="id_number")
        found = call(self.booking.find_patient, id_number)
        accounts.audit(self.db, p, "find_patient", found["patient_id"])
        return json_response(found)

    # --- what hospitals publish -------------------------------------------------------------

    @http("GET", "/api/v1/hospitals")
    @endpoint
    def hospitals(self, request: Request) -> Response:
        self.limits.client(request.remote_addr)
        return json_response({"hospitals": call(self.schedule.list_hospitals)})

    @http("GET", "/api/v1/hospitals/<string:hospital_id>/departments")
    @endpoint
    def departments(self, request: Request, hospital_id: str) -> Response:
        self.limits.client(request.remote_addr)
        return json_response({"departments": call(self.schedule.list_departments, hospital_id)})

    @http("GET", "/api/v1/hospitals/<string:hospital_id>/doctors")
    @endpoint
    def doctors(self, request: Request, hospital_id: str) -> Response:
        self.limits.client(request.remote_addr)
        return json_response({"doctors": call(self.schedule.list_doctors, hospital_id)})

    @http("GET", "/api/v1/departments/<string:department_id>/schedule")
    @endpoint
    def department_schedule(self, request: Request, department_id: str) -> Response:
        self.limits.client(request.remote_addr)
        start = _day(request.args.get("from"), date.today(), "from")
        end = _day(request.args.get("to"), start + timedelta(days=6), "to")
        if end < start or (end - start).days > 31:
            raise InvalidInput("日期范围无效（最多31天）/ date range invalid (at most 31 days)", field="to")
        sessions = call(self.schedule.department_schedule,
                        {"department_id": department_id, "date_from": start.isoformat(), "date_to": end.isoformat()})
        entries = []
        now = datetime.now(UTC)
        availability = call(self.booking.sessions_availability, [s["session_id"] for s in sessions]) \
            if sessions else {}
        for s in sessions:
            avail = availability.get(s["session_id"], {})
            remaining = avail.get("remaining") or {"web": 0, "phone": 0, "window": 0}
            entries.append({
                "session_id": s["session_id"],
                "doctor": {"doctor_id": s["doctor_id"], "name": s["doctor_name"], "title": s["doctor_title"]},
                "date": s["date"], "period": s["period"], "start": s["start"], "end": s["end"],
                "fee": s["fee"], "remaining": remaining, "opens_at": s.get("opens_at"),
                "closes_at": s.get("closes_at"), "state": _state(s, avail, remaining, now),
                "time_bands": s.get("time_bands") or [], "quota": s.get("quota"), "capacity": s.get("capacity"),
            })
        return json_response({"department_id": department_id, "sessions": entries})

    # --- appointments -----------------------------------------------------------------------

    @http("POST", "/api/v1/appointments")
    @endpoint
    def book(self, request: Request) -> Response:
        p = self._principal(request)
        assert p is not None
        body = read_json(request)
        key = request.headers.get("Idempotency-Key", "").strip()
        if not 8 <= len(key) <= 100:
            raise InvalidInput("缺少 Idempotency-Key 请求头（8-100字符）/ Idempotency-Key header (8-100 chars) "
                               "is required", field="Idempotency-Key")
        if p.role == "patient":
            patient_id, channel, operator_id = p.subject, "web", None
        elif p.role == "operator":
            patient_id, channel, operator_id = str(body.get("patient_id") or ""), "phone", p.subject
            if not patient_id:
                raise InvalidInput("请指定来电患者 / patient_id of the caller is required", field="patient_id")
        else:
            raise Forbidden("只有患者或话务员可以预约 / only patients and hotline operators book", field="role")
        self.limits.patient(patient_id)
        session_id = str(body.get("session_id") or "")
        if self.limits.sold_out.full(session_id, channel) and not self.limits.sold_out.is_retry(patient_id, key):
            raise SessionFull("该出诊已约满 / this session is full", field="session_id")
        self.limits.sold_out.forwarded(patient_id, key)
        command = {"session_id": session_id, "patient_id": patient_id, "channel": channel,
                   "operator_id": operator_id, "idempotency_key": key,
                   "correlation_id": correlation_id(request), "actor": p.actor()}
        try:
            answer = call(self.booking.book_appointment, command)
        except SessionFull:
            self.limits.sold_out.remember(session_id, channel)
            raise
        return json_response(answer, 201)

    @http("GET", "/api/v1/appointments")
    @endpoint
    def appointments(self, request: Request) -> Response:
        p = self._principal(request)
        assert p is not None
        if p.role == "patient":
            return json_response(call(self.booking.appointments_of, p.subject))
        if request.args.get("session_id"):
            return self._session_list(p, request.args["session_id"])
        if p.role == "operator" and request.args.get("patient_id"):
            patient_id = request.args["patient_id"]
            accounts.audit(self.db, p, "read_appointments", patient_id)
            return json_response(call(self.booking.appointments_of, patient_id))
        raise InvalidInput("请指定 session_id / session_id is required", field="session_id")

    @http("GET", "/api/v1/appointments/<string:appointment_id>")
    @endpoint
    def appointment(self, request: Request, appointment_id: str) -> Response:
        """One of my bookings; someone else's is answered as unknown (404), not forbidden."""
        p = self._principal(request)
        assert p is not None
        p.require("patient")
        return json_response(call(self.booking.appointment_of_patient, p.subject, appointment_id))

    @http("GET", "/api/v1/sessions/<string:session_id>/appointments")
    @endpoint
    def session_appointments(self, request: Request, session_id: str) -> Response:
        p = self._principal(request)
        assert p is not None
        return self._session_list(p, session_id)

    def _session_list(self, p: Principal, session_id: str) -> Response:
        p.require("clerk", "hospital_admin", "platform_admin")
        rows = call(self.booking.session_list, session_id, p.actor())
        accounts.audit(self.db, p, "read_session_list", session_id, patients=len(rows))
        return json_response({"session_id": session_id, "appointments": rows})

    @http("POST", "/api/v1/appointments/<string:appointment_id>/cancel")
    @endpoint
    def cancel(self, request: Request, appointment_id: str) -> Response:
        p = self._principal(request)
        assert p is not None
        p.require("patient", "operator")
        read_json(request) if request.get_data() else None
        key = request.headers.get("Idempotency-Key") or f"cancel:{appointment_id}"
        answer = call(self.booking.cancel_appointment, {
            "appointment_id": appointment_id, "idempotency_key": key[:100],
            "correlation_id": correlation_id(request), "actor": p.actor(),
        })
        return json_response(answer)

    @http("POST", "/api/v1/appointments/<string:code>/check-in")
    @endpoint
    def check_in(self, request: Request, code: str) -> Response:
        """取号: the path carries the booking code the patient shows; the body their resident ID."""
        p = self._principal(request)
        assert p is not None
        p.require("clerk", "hospital_admin")
        body = read_json(request)
        key = request.headers.get("Idempotency-Key") or f"check-in:{code}:{uuid.uuid4().hex}"
        answer = call(self.booking.check_in, {
            "code": code.upper(), "id_number": str(body.get("id_number") or ""), "idempotency_key": key[:100],
            "correlation_id": correlation_id(request), "actor": p.actor(),
        })
        accounts.audit(self.db, p, "check_in", answer["appointment_id"])
        return json_response(answer)

    # --- hospital staff -----------------------------------------------------------------------

    @http("POST", "/api/v1/admin/schedule/<string:command>")
    @endpoint
    def admin_schedule(self, request: Request, command: str) -> Response:
        """Schedule commands for hospital admins; schedule itself checks the hospital scope too."""
        p = self._principal(request)
        assert p is not None
        p.require("hospital_admin", "platform_admin")
        if command not in ADMIN_COMMANDS:
            raise NotFound(f"未知的命令 / unknown command {command}", field="command")
        body = read_json(request)
        body.pop("actor", None)
        key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        answer = call(getattr(self.schedule, command), {**body, "idempotency_key": key[:100],
                                                       "correlation_id": correlation_id(request),
                                                       "actor": p.actor()})
        return json_response(answer)

    @http("GET", "/api/v1/hospitals/<string:hospital_id>/stops")
    @endpoint
    def stops(self, request: Request, hospital_id: str) -> Response:
        p = self._principal(request)
        assert p is not None
        p.require_hospital(hospital_id)
        state = request.args.get("state") or None
        return json_response({"stops": call(self.schedule.list_doctor_stops, hospital_id, state)})

    @http("GET", "/api/v1/hospitals/<string:hospital_id>/phone-list")
    @endpoint
    def phone_list(self, request: Request, hospital_id: str) -> Response:
        """The paid phone bookings of a day, as handed to the HIS at 16:00 the day before."""
        p = self._principal(request)
        assert p is not None
        p.require_hospital(hospital_id)
        day = _day(request.args.get("date"), date.today() + timedelta(days=1), "date")
        rows = call(self.booking.phone_list, hospital_id, day.isoformat())
        accounts.audit(self.db, p, "read_phone_list", hospital_id, date=day.isoformat(), patients=len(rows))
        return json_response({"hospital_id": hospital_id, "date": day.isoformat(), "appointments": rows})

    @http("GET", "/api/v1/audit")
    @endpoint
    def audit_log(self, request: Request) -> Response:
        p = self._principal(request)
        assert p is not None
        p.require("platform_admin")
        return json_response({"entries": accounts.audit_entries(self.db)})

    # --- statistics and development -------------------------------------------------------

    @http("GET", "/api/v1/stats/summary")
    @endpoint
    def stats_summary(self, request: Request) -> Response:
        p = self._principal(request)
        assert p is not None
        p.require("analyst", "platform_admin")
        return json_response(call(self.stats.summary))

    @http("GET", "/api/v1/dev/sms")
    @endpoint
    def sms_outbox(self, request: Request) -> Response:
        self.limits.client(request.remote_addr)
        if not self.settings.dev_pages:
            raise NotFound("仅限开发环境 / development only", field="path")
        return json_response({"messages": call(self.notification.outbox, 100)})
