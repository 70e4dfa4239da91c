"""SMS texts and the rules of verification codes, pure. Simplified Chinese first; English as the
second locale. The clock is always passed in."""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from contracts import InvalidInput, TooManyRequests

PERIOD_ZH = {"morning": "上午", "afternoon": "下午", "evening": "晚间"}
PERIOD_EN = {"morning": "morning", "afternoon": "afternoon", "evening": "evening"}
SIGNATURE = "【河北预约挂号】"
SIGNATURE_EN = "[Hebei Appointments] "
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
DEFAULT_WINDOW = "门诊大厅预约挂号窗口"


# --- a hospital's SMS settings and the rules on when a message may go ---------------------------

@dataclass(frozen=True)
class HospitalSms:
    """What each hospital sets for its SMS (its admin, on the admin page): the hour of the
    reminders for the next day, the quiet hours (nothing that can wait is sent in them) and the
    place patients are sent to; the address comes from the hospital's registration."""

    reminder_time: time = time(18, 0)
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    window_location: str = DEFAULT_WINDOW
    address: str = ""


def local(moment: datetime) -> datetime:
    return moment.astimezone(HOSPITAL_TZ)


def in_quiet_hours(moment: datetime, sms: HospitalSms) -> bool:
    t = local(moment).time()
    start, end = sms.quiet_start, sms.quiet_end
    if start == end:
        return False  # no quiet hours
    if start < end:
        return start <= t < end
    return t >= start or t < end  # across midnight: 21:00-08:00


def release_at(now: datetime, sms: HospitalSms, urgent: bool) -> datetime:
    """When a message queued `now` may be sent: at once when it is urgent or outside the quiet
    hours, otherwise at their end (the next morning)."""
    if urgent or not in_quiet_hours(now, sms):
        return now
    here = local(now)
    day = here.date()
    if sms.quiet_start > sms.quiet_end and here.time() >= sms.quiet_start:
        day += timedelta(days=1)  # in the evening part: the end is tomorrow morning
    return datetime.combine(day, sms.quiet_end, HOSPITAL_TZ)


def visit_is_soon(visit_date: str, now: datetime) -> bool:
    """Today or tomorrow (hospital time): a change to such a visit must reach the patient now,
    not after the quiet hours."""
    try:
        day = date.fromisoformat(visit_date)
    except ValueError:
        return True
    return day <= local(now).date() + timedelta(days=1)


def reminder_day(now: datetime, sms: HospitalSms) -> date | None:
    """The visit day whose reminders are due at `now`: tomorrow, once the hospital's reminder
    hour has come today; None before it."""
    here = local(now)
    return here.date() + timedelta(days=1) if here.time() >= sms.reminder_time else None


def reminder_wanted(appt: dict[str, Any], visit_day: date) -> bool:
    """A reminder only for a booking that still holds its place on that day: not cancelled,
    moved away (its date is then the new one), refunded, checked in or lapsed."""
    return appt.get("status", "active") == "active" and appt.get("date") == visit_day.isoformat()


DOCTOR_NOTICES = ("none", "each", "digest")


@dataclass(frozen=True)
class DoctorNotice:
    """A doctor's SMS choice: nothing, one SMS per booking, or one digest a day at `digest_time`
    of the next session's bookings."""

    notice: str = "none"
    digest_time: time = time(7, 0)


@dataclass(frozen=True)
class Digest:
    date: str
    period: str
    start: str
    sequence_numbers: tuple[int, ...]


def next_session_digest(appts: Sequence[dict[str, Any]], now: datetime) -> Digest | None:
    """The doctor's next session that has not started yet and has active bookings: its day, half
    and the sequence numbers booked in it. None when no booking is ahead."""
    here = local(now).replace(tzinfo=None)
    sessions: dict[tuple[str, str, str], list[int]] = {}
    for a in appts:
        if a.get("status", "active") != "active":
            continue
        try:
            starts = datetime.combine(date.fromisoformat(a["date"]), time.fromisoformat(a.get("start") or "00:00"))
        except (KeyError, ValueError):
            continue
        if starts <= here:
            continue
        sessions.setdefault((a["date"], a.get("start") or "", a.get("period") or ""), []).append(
            int(a["sequence_number"]))
    if not sessions:
        return None
    day, start, period = min(sessions)
    return Digest(day, period, start, tuple(sorted(sessions[(day, start, period)])))


# --- texts for patients -------------------------------------------------------------------------

def _where(appt: dict[str, Any], names: dict[str, str], locale: str) -> tuple[str, str, str, str]:
    hospital = names.get(appt["hospital_id"], appt["hospital_id"])
    department = names.get(appt["department_id"], appt["department_id"])
    doctor = names.get(appt["doctor_id"], appt["doctor_id"])
    period = (PERIOD_EN if locale == "en" else PERIOD_ZH).get(appt["period"], appt["period"])
    return hospital, department, doctor, period


def _arrival_zh(appt: dict[str, Any], sms: HospitalSms) -> str:
    when = f"{appt['arrival_window']}" if appt.get("arrival_window") else "就诊当日"
    where = f"请于{when}携带身份证到{sms.window_location or DEFAULT_WINDOW}取号"
    return where + (f"，医院地址：{sms.address}。" if sms.address else "。")


def _arrival_en(appt: dict[str, Any], sms: HospitalSms) -> str:
    when = f"between {appt['arrival_window']}" if appt.get("arrival_window") else "on the day"
    where = f"Please come {when} with your ID card to {sms.window_location or DEFAULT_WINDOW}"
    return where + (f", address: {sms.address}." if sms.address else ".")


def booking_confirmation(appt: dict[str, Any], names: dict[str, str], locale: str = "zh",
                         sms: HospitalSms = HospitalSms()) -> str:
    hospital, department, doctor, period = _where(appt, names, locale)
    if locale == "en":
        return (f"{SIGNATURE_EN}Booked: {hospital} {department}, Dr {doctor}, {appt['date']} {period}, "
                f"No. {appt['sequence_number']}, code {appt['code']}. {_arrival_en(appt, sms)}")
    return (f"{SIGNATURE}您已成功预约{hospital}{department}{doctor}医生{appt['date']}{period}门诊，"
            f"就诊序号{appt['sequence_number']}，预约码{appt['code']}。{_arrival_zh(appt, sms)}")


def reminder(appt: dict[str, Any], names: dict[str, str], locale: str = "zh",
             sms: HospitalSms = HospitalSms()) -> str:
    """The day before the visit."""
    hospital, department, doctor, period = _where(appt, names, locale)
    if locale == "en":
        return (f"{SIGNATURE_EN}Reminder: tomorrow {appt['date']} {period}, {hospital} {department}, "
                f"Dr {doctor}, No. {appt['sequence_number']}, code {appt['code']}. {_arrival_en(appt, sms)} "
                f"If you cannot come, please cancel: missed visits suspend booking.")
    return (f"{SIGNATURE}就诊提醒：您预约了明天（{appt['date']}）{period}{hospital}{department}{doctor}医生门诊，"
            f"就诊序号{appt['sequence_number']}，预约码{appt['code']}。{_arrival_zh(appt, sms)}"
            f"如不能就诊请及时取消，爽约将影响您今后预约。")


def cancellation(appt: dict[str, Any], names: dict[str, str], reason: str, refund_due: str | None,
                 locale: str = "zh") -> str:
    """A booking was cancelled: by the patient or an operator, or by the hospital for a doctor stop."""
    hospital, department, doctor, period = _where(appt, names, locale)
    if locale == "en":
        why = f"Dr {doctor} has stopped this session; " if reason == "doctor_stop" else ""
        refund = f"The fee of {refund_due} yuan will be refunded. " if refund_due else ""
        return (f"{SIGNATURE_EN}{why}your booking at {hospital} {department}, {appt['date']} {period} "
                f"(code {appt['code']}) is cancelled. {refund}").strip()
    why = f"因{doctor}医生停诊，" if reason == "doctor_stop" else ""
    refund = f"挂号费{refund_due}元将退还。" if refund_due else ""
    sorry = "敬请谅解。" if reason == "doctor_stop" else ""
    return (f"{SIGNATURE}{why}您预约的{hospital}{department}{doctor}医生{appt['date']}{period}门诊"
            f"（预约码{appt['code']}）已取消。{refund}{sorry}")


def moved(appt: dict[str, Any], names: dict[str, str], locale: str = "zh",
          previous: dict[str, Any] | None = None) -> str:
    """A doctor stop moved the booking to the replacement session (补诊); the code and the fee
    stay. When the replacement is another doctor's, the text says so."""
    hospital, department, doctor, period = _where(appt, names, locale)
    other = previous is not None and previous.get("doctor_id") not in (None, appt["doctor_id"])
    before = names.get(previous["doctor_id"], previous["doctor_id"]) if other and previous else ""
    fee = appt.get("fee")
    if locale == "en":
        change = f"Dr {before} has stopped; Dr {doctor} will see you instead. " if other else ""
        return (f"{SIGNATURE_EN}Because of a doctor stop your booking moved to {hospital} {department}, "
                f"Dr {doctor}, {appt['date']} {period}, No. {appt['sequence_number']}. {change}"
                f"Your code {appt['code']} stays the same" + (f" and so does the fee ({fee} yuan)." if fee else "."))
    change = f"原{before}医生停诊，改由{doctor}医生接诊。" if other else ""
    return (f"{SIGNATURE}因医生停诊，您的预约已改至{hospital}{department}{doctor}医生{appt['date']}{period}门诊，"
            f"就诊序号{appt['sequence_number']}。{change}预约码{appt['code']}不变"
            + (f"，挂号费{fee}元不变，无需重新缴费。" if fee else "。"))


def refunded(appt: dict[str, Any], names: dict[str, str], refund_due: str, locale: str = "zh") -> str:
    """退号 at the window: the registration is cancelled and the fee goes back."""
    hospital, department, doctor, period = _where(appt, names, locale)
    if locale == "en":
        return (f"{SIGNATURE_EN}Your registration at {hospital} {department}, Dr {doctor}, {appt['date']} {period} "
                f"(code {appt['code']}) was cancelled at the window; {refund_due} yuan will be refunded.")
    return (f"{SIGNATURE}您在{hospital}{department}{doctor}医生{appt['date']}{period}门诊的挂号（预约码{appt['code']}）"
            f"已在窗口退号，挂号费{refund_due}元将退还。")


def banned(until: str, no_shows: int, locale: str = "zh") -> str:
    if locale == "en":
        return (f"{SIGNATURE_EN}After {no_shows} missed appointments, booking is suspended until {until} "
                f"(web and hotline). It resumes by itself the day after.")
    return (f"{SIGNATURE}因您近期爽约{no_shows}次，网上及电话预约暂停至{until}（含当日），期满后自动恢复。"
            f"如有疑问请致电{HOTLINE}。")


def ban_lifted(locale: str = "zh") -> str:
    if locale == "en":
        return f"{SIGNATURE_EN}Your booking suspension has ended: you can book again on the web and the hotline."
    return f"{SIGNATURE}您的预约限制已解除，可以重新通过网上及电话预约挂号。"


def ban_lift_at(until: str, sms: HospitalSms = HospitalSms()) -> datetime:
    """The morning after the last day of a ban (the end of the quiet hours that day)."""
    return datetime.combine(date.fromisoformat(until) + timedelta(days=1), sms.quiet_end, HOSPITAL_TZ)


# --- texts for doctors (no patient detail: numbers only) ----------------------------------------

def doctor_new_booking(appt: dict[str, Any], names: dict[str, str], moved_here: bool = False) -> str:
    doctor = names.get(appt["doctor_id"], appt["doctor_id"])
    what = "补诊转入" if moved_here else "新增预约"
    return (f"{SIGNATURE}{doctor}医生：您{appt['date']}{PERIOD_ZH.get(appt['period'], appt['period'])}门诊"
            f"{what}，就诊序号{appt['sequence_number']}。")


def doctor_digest(doctor: str, digest: Digest) -> str:
    numbers = "、".join(str(n) for n in digest.sequence_numbers)
    return (f"{SIGNATURE}{doctor}医生：您{digest.date}{PERIOD_ZH.get(digest.period, digest.period)}门诊"
            f"已预约{len(digest.sequence_numbers)}人，就诊序号：{numbers}。")


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
