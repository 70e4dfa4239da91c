"""SMS texts and the rules of verification codes, pure. Simplified Chinese first; English as the
second locale. The clock is always passed in."""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts import InvalidInput, TooManyRequests

PERIOD_ZH = {"morning": "上午", "afternoon": "下午", "evening": "晚间"}
PERIOD_EN = {"morning": "morning", "afternoon": "afternoon", "evening": "evening"}
SIGNATURE = "【河北预约挂号】"


def booking_confirmation(appt: dict[str, Any], names: dict[str, str], locale: str = "zh") -> str:
    hospital = names.get(appt["hospital_id"], appt["hospital_id"])
    department = names.get(appt["department_id"], appt["department_id"])
    doctor = names.get(appt["doctor_id"], appt["doctor_id"])
    if locale == "en":
        return (f"[Hebei Appointments] Booked: {hospital} {department}, Dr {doctor}, {appt['date']} "
                f"{PERIOD_EN.get(appt['period'], appt['period'])}, No. {appt['sequence_number']}, "
                f"code {appt['code']}. Bring your ID card to the booking window on the day.")
    return (f"{SIGNATURE}您已成功预约{hospital}{department}{doctor}医生{appt['date']}"
            f"{PERIOD_ZH.get(appt['period'], appt['period'])}门诊，就诊序号{appt['sequence_number']}，"
            f"预约码{appt['code']}。请于就诊当日携带身份证到预约窗口取号。")


def _where(appt: dict[str, Any], names: dict[str, str], locale: str) -> tuple[str, str, str, str]:
    hospital = names.get(appt["hospital_id"], appt["hospital_id"])
    department = names.get(appt["department_id"], appt["department_id"])
    doctor = names.get(appt["doctor_id"], appt["doctor_id"])
    period = (PERIOD_EN if locale == "en" else PERIOD_ZH).get(appt["period"], appt["period"])
    return hospital, department, doctor, period


def cancellation(appt: dict[str, Any], names: dict[str, str], reason: str, refund_due: str | None,
                 locale: str = "zh") -> str:
    """A booking was cancelled: by the patient or an operator, or by the hospital for a doctor stop."""
    hospital, department, doctor, period = _where(appt, names, locale)
    if locale == "en":
        why = f"Dr {doctor} has stopped this session; " if reason == "doctor_stop" else ""
        refund = f"The fee of {refund_due} yuan will be refunded. " if refund_due else ""
        return (f"[Hebei Appointments] {why}your booking at {hospital} {department}, {appt['date']} {period} "
                f"(code {appt['code']}) is cancelled. {refund}").strip()
    why = f"因{doctor}医生停诊，" if reason == "doctor_stop" else ""
    refund = f"挂号费{refund_due}元将退还。" if refund_due else ""
    sorry = "敬请谅解。" if reason == "doctor_stop" else ""
    return (f"{SIGNATURE}{why}您预约的{hospital}{department}{doctor}医生{appt['date']}{period}门诊"
            f"（预约码{appt['code']}）已取消。{refund}{sorry}")


def moved(appt: dict[str, Any], names: dict[str, str], locale: str = "zh") -> str:
    """A doctor stop moved the booking to the replacement session (补诊); the code stays."""
    hospital, department, doctor, period = _where(appt, names, locale)
    if locale == "en":
        return (f"[Hebei Appointments] Because of a doctor stop your booking moved to {hospital} {department}, "
                f"Dr {doctor}, {appt['date']} {period}, No. {appt['sequence_number']}; your code {appt['code']} "
                f"stays the same.")
    return (f"{SIGNATURE}因医生停诊，您的预约已改至{hospital}{department}{doctor}医生{appt['date']}{period}门诊，"
            f"就诊序号{appt['sequence_number']}，预约码{appt['code']}不变。")


# --- account security: texts ------------------------------------------------------------------

PURPOSE_ZH = {"register": "注册账号", "reset_password": "重置密码"}
PURPOSE_EN = {"register": "registering an account", "reset_password": "resetting your password"}
HOTLINE = "12580"


def verification_code(code: str, purpose: str, locale: str = "zh", minutes: int = 5) -> str:
    """The code and what it is for: a holder who did not ask for it knows what someone is trying."""
    if locale == "en":
        return (f"[Hebei Appointments] Your verification code is {code}, for "
                f"{PURPOSE_EN.get(purpose, purpose)}, valid for {minutes} minutes. Do not share it with anyone.")
    return f"{SIGNATURE}验证码{code}，用于{PURPOSE_ZH.get(purpose, purpose)}，{minutes}分钟内有效，请勿告诉他人。"


def registration_refused(attempt_phone_masked: str) -> str:
    """To the owner of a resident ID that someone tried to register again with another mobile."""
    return (f"{SIGNATURE}有人使用手机号{attempt_phone_masked}尝试以您的身份证号注册账号，未能成功，您的账号不受影响。"
            f"如系您本人更换了手机号，可用本手机号通过“忘记密码”找回账号，或携带身份证到医院预约窗口办理。")


def password_replaced() -> str:
    """To the registered phone after a password reset: the owner must hear of one they did not make."""
    return (f"{SIGNATURE}您的账号密码已重置。如非本人操作，请立即致电{HOTLINE}或携带身份证到医院预约窗口处理。")


# --- account security: verification codes, the rules -----------------------------------------

@dataclass(frozen=True)
class VerificationRules:
    """What the contract promises (contracts.notification): 6 digits, valid 5 minutes, 5 wrong tries;
    one SMS a minute and 10 a day (rolling 24 hours) per number, whatever the purpose."""

    ttl: timedelta = timedelta(minutes=5)
    resend_after: timedelta = timedelta(seconds=60)
    per_day: int = 10
    max_wrong: int = 5


RULES = VerificationRules()
_DAY = timedelta(days=1)


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def admit_send(sent: Sequence[datetime], now: datetime, rules: VerificationRules = RULES) -> list[datetime]:
    """The number's sends of the last 24 hours with this one added; TooManyRequests (field
    "phone", retry_after in seconds) when it would break a limit."""
    recent = sorted(t for t in sent if now - t < _DAY)
    if recent and now - recent[-1] < rules.resend_after:
        wait = _seconds(recent[-1] + rules.resend_after - now)
        raise TooManyRequests(f"验证码发送过于频繁，请{wait}秒后再试 / a code was sent less than a minute ago, "
                              f"try again in {wait} s", retry_after=wait, field="phone")
    if len(recent) >= rules.per_day:
        # The send that leaves the window first frees the place.
        wait = _seconds(recent[len(recent) - rules.per_day] + _DAY - now)
        raise TooManyRequests(f"该号码24小时内验证码已达{rules.per_day}条，请稍后再试 / at most {rules.per_day} codes "
                              f"a day for this number", retry_after=wait, field="phone")
    return [*recent, now]


@dataclass(frozen=True)
class StoredCode:
    """What is kept of the live code of one (phone, purpose): its keyed hash, never the code."""

    code_hash: str
    expires_at: datetime
    wrong_tries: int = 0


@dataclass(frozen=True)
class CodeCheck:
    """The verdict on one typed code. `counted`: a wrong try to record (in the transaction that
    read the code, before `refusal` is answered)."""

    verified: bool
    counted: bool = False
    refusal: InvalidInput | None = None


def check_code(stored: StoredCode | None, typed_hash: str, now: datetime,
               rules: VerificationRules = RULES) -> CodeCheck:
    """Right within the validity: verified, and it stays good until it expires (a retried
    registration must not fail). Wrong: counted, and dead after `max_wrong` wrong tries in all."""
    if stored is None or now >= stored.expires_at or stored.wrong_tries >= rules.max_wrong:
        return CodeCheck(False, refusal=InvalidInput(
            "验证码已失效，请重新获取 / the code has expired or was never sent, ask for a new one",
            field="sms_code", code="sms_code_expired"))
    if hmac.compare_digest(stored.code_hash, typed_hash):
        return CodeCheck(True)
    left = rules.max_wrong - stored.wrong_tries - 1
    if left > 0:
        message = f"验证码错误，还可尝试{left}次 / wrong code, {left} tries left"
    else:
        message = "验证码错误，已无剩余次数，请重新获取 / wrong code, no tries left: ask for a new one"
    return CodeCheck(False, counted=True, refusal=InvalidInput(message, field="sms_code", code="wrong_sms_code"))


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded up: waiting that long is always enough."""
    return max(1, math.ceil(delta.total_seconds()))
