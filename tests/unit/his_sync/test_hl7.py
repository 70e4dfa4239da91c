"""HL7 v2.5 building and ACK reading. hl7apy is the independent reader: every built message is parsed
by it, field positions are asserted on its parse, and its strict profile validation must pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from services.his_sync.hl7 import (
    SIU_TRIGGERS,
    Ack,
    HL7Error,
    MessageInfo,
    build_ack,
    build_adt_a04,
    build_siu,
    describe,
    escape,
    parse_ack,
    unescape,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 0, 15, 7, tzinfo=UTC)  # 08:15:07 in Hebei
RESIDENT_ID = "130102199003071234"
PHONE = "13812345678"


def appointment(**overrides: Any) -> dict[str, Any]:
    appt: dict[str, Any] = {
        "appointment_id": "appt-7f3a",
        "code": "K7Q2M9",
        "session_id": "sess-2025-03-01-am",
        "hospital_id": "H130100",
        "department_id": "CARD",
        "doctor_id": "doc-19",
        "patient_id": "pat-42",
        "channel": "web",
        "sequence_number": 12,
        "date": "2025-03-01",
        "period": "morning",
        "start": "08:30:00",
        "fee": "50.00",
    }
    appt.update(overrides)
    return appt


def parsed(text: str) -> Message:
    return parse_message(text, find_groups=False)


def assert_valid_v25(text: str) -> None:
    """Structure (segment order, groups, cardinality) and required fields per the v2.5 profile."""
    message = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate() is True


# --- SIU ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", sorted(SIU_TRIGGERS))
def test_every_siu_trigger_is_a_valid_v25_siu_s12_structure(trigger: str) -> None:
    text = build_siu(trigger, appointment(), "CTL0001", NOW)

    assert_valid_v25(text)
    assert parsed(text).msh.msh_9.value == f"SIU^{trigger}^SIU_S12"


def test_siu_header_names_both_parties_version_and_charset() -> None:
    msh = parsed(build_siu("S12", appointment(), "CTL0001", NOW)).msh

    assert msh.msh_3.value == "APPT-PLATFORM"
    assert msh.msh_5.value == "HIS"
    assert msh.msh_6.value == "H130100"
    assert msh.msh_7.value == "20250301081507+0800"
    assert msh.msh_9.value == "SIU^S12^SIU_S12"
    assert msh.msh_10.value == "CTL0001"
    assert msh.msh_11.value == "P"
    assert msh.msh_12.value == "2.5"
    assert msh.msh_18.value == "UNICODE UTF-8"


def test_segments_are_separated_by_carriage_return_in_siu_order() -> None:
    text = build_siu("S12", appointment(), "CTL0001", NOW)

    assert "\n" not in text
    assert [segment[:3] for segment in text.split("\r")] == [
        "MSH", "SCH", "TQ1", "NTE", "PID", "RGS", "AIL", "AIP",
    ]  # fmt: skip


def test_sch_carries_ids_reason_start_duration_and_status() -> None:
    sch = parsed(build_siu("S12", appointment(), "CTL0001", NOW)).sch

    assert sch.sch_1.ei_1.value == "appt-7f3a"
    assert sch.sch_1.ei_2.value == "APPT-PLATFORM"
    assert sch.sch_2.ei_1.value == "K7Q2M9"
    assert sch.sch_5.value == "sess-2025-03-01-am"
    assert sch.sch_6.ce_1.value == "BOOKED"
    assert sch.sch_7.value == "ROUTINE^Routine appointment^HL70276"
    assert sch.sch_9.value == "15"
    assert sch.sch_11.tq_3.value == "M15"
    assert sch.sch_11.tq_4.value == "20250301083000+0800"
    assert sch.sch_20.value == "web"
    assert sch.sch_25.ce_1.value == "Booked"


def test_timing_and_visit_details() -> None:
    message = parsed(build_siu("S12", appointment(), "CTL0001", NOW, duration_minutes=20))

    assert message.tq1.tq1_6.value == "20^min"
    assert message.tq1.tq1_7.value == "20250301083000+0800"
    assert message.tq1.tq1_8.value == "20250301085000+0800"
    assert message.nte.nte_3.value == "code=K7Q2M9; sequence_number=12; period=morning; fee=50.00"


def test_resources_name_department_hospital_and_doctor() -> None:
    message = parsed(build_siu("S12", appointment(), "CTL0001", NOW))

    assert message.rgs.rgs_1.value == "1"
    assert message.ail.ail_3.pl_1.value == "CARD"
    assert message.ail.ail_3.pl_4.value == "H130100"
    assert message.ail.ail_6.value == "20250301083000+0800"
    assert message.aip.aip_3.xcn_1.value == "doc-19"
    assert message.aip.aip_4.ce_1.value == "DOCTOR"
    assert message.aip.aip_9.value == "15"


@pytest.mark.parametrize(
    ("trigger", "reason", "status"),
    [("S12", "BOOKED", "Booked"), ("S14", "MODIFIED", "Booked"), ("S15", "CANCELLED", "Cancelled"),
     ("S26", "NOSHOW", "Noshow")],
)  # fmt: skip
def test_event_reason_and_filler_status_follow_the_trigger(trigger: str, reason: str, status: str) -> None:
    message = parsed(build_siu(trigger, appointment(), "CTL0001", NOW))

    assert message.sch.sch_6.ce_1.value == reason
    assert message.sch.sch_25.ce_1.value == status
    assert message.ail.ail_12.ce_1.value == status
    assert message.aip.aip_12.ce_1.value == status


def test_pid_identifies_the_patient_by_platform_id_only() -> None:
    appt = appointment(id_number=RESIDENT_ID, phone=PHONE, name="张三", patient_name="张三")

    text = build_siu("S12", appt, "CTL0001", NOW)
    pid = parsed(text).pid

    assert pid.pid_3.cx_1.value == "pat-42"
    assert pid.pid_3.cx_4.value == "APPT-PLATFORM"
    assert pid.pid_3.cx_5.value == "PI"
    assert pid.pid_5.value == "^^^^^^S"  # required by v2.5: an empty pseudonym, no real name
    assert [field.name for field in pid.children] == ["PID_1", "PID_3", "PID_5"]
    for secret in (RESIDENT_ID, PHONE, "张三"):
        assert secret not in text


def test_free_text_is_masked_before_it_leaves() -> None:
    text = build_siu("S15", appointment(reason=f"请回电 {PHONE}, 证件 {RESIDENT_ID}"), "CTL0001", NOW)

    assert PHONE not in text and RESIDENT_ID not in text
    assert unescape(parsed(text).sch.sch_6.ce_2.value) == "请回电 138****5678, 证件 130102********1234"


def test_delimiters_in_values_are_escaped_and_do_not_shift_fields() -> None:
    reason = "moved | by phone ^ x~y & z \\ end\r\nnext line"
    appt = appointment(reason=reason, doctor_id="doc|19^b", department_id="CA&RD")

    text = build_siu("S14", appt, "CTL0001", NOW)
    message = parsed(text)

    assert len(text.split("\r")) == 8
    assert message.sch.sch_6.ce_2.value == "moved \\F\\ by phone \\S\\ x\\R\\y \\T\\ z \\E\\ end  next line"
    assert unescape(message.sch.sch_6.ce_2.value) == reason.replace("\r\n", "  ")
    assert unescape(message.aip.aip_3.xcn_1.value) == "doc|19^b"
    assert message.aip.aip_4.ce_1.value == "DOCTOR"  # the field after the escaped one is still in place
    assert unescape(message.ail.ail_3.pl_1.value) == "CA&RD"
    assert message.ail.ail_3.pl_4.value == "H130100"
    assert_valid_v25(text)


def test_optional_details_may_be_absent() -> None:
    appt = appointment()
    for key in ("code", "session_id", "channel", "sequence_number", "period", "fee"):
        del appt[key]

    text = build_siu("S15", appt, "CTL0001", NOW)

    assert "NTE" not in text
    assert parsed(text).sch.sch_20.value == "APPT-PLATFORM"
    assert_valid_v25(text)


def test_times_are_written_in_china_standard_time_whatever_the_zone_of_now() -> None:
    new_york = datetime(2025, 2, 28, 19, 15, 7, tzinfo=timezone(timedelta(hours=-5)))

    assert parsed(build_siu("S12", appointment(), "C", new_york)).msh.msh_7.value == "20250301081507+0800"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trigger": "S13"}, "unsupported SIU trigger"),
        ({"control_id": ""}, "control id"),
        ({"control_id": "x" * 21}, "control id"),
        ({"control_id": "A|B"}, "control id"),
        ({"now": datetime(2025, 3, 1, 8, 15)}, "timezone-aware"),
        ({"appointment": appointment(date="01/03/2025")}, "bad appointment date"),
        ({"appointment": appointment(patient_id="")}, "missing patient_id"),
        ({"duration_minutes": 0}, "duration_minutes"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "trigger": "S12",
        "appointment": appointment(),
        "control_id": "CTL0001",
        "now": NOW,
    }
    args.update(kwargs)

    with pytest.raises(HL7Error, match=message):
        build_siu(**args)


# --- ADT^A04 ---------------------------------------------------------------------------------------------


def test_check_in_is_a_valid_adt_a04() -> None:
    checked_in = datetime(2025, 3, 1, 0, 25, tzinfo=UTC)
    appt = appointment(id_number=RESIDENT_ID, phone=PHONE)

    text = build_adt_a04(appt, "CTL0002", NOW, checked_in_at=checked_in)
    message = parsed(text)

    assert_valid_v25(text)
    assert message.msh.msh_9.value == "ADT^A04^ADT_A01"
    assert message.msh.msh_10.value == "CTL0002"
    assert message.msh.msh_18.value == "UNICODE UTF-8"
    assert message.evn.evn_1.value == "A04"
    assert message.evn.evn_2.value == "20250301081507+0800"
    assert message.evn.evn_6.value == "20250301082500+0800"
    assert message.pid.pid_3.cx_1.value == "pat-42"
    assert message.pv1.pv1_2.value == "O"
    assert message.pv1.pv1_3.pl_1.value == "CARD"
    assert message.pv1.pv1_3.pl_4.value == "H130100"
    assert message.pv1.pv1_7.xcn_1.value == "doc-19"
    assert message.pv1.pv1_19.cx_1.value == "appt-7f3a"
    assert message.pv1.pv1_44.value == "20250301082500+0800"
    assert RESIDENT_ID not in text and PHONE not in text


def test_check_in_time_defaults_to_now() -> None:
    message = parsed(build_adt_a04(appointment(), "CTL0002", NOW))

    assert message.pv1.pv1_44.value == message.evn.evn_2.value == "20250301081507+0800"


# --- reading: describe, ACKs -------------------------------------------------------------------------


def test_describe_reads_the_header_facts_of_what_we_build() -> None:
    siu = describe(build_siu("S15", appointment(), "CTL0001", NOW))
    adt = describe(build_adt_a04(appointment(), "CTL0002", NOW))

    assert siu == MessageInfo(
        message_type="SIU^S15",
        control_id="CTL0001",
        sending_application="APPT-PLATFORM",
        sending_facility="HEBEI-APPT",
        receiving_application="HIS",
        receiving_facility="H130100",
        appointment_id="appt-7f3a",
        patient_id="pat-42",
    )
    assert (adt.message_type, adt.appointment_id, adt.trigger) == ("ADT^A04", "appt-7f3a", "A04")


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_build_ack_answers_the_original_and_parse_ack_reads_it(code: str) -> None:
    original = describe(build_siu("S12", appointment(), "CTL0001", NOW))

    text = build_ack(original, code, "HIS000009", NOW, "" if code == "AA" else "slot | taken")
    message = parsed(text)

    assert_valid_v25(text)
    assert message.msh.msh_3.value == "HIS"
    assert message.msh.msh_5.value == "APPT-PLATFORM"
    assert message.msh.msh_9.value == "ACK^S12^ACK"
    assert message.msa.msa_1.value == code
    assert message.msa.msa_2.value == "CTL0001"
    assert parse_ack(text, "CTL0001") == Ack(code, "CTL0001", "" if code == "AA" else "slot | taken")


def test_ack_from_another_engine_with_err_segment_and_newlines() -> None:
    text = (
        "MSH|^~\\&|HIS|H130100|APPT-PLATFORM|HEBEI-APPT|20250301081508||ACK^S12^ACK|99|P|2.5\r\n"
        "MSA|AE|CTL0001\r\n"
        "ERR|||207^Application internal error^HL70357|E||||doctor \\T\\ room unknown\r\n"
    )

    ack = parse_ack(text, "CTL0001")

    assert ack == Ack("AE", "CTL0001", "doctor & room unknown")
    assert not ack.accepted
    assert parse_ack(text.replace("MSA|AE", "MSA|AA"), "CTL0001").accepted


def test_ack_for_another_message_is_an_error() -> None:
    text = build_ack(describe(build_siu("S12", appointment(), "CTL0001", NOW)), "AA", "HIS1", NOW)

    with pytest.raises(HL7Error, match="answers control id 'CTL0001', expected 'CTL0002'"):
        parse_ack(text, "CTL0002")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "does not start with an MSH"),
        ("garbage", "does not start with an MSH"),
        ("MSA|AA|CTL0001", "does not start with an MSH"),
        ("MSH|^~\\&|HIS||APP||20250301||ACK|1|P|2.5", "no MSA segment"),
        ("MSH|^~\\&|HIS||APP||20250301||ADT^A04|1|P|2.5\rMSA|AA|CTL0001", "expected an ACK"),
        ("MSH|^~\\&|HIS||APP||20250301||ACK|1|P|2.5\rMSA|CA|CTL0001", "MSA-1 'CA' is not one of"),
        ("MSH|^~\\&|HIS||APP||20250301||ACK|1|P|2.5\rMSA||CTL0001", "MSA-1 '' is not one of"),
    ],
)
def test_malformed_acks_raise_hl7_error(text: str, message: str) -> None:
    with pytest.raises(HL7Error, match=message):
        parse_ack(text, "CTL0001")


def test_escape_round_trip() -> None:
    value = "a|b^c~d\\e&f g 中文"

    assert escape(value) == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f g 中文"
    assert unescape(escape(value)) == value


def test_line_breaks_cannot_end_a_segment() -> None:
    assert escape("one\r\ntwo\rthree\nfour") == "one  two three four"


def test_unescape_reads_sequences_other_engines_send() -> None:
    assert unescape("a\\X0D0A\\b \\X e4b8ad\\") == "a\r\nb \\X e4b8ad\\"  # malformed hex stays literal
    assert unescape("\\Xe4b8ad\\文") == "中文"
    assert unescape("line\\.br\\two \\H\\bold\\N\\ \\Zunknown\\") == "line\ntwo bold \\Zunknown\\"
    assert unescape("a/F/b", escape_char="/") == "a|b"
