"""Who may do what: principals, roles, tokens, login throttling and rate limits. Pure: the
clock is passed in, storage lives in readmodel.py."""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from contracts import Forbidden

Role = Literal["patient", "operator", "clerk", "hospital_admin", "analyst", "platform_admin"]
ROLES: tuple[Role, ...] = ("patient", "operator", "clerk", "hospital_admin", "analyst", "platform_admin")
HOSPITAL_SCOPED: frozenset[str] = frozenset({"clerk", "hospital_admin"})
SESSION_COOKIE = "appt_session"
CSRF_HEADER = "X-CSRF-Token"


class Unauthenticated(Forbidden):
    code = "unauthenticated"
    status = 401


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str  # patient_id, or the staff username
    hospital_id: str | None = None
    name: str = ""
    csrf: str = ""
    via_cookie: bool = False

    def actor(self) -> dict[str, str | None]:
        """The contracts.Actor of commands this principal sends."""
        return {"kind": self.role, "id": self.subject[:64], "hospital_id": self.hospital_id}

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"无权执行此操作 / this needs one of the roles {', '.join(roles)}", field="role")

    def require_hospital(self, hospital_id: str) -> None:
        """Hospital staff act only within their hospital; the platform admin anywhere."""
        if self.role == "platform_admin":
            return
        if self.role not in HOSPITAL_SCOPED or self.hospital_id != hospital_id:
            raise Forbidden("只能操作本院数据 / staff act only within their own hospital", field="hospital_id")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Only the hash of a session token is stored: a leaked table does not log anyone in."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_ok(principal: Principal, method: str, header: str | None) -> bool:
    """Cookie sessions must echo their CSRF token on every state change; bearer tokens need not
    (a browser never adds them on its own)."""
    if method in ("GET", "HEAD", "OPTIONS") or not principal.via_cookie:
        return True
    return bool(header) and secrets.compare_digest(header or "", principal.csrf)


class TokenBucket:
    """Per-key rate limit: `rate` requests a second with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float | None:
        """None when allowed; otherwise the seconds until a request would be."""
        tokens, last = self._state.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._remember(key, (tokens - 1.0, now))
            return None
        self._remember(key, (tokens, now))
        return (1.0 - tokens) / self.rate

    def _remember(self, key: str, value: tuple[float, float]) -> None:
        self._state[key] = value
        if len(self._state) > self.max_keys:
            self._state.popitem(last=False)


class LoginThrottle:
    """After `limit` failed logins for one username (or one client) within `window` seconds,
    further attempts are refused until the oldest failure leaves the window."""

    def __init__(self, limit: int = 5, window: float = 900.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def check(self, key: str, now: float) -> float | None:
        recent = [t for t in self._failures.get(key, []) if now - t < self.window]
        if len(recent) >= self.limit:
            return self.window - (now - recent[0])
        return None

    def failed(self, key: str, now: float) -> None:
        recent = [t for t in self._failures.pop(key, []) if now - t < self.window]
        self._failures[key] = [*recent, now]
        if len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
