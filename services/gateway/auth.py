"""Who may do what: principals, roles, who a login is, tokens, login throttling and rate limits.
Pure: the clock, the account look-ups and the password hasher are passed in, storage lives in
readmodel.py."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from contracts import Forbidden
from infra.passwords import Passwords, patient_login

Role = Literal["patient", "operator", "clerk", "hospital_admin", "doctor", "analyst", "platform_admin"]
ROLES: tuple[Role, ...] = ("patient", "operator", "clerk", "hospital_admin", "doctor", "analyst", "platform_admin")
HOSPITAL_SCOPED: frozenset[str] = frozenset({"clerk", "hospital_admin", "doctor"})
# Who may create (and disable) which staff accounts: the platform admin anyone, a hospital admin
# the clerks and doctors of their own hospital. Nobody is ever deleted (the audit log points at them).
MAY_MANAGE: dict[str, frozenset[str]] = {
    "platform_admin": frozenset({"operator", "clerk", "hospital_admin", "doctor", "analyst", "platform_admin"}),
    "hospital_admin": frozenset({"clerk", "doctor"}),
}
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
    doctor_id: str | None = None  # a doctor's own schedule (role doctor)

    def actor(self) -> dict[str, str | None]:
        """The contracts.Actor of commands this principal sends."""
        return {"kind": self.role, "id": self.subject[:64], "hospital_id": self.hospital_id}

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"无权执行此操作 / this needs one of the roles {', '.join(roles)}", field="role")

    def may_manage(self, role: str, hospital_id: str | None) -> None:
        """Create or disable a staff account of `role` at `hospital_id` (403 otherwise)."""
        if role not in MAY_MANAGE.get(self.role, frozenset()):
            raise Forbidden(f"无权管理{role}账号 / a {self.role} does not manage {role} accounts", field="role")
        if self.role != "platform_admin":
            self.require_hospital(str(hospital_id))

    def require_hospital(self, hospital_id: str) -> None:
        """Hospital staff act only within their hospital; the platform admin anywhere."""
        if self.role == "platform_admin":
            return
        if self.role not in HOSPITAL_SCOPED or self.hospital_id != hospital_id:
            raise Forbidden("只能操作本院数据 / staff act only within their own hospital", field="hospital_id")


@dataclass(frozen=True)
class StaffCredentials:
    """A staff account as a login checks it (readmodel.staff_credentials)."""

    username: str
    password_hash: str
    role: Role
    hospital_id: str | None
    name: str
    doctor_id: str | None
    disabled: bool


@dataclass(frozen=True)
class LoggedIn:
    """Who a login session is opened for."""

    role: Role
    subject: str
    hospital_id: str | None = None
    name: str = ""
    doctor_id: str | None = None


def log_in(username: str, password: str, staff: Callable[[str], StaffCredentials | None],
           patient: Callable[[str, str], dict[str, Any] | None], passwords: Passwords) -> LoggedIn | None:
    """Who these credentials are, or None (the same None for every refusal). A mobile or a resident
    ID can only be a patient's (`patient`: booking's check, which answers None for a refusal) and
    anything else only a staff username (infra.passwords.check_staff_username keeps them apart),
    so one kind of account is looked at: a login costs one argon2 verification, found or not,
    never a staff check for a patient or a patient look-up for staff."""
    if patient_login(username) is not None:
        found = patient(username, password)
        if found is None:
            return None
        return LoggedIn("patient", str(found["patient_id"]), None, str(found.get("name", "")))
    account = staff_login(staff(username), password, passwords)
    if account is None:
        return None
    return LoggedIn(account.role, account.username, account.hospital_id, account.name, account.doctor_id)


def staff_login(account: StaffCredentials | None, password: str, passwords: Passwords) -> StaffCredentials | None:
    """The account, if it exists, is enabled and `password` is its password. An unknown account is
    verified against a dummy hash and a disabled one against its own, so each refusal takes what
    a wrong password takes."""
    if not passwords.verify(account.password_hash if account else None, password):
        return None
    return account if account is not None and not account.disabled else None


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


@dataclass(frozen=True)
class Backoff:
    """Failed logins counted per key: the first `free` cost nothing; after them each attempt waits
    `base`·2^(n−free) seconds after the previous one, at most `cap`; a key quiet for `cap` seconds is
    forgotten. A wait is never a lock: the longest is `cap`, and it grows only with the key's own failures."""

    free: int
    cap: float
    base: float = 1.0

    def wait(self, failures: int, since_last: float) -> float:
        """Seconds still to wait before this key may try again (0: now)."""
        if failures < self.free or since_last >= self.cap:
            return 0.0
        step = min(self.cap, self.base * 2.0 ** min(failures - self.free, 40))
        return max(0.0, step - since_last)

    def reserve(self, failures: int, since_last: float | None) -> tuple[int, float]:
        """An attempt is counted as failed before the password is checked (a success gives it back),
        so concurrent guesses cannot all pass one check. Answers (failures, wait): a wait > 0 refuses
        the attempt and counts nothing."""
        if since_last is None or since_last >= self.cap:
            failures, since_last = 0, self.cap
        wait = self.wait(failures, since_last)
        return (failures, wait) if wait > 0 else (failures + 1, 0.0)


@dataclass(frozen=True)
class LoginPolicy:
    """Back-off per (account, client) and per client: failures from elsewhere never slow the owner
    down on their own device, and one address guessing many accounts is slowed as a whole."""

    account: Backoff
    client: Backoff

    def keys(self, username: str, client: str) -> list[tuple[str, Backoff]]:
        return [(f"account:{username.strip().lower()}@{client}", self.account), (f"client:{client}", self.client)]


class TrustedProxies:
    """The client's address: the peer's, unless the peer is a configured reverse proxy, whose
    X-Forwarded-For is then read from the right, skipping our own proxies. Anyone else's
    X-Forwarded-For is ignored: it is whatever the client wrote."""

    def __init__(self, spec: str) -> None:
        self.networks = [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or "-"
        if not forwarded_for or not self.trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",")[-20:]]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a mangled header: believe only what our proxy itself is
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer
