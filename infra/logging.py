"""structlog set up once per process: JSON off a terminal, readable on one, PII always masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Resident ID (GB 11643: 17 digits + digit or X) and mainland mobile numbers, wherever they appear,
# also inside Chinese text where \b does not separate words.
_ID = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
# Also +86 / 0086 prefixed and written in groups (138-0013-8000, 138 0013 8000).
_PHONE = re.compile(r"(?<![0-9A-Za-z])(?:(?:\+|00)?86[- ]?)?(1[3-9]\d)[- ]?\d{4}[- ]?(\d{4})(?![0-9A-Za-z])")


def mask_text(text: str) -> str:
    text = _ID.sub(lambda m: f"{m.group(1)}********{m.group(2)}", text)
    return _PHONE.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)


def mask_id(id_number: str) -> str:
    return f"{id_number[:6]}********{id_number[-4:]}" if len(id_number) >= 10 else "****"


def mask_phone(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}" if len(phone) >= 7 else "****"


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 10**9:
        return mask_text(str(value))
    return value


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _redact(v) for k, v in event_dict.items()}


def _render_exc_then_redact(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    # Tracebacks can quote arguments (an ID in a ValueError); render them first, then mask.
    return redact_pii(logger, method, structlog.processors.format_exc_info(logger, method, event_dict))


class _MaskRendered:
    """Masks the final line too: values that are not plain data (an exception object, a set)
    reach the renderer as objects and are only turned into text there."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        return mask_text(str(self.renderer(logger, method, event_dict)))


def configure(service: str, fmt: str = "auto", level: str = "INFO") -> None:
    """Idempotent. `fmt` auto = JSON unless stderr is a terminal."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if json_out else (
        structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _render_exc_then_redact,
            _MaskRendered(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Third-party stdlib logging (nameko, kombu) goes through the same masking.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(levelname)s:%(name)s:%(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


class _MaskingFormatter(logging.Formatter):
    """Masks the whole rendered record, traceback included (nameko logs handler errors with one)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
