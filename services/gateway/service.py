"""gateway: HTTP entrypoints. Each parses the request, makes one or two RPCs, answers JSON/HTML."""

from __future__ import annotations

import html
import time
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from contracts import InvalidInput, SessionFull
from infra.providers import LogContext
from services.gateway.api import call, correlation_id, endpoint, json_response, read_json


def _day(value: str | None, default: date, field: str) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} 应为 YYYY-MM-DD / {field} must be YYYY-MM-DD", field=field) from None


class SoldOutCache:
    """Sessions booking just answered "full" for, per channel, for `ttl` seconds: a sold-out
    session's crowd is answered here without a booking round trip. It can only hide a slot
    freed within the last `ttl` seconds, never invent one."""

    def __init__(self, ttl: float = 1.0, remember_keys: int = 200_000) -> None:
        self.ttl = ttl
        self._until: dict[tuple[str, str], float] = {}
        # Requests this gateway has forwarded: a retry of one of them (same patient and key) always
        # goes to booking, which answers a repeat with the first answer, even when the session
        # has sold out since. (A retry through another gateway replica is not covered.)
        self._forwarded: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_keys = remember_keys

    def is_retry(self, patient_id: str, key: str) -> bool:
        return (patient_id, key) in self._forwarded

    def forwarded(self, patient_id: str, key: str) -> None:
        self._forwarded[(patient_id, key)] = None
        if len(self._forwarded) > self._max_keys:
            self._forwarded.popitem(last=False)

    def full(self, session_id: str, channel: str) -> bool:
        until = self._until.get((session_id, channel))
        return until is not None and time.monotonic() < until

    def remember(self, session_id: str, channel: str) -> None:
        self._until[(session_id, channel)] = time.monotonic() + self.ttl


class SoldOut(DependencyProvider):
    def setup(self) -> None:
        self.cache = SoldOutCache()

    def get_dependency(self, worker_ctx: Any) -> SoldOutCache:
        return self.cache


class GatewayService:
    name = "gateway"

    log = LogContext()
    sold_out = SoldOut()
    schedule = RpcProxy("schedule")
    booking = RpcProxy("booking")
    notification = RpcProxy("notification")
    stats = RpcProxy("stats")

    @http("GET", "/healthz")
    @endpoint
    def healthz(self, request: Request) -> Response:
        states = {}
        for name, proxy, method in (("schedule", self.schedule, "list_hospitals"),
                                    ("stats", self.stats, "summary"),
                                    ("notification", self.notification, "outbox")):
            try:
                call(getattr(proxy, method), timeout=3)
                states[name] = "ok"
            except Exception:
                states[name] = "down"
        try:
            call(self.booking.session_availability, "-", timeout=3)
            states["booking"] = "ok"
        except Exception:
            states["booking"] = "down"
        ok = all(v == "ok" for v in states.values())
        return json_response({"status": "ok" if ok else "degraded", "services": states}, 200 if ok else 503)

    @http("GET", "/api/v1/hospitals")
    @endpoint
    def hospitals(self, request: Request) -> Response:
        return json_response({"hospitals": call(self.schedule.list_hospitals)})

    @http("GET", "/api/v1/hospitals/<string:hospital_id>/departments")
    @endpoint
    def departments(self, request: Request, hospital_id: str) -> Response:
        return json_response({"departments": call(self.schedule.list_departments, hospital_id)})

    @http("GET", "/api/v1/departments/<string:department_id>/schedule")
    @endpoint
    def department_schedule(self, request: Request, department_id: str) -> Response:
        start = _day(request.args.get("from"), date.today(), "from")
        end = _day(request.args.get("to"), start + timedelta(days=6), "to")
        if end < start or (end - start).days > 31:
            raise InvalidInput("日期范围无效（最多31天）/ date range invalid (at most 31 days)", field="to")
        sessions = call(self.schedule.department_schedule,
                        {"department_id": department_id, "date_from": start.isoformat(), "date_to": end.isoformat()})
        entries = []
        now = datetime.now(UTC)
        for s in sessions:
            avail = call(self.booking.session_availability, s["session_id"])
            remaining = avail.get("remaining") or {"web": 0, "phone": 0, "window": 0}
            entries.append({
                "session_id": s["session_id"],
                "doctor": {"doctor_id": s["doctor_id"], "name": s["doctor_name"], "title": s["doctor_title"]},
                "date": s["date"], "period": s["period"], "start": s["start"], "end": s["end"],
                "fee": s["fee"], "remaining": remaining, "opens_at": s.get("opens_at"),
                "closes_at": s.get("closes_at"), "state": _state(s, avail, remaining, now),
            })
        return json_response({"department_id": department_id, "sessions": entries})

    @http("POST", "/api/v1/patients")
    @endpoint
    def register_patient(self, request: Request) -> Response:
        body = read_json(request)
        allowed = {"name", "id_number", "phone", "password"}
        if unknown := set(body) - allowed:
            raise InvalidInput(f"未知字段 / unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
        body.pop("password", None)  # accounts and passwords arrive with the auth work (issue 5)
        key = request.headers.get("Idempotency-Key") or f"register:{body.get('id_number', '')}"
        answer = call(self.booking.register_patient,
                      {**body, "idempotency_key": key, "correlation_id": correlation_id(request)})
        return json_response(answer, 201)

    @http("POST", "/api/v1/appointments")
    @endpoint
    def book(self, request: Request) -> Response:
        body = read_json(request)
        key = request.headers.get("Idempotency-Key")
        if not key:
            raise InvalidInput("缺少 Idempotency-Key 请求头 / Idempotency-Key header is required",
                               field="Idempotency-Key")
        command = {
            "session_id": body.get("session_id"),
            "patient_id": body.get("patient_id"),
            "channel": "web",
            "idempotency_key": key,
            "correlation_id": correlation_id(request),
            "actor": {"kind": "patient", "id": str(body.get("patient_id") or "anonymous")[:64]},
        }
        session_id = str(command["session_id"] or "")
        patient_id = str(command["patient_id"] or "")
        if self.sold_out.full(session_id, "web") and not self.sold_out.is_retry(patient_id, key):
            raise SessionFull("该出诊已约满 / this session is full", field="session_id")
        self.sold_out.forwarded(patient_id, key)
        try:
            answer = call(self.booking.book_appointment, command)
        except SessionFull:
            self.sold_out.remember(session_id, "web")
            raise
        return json_response(answer, 201)

    @http("GET", "/api/v1/appointments")
    @endpoint
    def my_appointments(self, request: Request) -> Response:
        patient_id = request.args.get("patient_id")
        if not patient_id:
            raise InvalidInput("缺少 patient_id / patient_id is required", field="patient_id")
        return json_response(call(self.booking.appointments_of, patient_id))

    @http("POST", "/api/v1/appointments/<string:appointment_id>/cancel")
    @endpoint
    def cancel(self, request: Request, appointment_id: str) -> Response:
        body = read_json(request)
        patient_id = str(body.get("patient_id") or "")
        if not patient_id:
            raise InvalidInput("缺少 patient_id / patient_id is required", field="patient_id")
        key = request.headers.get("Idempotency-Key") or f"cancel:{appointment_id}"
        answer = call(self.booking.cancel_appointment, {
            "appointment_id": appointment_id, "idempotency_key": key, "correlation_id": correlation_id(request),
            "actor": {"kind": "patient", "id": patient_id[:64]},
        })
        return json_response(answer)

    @http("GET", "/api/v1/stats/summary")
    @endpoint
    def stats_summary(self, request: Request) -> Response:
        return json_response(call(self.stats.summary))

    @http("GET", "/dev/sms")
    @endpoint
    def sms_outbox_page(self, request: Request) -> Response:
        messages = call(self.notification.outbox, 100)
        rows = "".join(
            f"<tr><td>{html.escape(m['created_at'][:19])}</td><td>{html.escape(m['phone_masked'])}</td>"
            f"<td>{html.escape(m['text'])}</td></tr>"
            for m in messages
        )
        return _page("短信发件箱 · SMS outbox",
                     f"<p>开发环境：短信未真实发送，仅存于发件箱。</p><table><tr><th>时间</th><th>手机</th>"
                     f"<th>内容</th></tr>{rows}</table>")

    @http("GET", "/")
    @endpoint
    def home(self, request: Request) -> Response:
        hospitals = call(self.schedule.list_hospitals)
        items = "".join(f"<li>{html.escape(h['name'])}（{html.escape(h['level'])}）</li>" for h in hospitals)
        return _page("河北省预约诊疗服务平台",
                     f"<p>全省三级医院统一网络预约与电话预约（12580）。</p><ul>{items}</ul>"
                     f"<p><a href='/dev/sms'>短信发件箱（开发）</a> · <a href='/healthz'>健康状态</a></p>")


def _state(session: dict[str, Any], avail: dict[str, Any], remaining: dict[str, int], now: datetime) -> str:
    """open / full / not_yet_open / closed / stopped, as a patient on the web sees it."""
    if avail.get("stopped") or session.get("state") == "stopped":
        return "stopped"
    if session.get("opens_at") and now < datetime.fromisoformat(session["opens_at"]):
        return "not_yet_open"
    if session.get("closes_at") and now >= datetime.fromisoformat(session["closes_at"]):
        return "closed"
    return "open" if remaining.get("web", 0) > 0 else "full"


def _page(title: str, body: str) -> Response:
    doc = (f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}"
           f"</title><style>body{{font-family:sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem}}"
           f"table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4rem}}</style>"
           f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(doc, mimetype="text/html")
