"""SMS texts, pure. Simplified Chinese first; English as the second locale."""

from __future__ import annotations

from typing import Any

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
