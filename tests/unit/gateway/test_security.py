"""The gateway's defences as pure parts: who a login is and what it costs, login back-off, the
client address behind a proxy, body limits, cross-site refusals, bounded memory, and the password
policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from contracts import InvalidInput, RegisterPatient, TooManyRequests, from_wire, to_wire
from infra.passwords import ARGON2, Passwords, check_password, check_staff_username, patient_login
from services.gateway.api import PayloadTooLarge, UnsupportedMediaType, api, json_response, read_json
from services.gateway.auth import Backoff, LoggedIn, LoginPolicy, StaffCredentials, TrustedProxies, log_in
from services.gateway.bodies import RegisterBody, StaffBody
from services.gateway.limits import GatewaySettings, Limits, SessionCache
from tests.unit.fakes import CountingHasher

pytestmark = pytest.mark.unit


# --- who a login is: one kind of account, one argon2 verification -------------------------------


class Accounts:
    """Staff accounts as readmodel.staff_credentials finds them, and booking's patient check as a
    callable; both record what they were asked."""

    def __init__(self, passwords: Passwords) -> None:
        self.staff = {name: StaffCredentials(name, passwords.hash(f"{name}-pass-2024"), "clerk", "hebmu2", name,
                                             None, disabled=name.startswith("gone"))
                      for name in ("hebmu2-clerk", "gone-clerk")}
        self.staff_asked: list[str] = []
        self.patients_asked: list[str] = []

    def staff_account(self, username: str) -> StaffCredentials | None:
        self.staff_asked.append(username)
        return self.staff.get(username)

    def patient(self, username: str, password: str) -> dict[str, Any] | None:
        self.patients_asked.append(username)
        return {"patient_id": "p-1", "name": "李明"} if password == "patient-pass-2024" else None


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


def logs_in(accounts: Accounts, hasher: CountingHasher, username: str, password: str) -> LoggedIn | None:
    hasher.verified.clear()
    return log_in(username, password, accounts.staff_account, accounts.patient, hasher.passwords())


@pytest.mark.parametrize("username", ["13800138000", "11010519491231002X", "11010519491231002x"])
def test_a_mobile_or_an_id_is_checked_by_booking_alone_without_a_staff_verification(hasher, username):
    accounts = Accounts(hasher.passwords())
    assert logs_in(accounts, hasher, username, "patient-pass-2024") == LoggedIn("patient", "p-1", None, "李明")
    assert logs_in(accounts, hasher, username, "wrong-pass-2024") is None
    assert accounts.patients_asked == [username, username]
    assert accounts.staff_asked == [] and hasher.verified == []  # no staff look-up, no argon2 here


@pytest.mark.parametrize("username, password", [
    ("hebmu2-clerk", "wrong-pass-2024"),  # a wrong password
    ("nobody-at-this-hospital", "hebmu2-clerk-pass-2024"),  # no such account (long as a phone: still staff)
    ("gone-clerk", "gone-clerk-pass-2024"),  # disabled, with its right password
    ("12580", "hebmu2-clerk-pass-2024"),  # neither a staff username nor a patient's login
])
def test_every_staff_refusal_costs_one_verification_of_the_same_parameters_and_no_booking_call(hasher, username,
                                                                                             password):
    accounts = Accounts(hasher.passwords())
    assert logs_in(accounts, hasher, username, password) is None
    assert hasher.verified == [ARGON2]
    assert accounts.staff_asked == [username] and accounts.patients_asked == []


def test_a_right_staff_password_logs_in_after_one_verification(hasher):
    accounts = Accounts(hasher.passwords())
    who = logs_in(accounts, hasher, "hebmu2-clerk", "hebmu2-clerk-pass-2024")
    assert who == LoggedIn("clerk", "hebmu2-clerk", "hebmu2", "hebmu2-clerk", None)
    assert hasher.verified == [ARGON2] and accounts.patients_asked == []


# --- login back-off -----------------------------------------------------------------------------


def run(backoff: Backoff, attempts: list[float]) -> list[float]:
    """Attempts at these moments, all failing; the wait each was answered (0: it was let through)."""
    failures, last, waits = 0, None, []
    for at in attempts:
        failures, wait = backoff.reserve(failures, None if last is None else at - last)
        waits.append(wait)
        if wait == 0:
            last = at
    return waits


def test_free_failures_then_each_attempt_waits_twice_as_long_as_the_one_before():
    waits = run(Backoff(free=5, cap=900), [0, 0, 0, 0, 0, 0, 1, 1, 3, 3, 7])
    assert waits[:5] == [0] * 5
    assert waits[5] == pytest.approx(1.0)  # the 6th at once: wait a second
    assert waits[6] == 0  # one second later it may try
    assert waits[7] == pytest.approx(2.0)  # and then wait two
    assert waits[8] == 0 and waits[9] == pytest.approx(4.0) and waits[10] == 0


def test_the_wait_never_grows_past_the_cap_and_a_quiet_key_is_forgotten():
    backoff = Backoff(free=1, cap=60)
    assert backoff.wait(1_000_000, 0) == pytest.approx(60)  # no overflow, never a lock longer than the cap
    failures, wait = backoff.reserve(1_000_000, 60.0)  # quiet for the cap: forgotten, counted afresh
    assert (failures, wait) == (1, 0.0)


def test_a_refused_attempt_counts_nothing():
    backoff = Backoff(free=2, cap=900)
    assert backoff.reserve(2, 0.1) == (2, pytest.approx(0.9))


def test_failures_of_an_account_from_one_client_do_not_touch_another_client():
    policy = LoginPolicy(account=Backoff(free=5, cap=900), client=Backoff(free=20, cap=900))
    mine, theirs = policy.keys("Hebmu2-Clerk", "10.0.0.1"), policy.keys("hebmu2-clerk ", "203.0.113.9")
    assert mine[0][0] != theirs[0][0] and mine[1][0] != theirs[1][0]
    assert policy.keys("HEBMU2-clerk", "10.0.0.1")[0][0] == mine[0][0]  # case and spaces do not make new keys


# --- the client's address -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [("", "198.51.100.7", "1.2.3.4", "198.51.100.7"),  # nobody trusted: a client's header is ignored
     ("10.0.0.0/8", "198.51.100.7", "1.2.3.4", "198.51.100.7"),  # from the internet: ignored
     ("10.0.0.2", "10.0.0.2", "203.0.113.5", "203.0.113.5"),  # our proxy: believed
     ("10.0.0.2", "10.0.0.2", "1.2.3.4, 203.0.113.5", "203.0.113.5"),  # the client's own entry is not
     ("10.0.0.0/8", "10.0.0.2", "203.0.113.5, 10.0.0.9", "203.0.113.5"),  # two of our proxies
     ("10.0.0.2", "10.0.0.2", "not-an-address", "10.0.0.2"),
     ("10.0.0.2", "10.0.0.2", None, "10.0.0.2"),
     ("::1", "::1", "2001:db8::5", "2001:db8::5")],
    ids=["none-trusted", "untrusted-peer", "proxy", "spoofed-left", "proxy-chain", "mangled", "no-header", "ipv6"],
)
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(trusted, peer, forwarded, client):
    assert TrustedProxies(trusted).client(peer, forwarded) == client


# --- bodies: size, type, depth --------------------------------------------------------------------


def post(data: bytes, content_type: str = "application/json", **headers: str) -> Request:
    builder = EnvironBuilder(method="POST", path="/api/v1/x", data=data, content_type=content_type, headers=headers)
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


def test_a_body_over_the_limit_is_413_before_it_is_read():
    request = post(b'{"username": "' + b"a" * 70_000 + b'"}')
    with pytest.raises(PayloadTooLarge) as exc:
        read_json(request, 65_536)
    assert exc.value.status == 413
    assert request.environ["wsgi.input"].tell() == 0  # not a byte of it read


def test_a_chunked_body_is_cut_off_at_the_limit():
    builder = EnvironBuilder(method="POST", path="/api/v1/x", input_stream=__import__("io").BytesIO(b"[" * 70_000),
                             content_type="application/json", headers={"Transfer-Encoding": "chunked"})
    env = builder.get_environ()
    env.pop("CONTENT_LENGTH", None)
    with pytest.raises(PayloadTooLarge):
        read_json(Request(env), 65_536)


def test_json_nested_too_deep_is_a_400_not_a_recursion_error():
    with pytest.raises(InvalidInput) as exc:
        read_json(post(b"[" * 50_000 + b"]" * 50_000), 200_000)
    assert exc.value.status == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_not_sent_as_json_is_415(content_type):
    """A cross-site form can send these without asking first; application/json it cannot."""
    with pytest.raises(UnsupportedMediaType):
        read_json(post(b'{"username": "a", "password": "b"}', content_type), 65_536)


# --- cross-site requests --------------------------------------------------------------------------


class Gate:
    def __init__(self, **settings: Any) -> None:
        self.settings = GatewaySettings(SERVICE_NAME="gateway", EVENTSTORE_DSN="-", **settings)
        self.limits = Limits(self.settings)
        self.db = self.vault = None
        self.reached = 0

    @api("POST", "/api/v1/open", "anyone", "test")
    def open(self, request: Request) -> Response:
        self.reached += 1
        return json_response({})


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 200), ({"Origin": "http://localhost"}, 200), ({"Origin": "https://localhost"}, 200),
     ({"Origin": "https://evil.example"}, 403), ({"Origin": "null"}, 403),
     ({"Sec-Fetch-Site": "cross-site"}, 403), ({"Sec-Fetch-Site": "same-site"}, 403),
     ({"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}, 200),
     ({"Origin": "https://app.example.cn"}, 200)],
    ids=["not-a-browser", "same-origin", "same-host-https", "other-site", "opaque", "cross-site", "same-site",
         "fetch-metadata", "configured"],
)
def test_a_state_change_from_another_site_is_refused(headers, status):
    gate = Gate(ALLOWED_ORIGINS="https://app.example.cn")
    builder = EnvironBuilder(method="POST", path="/api/v1/open", headers=headers, base_url="http://localhost/")
    try:
        response = gate.open(Request(builder.get_environ()))
    finally:
        builder.close()
    assert response.status_code == status
    assert gate.reached == (1 if status == 200 else 0)


# --- bounded memory -------------------------------------------------------------------------------


def test_the_session_cache_is_bounded():
    sessions = SessionCache(max_entries=100)
    for i in range(1_000):
        sessions.put(f"token-{i}", False, object())
    assert len(sessions._entries) == 100 and sessions.get("token-999", False) is not None


# --- text and passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["李\x00明", "李\x01明", "李明\x1b[31m", "李\x7f明"],
                         ids=["nul", "soh", "escape", "del"])
def test_control_characters_are_refused_in_bodies_and_in_every_contract(bad):
    person = {"name": bad, "id_number": "11010519491231002X", "phone": "13800138000", "sms_code": "123456"}
    with pytest.raises(ValidationError, match="control"):
        RegisterBody.model_validate(person)
    with pytest.raises(ValidationError, match="control"):
        RegisterPatient(name=bad, id_number="11010519491231002X", phone="13800138000", idempotency_key="k" * 8)


def test_line_breaks_and_tabs_are_still_text():
    assert RegisterBody.model_validate({"name": "李明", "id_number": "1" * 18, "phone": "13800138000",
                                        "sms_code": "123456", "password": "a\tb c\nd-9x"}).password == "a\tb c\nd-9x"


@pytest.mark.parametrize("common", ["password", "Password1", "qwerty123", "iloveyou2024", "woaini1314", "1qaz2wsx",
                                    "abc123456", "passw0rd", "12345678a", "admin123"])
def test_the_most_common_passwords_are_refused(common):
    with pytest.raises(InvalidInput) as exc:
        check_password(common)
    assert (exc.value.field, exc.value.code) == ("password", "weak_password")


@pytest.mark.parametrize("weak", ["1234567", "12345678901", "aaaaaaaa", "abababab"],
                         ids=["short", "digits", "one", "two"])
def test_short_and_simple_passwords_are_refused(weak):
    with pytest.raises(InvalidInput):
        check_password(weak)


def test_ordinary_passwords_pass():
    for fine in ("clerk-pass-2024", "patient-pass-2024", "pw-12345678", "绿色的山和水-42", "Tj8#kq2Lm"):
        check_password(fine)


@pytest.mark.parametrize("name", ["13800138000", "11010519491231002X", "ab", "Admin", "a b", "x" * 65, "管理员"])
def test_a_staff_username_never_looks_like_a_patient_login(name):
    with pytest.raises(InvalidInput):
        check_staff_username(name)
    with pytest.raises(ValidationError):
        StaffBody.model_validate({"username": name, "password": "Tj8#kq2Lm", "role": "clerk"})
    check_staff_username("hebmu2-clerk.wang")


@pytest.mark.parametrize("name", ["13800138000", "11010519491231002X", "11010519491231002x"])
def test_a_staff_username_shaped_as_a_patient_login_is_refused_saying_why(name):
    with pytest.raises(InvalidInput) as refused:
        check_staff_username(name)
    assert (refused.value.code, refused.value.field) == ("bad_username", "username")
    assert "手机号或身份证号" in refused.value.message and "patients log in with those" in refused.value.message


@pytest.mark.parametrize("name", ["hebmu2-clerk", "a13800138000", "x11010519491231002", "op-12580"])
def test_what_a_staff_username_may_be_is_never_a_patient_login(name):
    check_staff_username(name)
    assert patient_login(name) is None


def test_a_429_keeps_its_retry_after_across_rpc():
    err = from_wire(json.loads(json.dumps(to_wire(TooManyRequests("slow down", 42.2, field="phone")))))
    assert isinstance(err, TooManyRequests)
    assert (err.status, err.retry_after, err.field) == (429, 43, "phone")  # type: ignore[attr-defined]
