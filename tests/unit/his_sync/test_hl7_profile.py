"""The message profile: every message type the platform sends, plays (the HIS's S23/S24) or answers
(ACKs), with and without the real-name block, to a default and to a GB18030 hospital, is parsed by
hl7apy in strict v2.5 validation and must come out clean, table values included. GB18030 also goes
through the MLLP framing and back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from services.his_sync.hl7 import (
    CHARSET_GB18030,
    Facility,
    build_ack,
    build_adt_a04,
    build_adt_a05,
    build_adt_a11,
    build_inbound_ack,
    build_siu,
    build_siu_block,
    describe,
    encoding_of,
    parse_inbound,
)
from services.his_sync.mllp import FrameDecoder, encode_frame, read_frames
from tests.unit.his_sync.test_hl7 import NOW, PATIENT, appointment, assert_valid_v25, parsed

pytestmark = pytest.mark.unit

GB18030_HOSPITAL = Facility(receiving_facility="HB3-HIS", charset=CHARSET_GB18030)
Builder = Callable[[dict[str, Any], Facility | None], str]

# message type -> (builder, MSH-9 as sent)
OUTBOUND: dict[str, tuple[Builder, str]] = {
    "SIU^S12": (lambda a, f: build_siu("S12", a, "CTL0001", NOW, facility=f), "SIU^S12^SIU_S12"),
    "SIU^S14": (lambda a, f: build_siu("S14", a, "CTL0001", NOW, facility=f), "SIU^S14^SIU_S12"),
    "SIU^S15": (lambda a, f: build_siu("S15", a, "CTL0001", NOW, facility=f), "SIU^S15^SIU_S12"),
    "SIU^S26": (lambda a, f: build_siu("S26", a, "CTL0001", NOW, facility=f), "SIU^S26^SIU_S12"),
    "ADT^A04": (lambda a, f: build_adt_a04(a, "CTL0002", NOW, facility=f), "ADT^A04^ADT_A01"),
    "ADT^A11": (lambda a, f: build_adt_a11(a, "CTL0003", NOW, facility=f, reason="退号"), "ADT^A11^ADT_A09"),
    "ADT^A05": (lambda a, f: build_adt_a05(a, "CTL0004", NOW, facility=f), "ADT^A05^ADT_A05"),
}


@pytest.mark.parametrize("patient", [None, PATIENT], ids=["pseudonymous", "real-name"])
@pytest.mark.parametrize("facility", [None, GB18030_HOSPITAL], ids=["default", "gb18030"])
@pytest.mark.parametrize("message_type", sorted(OUTBOUND))
def test_every_outbound_message_is_strictly_valid_v25(
    message_type: str, facility: Facility | None, patient: dict[str, str] | None
) -> None:
    build, msh_9 = OUTBOUND[message_type]
    appt = appointment(reason="患者要求", **({"patient": patient} if patient else {}))

    text = build(appt, facility)

    assert_valid_v25(text)
    msh = parsed(text).msh
    assert msh.msh_9.value == msh_9
    assert msh.msh_6.value == ("HB3-HIS" if facility else "H130100")
    assert msh.msh_18.value == ("GB 18030-2000" if facility else "UNICODE UTF-8")
    assert ("王小明" in text) is (patient is not None)
    assert describe(text).message_type == message_type


def test_without_the_real_name_block_every_message_stays_pseudonymous() -> None:
    for build, _ in OUTBOUND.values():
        pid = parsed(build(appointment(), None)).pid

        assert pid.to_er7() == "PID|1||pat-42^^^APPT-PLATFORM^PI||^^^^^^S"


INBOUND: dict[str, dict[str, Any]] = {
    "S23 by session": {"kind": "block", "session_id": "s-1", "reason": "医生出差", "block_id": "B1"},
    "S23 by slot": {
        "kind": "block",
        "start": datetime(2025, 3, 10, 8, tzinfo=timezone(timedelta(hours=8))),
        "duration_minutes": 240,
    },
    "S24": {"kind": "unblock", "session_id": "s-1", "block_id": "B1", "requested_by": "张主任"},
}


@pytest.mark.parametrize("facility", [Facility(receiving_facility="hb3"), GB18030_HOSPITAL], ids=["utf8", "gb18030"])
@pytest.mark.parametrize("case", sorted(INBOUND))
def test_what_a_his_sends_and_the_platforms_answers_are_strictly_valid(case: str, facility: Facility) -> None:
    fields = dict(INBOUND[case])
    text = build_siu_block(fields.pop("kind"), "HIS0001", NOW, facility=facility, doctor_id="dr-wang", **fields)

    assert_valid_v25(text)
    info = parse_inbound(text).info
    for code in ("AA", "AE", "AR"):
        ack = build_inbound_ack(info, code, NOW, "" if code == "AA" else "不认识这位医生", error_field="AIP-3")
        assert_valid_v25(ack)
        assert parsed(ack).msh.msh_18.value == facility.charset


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_the_his_acks_to_our_messages_are_strictly_valid(code: str) -> None:
    original = describe(build_adt_a05(appointment(patient=PATIENT), "CTL0004", NOW, facility=GB18030_HOSPITAL))

    assert_valid_v25(build_ack(original, code, "HIS000001", NOW, "" if code == "AA" else "号源已满"))


def test_gb18030_survives_mllp_framing_byte_by_byte() -> None:
    text = build_siu("S12", appointment(patient=PATIENT, reason="复诊"), "CTL0001", NOW, facility=GB18030_HOSPITAL)
    frame = encode_frame(text, GB18030_HOSPITAL.encoding)

    assert "王小明".encode("gb18030") in frame and "王小明".encode() not in frame
    decoder = FrameDecoder(encoding=GB18030_HOSPITAL.encoding)
    received = [m for i in range(len(frame)) for m in decoder.feed(frame[i : i + 1])]
    assert received == [text]
    assert decoder.idle
    assert list(read_frames(frame + frame, encoding="gb18030")) == [text, text]
    [payload] = FrameDecoder().feed_bytes(frame)
    assert encoding_of(payload) == "gb18030" and payload.decode("gb18030") == text
