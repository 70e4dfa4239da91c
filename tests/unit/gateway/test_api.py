"""Gateway HTTP plumbing: reading a JSON body, answering a refusal as JSON, the @api declaration
(limit, login, role, body model) and routing errors (404, 405) answered as JSON under /api/."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError
from werkzeug.routing import Map, Rule
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request, Response

from contracts import Conflict, DomainError, InvalidInput, NotFound, SessionFull
from services.gateway.api import (
    Unavailable,
    _GatewayHttp,
    _GatewayWsgiApp,
    api,
    correlation_id,
    declared_endpoints,
    error_response,
    json_response,
    read_json,
)
from services.gateway.auth import SESSION_COOKIE, Principal
from services.gateway.bodies import ADMIN_BODIES, BookBody, LoginBody, RegisterBody
from services.gateway.limits import GatewaySettings, Limits
from services.gateway.openapi import document
from services.gateway.pages import Pages
from services.gateway.service import GatewayService

pytestmark = pytest.mark.unit


def request_with(body: bytes | str, content_type: str = "application/json") -> Request:
    builder = EnvironBuilder(method="POST", path="/api/v1/appointments", data=body, content_type=content_type)
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


def test_a_client_correlation_id_is_passed_on_unless_it_claims_to_be_a_backfill():
    def asked(value: str) -> str:
        builder = EnvironBuilder(path="/api/v1/appointments", headers={"X-Correlation-Id": value})
        try:
            return correlation_id(Request(builder.get_environ()))
        finally:
            builder.close()

    assert asked("trace-42") == "trace-42"
    forged = asked("backfill:sms-off")  # would keep this booking's SMS and HIS message back
    assert not forged.startswith("backfill") and len(forged) == 32


# --- read_json -----------------------------------------------------------------------------------


def test_a_json_object_is_returned_as_a_dict():
    body = json.dumps({"session_id": "s-1", "name": "张三", "count": 2}, ensure_ascii=False).encode()
    assert read_json(request_with(body), 65_536) == {"session_id": "s-1", "name": "张三", "count": 2}


def test_an_empty_object_is_accepted():
    assert read_json(request_with(b"{}"), 65_536) == {}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"{'single': 'quotes'}", b"session_id=s-1", b"\xff\xfe\xfa", b'{"a": 1} trailing'],
    ids=["broken", "python-repr", "form", "not-utf8", "trailing"],
)
def test_garbage_is_invalid_input(body):
    with pytest.raises(InvalidInput) as exc:
        read_json(request_with(body), 65_536)
    assert exc.value.status == 400
    assert "JSON" in exc.value.message


@pytest.mark.parametrize(
    "body",
    [b'[{"session_id": "s-1"}]', b'"text"', b"42", b"null", b""],
    ids=["list", "string", "number", "null", "empty"],
)
def test_json_that_is_not_an_object_is_invalid_input(body):
    with pytest.raises(InvalidInput) as exc:
        read_json(request_with(body), 65_536)
    assert exc.value.status == 400
    assert "object" in exc.value.message


# --- error_response ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "status", "code", "field"),
    [
        (
            InvalidInput("身份证号校验位错误 / bad check digit", field="id_number"),
            400,
            "invalid_input",
            "id_number",
        ),
        (NotFound("出诊不存在 / unknown session", field="session_id"), 404, "not_found", "session_id"),
        (
            Conflict("已预约 / already booked", field="session_id", code="already_booked"),
            409,
            "already_booked",
            "session_id",
        ),
        (
            SessionFull("该出诊已约满 / this session is full", field="session_id"),
            409,
            "session_full",
            "session_id",
        ),
        (Unavailable("服务繁忙 / busy"), 503, "unavailable", None),
        (DomainError("拒绝 / refused"), 422, "refused", None),
    ],
)
def test_error_response_has_the_status_and_the_error_shape(err, status, code, field):
    response = error_response(err)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data(as_text=True))
    assert body == {"error": {"code": code, "message": err.message, "field": field}}


def test_error_response_keeps_chinese_readable_in_the_body():
    response = error_response(NotFound("出诊不存在 / unknown session", field="session_id"))
    assert "出诊不存在".encode() in response.get_data()


# --- the declaration: @api gates a handler ------------------------------------------------------


class FakeGateway:
    """What the gate reads from the service: its limits (real, in memory) and a database it never
    needs, because every session below is already in the limits' session cache."""

    def __init__(self, **settings: Any) -> None:
        self.settings = GatewaySettings(SERVICE_NAME="gateway", EVENTSTORE_DSN="-", **settings)
        self.limits = Limits(self.settings)
        self.db = None
        self.vault = None
        self.calls: list[dict[str, Any]] = []

    def login(self, role: str, token: str = "tok", via_cookie: bool = False) -> str:
        self.limits.sessions.put(token, via_cookie, Principal(role=role, subject=f"{role}-1", csrf="c5rf",  # type: ignore[arg-type]
                                                               via_cookie=via_cookie))
        return token

    @api("POST", "/api/v1/things", "book a thing", "test", body=BookBody, roles=("patient", "operator"))
    def book(self, request: Request, principal: Principal, body: BookBody) -> Response:
        self.calls.append({"principal": principal, "body": body})
        return json_response({"session_id": body.session_id, "by": principal.subject}, 201)

    @api("POST", "/api/v1/open", "register", "test", body=RegisterBody, optional_login=True)
    def register(self, request: Request, principal: Principal | None, body: RegisterBody) -> Response:
        self.calls.append({"principal": principal, "body": body})
        return json_response({})

    @api("POST", "/api/v1/cmd/<string:command>", "command {}", "test", body={"quota": LoginBody},
         body_by="command", roles=("hospital_admin",))
    def command(self, request: Request, principal: Principal, body: LoginBody, command: str) -> Response:
        self.calls.append({"body": body, "command": command})
        return json_response({})

    @api("POST", "/api/v1/keyed", "book with a key", "test", body=BookBody, roles=("patient", "operator"),
         limit="patient", idempotency_key=True)
    def keyed(self, request: Request, principal: Principal, body: BookBody) -> Response:
        self.calls.append({"key": request.headers["Idempotency-Key"]})
        return json_response({}, 201)

    @api("GET", "/api/v1/boom", "fails", "test")
    def boom(self, request: Request) -> Response:
        raise RuntimeError("a bug")


def http_request(method: str = "POST", body: Any = None, token: str | None = None, cookie: str | None = None,
                 headers: dict[str, str] | None = None, raw: bytes | None = None, path: str = "/api/v1/x") -> Request:
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    if cookie:
        all_headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    builder = EnvironBuilder(method=method, path=path, data=data, headers=all_headers,
                             content_type="application/json" if data is not None else None)
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


def answer(response: Response) -> tuple[int, Any]:
    return response.status_code, json.loads(response.get_data(as_text=True) or "null")


def test_a_valid_body_reaches_the_handler_as_its_model_with_the_principal():
    gw = FakeGateway()
    status, body = answer(gw.book(http_request(body={"session_id": "s-1"}, token=gw.login("patient"))))
    assert (status, body) == (201, {"session_id": "s-1", "by": "patient-1"})
    assert isinstance(gw.calls[0]["body"], BookBody) and gw.calls[0]["principal"].role == "patient"


@pytest.mark.parametrize(
    ("payload", "field"),
    [({}, "session_id"), ({"session_id": ""}, "session_id"), ({"session_id": "s" * 81}, "session_id"),
     ({"session_id": 7}, "session_id"), ({"session_id": "s-1", "admin": True}, "admin"),
     ({"session_id": "s-1", "patient_id": "p" * 65}, "patient_id"), ({"session_id": "s\u0000"}, "session_id")],
    ids=["missing", "empty", "too-long", "not-a-string", "unknown-field", "limit-of-optional-field", "nul"],
)
def test_a_body_the_model_refuses_is_a_400_naming_the_field_and_never_reaches_the_handler(payload, field):
    gw = FakeGateway()
    status, body = answer(gw.book(http_request(body=payload, token=gw.login("operator"))))
    assert status == 400 and body["error"]["code"] == "invalid_input" and body["error"]["field"] == field
    assert field in body["error"]["message"]
    assert gw.calls == []


def test_a_body_that_is_not_a_json_object_is_refused_before_the_model():
    gw = FakeGateway()
    status, body = answer(gw.book(http_request(raw=b"[1, 2]", token=gw.login("patient"))))
    assert status == 400 and "object" in body["error"]["message"] and gw.calls == []


def test_nobody_logged_in_is_401_and_a_role_not_declared_is_403():
    gw = FakeGateway()
    status, body = answer(gw.book(http_request(body={"session_id": "s-1"})))
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    status, body = answer(gw.book(http_request(body={"session_id": "s-1"}, token=gw.login("clerk"))))
    assert (status, body["error"]["code"], body["error"]["field"]) == (403, "forbidden", "role")
    # longer than any token of ours: not even looked up (nor cached)
    assert answer(gw.book(http_request(body={"session_id": "s-1"}, token="t" * 101)))[0] == 401
    assert gw.calls == []


def test_a_nul_character_in_a_query_or_path_value_is_refused_naming_it():
    gw = FakeGateway()
    token = gw.login("hospital_admin")
    status, body = answer(gw.command(http_request(body={}, token=token), command="quo\x00ta"))
    assert (status, body["error"]["field"]) == (400, "command")
    request = http_request(body={"username": "u", "password": "p"}, token=token, path="/api/v1/x?state=a%00")
    status, body = answer(gw.command(request, command="quota"))
    assert (status, body["error"]["field"]) == (400, "state") and gw.calls == []


def test_the_role_is_checked_before_the_body_is_read():
    gw = FakeGateway()
    status, _ = answer(gw.book(http_request(raw=b"{not json", token=gw.login("analyst"))))
    assert status == 403


def test_a_cookie_session_without_its_csrf_token_is_refused():
    gw = FakeGateway()
    token = gw.login("patient", "cookie-tok", via_cookie=True)
    status, body = answer(gw.book(http_request(body={"session_id": "s-1"}, cookie=token)))
    assert (status, body["error"]["field"]) == (403, "X-CSRF-Token")
    ok = gw.book(http_request(body={"session_id": "s-1"}, cookie=token, headers={"X-CSRF-Token": "c5rf"}))
    assert ok.status_code == 201


def test_an_optional_login_hands_none_or_the_principal():
    gw = FakeGateway()
    person = {"name": "张三", "id_number": "1" * 18, "phone": "13700000001", "sms_code": "123456"}
    assert gw.register(http_request(body=person)).status_code == 200
    assert gw.register(http_request(body=person, token=gw.login("operator"))).status_code == 200
    assert gw.calls[0]["principal"] is None and gw.calls[1]["principal"].role == "operator"


def test_a_body_chosen_by_the_path_value_and_an_unknown_value_is_404():
    gw = FakeGateway()
    token = gw.login("hospital_admin")
    good = gw.command(http_request(body={"username": " u ", "password": "p"}, token=token), command="quota")
    assert good.status_code == 200 and gw.calls[0]["body"].username == "u"
    status, body = answer(gw.command(http_request(body={"username": "u"}, token=token), command="quota"))
    assert (status, body["error"]["field"]) == (400, "password")
    status, body = answer(gw.command(http_request(body={}, token=token), command="drop_tables"))
    assert (status, body["error"]["code"], body["error"]["field"]) == (404, "not_found", "command")


def test_the_idempotency_key_header_is_required_and_the_patient_limit_applies():
    gw = FakeGateway(RATE_PER_PATIENT=0.001, RATE_BURST_PATIENT=2)
    token = gw.login("patient")
    short = gw.keyed(http_request(body={"session_id": "s-1"}, token=token, headers={"Idempotency-Key": "short"}))
    assert answer(short)[0] == 400 and answer(short)[1]["error"]["field"] == "Idempotency-Key"
    codes = [gw.keyed(http_request(body={"session_id": "s-1"}, token=token,
                                   headers={"Idempotency-Key": f"key-{i:08d}"})).status_code for i in range(3)]
    assert codes == [201, 201, 429]
    operator = gw.login("operator", "op-tok")
    no_caller = gw.keyed(http_request(body={"session_id": "s-1"}, token=operator,
                                      headers={"Idempotency-Key": "key-00000009"}))
    assert answer(no_caller)[0] == 400 and answer(no_caller)[1]["error"]["field"] == "patient_id"


def test_the_client_limit_answers_429_with_retry_after():
    gw = FakeGateway(RATE_PER_CLIENT=0.001, RATE_BURST_CLIENT=1)
    token = gw.login("patient")
    assert gw.book(http_request(body={"session_id": "s-1"}, token=token)).status_code == 201
    limited = gw.book(http_request(body={"session_id": "s-1"}, token=token))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_an_unexpected_exception_is_a_json_internal_error():
    status, body = answer(FakeGateway().boom(http_request("GET")))
    assert (status, body["error"]["code"]) == (503, "internal")


def test_a_handler_that_does_not_take_what_its_declaration_gives_fails_at_import():
    with pytest.raises(TypeError, match="principal"):
        @api("GET", "/api/v1/x", "x", "test", roles=("patient",))
        def no_principal(self: Any, request: Request) -> Response:
            raise AssertionError
    with pytest.raises(TypeError, match="body"):
        @api("POST", "/api/v1/x", "x", "test")
        def stray_body(self: Any, request: Request, body: BookBody) -> Response:
            raise AssertionError
    with pytest.raises(TypeError, match="username"):
        @api("POST", "/api/v1/x", "x", "test", body=BookBody, limit="login")
        def login_without_username(self: Any, request: Request, body: BookBody) -> Response:
            raise AssertionError
    with pytest.raises(TypeError, match="patient_id"):
        @api("POST", "/api/v1/x", "x", "test", roles=("patient",), limit="patient")
        def patient_limit_without_body(self: Any, request: Request, principal: Principal) -> Response:
            raise AssertionError


# --- routing errors: 404 and 405 as JSON under /api/ ----------------------------------------------


class Route:
    def __init__(self, path: str, methods: str) -> None:
        self.path, self.methods = path, methods

    def get_url_rule(self) -> Rule:
        return Rule(self.path, methods=self.methods.split(","))

    def handle_request(self, request: Request) -> Response:
        return Response(f"matched {self.path} {request.path_values}")


class FakeServer:
    """The part of nameko's WebServer a WsgiApp reads: the url map of the registered entrypoints."""

    def __init__(self, *routes: Route) -> None:
        self.routes = routes

    def make_url_map(self) -> Map:
        url_map = Map()
        for route in self.routes:
            rule = route.get_url_rule()
            rule.endpoint = route
            url_map.add(rule)
        return url_map


@pytest.fixture
def web() -> Client:
    server = FakeServer(Route("/api/v1/me", "GET"), Route("/api/v1/hospitals/<string:hospital_id>", "GET,POST"),
                        Route("/login", "GET"), Route("/static/<path:name>", "GET"))
    return Client(_GatewayWsgiApp(server))


def test_a_known_route_reaches_its_entrypoint(web):
    assert web.get("/api/v1/hospitals/h1").get_data(as_text=True) == "matched /api/v1/hospitals/<string:hospital_id> " \
                                                                    "{'hospital_id': 'h1'}"
    assert web.head("/api/v1/me").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/me/extra", "/api/v2/me", "/api/"])
def test_an_unknown_api_path_is_a_json_404(path):
    server = FakeServer(Route("/api/v1/me", "GET"))
    response = Client(_GatewayWsgiApp(server)).post(path)
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert json.loads(response.get_data(as_text=True))["error"] == {
        "code": "not_found", "message": f"没有这个接口 / no such endpoint {path}", "field": "path"}


def test_a_wrong_method_on_a_known_api_path_is_a_json_405_with_allow(web):
    response = web.delete("/api/v1/me")
    assert response.status_code == 405 and response.mimetype == "application/json"
    error = json.loads(response.get_data(as_text=True))["error"]
    assert error["code"] == "method_not_allowed" and error["field"] == "method" and "DELETE" in error["message"]
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    assert web.put("/api/v1/hospitals/h1").headers["Allow"].count("POST") == 1


def test_an_unknown_page_is_a_short_html_404_not_werkzeugs(web):
    response = web.get("/no/such/page")
    html = response.get_data(as_text=True)
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "页面不存在" in html and "The requested URL was not found" not in html
    assert web.post("/login").status_code == 405 and web.post("/login").mimetype == "text/html"


def test_the_gateway_service_uses_one_web_server_for_every_route():
    """A plain nameko @http anywhere in the gateway would start a second server on the same port."""
    kinds = {type(e) for fn in [*vars(GatewayService).values(), *vars(Pages).values()]
             for e in getattr(fn, "nameko_entrypoints", ())}
    assert kinds == {_GatewayHttp}


# --- the OpenAPI document comes from the declarations ---------------------------------------------


def test_every_declared_api_endpoint_is_documented_with_its_model_and_roles():
    doc = document(GatewayService)
    declared = [e for e in declared_endpoints(GatewayService) if e.path.startswith("/api/")]
    assert len(declared) >= 20
    for spec in declared:
        if spec.body_by:
            continue
        op = doc["paths"][re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", spec.path)][spec.method.lower()]
        if isinstance(spec.body, type):
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{spec.body.__name__}"
        else:
            assert "requestBody" not in op
        assert (op.get("security") == []) == (spec.roles is None)
        assert op.get("x-roles") == (list(spec.roles) if spec.roles else None)
    assert {p.rsplit("/", 1)[1] for p in doc["paths"] if p.startswith("/api/v1/admin/schedule/")} == set(ADMIN_BODIES)


def test_the_admin_bodies_are_the_schedule_commands_without_what_the_gateway_sets():
    model = ADMIN_BODIES["change_session_quota"]
    assert set(model.model_fields) == {"session_id", "quota"}
    parsed = model.model_validate({"session_id": " s-1 ", "quota": {"web": 1, "phone": 0, "window": 0},
                                   "actor": {"kind": "system", "id": "x"}, "idempotency_key": "forged-key"})
    assert parsed.model_dump(exclude_unset=True) == {"session_id": "s-1", "quota": {"web": 1, "phone": 0, "window": 0}}
    with pytest.raises(ValidationError):
        model.model_validate({"session_id": "s-1", "quota": {"web": 1}, "extra": 1})
