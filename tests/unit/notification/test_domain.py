"""SMS texts: what a patient reads after booking, in Chinese and English, without personal data."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import AppointmentBooked
from infra.logging import mask_text
from services.notification import domain
from services.notification.domain import booking_confirmation

pytestmark = pytest.mark.unit

NAMES = {"hb3": "河北医科大学第三医院", "hb3-card": "心内科", "dr-wang": "王建国"}


def appointment(**overrides: Any) -> dict[str, Any]:
    """The data of an AppointmentBooked envelope, as the notification service receives it."""
    fields: dict[str, Any] = {
        "appointment_id": "appt-7f3a",
        "code": "K7M2QX9P",
        "session_id": "s-hb3-card-0310-am",
        "hospital_id": "hb3",
        "department_id": "hb3-card",
        "doctor_id": "dr-wang",
        "patient_id": "patient-5b1e",
        "channel": "web",
        "sequence_number": 7,
        "date": "2025-03-10",
        "period": "morning",
        "start": "08:00:00",
        "fee": "50.00",
    }
    fields.update(overrides)
    return AppointmentBooked(**fields).model_dump(mode="json")


def test_chinese_text_names_the_appointment_and_carries_the_signature():
    text = booking_confirmation(appointment(), NAMES)
    assert text.startswith("【河北预约挂号】")
    for part in (
        "河北医科大学第三医院",
        "心内科",
        "王建国",
        "2025-03-10",
        "上午",
        "就诊序号7",
        "预约码K7M2QX9P",
    ):
        assert part in text, part
    assert "下午" not in text


def test_chinese_text_says_afternoon_for_an_afternoon_session():
    text = booking_confirmation(appointment(period="afternoon", sequence_number=12), NAMES)
    assert "下午" in text
    assert "上午" not in text
    assert "就诊序号12" in text


def test_known_names_replace_the_ids():
    text = booking_confirmation(appointment(), NAMES)
    for internal in ("hb3", "dr-wang", "appt-7f3a", "s-hb3-card", "patient-5b1e"):
        assert internal not in text, internal


def test_unknown_names_fall_back_to_the_ids():
    text = booking_confirmation(appointment(), {})
    for part in ("hb3", "hb3-card", "dr-wang"):
        assert part in text, part
    assert "就诊序号7" in text


def test_only_the_unknown_names_fall_back():
    text = booking_confirmation(appointment(), {"hb3": "河北医科大学第三医院"})
    assert "河北医科大学第三医院" in text
    assert "hb3-card" in text
    assert "dr-wang" in text


def test_english_text():
    text = booking_confirmation(appointment(period="afternoon"), NAMES, locale="en")
    for part in (
        "Hebei Appointments",
        "河北医科大学第三医院",
        "心内科",
        "王建国",
        "2025-03-10",
        "afternoon",
        "No. 7",
        "K7M2QX9P",
    ):
        assert part in text, part
    for chinese in ("【河北预约挂号】", "上午", "下午", "就诊序号", "预约码"):
        assert chinese not in text, chinese


@pytest.mark.parametrize("locale", ["zh", "en"])
@pytest.mark.parametrize("names", [NAMES, {}], ids=["names", "ids"])
def test_no_id_number_or_phone_number_in_any_text(locale, names):
    text = booking_confirmation(appointment(), names, locale=locale)
    assert mask_text(text) == text
    assert "patient-5b1e" not in text


def test_mask_text_would_notice_a_phone_number_in_such_a_text():
    # Guards the assertion above: the masker does act on a text shaped like ours.
    leaky = booking_confirmation(appointment(), {"dr-wang": "王建国13812345678"})
    assert mask_text(leaky) != leaky


def _booked(**over):
    base = {"appointment_id": "a-1", "hospital_id": "h", "department_id": "d", "doctor_id": "doc",
            "date": "2026-12-01", "period": "afternoon", "code": "K7M2P9QX", "sequence_number": 4}
    return {**base, **over}


STOP_NAMES = {"h": "河北省人民医院", "d": "心血管内科", "doc": "李专家"}


def test_a_cancellation_by_the_patient_names_the_booking_and_the_refund_only_when_due():
    text = domain.cancellation(_booked(), STOP_NAMES, "patient", None)
    assert text.startswith("【河北预约挂号】") and "李专家医生2026-12-01下午" in text and "K7M2P9QX" in text
    assert "已取消" in text and "退还" not in text and "停诊" not in text
    paid = domain.cancellation(_booked(), STOP_NAMES, "operator", "50.00")
    assert "挂号费50.00元将退还" in paid


def test_a_doctor_stop_cancellation_says_why_and_apologises():
    text = domain.cancellation(_booked(), STOP_NAMES, "doctor_stop", "100.00")
    assert text.startswith("【河北预约挂号】因李专家医生停诊") and "敬请谅解" in text and "100.00元" in text
    en = domain.cancellation(_booked(), STOP_NAMES, "doctor_stop", None, locale="en")
    assert "stopped" in en and "K7M2P9QX" in en and "refund" not in en


def test_a_move_gives_the_new_time_and_number_and_keeps_the_code():
    text = domain.moved(_booked(date="2026-12-03", period="morning", sequence_number=2), STOP_NAMES)
    assert "改至河北省人民医院心血管内科李专家医生2026-12-03上午门诊" in text
    assert "就诊序号2" in text and "预约码K7M2P9QX不变" in text
    assert "No. 2" in domain.moved(_booked(sequence_number=2), STOP_NAMES, locale="en")
