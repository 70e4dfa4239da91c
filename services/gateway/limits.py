"""Load protection held in each gateway process: rate limits, login throttling, and the memory of
sold-out sessions. Per process on purpose: each replica protects the services behind it."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from nameko.extensions import DependencyProvider
from pydantic import Field

from contracts import TooManyRequests
from infra.settings import Settings, settings_for
from services.gateway.auth import Backoff, LoginPolicy, TokenBucket, TrustedProxies


class GatewaySettings(Settings):
    rate_per_client: float = Field(default=20.0, gt=0, alias="RATE_PER_CLIENT", description="requests/s per IP")
    rate_burst_client: int = Field(default=60, ge=1, alias="RATE_BURST_CLIENT")
    rate_per_patient: float = Field(default=1.0, gt=0, alias="RATE_PER_PATIENT", description="bookings/s")
    rate_burst_patient: int = Field(default=10, ge=1, alias="RATE_BURST_PATIENT")
    login_failures: int = Field(default=5, ge=1, alias="LOGIN_FAILURES",
                                description="free failed logins per (account, client) before back-off")
    login_client_failures: int = Field(default=20, ge=1, alias="LOGIN_CLIENT_FAILURES",
                                       description="free failed logins per client address before back-off")
    login_window_s: float = Field(default=900.0, gt=0, alias="LOGIN_WINDOW_S",
                                  description="failures older than this are forgotten; the longest back-off")
    sms_per_client: float = Field(default=0.2, gt=0, alias="SMS_PER_CLIENT",
                                  description="verification SMS a client address may ask for, per second")
    sms_burst_client: int = Field(default=5, ge=1, alias="SMS_BURST_CLIENT")
    max_body_bytes: int = Field(default=65_536, ge=1024, alias="MAX_BODY_BYTES", description="larger bodies: 413")
    trusted_proxies: str | None = Field(default=None, alias="TRUSTED_PROXIES",
                                 description="comma-separated addresses/networks whose X-Forwarded-For is believed")
    allowed_origins: str | None = Field(default=None, alias="ALLOWED_ORIGINS",
                                 description="extra origins (scheme://host[:port]) allowed to POST, besides the Host")
    cookie_secure: bool = Field(default=False, alias="COOKIE_SECURE", description="true behind HTTPS")
    dev_pages: bool = Field(default=False, alias="DEV_PAGES",
                            description="the SMS outbox page and API, for platform_admin only")


class Limits:
    def __init__(self, cfg: GatewaySettings) -> None:
        self.clients = TokenBucket(cfg.rate_per_client, cfg.rate_burst_client)
        self.patients = TokenBucket(cfg.rate_per_patient, cfg.rate_burst_patient)
        self.sms = TokenBucket(cfg.sms_per_client, cfg.sms_burst_client)
        self.login = LoginPolicy(account=Backoff(free=cfg.login_failures, cap=cfg.login_window_s),
                                 client=Backoff(free=cfg.login_client_failures, cap=cfg.login_window_s))
        self.sessions = SessionCache()
        self.proxies = TrustedProxies(cfg.trusted_proxies or "")
        self.names = NameCache()

    def client(self, address: str | None) -> None:
        wait = self.clients.take(address or "-", time.monotonic())
        if wait is not None:
            raise TooManyRequests("请求过于频繁，请稍后再试 / too many requests, slow down", wait)

    def patient(self, patient_id: str) -> None:
        wait = self.patients.take(patient_id, time.monotonic())
        if wait is not None:
            raise TooManyRequests("操作过于频繁，请稍后再试 / too many bookings, slow down", wait)

    def verification_sms(self, address: str | None) -> None:
        wait = self.sms.take(address or "-", time.monotonic())
        if wait is not None:
            raise TooManyRequests("获取验证码过于频繁，请稍后再试 / too many verification codes asked, slow down",
                                  wait, field="phone")


class LimitsProvider(DependencyProvider):
    def setup(self) -> None:
        self.limits = Limits(settings_for(self.container, GatewaySettings))

    def get_dependency(self, worker_ctx: Any) -> Limits:
        return self.limits


class SessionCache:
    """Login sessions looked up in the last `ttl` seconds, so that a crowd of logged-in patients
    costs no database round trip each. A logout is seen at once by the gateway that served it
    and within `ttl` by the others."""

    def __init__(self, ttl: float = 10.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bool], tuple[Any, float]] = OrderedDict()

    def get(self, token: str, via_cookie: bool) -> Any:
        """The principal of a session seen within `ttl`, else None."""
        hit = self._entries.get((token, via_cookie))
        if hit is None or time.monotonic() > hit[1]:
            return None
        return hit[0]

    def put(self, token: str, via_cookie: bool, principal: Any) -> None:
        self._entries[(token, via_cookie)] = (principal, time.monotonic() + self.ttl)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_subject(self, role: str, subject: str) -> None:
        """Every cached session of one account (a rare walk: after a password reset)."""
        for key, (principal, _) in list(self._entries.items()):
            if principal.role == role and principal.subject == subject:
                del self._entries[key]

    def forget(self, token: str) -> None:
        self._entries.pop((token, True), None)
        self._entries.pop((token, False), None)


class NameCache:
    """What hospitals, departments and doctors are called, for a minute: staff pages show names,
    never codes, without an RPC per page. Bounded like every table here."""

    def __init__(self, ttl: float = 60.0, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[dict[str, str], float]] = OrderedDict()

    def get(self, key: str, load: Any) -> dict[str, str]:
        """The names under `key` ({id: name}), loaded by `load()` when unknown or older than `ttl`."""
        hit = self._entries.get(key)
        if hit is not None and time.monotonic() < hit[1]:
            return hit[0]
        names: dict[str, str] = load()
        self._entries.pop(key, None)
        self._entries[key] = (names, time.monotonic() + self.ttl)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return names
