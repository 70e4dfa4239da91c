"""The OpenAPI 3.1 document of /api/v1, generated from the endpoint declarations (`@api`) and the
very body models that validate the requests, so the document cannot drift from the code.

Every operation documents its success answer and, as `default`, the error shape every refusal
has; schemathesis fuzzes the running gateway against this document in the test suite.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from services.gateway.api import KEY_HEADER, Endpoint, declared_endpoints

DAY = {"type": "string", "format": "date", "pattern": r"^20\d\d-\d\d-\d\d$"}  # 2000-01-01 to 2099-12-31
APPOINTMENT = {"type": "object", "required": ["appointment_id", "code", "sequence_number", "status"],
               "properties": {"appointment_id": {"type": "string"}, "code": {"type": "string"},
                              "sequence_number": {"type": "integer"}, "status": {"type": "string"},
                              "arrival_window": {"type": ["string", "null"]}}}
_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}},
}
_OBJECT = {"type": "object"}
_KEY = {"name": KEY_HEADER, "in": "header", "required": True,
        "schema": {"type": "string", "minLength": 8, "maxLength": 100}}
_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def query(name: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema or {"type": "string"}}


_DOCUMENTS: dict[type, dict[str, Any]] = {}


def document(service_cls: type) -> dict[str, Any]:
    """The document of a service class's declared endpoints, built once per process."""
    if service_cls not in _DOCUMENTS:
        _DOCUMENTS[service_cls] = _build(service_cls)
    return _DOCUMENTS[service_cls]


def _build(service_cls: type) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for spec in declared_endpoints(service_cls):
        if not spec.path.startswith("/api/"):
            continue  # /healthz is for the orchestrator, not for API clients
        if isinstance(spec.body, type) or spec.body is None:
            paths.setdefault(_openapi_path(spec.path), {})[spec.method.lower()] = _operation(spec, spec.body,
                                                                                              components)
            continue
        for value, model in sorted(spec.body.items()):  # one documented path per value, with its own body
            path = spec.path.replace(f"<string:{spec.body_by}>", value)
            paths.setdefault(path, {})[spec.method.lower()] = _operation(spec, model, components, value)
    return {
        "openapi": "3.1.0",
        "info": {"title": "河北省预约诊疗服务平台 API / Hebei appointment platform API", "version": "1.0.0",
                 "description": "Errors are {\"error\": {\"code\", \"message\", \"field\"}}; 429 carries Retry-After."},
        "servers": [{"url": "/"}],
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "appt_session"}}},
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    }


def _openapi_path(rule: str) -> str:
    return _CONVERTER.sub(r"{\1}", rule)


def _operation(spec: Endpoint, model: type[BaseModel] | None, components: dict[str, Any],
               value: str | None = None) -> dict[str, Any]:
    ok = {"description": "no content"} if spec.status == 204 else {
        "description": "OK", "content": {spec.media_type: {"schema": spec.answer or (
            _OBJECT if spec.media_type == "application/json" else {"type": "string"})}}}
    summary = spec.summary.format(value) if value else spec.summary
    op: dict[str, Any] = {
        "summary": summary, "tags": [spec.tag],
        "responses": {str(spec.status): ok,
                      "default": {"description": "refusal", "content": {"application/json": {"schema": _ERROR}}}},
    }
    if model is not None:
        op["requestBody"] = {"required": spec.body_required,
                             "content": {"application/json": {"schema": _schema(model, components)}}}
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
               **({"description": spec.path_help[name]} if name in spec.path_help else {})}
              for name in _CONVERTER.findall(spec.path) if name != spec.body_by]
    params += [*spec.query, *([_KEY] if spec.idempotency_key else [])]
    if params:
        op["parameters"] = params
    if spec.roles is None:
        op["security"] = []
    else:
        op["description"] = f"Roles: {', '.join(spec.roles)}."
        op["x-roles"] = list(spec.roles)  # who may call it: the same tuple the gate checks
    return op


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}
