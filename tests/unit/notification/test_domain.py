"""SMS texts: what a patient reads after booking, in Chinese and English, without personal data."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
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


# --- issue 11: the rules (quiet hours, reminders, digests) and the new texts ------------------------


TZ = domain.HOSPITAL_TZ
DEFAULT = domain.HospitalSms()


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=TZ)


@pytest.mark.parametrize(("moment", "expected"), [
    (at(5, 12), at(5, 12)),                 # daytime: at once
    (at(5, 20, 59), at(5, 20, 59)),         # a minute before the quiet hours
    (at(5, 21), at(6, 8)),                  # evening: tomorrow morning
    (at(5, 23, 59), at(6, 8)),
    (at(6, 0, 30), at(6, 8)),               # after midnight: this morning
    (at(6, 7, 59), at(6, 8)),
    (at(6, 8), at(6, 8)),                   # the end itself is not quiet
])
def test_quiet_hours_21_to_8_hold_what_can_wait_until_the_morning(moment, expected):
    assert domain.release_at(moment, DEFAULT, urgent=False) == expected
    assert domain.release_at(moment, DEFAULT, urgent=True) == moment


def test_quiet_hours_that_do_not_cross_midnight_and_none_at_all():
    lunch = domain.HospitalSms(quiet_start=time(12), quiet_end=time(14))
    assert domain.release_at(at(5, 13), lunch, urgent=False) == at(5, 14)
    assert domain.release_at(at(5, 22), lunch, urgent=False) == at(5, 22)
    never = domain.HospitalSms(quiet_start=time(0), quiet_end=time(0))
    assert domain.release_at(at(5, 3), never, urgent=False) == at(5, 3)


def test_a_moment_in_utc_is_judged_in_hospital_time():
    # 14:00 UTC is 22:00 in Hebei: quiet.
    assert domain.in_quiet_hours(datetime(2025, 3, 5, 14, 0, tzinfo=UTC), DEFAULT)
    assert not domain.in_quiet_hours(datetime(2025, 3, 5, 4, 0, tzinfo=UTC), DEFAULT)


def test_a_visit_is_soon_today_or_tomorrow_only():
    assert domain.visit_is_soon("2025-03-05", at(5, 23))
    assert domain.visit_is_soon("2025-03-06", at(5, 23))
    assert not domain.visit_is_soon("2025-03-07", at(5, 23))


def test_the_reminders_of_tomorrow_are_due_from_the_hospitals_hour():
    assert domain.reminder_day(at(5, 17, 59), DEFAULT) is None
    assert domain.reminder_day(at(5, 18), DEFAULT) == date(2025, 3, 6)
    early = domain.HospitalSms(reminder_time=time(10))
    assert domain.reminder_day(at(5, 10, 30), early) == date(2025, 3, 6)


@pytest.mark.parametrize(("status", "day", "wanted"), [
    ("active", "2025-03-06", True),
    ("cancelled", "2025-03-06", False),
    ("checked_in", "2025-03-06", False),
    ("refunded", "2025-03-06", False),
    ("no_show", "2025-03-06", False),
    ("active", "2025-03-08", False),       # moved away to another day
])
def test_a_reminder_only_for_a_booking_still_active_on_that_day(status, day, wanted):
    assert domain.reminder_wanted({**appointment(date=day), "status": status}, date(2025, 3, 6)) is wanted


def test_the_digest_is_of_the_next_session_not_started_with_active_bookings():
    def appt(day: str, start: str, seq: int, status: str = "active", period: str = "morning") -> dict[str, Any]:
        return {**appointment(date=day, start=start, sequence_number=seq, period=period), "status": status}

    booked = [appt("2025-03-05", "08:00:00", 1),                      # this morning: started
              appt("2025-03-06", "14:00:00", 4, period="afternoon"),
              appt("2025-03-06", "14:00:00", 2, period="afternoon"),
              appt("2025-03-06", "14:00:00", 9, "cancelled", period="afternoon"),
              appt("2025-03-07", "08:00:00", 1)]
    digest = domain.next_session_digest(booked, at(5, 9))
    assert digest == domain.Digest("2025-03-06", "afternoon", "14:00:00", (2, 4))
    assert domain.doctor_digest("王建国", digest) == \
        "【河北预约挂号】王建国医生：您2025-03-06下午门诊已预约2人，就诊序号：2、4。"
    assert domain.next_session_digest([booked[0]], at(5, 9)) is None


def test_the_confirmation_carries_the_time_band_the_window_and_the_address():
    sms = domain.HospitalSms(window_location="门诊楼一层3号窗口", address="石家庄市长安区自强路139号")
    text = booking_confirmation(appointment(arrival_window="08:00-08:30"), NAMES, sms=sms)
    assert ("就诊序号7，预约码K7M2QX9P。请于08:00-08:30携带身份证到门诊楼一层3号窗口取号，"
            "医院地址：石家庄市长安区自强路139号。") in text
    english = booking_confirmation(appointment(arrival_window="08:00-08:30"), NAMES, "en", sms)
    assert "between 08:00-08:30" in english and "门诊楼一层3号窗口" in english


def test_the_reminder_names_the_visit_and_says_what_a_missed_one_costs():
    text = domain.reminder(appointment(arrival_window="08:00-08:30"), NAMES)
    assert text.startswith("【河北预约挂号】就诊提醒：您预约了明天（2025-03-10）上午"
                           "河北医科大学第三医院心内科王建国医生门诊")
    assert "就诊序号7，预约码K7M2QX9P" in text and "爽约" in text
    assert domain.reminder(appointment(), NAMES, "en").startswith("[Hebei Appointments] Reminder: tomorrow 2025-03-10")


def test_ban_texts_and_the_lift_time():
    assert "暂停至2025-06-03（含当日）" in domain.banned("2025-06-03", 3)
    assert "until 2025-06-03" in domain.banned("2025-06-03", 3, "en")
    assert domain.ban_lift_at("2025-06-03") == datetime(2025, 6, 4, 8, 0, tzinfo=TZ)
    assert "已解除" in domain.ban_lifted()


@pytest.mark.parametrize("text", [
    domain.reminder(appointment(), NAMES), domain.banned("2025-06-03", 3), domain.ban_lifted(),
    domain.refunded(appointment(), NAMES, "50.00"), domain.doctor_new_booking(appointment(), NAMES),
])
def test_every_text_is_signed_and_carries_no_personal_data(text):
    assert text.startswith(domain.SIGNATURE)
    assert "patient-5b1e" not in text and mask_text(text) == text
