"""Gateway HTTP helpers: reading a JSON body and answering a refusal as JSON."""

from __future__ import annotations

import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts import Conflict, DomainError, InvalidInput, NotFound, SessionFull
from services.gateway.api import Unavailable, error_response, read_json

pytestmark = pytest.mark.unit


def request_with(body: bytes | str, content_type: str = "application/json") -> Request:
    builder = EnvironBuilder(method="POST", path="/api/v1/appointments", data=body, content_type=content_type)
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


# --- read_json -----------------------------------------------------------------------------------


def test_a_json_object_is_returned_as_a_dict():
    body = json.dumps({"session_id": "s-1", "name": "张三", "count": 2}, ensure_ascii=False).encode()
    assert read_json(request_with(body)) == {"session_id": "s-1", "name": "张三", "count": 2}


def test_an_empty_object_is_accepted():
    assert read_json(request_with(b"{}")) == {}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"{'single': 'quotes'}", b"session_id=s-1", b"\xff\xfe\xfa", b'{"a": 1} trailing'],
    ids=["broken", "python-repr", "form", "not-utf8", "trailing"],
)
def test_garbage_is_invalid_input(body):
    with pytest.raises(InvalidInput) as exc:
        read_json(request_with(body))
    assert exc.value.status == 400
    assert "JSON" in exc.value.message


@pytest.mark.parametrize(
    "body",
    [b'[{"session_id": "s-1"}]', b'"text"', b"42", b"null", b""],
    ids=["list", "string", "number", "null", "empty"],
)
def test_json_that_is_not_an_object_is_invalid_input(body):
    with pytest.raises(InvalidInput) as exc:
        read_json(request_with(body))
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
