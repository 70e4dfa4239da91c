"""HTTP plumbing for the gateway: endpoints declared in one line each, JSON answers, typed errors,
RPC calls with a deadline.

`@api(method, path, summary, tag, body=..., roles=..., limit=...)` declares an endpoint: it is the
nameko route, the gate every request passes (rate limit, login, role, body model, idempotency key,
limit class) and, read by openapi.py, the operation in the OpenAPI document. `refusal` is the one
place where anything that goes wrong becomes an answer, routing errors (404, 405) included.
"""

from __future__ import annotations

import functools
import inspect
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import eventlet
from nameko.exceptions import ContainerBeingKilled, RemoteError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.wrappers import Request, Response

from contracts import DomainError, Forbidden, InvalidInput, NotFound, from_wire, invalid_from_validation
from contracts.envelope import BACKFILL_PREFIX, no_control_characters
from infra.handling import is_transient
from infra.logging import get_logger
from services.gateway import readmodel
from services.gateway.auth import CSRF_HEADER, ROLES, SESSION_COOKIE, Principal, Role, Unauthenticated, csrf_ok
from services.gateway.limits import Limits

_log = get_logger("gateway")
RPC_TIMEOUT = 15.0
KEY_HEADER = "Idempotency-Key"
ANYONE: tuple[Role, ...] = ROLES  # any logged-in principal
Limit = Literal["client", "login", "patient", "sms"]
Handler = Callable[..., Response]


class Unavailable(DomainError):
    code = "unavailable"
    status = 503
    retry_after: int | None = 2  # every 503 says when to try again


class MethodNotAllowed(DomainError):
    code = "method_not_allowed"
    status = 405


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    status = 415


# Sent with every answer: JSON is never sniffed into HTML, no page is framed, no URL leaks onward.
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                    ("Referrer-Policy", "same-origin"))
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# --- declaring an endpoint ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Endpoint:
    """One HTTP operation: its route, who may call it, what it reads and what the document says."""

    method: str
    path: str  # a werkzeug rule: /api/v1/hospitals/<string:hospital_id>
    summary: str  # with body_by: a format string, {} is each documented value
    tag: str
    # None: public. Otherwise only these roles, and the handler gets `principal: Principal`.
    roles: tuple[Role, ...] | None = None
    # Public, but the handler gets `principal: Principal | None`: whoever is logged in, if anyone.
    optional_login: bool = False
    # The handler gets `body`, validated by this model; a mapping picks the model by the path value
    # named `body_by` (an unknown value is answered 404).
    body: type[BaseModel] | Mapping[str, type[BaseModel]] | None = None
    body_by: str | None = None
    body_required: bool = True  # False: no body at all is read as {}
    # client: per-address token bucket, first of all; login: also the failed-login back-off of the
    # body's username from this client (the handler gets `attempt`, to give back on success);
    # patient: also the booking bucket of the patient acted for; sms: also the per-address bucket of
    # verification SMS. None: no limit.
    limit: Limit | None = "client"
    idempotency_key: bool = False  # the Idempotency-Key header is required (8-100 characters)
    status: int = 200
    answer: dict[str, Any] | None = None
    media_type: str = "application/json"  # what a successful answer is (text/csv for the exports)
    query: tuple[dict[str, Any], ...] = ()
    path_help: Mapping[str, str] = field(default_factory=dict)

    def model_for(self, path_values: Mapping[str, Any]) -> type[BaseModel] | None:
        if self.body is None or isinstance(self.body, type):
            return self.body
        model = self.body.get(str(path_values.get(self.body_by or "")))
        if model is None:
            name = self.body_by or "path"
            raise NotFound(f"未知的命令 / unknown {name} {path_values.get(name)}", field=name)
        return model


class _Gateway(Protocol):
    """What the gate needs from the service it guards."""

    limits: Limits
    db: Any
    settings: Any
    vault: Any


EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)  # any day the platform can have a session on


def day_param(value: str | None, default: date, field: str) -> date:
    """A query parameter that is a day: `default` when absent, 400 naming the field when not a day."""
    if not value:
        return default
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} 应为 YYYY-MM-DD / {field} must be YYYY-MM-DD", field=field) from None
    if not EARLIEST <= day <= LATEST:  # 9999-12-31 + 6 days would overflow
        raise InvalidInput(f"{field} 应在 {EARLIEST} 至 {LATEST} 之间 / {field} must lie between {EARLIEST} and "
                           f"{LATEST}", field=field)
    return day


def listing_query(request: Request, principal: Any, states: tuple[str, ...]) -> tuple[str | None, str | None, int]:
    """(hospital_id, status, limit) of a list of message states: a hospital admin's own hospital
    (another is 403), the platform admin's choice (or all); a known status; 1 to 500 rows."""
    hospital_id = request.args.get("hospital_id") or principal.hospital_id
    if principal.role != "platform_admin":
        principal.require_hospital(str(hospital_id))
    status = request.args.get("status") or None
    if status is not None and status not in states:
        raise InvalidInput(f"status: one of {', '.join(states)}", field="status")
    try:
        limit = int(request.args.get("limit") or 100)
    except ValueError:
        raise InvalidInput("limit: a number", field="limit") from None
    return hospital_id, status, max(1, min(limit, 500))


def api(method: str, path: str, summary: str, tag: str, **declared: Any) -> Callable[[Handler], Handler]:
    """Declare an endpoint (see Endpoint for the options) on a GatewayService method."""
    spec = Endpoint(method, path, summary, tag, **declared)

    def decorate(fn: Handler) -> Handler:
        _check_signature(spec, fn)
        inner = endpoint(fn, spec)
        inner.endpoint = spec  # type: ignore[attr-defined]  # read by openapi.document
        return http(method, path)(inner)

    return decorate


def declared_endpoints(service_cls: type) -> list[Endpoint]:
    """Every endpoint declared on a service class and its bases, in the order they are written."""
    found: list[Endpoint] = []
    for klass in reversed(service_cls.__mro__):
        found.extend(v.endpoint for v in vars(klass).values() if isinstance(getattr(v, "endpoint", None), Endpoint))
    return found


def _check_signature(spec: Endpoint, fn: Handler) -> None:
    """The handler asks for exactly what its declaration gives: a drift is an error at import."""
    params = inspect.signature(fn).parameters
    wants = {"principal": spec.roles is not None or spec.optional_login, "body": spec.body is not None,
             "attempt": spec.limit == "login"}
    for name, given in wants.items():
        if given != (name in params):
            raise TypeError(f"{fn.__name__}: `{name}` parameter {'missing' if given else 'not declared'}")
    models = [spec.body] if isinstance(spec.body, type) else list((spec.body or {}).values())
    needs = {"login": "username", "patient": "patient_id"}.get(spec.limit or "")
    if needs and not (models and all(needs in m.model_fields for m in models)):
        raise TypeError(f"{fn.__name__}: limit {spec.limit} needs a body with {needs}")


def endpoint(fn: Handler, spec: Endpoint) -> Handler:
    """Every HTTP handler passes its declaration's gate and answers JSON errors, never a stack trace."""

    @functools.wraps(fn)
    def inner(self: _Gateway, request: Request, **path_values: Any) -> Response:
        try:
            given = _gate(self, request, spec, path_values)
            return fn(self, request, **given, **path_values)
        except Exception as err:
            return refusal(request, err)

    return inner


def _gate(self: _Gateway, request: Request, spec: Endpoint, path_values: Mapping[str, Any]) -> dict[str, Any]:
    """The checks of a declaration, cheapest and least revealing first; what the handler is given."""
    given: dict[str, Any] = {}
    address = client_address(request, self.limits)
    if spec.limit is not None:
        self.limits.client(address)
    if request.method in UNSAFE_METHODS:
        _same_origin(request, self.settings)
    if spec.roles is not None or spec.optional_login:
        principal = principal_of(request, self.db, self.limits, self.vault)
        if spec.roles is not None:
            if principal is None:
                raise Unauthenticated("请先登录 / please log in")
            principal.require(*spec.roles)
        given["principal"] = principal
    for name, value in [*path_values.items(), *request.args.items(multi=True)]:
        try:
            no_control_characters(str(value))
        except ValueError:  # PostgreSQL text cannot hold NUL: the field's error, not a crash
            raise InvalidInput(f"字段 {name} 含有非法字符 / {name} must not contain control characters",
                               field=name) from None
    model = spec.model_for(path_values)
    if model is not None:
        raw = read_json(request, self.settings.max_body_bytes) if spec.body_required or request.content_length \
            or request.headers.get("Transfer-Encoding") else {}
        try:
            given["body"] = model.model_validate(raw)
        except ValidationError as exc:
            raise invalid_from_validation(exc) from None
    if spec.idempotency_key and not 8 <= len(idempotency_key(request)) <= 100:
        raise InvalidInput("缺少 Idempotency-Key 请求头（8-100字符）/ Idempotency-Key header (8-100 chars) "
                           "is required", field=KEY_HEADER)
    if spec.limit == "login":
        given["attempt"] = readmodel.reserve_login(self.db, self.vault, self.limits.login.keys(
            given["body"].username, address))
    elif spec.limit == "patient":
        self.limits.patient(acting_for(given["principal"], given["body"].patient_id))
    elif spec.limit == "sms":
        self.limits.verification_sms(address)
    return given


def _same_origin(request: Request, settings: Any) -> None:
    """A state change comes from our own pages or from a client that is not a browser. A browser
    names the page's origin (Origin, Sec-Fetch-Site): another site's form or fetch is refused, the
    login form included (login CSRF)."""
    origin = request.headers.get("Origin")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none") or (
            origin is not None and origin not in _own_origins(request, settings)):
        raise Forbidden("不接受来自其他网站的请求 / cross-site requests are refused", field="Origin")


def _own_origins(request: Request, settings: Any) -> set[str]:
    own = {f"{scheme}://{request.host}" for scheme in ("http", "https")}
    return own | {o.strip().rstrip("/") for o in (settings.allowed_origins or "").split(",") if o.strip()}


def client_address(request: Request, limits: Limits) -> str:
    """The client's address, X-Forwarded-For believed only from a configured trusted proxy."""
    known: str | None = request.environ.get("appt.client")
    if known is None:
        known = limits.proxies.client(request.remote_addr, request.headers.get("X-Forwarded-For"))
        request.environ["appt.client"] = known
    return known


# --- who is asking --------------------------------------------------------------------------------

def session_token(request: Request) -> tuple[str, bool]:
    """The login session's token and whether it came in the cookie (else as a bearer token)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip(), False
    return request.cookies.get(SESSION_COOKIE, ""), True


def principal_of(request: Request, db: Any, limits: Limits, vault: Any) -> Principal | None:
    """Who is logged in (None: nobody); a cookie session must also carry its CSRF token on changes.
    Only sessions that exist are cached: random tokens cannot fill the cache."""
    token, via_cookie = session_token(request)
    if not token or len(token) > 100:  # ours are 43 characters
        return None
    principal = limits.sessions.get(token, via_cookie)
    if principal is None:
        principal = readmodel.session_principal(db, vault, token, via_cookie)
        if principal is None:
            return None
        if principal.role == "patient":  # the crowd; staff are read every time, so a disable ends them at once
            limits.sessions.put(token, via_cookie, principal)
    if not csrf_ok(principal, request.method, request.headers.get(CSRF_HEADER)):
        raise Forbidden("CSRF 校验失败，请刷新页面 / missing or wrong CSRF token", field=CSRF_HEADER)
    return principal  # type: ignore[no-any-return]


def acting_for(principal: Principal, patient_id: str | None) -> str:
    """The patient a request is for: a patient acts for themselves, staff for the caller they name."""
    if principal.role == "patient":
        return principal.subject
    if not patient_id:
        raise InvalidInput("请指定来电患者 / patient_id of the caller is required", field="patient_id")
    return patient_id


def idempotency_key(request: Request, default: str = "") -> str:
    return (request.headers.get(KEY_HEADER, "").strip() or default)[:100]


def correlation_id(request: Request) -> str:
    """The caller's X-Correlation-Id, or a new one. One that claims to be a back-fill of past
    activity is replaced: that mark keeps a booking's SMS and its HIS message back."""
    given = request.headers.get("X-Correlation-Id", "")
    if not given or given.startswith(BACKFILL_PREFIX):
        return uuid.uuid4().hex
    return given[:100]


def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: at most `max_bytes` (413 before reading more), sent as JSON (415
    otherwise: a cross-site form cannot send application/json without asking first)."""
    if (request.content_length or 0) > max_bytes:
        raise PayloadTooLarge(f"请求体过大（最多 {max_bytes} 字节）/ body larger than {max_bytes} bytes")
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("请求体应为 application/json / send the body as application/json",
                                   field="Content-Type")
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.content_length is None and (chunked or request.environ.get("wsgi.input_terminated")):
        # eventlet's input decodes the chunks itself: read one byte past the limit, never more
        raw = request.environ["wsgi.input"].read(max_bytes + 1)
    else:
        raw = request.get_data()
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"请求体过大（最多 {max_bytes} 字节）/ body larger than {max_bytes} bytes")
    try:
        body = json.loads(raw.decode() or "null")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[…" nested too deep
        raise InvalidInput("请求体不是有效的 JSON / body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("请求体应为 JSON 对象 / body must be a JSON object")
    return body


# --- answers ----------------------------------------------------------------------------------------

def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, ensure_ascii=False, default=str),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def error_response(err: DomainError, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": err.code, "message": err.message, "field": err.field}}
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(retry_after)}
    return json_response(body, status=err.status, headers=headers)


def refusal(request: Request, err: Exception) -> Response:
    """The one place an error becomes an answer. A DomainError is JSON with its status; werkzeug's
    routing errors (no such path, a method the path does not take) are JSON errors too under /api/
    and a short page elsewhere; anything else is logged and answered as an internal error."""
    if isinstance(err, RouteNotFound | RouteMethodNotAllowed):
        if not request.path.startswith("/api/"):
            return _page_refusal(err)
        headers = dict(err.get_headers())  # the Allow header of a 405
        headers.pop("Content-Type", None)
        if isinstance(err, RouteMethodNotAllowed):
            return error_response(MethodNotAllowed(
                f"此路径不支持 {request.method} / {request.path} does not take {request.method}", field="method"),
                headers)
        return error_response(NotFound(f"没有这个接口 / no such endpoint {request.path}", field="path"), headers)
    if isinstance(err, DomainError):
        return error_response(err)
    _log.exception("gateway_unhandled", path=request.path)  # called in an except block: logs the trace
    return error_response(Unavailable("内部错误 / internal error", code="internal"))


def _page_refusal(err: HTTPException) -> Response:
    status = err.code or 404
    text = ("页面不存在 / page not found" if status == 404 else "不支持此请求方法 / method not allowed")
    html = (f'<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>{status}</title>'
            f'<h1>{status}</h1><p>{text}</p><p><a href="/">返回首页 / home</a></p></html>')
    headers = {k: v for k, v in err.get_headers() if k == "Allow"}
    return Response(html, status=status, mimetype="text/html", headers=headers)


# --- the web server: routing errors answered by `refusal` ----------------------------------------
#
# nameko's WsgiApp matches the request against a werkzeug Map of every @http rule and, when
# matching fails, answers werkzeug's own HTTPException (an HTML page) itself, before any entrypoint
# runs. A catch-all rule such as "/api/<path:rest>" would fix the 404 but not the 405: werkzeug
# prefers any rule that takes the method over reporting MethodNotAllowed, so a wrong method on a known
# path would reach the catch-all and answer 404. Hence the routing errors are caught where they are
# raised, in a WsgiApp of our own. The WebServer is a SharedExtension keyed by its class, so every
# gateway entrypoint (pages too) must use this module's `http` to share one server and one port; a
# stray plain nameko @http would start a second server on the same address and fail at start.

class _GatewayWsgiApp(WsgiApp):
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ, shallow=True)  # as nameko's: the entrypoint reads the body itself
        try:
            provider, values = self.url_map.bind_to_environ(environ).match()
            request.path_values = values  # type: ignore[attr-defined]  # where nameko's entrypoint looks
            answer = provider.handle_request(request)
        except (RouteNotFound, RouteMethodNotAllowed) as err:
            answer = refusal(request, err)
        except HTTPException as err:  # a redirect to the canonical URL (trailing slash)
            answer = err.get_response(environ)
        for name, value in SECURITY_HEADERS:
            answer.headers.setdefault(name, value)
        return answer(environ, start_response)


class _GatewayWebServer(WebServer):
    def get_wsgi_app(self) -> _GatewayWsgiApp:
        return _GatewayWsgiApp(self)


class _GatewayHttp(HttpRequestHandler):
    server = _GatewayWebServer()

    def response_from_exception(self, exc: Exception) -> Response:
        """What fails before a worker runs: a container being stopped (or killed) still has its
        web server taking requests for a moment, and nameko answered those 500 with the text
        "Error: ContainerBeingKilled"; it is the 503 of a process going away, with Retry-After."""
        if isinstance(exc, ContainerBeingKilled):
            return error_response(Unavailable("服务正在重启，请稍后重试 / restarting, try again shortly"))
        return super().response_from_exception(exc)  # type: ignore[no-any-return]


http: Callable[[str, str], Callable[[Handler], Handler]] = _GatewayHttp.decorator


# --- calls to the services behind -----------------------------------------------------------------

class BrokerDown(Unavailable):
    """The broker cannot be reached: answered at once, with a hint when to try again."""
    retry_after = 2

    def __init__(self) -> None:
        super().__init__("服务暂时不可用，请稍后重试 / the platform is briefly unavailable, try again shortly",
                         code="unavailable")


class BrokerProbe:
    """Is the broker reachable? A TCP connect to its AMQP port, at most one every
    `PROBE_INTERVAL` seconds per broker, the answer shared by every request meanwhile.

    Why (issue 14, finding 5): with RabbitMQ down, nameko's RpcProxy retried its publish for
    about 13 s (kombu's connection retries 2 s, 3 s, 4 s, then the publish retries) and a request
    already published waited the whole RPC_TIMEOUT for a reply the restart had lost. A caller
    should hear 503 with Retry-After at once. `went_down` is when an outage was last seen: a call
    that started before it gives up too, its reply queue may have gone with the broker."""

    PROBE_INTERVAL = 0.5
    CONNECT_TIMEOUT = 0.3
    SLOW_IS_DOWN = 3.0

    def __init__(self, uri: str) -> None:
        self.addresses = _broker_addresses(uri)
        self.up = True
        self.checked_at = float("-inf")
        self.went_down = float("-inf")
        self._probing = False
        self._slow_since: float | None = None

    def is_up(self) -> bool:
        now = time.monotonic()
        if now - self.checked_at >= self.PROBE_INTERVAL and not self._probing:
            self._probing = True  # one probe at a time; the others take the last answer
            try:
                answers = [_connects(addr, self.CONNECT_TIMEOUT) for addr in self.addresses]
            finally:
                self._probing = False
            self.checked_at = time.monotonic()
            if True in answers:
                up, self._slow_since = True, None
            elif False in answers:
                up = False  # refused or unreachable: the broker is away, say so at once
            else:
                # Every connect timed out. On a loaded machine that is a full accept queue, not an
                # outage: the flash-crowd bench saw 150 requests answered 503 from one slow probe.
                # Only timeouts that last SLOW_IS_DOWN seconds count as the broker being away.
                self._slow_since = self._slow_since if self._slow_since is not None else self.checked_at
                up = self.checked_at - self._slow_since < self.SLOW_IS_DOWN
            if not up and self.up:
                _log.warning("broker_unreachable", brokers=[f"{h}:{p}" for h, p in self.addresses])
            elif up and not self.up:
                _log.warning("broker_reachable")
            if not up:
                self.went_down = self.checked_at
            self.up = up
        return self.up

    def mark_down(self) -> None:
        self.up = False
        self.checked_at = self.went_down = time.monotonic()


_PROBES: dict[str, BrokerProbe] = {}


def broker_probe(method: Any) -> BrokerProbe | None:
    """The probe of the broker `method` (a nameko MethodProxy) publishes to; None for a stand-in
    without a container (unit tests)."""
    try:
        uri = method.amqp_uri
    except AttributeError:
        return None
    if not isinstance(uri, str):
        return None
    probe = _PROBES.get(uri)
    if probe is None:
        probe = _PROBES[uri] = BrokerProbe(uri)
    return probe


def _broker_addresses(uri: str) -> list[tuple[str, int]]:
    out = []
    for one in uri.split(";"):  # kombu's failover alternates
        parts = urlsplit(one.strip())
        out.append((parts.hostname or "127.0.0.1", parts.port or 5672))
    return out


def _connects(address: tuple[str, int], timeout: float) -> bool | None:
    """True: it answers; False: refused or unreachable; None: no answer within `timeout`."""
    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except TimeoutError:
        return None
    except OSError:
        return False


_WAIT_SLICE = 0.25  # how often a waiting call looks at the broker probe
# The gateway's RPC proxies publish once: kombu's retry after a lost confirm published a second
# copy of a request that a second booking replica ran a second after the first had answered
# (issue 14's fault run). A publish that fails is answered 503 and its client repeats the request
# with the same idempotency key, seconds later and behind the first copy in the queue.
NO_PUBLISH_RETRY: dict[str, Any] = {"max_retries": 0}
DEADLINE_CONTEXT_KEY = "deadline"  # the header nameko.deadline: infra.rpc drops a request past it


def set_deadline(method: Any, deadline: float) -> None:
    """The wall-clock time after which nobody waits for this call's answer, sent with the request
    (nameko sends the worker's context data as `nameko.<key>` headers, and a service passes them on
    to the calls it makes). A copy of the request that reaches a service later (published again by
    a retry after a broker restart, or redelivered) is dropped there unanswered instead of acting
    for a caller who was told 503 long ago: issue 14 found a booking stored 26 s after its caller had
    been answered "full" by the first copy."""
    worker_ctx = getattr(method, "worker_ctx", None)
    if worker_ctx is not None:
        worker_ctx.data[DEADLINE_CONTEXT_KEY] = f"{deadline:.3f}"  # context_data is a copy


def call(method: Any, *args: Any, timeout: float = RPC_TIMEOUT) -> Any:
    """One RPC with a deadline; a typed refusal from the service is raised as its DomainError.

    With the broker unreachable the answer is BrokerDown (503, Retry-After) at once: before
    publishing, and while waiting for the reply (the wait is sliced so the probe is looked at).
    The call itself runs in a green thread of its own with its own deadline, so a publish stuck
    in kombu's reconnect loop is left to finish or fail by itself instead of holding the
    caller."""
    probe = broker_probe(method)
    if probe is None:
        return _answer(_call_with_deadline(method, args, timeout))
    if not probe.is_up():
        raise BrokerDown
    started = time.monotonic()
    set_deadline(method, time.time() + timeout)
    worker = eventlet.spawn(_call_with_deadline, method, args, timeout)
    while True:
        with eventlet.Timeout(_WAIT_SLICE, False):
            return _answer(worker.wait())
        if not probe.is_up() or probe.went_down >= started:
            raise BrokerDown


def _call_with_deadline(method: Any, args: tuple[Any, ...], timeout: float) -> Any:
    """The RPC's result, or the exception it ended with (returned, not raised: a call given up by
    its caller must not die loudly in its green thread)."""
    try:
        with eventlet.Timeout(timeout):
            return _Outcome(method.call_async(*args).result(), None)
    except eventlet.Timeout:
        return _Outcome(None, Unavailable("服务繁忙，请稍后再试 / service did not answer in time"))
    except RemoteError as exc:
        _log.error("rpc_remote_error", exc_type=exc.exc_type)
        return _Outcome(None, Unavailable("服务暂时不可用 / service error"))
    except Exception as exc:
        if not is_transient(exc):
            raise
        # Not marked down for everyone: a pooled connection that died with a restarted broker
        # fails once and is replaced; the probe alone says whether the broker is away.
        return _Outcome(None, BrokerDown())


@dataclass(frozen=True)
class _Outcome:
    result: Any
    error: Exception | None


def _answer(outcome: _Outcome) -> Any:
    if outcome.error is not None:
        raise outcome.error
    if (err := from_wire(outcome.result)) is not None:
        raise err
    return outcome.result
