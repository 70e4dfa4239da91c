"""Verification codes: the rules (limits, expiry, tries) as pure functions on a clock passed in,
then the command path with fakes of the read model over the dict database (tests/unit/fakes.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from contracts import CheckVerificationCode, InvalidInput, SendVerificationCode, TooManyRequests, VerificationSent
from infra.pii import PiiVault
from services.notification import domain, handlers
from services.notification.domain import StoredCode
from tests.unit.fakes import FakeCursor, FakeDb

pytestmark = pytest.mark.unit

PHONE = "13812345678"
T0 = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)


# --- the rules, pure ---------------------------------------------------------------------------

def test_a_first_send_is_admitted_and_recorded():
    assert domain.admit_send([], T0) == [T0]


def test_a_second_send_within_a_minute_is_refused_with_the_seconds_that_remain():
    with pytest.raises(TooManyRequests) as refused:
        domain.admit_send([T0], T0 + timedelta(seconds=20.5))
    assert refused.value.retry_after == 40  # 39.5 s rounded up: waiting that long is enough
    assert refused.value.field == "phone" and refused.value.status == 429
    assert "40秒后再试" in refused.value.message
    assert domain.admit_send([T0], T0 + timedelta(seconds=60)) == [T0, T0 + timedelta(seconds=60)]


def test_the_eleventh_send_in_a_day_is_refused_until_the_first_leaves_the_24_hours():
    sent = [T0 + timedelta(minutes=5 * i) for i in range(10)]
    eleventh = T0 + timedelta(hours=3)
    with pytest.raises(TooManyRequests) as refused:
        domain.admit_send(sent, eleventh)
    assert refused.value.retry_after == 21 * 3600
    assert refused.value.field == "phone"
    # A day after the first, one place is free again; what is older than a day is forgotten.
    later = T0 + timedelta(days=1)
    assert domain.admit_send(sent, later) == [*sent[1:], later]


def test_sends_older_than_a_day_neither_count_nor_stay():
    old = [T0 - timedelta(days=1, seconds=i) for i in range(30)]
    assert domain.admit_send(old, T0) == [T0]


def stored(code: str = "123456", *, expires_at: datetime = T0 + timedelta(minutes=5), wrong: int = 0) -> StoredCode:
    return StoredCode(code_hash=f"h:{code}", expires_at=expires_at, wrong_tries=wrong)


def test_the_right_code_within_five_minutes_is_verified_and_nothing_is_counted():
    verdict = domain.check_code(stored(), "h:123456", T0 + timedelta(minutes=4, seconds=59))
    assert verdict.verified and not verdict.counted and verdict.refusal is None


@pytest.mark.parametrize("entry", [None, stored(expires_at=T0), stored(wrong=5)], ids=["never", "expired", "dead"])
def test_no_live_code_is_refused_as_expired_and_not_counted(entry):
    verdict = domain.check_code(entry, "h:123456", T0)
    assert not verdict.verified and not verdict.counted
    assert isinstance(verdict.refusal, InvalidInput)
    assert (verdict.refusal.code, verdict.refusal.field) == ("sms_code_expired", "sms_code")


def test_a_wrong_code_is_counted_and_says_how_many_tries_are_left():
    first = domain.check_code(stored(), "h:654321", T0)
    assert first.counted and first.refusal is not None
    assert (first.refusal.code, first.refusal.field) == ("wrong_sms_code", "sms_code")
    assert "还可尝试4次" in first.refusal.message
    last = domain.check_code(stored(wrong=4), "h:654321", T0)
    assert last.counted and last.refusal is not None and "已无剩余次数" in last.refusal.message


def test_the_right_code_after_four_wrong_tries_still_verifies():
    assert domain.check_code(stored(wrong=4), "h:123456", T0).verified


def test_codes_are_six_digits():
    codes = {domain.new_code() for _ in range(200)}
    assert all(re.fullmatch(r"\d{6}", c) for c in codes) and len(codes) > 150


# --- the texts ---------------------------------------------------------------------------------

def test_the_code_text_is_chinese_by_default_and_english_on_request():
    assert domain.verification_code("123456", "register") == (
        "【河北预约挂号】验证码123456，用于注册账号，5分钟内有效，请勿告诉他人。")
    assert "用于重置密码" in domain.verification_code("123456", "reset_password")
    english = domain.verification_code("123456", "reset_password", "en")
    assert english.startswith("[Hebei Appointments] Your verification code is 123456")
    assert "resetting your password" in english and "5 minutes" in english


def test_the_owner_is_told_of_a_refused_registration_with_the_attempts_phone_masked_and_how_to_recover():
    text = domain.registration_refused("139****0000")
    assert text.startswith("【河北预约挂号】") and "139****0000" in text
    assert "忘记密码" in text and "身份证" in text and "预约窗口" in text


def test_a_password_reset_is_told_with_whom_to_contact():
    text = domain.password_replaced()
    assert "密码已重置" in text and "如非本人操作" in text and "12580" in text


# --- the command path, with fakes --------------------------------------------------------------

class FakeVerificationCodes:
    """readmodel.VerificationCodes over the dict database (its locks are the fake's one writer)."""

    def lock_sends(self, cur: FakeCursor, phone_hash: str) -> list[datetime]:
        return list(cur.table("verification_sends").get(phone_hash, []))

    def record_sends(self, cur: FakeCursor, phone_hash: str, sent: list[datetime]) -> None:
        cur.table("verification_sends")[phone_hash] = list(sent)

    def replace(self, cur: FakeCursor, phone_hash: str, purpose: str, code_hash: str, expires_at: datetime) -> None:
        cur.table("verification_codes")[(phone_hash, purpose)] = StoredCode(code_hash, expires_at)

    def sweep(self, cur: FakeCursor, now: datetime) -> None:
        codes = cur.table("verification_codes")
        for key in [k for k, v in codes.items() if v.expires_at < now]:
            del codes[key]

    def lock_code(self, cur: FakeCursor, phone_hash: str, purpose: str) -> StoredCode | None:
        found: StoredCode | None = cur.table("verification_codes").get((phone_hash, purpose))
        return found

    def count_wrong(self, cur: FakeCursor, phone_hash: str, purpose: str) -> None:
        codes = cur.table("verification_codes")
        old = codes[(phone_hash, purpose)]
        codes[(phone_hash, purpose)] = StoredCode(old.code_hash, old.expires_at, old.wrong_tries + 1)


class FakeOutbox:
    def add(self, cur: FakeCursor, **row: Any) -> None:
        rows = cur.table("outbox")
        rows[len(rows)] = row


class Verification:
    def __init__(self) -> None:
        self.db = FakeDb()
        self.vault = PiiVault(Fernet.generate_key().decode())
        self.codes = FakeVerificationCodes()

    def send(self, at: datetime, purpose: str = "register", locale: str = "zh", phone: str = PHONE) -> Any:
        cmd = SendVerificationCode(phone=phone, purpose=purpose, locale=locale)
        return handlers.send_verification_code(cmd, self.db, self.vault, self.codes, FakeOutbox(), at)

    def check(self, code: str, at: datetime, purpose: str = "register", phone: str = PHONE) -> Any:
        cmd = CheckVerificationCode(phone=phone, purpose=purpose, code=code)
        return handlers.check_verification_code(cmd, self.db, self.vault, self.codes, at)

    def sms(self) -> list[dict[str, Any]]:
        return list(self.db.rows("outbox").values())

    def last_code(self) -> str:
        found = re.search(r"验证码(\d{6})|code is (\d{6})", self.sms()[-1]["text"])
        assert found is not None
        return found.group(1) or found.group(2)


@pytest.fixture
def v() -> Verification:
    return Verification()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_a_send_queues_the_code_for_the_number_and_keeps_only_its_hash(v):
    answer = v.send(T0)
    assert answer == VerificationSent(expires_in=300, resend_after=60)
    [sms] = v.sms()
    code = v.last_code()
    assert sms["template"] == "verification_code" and sms["patient_id"] == "" and sms["event_id"] is None
    assert sms["phone_masked"] == "138****5678" and sms["phone_hash"] == v.vault.lookup_hash(PHONE)
    assert v.vault.decrypt(sms["phone_enc"]) == PHONE
    assert sms["text"] == domain.verification_code(code, "register")
    [entry] = v.db.rows("verification_codes").values()
    assert code not in entry.code_hash and entry.expires_at == T0 + timedelta(minutes=5)


def test_english_on_request(v):
    v.send(T0, locale="en")
    assert v.sms()[0]["text"].startswith("[Hebei Appointments] Your verification code is")


def test_a_second_send_within_a_minute_is_refused_whatever_its_purpose_and_queues_nothing(v):
    v.send(T0)
    with pytest.raises(TooManyRequests) as refused:
        v.send(T0 + timedelta(seconds=15), purpose="reset_password")
    assert refused.value.retry_after == 45 and refused.value.field == "phone"
    assert len(v.sms()) == 1
    v.send(T0 + timedelta(seconds=61), purpose="reset_password")
    assert len(v.sms()) == 2


def test_the_eleventh_code_in_a_day_is_refused_and_other_numbers_are_not_affected(v):
    for i in range(10):
        v.send(T0 + timedelta(minutes=2 * i))
    with pytest.raises(TooManyRequests) as refused:
        v.send(T0 + timedelta(hours=1))
    assert refused.value.retry_after == 23 * 3600
    assert len(v.sms()) == 10
    v.send(T0 + timedelta(hours=1), phone="13900001111")
    assert len(v.sms()) == 11


def test_the_right_code_verifies_again_until_it_expires(v):
    v.send(T0)
    code = v.last_code()
    assert v.check(code, T0 + timedelta(minutes=1)) == {"verified": True}
    assert v.check(code, T0 + timedelta(minutes=4, seconds=59)) == {"verified": True}  # a retried registration
    with pytest.raises(InvalidInput) as refused:
        v.check(code, T0 + timedelta(minutes=5))
    assert refused.value.code == "sms_code_expired" and refused.value.field == "sms_code"


def test_a_code_is_for_its_purpose_only(v):
    v.send(T0, purpose="register")
    with pytest.raises(InvalidInput) as refused:
        v.check(v.last_code(), T0, purpose="reset_password")
    assert refused.value.code == "sms_code_expired"


def test_five_wrong_tries_kill_the_code_and_each_is_counted_even_though_it_is_refused(v):
    v.send(T0)
    code = v.last_code()
    messages = []
    for _ in range(5):
        with pytest.raises(InvalidInput) as refused:
            v.check(wrong(code), T0)
        assert refused.value.code == "wrong_sms_code"
        messages.append(refused.value.message)
    assert [m.split(" / ")[0] for m in messages[:4]] == [f"验证码错误，还可尝试{n}次" for n in (4, 3, 2, 1)]
    assert "已无剩余次数" in messages[4]
    with pytest.raises(InvalidInput) as dead:
        v.check(code, T0)
    assert dead.value.code == "sms_code_expired"


def test_a_new_code_replaces_the_previous_one_and_resets_its_tries(v, monkeypatch):
    codes = iter(["111111", "222222"])
    monkeypatch.setattr(domain, "new_code", lambda: next(codes))
    v.send(T0)
    first = v.last_code()
    for _ in range(4):
        with pytest.raises(InvalidInput):
            v.check(wrong(first), T0)
    v.send(T0 + timedelta(minutes=1))
    second = v.last_code()
    assert (first, second) == ("111111", "222222")
    with pytest.raises(InvalidInput, match="还可尝试4次"):  # the old code is wrong now, and tries start again
        v.check(first, T0 + timedelta(minutes=1))
    for _ in range(3):
        with pytest.raises(InvalidInput, match="wrong code"):
            v.check(wrong(second), T0 + timedelta(minutes=1))
    assert v.check(second, T0 + timedelta(minutes=1)) == {"verified": True}


def test_a_code_never_sent_is_refused_as_expired(v):
    with pytest.raises(InvalidInput) as refused:
        v.check("123456", T0)
    assert refused.value.code == "sms_code_expired"
