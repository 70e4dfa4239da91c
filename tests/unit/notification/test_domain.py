"""SMS texts: what a patient reads after booking, in Chinese and English, without personal data."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import AppointmentBooked
from infra.logging import mask_text
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
