"""HL7 v2.5 building, inbound reading and ACKs. hl7apy is the independent reader: every built message is
parsed by it, field positions are asserted on its parse, and its strict profile validation must pass
(every message type against it: test_hl7_profile.py)."""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from services.his_sync.hl7 import (
    CHARSET_GB18030,
    Ack,
    Facility,
    HL7Error,
    Inbound,
    MessageInfo,
    build_ack,
    build_adt_a04,
    build_adt_a05,
    build_adt_a11,
    build_inbound_ack,
    build_siu,
    build_siu_block,
    describe,
    encoding_of,
    escape,
    parse_ack,
    parse_inbound,
    unescape,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 0, 15, 7, tzinfo=UTC)  # 08:15:07 in Hebei
RESIDENT_ID = "130102199003071234"
PHONE = "13812345678"
CST = timezone(timedelta(hours=8))
PATIENT = {
    "name": "王小明",
    "id_number": "130105199001011234",
    "sex": "M",
    "birth_date": "1990-01-01",
    "phone": "13912345678",
}
HB3 = Facility(receiving_facility="HB3-HIS")
# hl7apy lists table 0396's "HL7nnnn" (an HL7 table, nnnn its number) and table 0203's "NNxxx" (national
# person identifier, xxx the ISO 3166 country) literally and warns about every real use of the pattern.
_PATTERN_CODES = re.compile(
    r"Warning: Value (HL7\d{4} not in table HL70396|NN[A-Z]{3} not in table HL70203) in element \S+"
)


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
    """Structure (segment order, groups, cardinality), required fields and datatypes per the v2.5 profile,
    and no value outside its HL7 table (hl7apy only warns about those: its report must be clean)."""
    message = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.txt"
        assert message.validate(report_file=str(report)) is True
        findings = [line for line in report.read_text().splitlines() if not _PATTERN_CODES.fullmatch(line)]
    assert findings == []


# --- SIU ---------------------------------------------------------------------------------------------


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


# --- the hospital's profile: Facility --------------------------------------------------------------------


def test_a_facility_names_the_hospitals_his_and_its_charset_in_msh() -> None:
    facility = Facility(receiving_application="WINNING", receiving_facility="HB3-HIS", charset=CHARSET_GB18030)

    for text in (
        build_siu("S12", appointment(), "CTL0001", NOW, facility=facility),
        build_adt_a04(appointment(), "CTL0002", NOW, facility=facility),
        build_adt_a11(appointment(), "CTL0003", NOW, facility=facility),
        build_adt_a05(appointment(), "CTL0004", NOW, facility=facility),
    ):
        msh = parsed(text).msh
        assert (msh.msh_3.value, msh.msh_4.value) == ("APPT-PLATFORM", "HEBEI-APPT")
        assert (msh.msh_5.value, msh.msh_6.value) == ("WINNING", "HB3-HIS")
        assert msh.msh_18.value == "GB 18030-2000"
    assert facility.encoding == "gb18030"


def test_facility_defaults_keep_todays_header() -> None:
    default = build_siu("S12", appointment(), "CTL0001", NOW)

    assert build_siu("S12", appointment(), "CTL0001", NOW, facility=Facility()) == default
    assert Facility().encoding == "utf-8"
    assert parsed(build_siu("S12", appointment(), "C", NOW, receiving_application="HIS2")).msh.msh_5.value == "HIS2"


def test_facility_refuses_a_charset_outside_what_the_link_can_encode() -> None:
    with pytest.raises(HL7Error, match="unsupported character set 'GB18030'"):
        Facility(charset="GB18030")  # table 0211 spells it "GB 18030-2000"


# --- real-name registration in PID --------------------------------------------------------------------


def test_pid_carries_the_real_name_block_when_the_appointment_has_one() -> None:
    text = build_siu("S12", appointment(patient=PATIENT), "CTL0001", NOW)
    pid = parsed(text).pid

    platform, resident = pid.pid_3
    assert (platform.cx_1.value, platform.cx_4.value, platform.cx_5.value) == ("pat-42", "APPT-PLATFORM", "PI")
    assert (resident.cx_1.value, resident.cx_4.value, resident.cx_5.value) == ("130105199001011234", "CHN", "NNCHN")
    assert (pid.pid_5.xpn_1.value, pid.pid_5.xpn_2.value, pid.pid_5.xpn_7.value) == ("王小明", "", "L")
    assert pid.pid_7.value == "19900101"
    assert pid.pid_8.value == "M"
    assert pid.pid_13.value == "^PRN^CP^^^^^^^^^13912345678"
    assert pid.pid_13.xtn_12.value == "13912345678"
    assert describe(text).patient_id == "pat-42"  # readers of the first repetition still get our id


def test_real_name_fields_are_optional_beyond_name_and_id_number() -> None:
    patient = {"name": "李四", "id_number": "13010519900101123x"}

    pid = parsed(build_adt_a04(appointment(patient=patient), "CTL0002", NOW)).pid

    assert pid.pid_3[1].cx_1.value == "13010519900101123X"
    assert [field.name for field in pid.children] == ["PID_1", "PID_3", "PID_3", "PID_5"]


@pytest.mark.parametrize(
    ("patient", "message"),
    [
        ({"id_number": "130105199001011234"}, "missing name"),
        ({"name": "王小明"}, "missing id_number"),
        ({"name": "王小明", "id_number": "1301051990"}, "18-character resident ID"),
        ({"name": "王小明", "id_number": "130105199001011234", "sex": "男"}, "table 0001"),
        ({"name": "王小明", "id_number": "130105199001011234", "birth_date": "1990/01/01"}, "ISO date"),
        ({"name": "王小明", "id_number": "130105199001011234", "phone": "call me"}, "phone must be digits"),
        ("王小明", "must be a mapping"),
    ],
)
def test_a_bad_real_name_block_is_refused(patient: Any, message: str) -> None:
    with pytest.raises(HL7Error, match=message):
        build_siu("S12", appointment(patient=patient), "CTL0001", NOW)


def test_free_text_is_still_masked_when_the_real_name_block_travels() -> None:
    text = build_siu("S15", appointment(patient=PATIENT, reason=f"回电 {PHONE}"), "CTL0001", NOW)

    assert PHONE not in text and "138****5678" in text
    assert "13912345678" in text  # the registered phone is meant for the HIS, in PID-13


def test_sequence_number_stays_in_the_note() -> None:
    assert "sequence_number=12" in parsed(build_siu("S12", appointment(), "CTL0001", NOW)).nte.nte_3.value


# --- ADT^A11, ADT^A05 ---------------------------------------------------------------------------------------


def test_cancel_registration_is_an_adt_a11_naming_the_visit_of_the_a04() -> None:
    text = build_adt_a11(appointment(patient=PATIENT), "CTL0003", NOW, reason=f"患者退号, 电话 {PHONE}")
    message = parsed(text)
    a04 = parsed(build_adt_a04(appointment(patient=PATIENT), "CTL0002", NOW))

    assert message.msh.msh_9.value == "ADT^A11^ADT_A09"
    assert (message.evn.evn_1.value, message.evn.evn_2.value) == ("A11", "20250301081507+0800")
    assert message.pid.to_er7() == a04.pid.to_er7()
    assert message.pv1.pv1_19.value == a04.pv1.pv1_19.value == "appt-7f3a^^^APPT-PLATFORM^VN"
    assert (message.pv1.pv1_2.value, message.pv1.pv1_7.xcn_1.value) == ("O", "doc-19")
    assert message.obx.obx_3.ce_1.value == "CANCEL-REASON"
    assert message.obx.obx_5.value == "患者退号, 电话 138****5678"
    assert message.obx.obx_11.value == "F"
    assert "OBX" not in build_adt_a11(appointment(), "CTL0003", NOW)


def test_hand_over_is_an_adt_a05_with_the_start_and_the_paid_fee() -> None:
    text = build_adt_a05(appointment(patient=PATIENT), "CTL0004", NOW)
    message = parsed(text)

    assert message.msh.msh_9.value == "ADT^A05^ADT_A05"
    assert (message.evn.evn_1.value, message.evn.evn_3.value) == ("A05", "20250301083000+0800")
    assert message.pid.pid_5.xpn_1.value == "王小明"
    assert message.pv1.pv1_2.value == "O"
    assert message.pv1.pv1_3.value == "CARD^^^H130100"
    assert message.pv1.pv1_7.xcn_1.value == "doc-19"
    assert message.pv1.pv1_19.cx_1.value == "appt-7f3a"
    assert message.pv1.pv1_44.value == message.pv2.pv2_8.value == "20250301083000+0800"
    assert (message.pv1.pv1_47.value, message.pv1.pv1_49.value) == ("50.00", "50.00")
    assert describe(text).appointment_id == "appt-7f3a"


def test_hand_over_without_a_fee_leaves_the_amounts_out_and_refuses_a_non_number() -> None:
    appt = appointment()
    del appt["fee"]

    assert parsed(build_adt_a05(appt, "CTL0004", NOW)).pv1.pv1_47.value == ""
    with pytest.raises(HL7Error, match="fee must be a number"):
        build_adt_a05(appointment(fee="50元"), "CTL0004", NOW)


# --- inbound from the HIS: SIU^S23 / S24 -------------------------------------------------------------------


def test_a_block_is_read_back_in_the_platforms_ids() -> None:
    text = build_siu_block(
        "block", "HIS0001", NOW, facility=HB3, doctor_id="dr-wang", session_id="s-1", reason="医生出差",
        block_id="B1",
    )  # fmt: skip

    inbound = parse_inbound(text)

    assert parsed(text).msh.msh_9.value == "SIU^S23^SIU_S12"
    assert inbound == Inbound(
        info=describe(text), kind="block", doctor_id="dr-wang", session_id="s-1", start=None, reason="医生出差",
        block_id="B1", requested_by="HB3-HIS",
    )  # fmt: skip
    assert (inbound.info.sending_facility, inbound.info.receiving_facility) == ("HB3-HIS", "HEBEI-APPT")


def test_an_unblock_that_only_knows_the_slot_gives_doctor_and_start() -> None:
    start = datetime(2025, 3, 10, 8, 0, tzinfo=CST)
    text = build_siu_block(
        "unblock", "HIS0002", NOW, facility=HB3, doctor_id="dr-wang", start=start, duration_minutes=240,
        block_id="B1", requested_by="张主任",
    )  # fmt: skip

    inbound = parse_inbound(text)

    assert parsed(text).msh.msh_9.value == "SIU^S24^SIU_S12"
    assert (inbound.kind, inbound.session_id, inbound.start) == ("unblock", "", start)
    assert (inbound.block_id, inbound.requested_by) == ("B1", "张主任")
    assert parsed(text).tq1.tq1_8.value == "20250310120000+0800"


def test_a_block_from_another_engine_with_aig_tq1_and_sch1() -> None:
    text = (
        "MSH|^~\\&|HIS|HB3-HIS|APPT-PLATFORM|HEBEI-APPT|20250301081508||SIU^S23^SIU_S12|99|P|2.5\r\n"
        "SCH|BLK-7|||||^停诊 \\T\\ 会诊" + "|" * 14 + "^王主任\r\n"  # SCH-1, SCH-6, SCH-20
        "TQ1|1||||||202503101400\r\n"
        "RGS|1\r\n"
        "AIG|1||dr-li^李医生|DOCTOR\r\n"
    )

    inbound = parse_inbound(text)

    assert (inbound.doctor_id, inbound.session_id) == ("dr-li", "")
    assert inbound.start == datetime(2025, 3, 10, 14, 0, tzinfo=CST)  # no offset: China time
    assert (inbound.reason, inbound.block_id, inbound.requested_by) == ("停诊 & 会诊", "BLK-7", "王主任")


INBOUND_HEAD = "MSH|^~\\&|HIS|H|APP|F|20250301||"


@pytest.mark.parametrize(
    ("text", "message", "field"),
    [
        ("SIU^S12^SIU_S12|1|P|2.5\rSCH|\rRGS|1\rAIP|1||d", "unsupported message SIU.S12", "MSH-9"),
        ("ADT^A04|1|P|2.5\rEVN|A04", "unsupported message ADT.A04", "MSH-9"),
        ("SIU^S23^SIU_S12|1|P|2.5\rRGS|1\rAIP|1||d", "no SCH", "SCH"),
        ("SIU^S23^SIU_S12|1|P|2.5\rSCH|||||s-1\rRGS|1", "no doctor", "AIP-3"),
        ("SIU^S23^SIU_S12|1|P|2.5\rSCH|\rRGS|1\rAIP|1||d", "neither", "SCH-5"),
        ("SIU^S24^SIU_S12|1|P|2.5\rSCH|\rRGS|1\rAIP|1||d|||2025031", "AIP-6", "AIP-6"),
    ],
)
def test_an_inbound_message_that_cannot_be_used_raises_with_the_field(text: str, message: str, field: str) -> None:
    with pytest.raises(HL7Error, match=message) as raised:
        parse_inbound(INBOUND_HEAD + text)

    assert raised.value.field == field


def test_build_siu_block_refuses_what_a_receiver_could_not_use() -> None:
    with pytest.raises(HL7Error, match="session_id or a start"):
        build_siu_block("block", "HIS1", NOW, facility=HB3, doctor_id="dr-wang")
    with pytest.raises(HL7Error, match="hospital's code"):
        build_siu_block("block", "HIS1", NOW, facility=Facility(), doctor_id="dr-wang", session_id="s-1")


# --- the platform's ACK to the HIS -----------------------------------------------------------------------------


def test_the_platform_acknowledges_a_block_to_the_his_that_sent_it() -> None:
    gb = Facility(receiving_facility="HB3-HIS", charset=CHARSET_GB18030)
    info = parse_inbound(build_siu_block("block", "HIS0001", NOW, facility=gb, doctor_id="d", session_id="s")).info

    text = build_inbound_ack(info, "AA", NOW)
    msh = parsed(text).msh

    assert (msh.msh_3.value, msh.msh_4.value) == ("APPT-PLATFORM", "HEBEI-APPT")
    assert (msh.msh_5.value, msh.msh_6.value) == ("HIS", "HB3-HIS")
    assert msh.msh_9.value == "ACK^S23^ACK"
    assert msh.msh_18.value == "GB 18030-2000"
    assert len(msh.msh_10.value) == 20
    assert parse_ack(text, "HIS0001") == Ack("AA", "HIS0001", "")
    assert "ERR" not in text
    assert build_inbound_ack(info, "AA", NOW) == text  # deterministic: the same answer to the same question


def test_a_negative_ack_names_the_field_at_fault() -> None:
    bad = "MSH|^~\\&|HIS|HB3-HIS|APPT-PLATFORM|HEBEI-APPT|20250301||SIU^S23^SIU_S12|HIS0009|P|2.5\rSCH|||||s\rRGS|1"
    with pytest.raises(HL7Error) as raised:
        parse_inbound(bad)

    text = build_inbound_ack(describe(bad), "AE", NOW, str(raised.value), error_field=raised.value.field)
    err = parsed(text).err

    assert err.err_2.value == "AIP^1^3"
    assert err.err_3.cwe_1.value == "207"
    assert err.err_4.value == "E"
    assert err.err_8.value == "the block names no doctor (AIP-3 or AIG-3)"
    assert parse_ack(text, "HIS0009").code == "AE"
    assert parsed(build_inbound_ack(describe(bad), "AR", NOW, error_field="SCH-6.2")).err.err_2.value == "SCH^1^6^1^2"
    with pytest.raises(HL7Error, match="error_field must look like"):
        build_inbound_ack(describe(bad), "AE", NOW, error_field="the doctor")


# --- charset of a raw frame ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "codec"),
    [
        (build_siu("S12", appointment(), "C1", NOW).encode(), "utf-8"),
        (build_siu("S12", appointment(patient=PATIENT), "C1", NOW, facility=Facility(charset=CHARSET_GB18030))
         .encode("gb18030"), "gb18030"),
        (b"MSH|^~\\&|HIS||APP||20250301||ACK|1|P|2.5\rMSA|AA|1", "utf-8"),
        # 亅 is 0x81 0x7C in GB18030: its second byte is a "|" to anyone counting fields in raw bytes
        ("MSH|^~\\&|HIS|亅医院|APP||20250301||ACK|1|P|2.5|||||CHN|GB 18030-2000\rMSA|AA|1".encode("gb18030"),
         "gb18030"),
        ("MSH|^~\\&|HIS|亅医院|APP||20250301||ACK|1|P|2.5|||||CHN|UNICODE UTF-8\rMSA|AA|1".encode(), "utf-8"),
        (b"not HL7", "utf-8"),
    ],
)  # fmt: skip
def test_encoding_of_reads_msh_18_before_decoding(frame: bytes, codec: str) -> None:
    assert encoding_of(frame) == codec


def test_encoding_of_refuses_a_charset_it_cannot_decode() -> None:
    frame = b"MSH|^~\\&|HIS||APP||20250301||ACK|1|P|2.5|||||CHN|8859/1\rMSA|AA|1"

    with pytest.raises(HL7Error, match="unsupported character set '8859/1'"):
        encoding_of(frame)


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
        charset="UNICODE UTF-8",
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
