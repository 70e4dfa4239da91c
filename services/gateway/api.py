"""HTTP plumbing for the gateway: JSON answers, typed errors, RPC calls with a deadline."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

import eventlet
from nameko.exceptions import RemoteError
from werkzeug.wrappers import Request, Response

from contracts import DomainError, InvalidInput, from_wire
from infra.logging import get_logger

_log = get_logger("gateway")
RPC_TIMEOUT = 15.0


class Unavailable(DomainError):
    code = "unavailable"
    status = 503


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, ensure_ascii=False, default=str),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def error_response(err: DomainError) -> Response:
    body = {"error": {"code": err.code, "message": err.message, "field": err.field}}
    retry_after = getattr(err, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(body, status=err.status, headers=headers)


def call(method: Any, *args: Any, timeout: float = RPC_TIMEOUT) -> Any:
    """One RPC with a deadline; a typed refusal from the service is raised as its DomainError."""
    try:
        with eventlet.Timeout(timeout):
            result = method.call_async(*args).result()
    except eventlet.Timeout:
        raise Unavailable("服务繁忙，请稍后再试 / service did not answer in time") from None
    except RemoteError as exc:
        _log.error("rpc_remote_error", exc_type=exc.exc_type)
        raise Unavailable("服务暂时不可用 / service error") from None
    if (err := from_wire(result)) is not None:
        raise err
    return result


def read_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(as_text=True) or "null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("请求体不是有效的 JSON / body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("请求体应为 JSON 对象 / body must be a JSON object")
    return body


def correlation_id(request: Request) -> str:
    given = request.headers.get("X-Correlation-Id", "")
    return given[:100] if given else uuid.uuid4().hex


def endpoint(fn: Callable[..., Response]) -> Callable[..., Response]:
    """Every HTTP handler answers JSON errors, never a stack trace."""

    @functools.wraps(fn)
    def inner(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return fn(self, request, *args, **kwargs)
        except DomainError as err:
            return error_response(err)
        except Exception:
            _log.exception("gateway_unhandled", path=request.path)
            return error_response(Unavailable("内部错误 / internal error", code="internal"))

    return inner
