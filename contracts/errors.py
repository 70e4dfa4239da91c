"""Errors that cross process boundaries. `code` is for machines, `message` (Chinese first) for people."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contracts.envelope import Contract


class ErrorBody(Contract):
    code: str
    message: str
    field: str | None = None
    status: int = 400
    retry_after: int | None = None  # seconds, for a 429 or a 503


class DomainError(Exception):
    """A refusal with a reason. Carried over RPC as its ErrorBody (see to_wire / from_wire)."""

    code = "refused"
    status = 422

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, field=self.field, status=self.status,
                         retry_after=getattr(self, "retry_after", None))


class InvalidInput(DomainError):
    code = "invalid_input"
    status = 400


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Conflict(DomainError):
    code = "conflict"
    status = 409


class SessionFull(Conflict):
    code = "session_full"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class TooManyRequests(Forbidden):
    """Slow down: a rate limit or a throttle; `retry_after` says when to try again (seconds)."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, retry_after: float = 1.0, field: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, field=field, code=code)
        self.retry_after = max(1, int(retry_after + 0.999))


def invalid_from_validation(exc: ValidationError) -> InvalidInput:
    """First problem of a pydantic error, naming its field, as an InvalidInput."""
    first: Any = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    return InvalidInput(f"字段 {field} 无效 / invalid field {field}: {first.get('msg')}", field=field)


def to_wire(err: DomainError) -> dict[str, Any]:
    return {"domain_error": err.body().model_dump()}


def from_wire(payload: Any) -> DomainError | None:
    if not isinstance(payload, dict) or "domain_error" not in payload:
        return None
    body = ErrorBody.model_validate(payload["domain_error"])
    # The most specific class first (its code), then by status, so `except SessionFull` works after RPC.
    by_code: dict[str, type[DomainError]] = {
        c.code: c for c in (InvalidInput, NotFound, Conflict, SessionFull, Forbidden, TooManyRequests)
    }
    by_status: dict[int, type[DomainError]] = {
        c.status: c for c in (InvalidInput, NotFound, Conflict, Forbidden, TooManyRequests)}
    cls = by_code.get(body.code) or by_status.get(body.status, DomainError)
    err = cls(body.message, field=body.field, code=body.code)
    err.status = body.status
    if body.retry_after is not None:
        err.retry_after = body.retry_after  # type: ignore[attr-defined]
    return err
