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
