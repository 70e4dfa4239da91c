r"""HL7 v2.5 messages between the platform and a hospital HIS: what we send, what the HIS sends us, ACKs.

Pure functions, strings in and strings out, no I/O. Segments end with ``\r``, delimiters are the
standard ``|^~\&``, and every value taken from an appointment is escaped (``\F\ \S\ \R\ \E\ \T\``),
so a ``|`` in a reason cannot shift the fields after it. Line breaks become spaces: a raw CR would end
the segment, and the hex escape ``\X0D\`` is not understood by every engine (hl7apy re-escapes it).
Times are China Standard Time (``+0800``): Hebei has one zone and no daylight saving, and the HIS
must not have to guess. Every message below parses and validates with hl7apy's strict v2.5 profile
(``tests/unit/his_sync/test_hl7_profile.py``), codes included.

Per-hospital profile (:class:`Facility`, keyword ``facility=`` of every builder; ``None`` keeps the
defaults shown): MSH-4 sending facility (``HEBEI-APPT``), MSH-5 receiving application (``HIS``),
MSH-6 receiving facility (the hospital's code in its own HIS; default the platform's hospital_id),
MSH-18 character set, with the table-0211 spelling: ``UNICODE UTF-8`` or ``GB 18030-2000``
(:attr:`Facility.encoding` is the Python codec the MLLP link must use with it). MSH-17 is ``CHN``.

SIU^S12 new booking, S14 modified, S15 cancelled, S26 no-show (all use structure SIU_S12)::

    MSH|^~\&|APPT-PLATFORM|HEBEI-APPT|HIS|<hospital_id>|<now>||SIU^S12^SIU_S12|<control_id>|P|2.5|||||
        CHN|UNICODE UTF-8
    SCH|<appointment_id>^APPT-PLATFORM|<code>^APPT-PLATFORM|||<session_id>|BOOKED^New booking^L|
        ROUTINE^Routine appointment^HL70276|Normal^Normal^HL70277|15|min^minute^ISO+|^^M15^<start>|||||
        APPT-PLATFORM||||<channel>|||||Booked^Booked^HL70278
    TQ1|1|||||15^min|<start>|<end>
    NTE|1|L|code=..; sequence_number=..; period=..; fee=..|RE^Remark^HL70364
    PID|1||<patient_id>^^^APPT-PLATFORM^PI||^^^^^^S
    RGS|1
    AIL|1||<department_id>^^^<hospital_id>|CLINIC^Clinic^L||<start>|||15|min^minute^ISO+||Booked^Booked^HL70278
    AIP|1||<doctor_id>|DOCTOR^Doctor^L||<start>|||15|min^minute^ISO+||Booked^Booked^HL70278

SCH-6 (event reason) and SCH-25 / AIL-12 / AIP-12 (filler status, table 0278) follow the trigger; an
optional ``reason`` in the appointment (free text, e.g. why it was cancelled) becomes SCH-6.2.
SCH-16 (filler contact, required) names the platform; SCH-20 (entered by, required) is the booking
channel. SCH-2 (filler appointment id) is the booking code. The queue number (sequence_number) and
the fee have no field in SIU v2.5: SCH-3 "occurrence number" counts the occurrences of a repeating
appointment, AIL-7/AIP-7 are offsets from the start, so both stay in the NTE.

PID, the same in every message. Without ``appointment["patient"]`` it is pseudonymous, as above: the
platform patient id only, and PID-5 (required) an empty name of type ``S`` (pseudonym, table 0200).
With the real-name block ``{"name", "id_number", "sex", "birth_date", "phone"}`` (name and id_number
required, the rest optional), for 实名制 registration::

    PID|1||<patient_id>^^^APPT-PLATFORM^PI~<id_number>^^^CHN^NNCHN||<name>^^^^^^L||<YYYYMMDD>|<sex>|||||
        ^PRN^CP^^^^^^^^^<phone>

PID-3 repeats: the platform id first (so a reader taking the first repetition still gets it), then
the resident ID with identifier type ``NNCHN`` (table 0203 ``NNxxx``: national person identifier,
xxx the ISO 3166 country code) and assigning authority ``CHN``. PID-5: the full Chinese name, as
written, in XPN.1 (family name) with type ``L`` (legal), XPN.2 empty: Chinese HIS keep 姓名 as one
string, and splitting it into 姓/名 is not reliable (compound surnames). PID-7 birth date, PID-8 sex
(table 0001). PID-13 the mobile number as XTN-12 (unformatted number; XTN-1 is deprecated in v2.5),
with use ``PRN`` (table 0201) and equipment ``CP`` (cellular, table 0202). Free text (reasons, notes) is
passed through the project's PII mask, in case a patient typed a phone number into a reason; the
real-name fields are not.

ADT^A04 at check-in (structure ADT_A01)::

    MSH|...|ADT^A04^ADT_A01|<control_id>|P|2.5|||||CHN|UNICODE UTF-8
    EVN|A04|<now>||||<checked_in_at>|<hospital_id>
    PID|...
    PV1|1|O|<department_id>^^^<hospital_id>||||<doctor_id>||||||||||||<appointment_id>^^^APPT-PLATFORM^VN|
        ...|<checked_in_at> (PV1-44)

ADT^A11 退号, cancel the visit registered by the A04 (structure ADT_A09, which v2.5 uses for A09-A11)::

    MSH|...|ADT^A11^ADT_A09|...
    EVN|A11|<now>||||<now>|<hospital_id>
    PID|...
    PV1|1|O|<location>||||<doctor_id>||||||||||||<appointment_id>^^^APPT-PLATFORM^VN
    OBX|1|TX|CANCEL-REASON^Cancellation reason^L||<reason>||||||F        (only with a reason)

The visit is named by PV1-19, as in the A04. ADT_A09 has no NTE and EVN-4 is a code (table 0062), so
a free-text reason travels as a text observation.

ADT^A05 the 16:00 hand-over, pre-registering (预挂号) tomorrow's paid phone booking (structure ADT_A05)::

    MSH|...|ADT^A05^ADT_A05|...
    EVN|A05|<now>|<start>|||<now>|<hospital_id>
    PID|...                                                               (with the real-name block)
    PV1|1|O|<location>||||<doctor_id>||||||||||||<appointment_id>^^^APPT-PLATFORM^VN|...|
        <start> (PV1-44)|||<fee> (PV1-47)||<fee> (PV1-49)
    PV2||||||||<start>

EVN-3 (planned event) and PV2-8 (expected admit) are the standard's fields for "when the visit
will happen"; PV1-44 carries the same start for engines that read only PV1. ADT_A05 has neither FT1
nor NTE; the fee goes to PV1-47 total charges and, since only paid bookings are handed over, to
PV1-49 total payments too, so the window does not charge the patient again. A fee must be a number.

SIU^S23 blocked / SIU^S24 unblocked, from the HIS to us (structure SIU_S12; :func:`build_siu_block`
writes them, :func:`parse_inbound` reads them)::

    MSH|^~\&|HIS|<hospital's code>|APPT-PLATFORM|HEBEI-APPT|<now>||SIU^S23^SIU_S12|<id>|P|2.5|||||CHN|...
    SCH||<block_id>^<hospital's code>|||<session_id>|BLOCKED^<reason>^L||||||||||<hospital's code>||||
        <requested_by>|||||Blocked^Blocked^HL70278
    TQ1|1||||||<start>|<end>                                               (only with a start)
    RGS|1
    AIP|1||<doctor_id>|DOCTOR^Doctor^L||<start>|||<minutes>|min^minute^ISO+||Blocked^Blocked^HL70278

The HIS is the filler of its own schedule, so its id for the block is SCH-2 (SCH-1 read as a
fallback). The session is SCH-5 in our ids, as we send it; a HIS that only knows the slot gives the
doctor and the start (AIP-6, else TQ1-7, else SCH-11.4). The doctor is AIP-3.1 (or AIG-3.1).
SCH-20 names who asked for it (the sending facility when empty). S24 uses ``UNBLOCKED`` and filler
status ``Cancelled``.

ACKs use original acknowledgement mode: MSA-1 AA (accepted), AE (error), AR (rejected); MSA-2 must
echo the MSH-10 answered, anything else is an :class:`HL7Error`. A negative ACK adds ERR: ERR-2
the failing field (``AIP^1^3``), ERR-3 the table-0357 code (207 application error for AE, 200
unsupported message for AR), ERR-4 ``E``, ERR-8 the text for a person. MSH-18 echoes the charset
of the message answered.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from infra.logging import mask_text

__all__ = [
    "CHARSET_GB18030",
    "CHARSET_UTF8",
    "CHINA_TZ",
    "DEFAULT_DURATION_MINUTES",
    "RECEIVING_APPLICATION",
    "SENDING_APPLICATION",
    "SENDING_FACILITY",
    "SIU_TRIGGERS",
    "Ack",
    "Facility",
    "HL7Error",
    "Inbound",
    "MessageInfo",
    "build_ack",
    "build_adt_a04",
    "build_adt_a05",
    "build_adt_a11",
    "build_inbound_ack",
    "build_siu",
    "build_siu_block",
    "describe",
    "encoding_of",
    "escape",
    "parse_ack",
    "parse_inbound",
    "unescape",
]

SENDING_APPLICATION = "APPT-PLATFORM"
SENDING_FACILITY = "HEBEI-APPT"
RECEIVING_APPLICATION = "HIS"
DEFAULT_DURATION_MINUTES = 15
CHINA_TZ = timezone(timedelta(hours=8), "CST")
# MSH-10 is an ST(20) in v2.5; a longer id would be truncated by some engines and then never match.
MAX_CONTROL_ID_LENGTH = 20
# HL7 table 0211 names -> Python codecs. An empty MSH-18 means the default (ASCII), which UTF-8 covers.
CHARSET_UTF8 = "UNICODE UTF-8"
CHARSET_GB18030 = "GB 18030-2000"
_CODECS = {CHARSET_UTF8: "utf-8", CHARSET_GB18030: "gb18030", "": "utf-8"}

# trigger -> (SCH-6 event reason code, its text, filler status code of table 0278)
SIU_TRIGGERS: dict[str, tuple[str, str, str]] = {
    "S12": ("BOOKED", "New booking", "Booked"),
    "S14": ("MODIFIED", "Booking modified", "Booked"),
    "S15": ("CANCELLED", "Booking cancelled", "Cancelled"),
    "S26": ("NOSHOW", "Patient did not arrive", "Noshow"),
}
_BLOCK_TRIGGERS: dict[str, tuple[str, str, str, str]] = {
    # kind -> (trigger, SCH-6 code, its default text, filler status)
    "block": ("S23", "BLOCKED", "Schedule time blocked", "Blocked"),
    "unblock": ("S24", "UNBLOCKED", "Schedule time unblocked", "Cancelled"),
}
ACK_CODES = ("AA", "AE", "AR")
# ERR-3 (table 0357) for a negative ACK: 207 application internal error, 200 unsupported message.
_ERR_CODES = {"AE": ("207", "Application internal error"), "AR": ("200", "Unsupported message type")}
_SEXES = ("F", "M", "O", "U", "A", "N")  # table 0001

_REQUIRED_KEYS = (
    "appointment_id",
    "hospital_id",
    "department_id",
    "doctor_id",
    "patient_id",
    "date",
    "start",
)
_ESCAPES = str.maketrans(
    {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\r": " ", "\n": " "}
)
_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_RESIDENT_ID = re.compile(r"\d{17}[\dX]")
_PHONE = re.compile(r"\+?\d{5,20}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_FIELD_LOCATION = re.compile(r"([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?")
_HL7_TS = re.compile(r"(\d{12})(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?")


class HL7Error(ValueError):
    """A message cannot be built from the given data, or one received cannot be used.

    `field` names the offending field (``AIP-3``) when there is one: a receiver passes it on as
    ``error_field`` of :func:`build_inbound_ack`.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Facility:
    """How one hospital's HIS is addressed: MSH-4/5/6 and the character set (MSH-18)."""

    receiving_application: str = RECEIVING_APPLICATION
    # The hospital's code in its HIS; "" means the platform's hospital_id of the appointment.
    receiving_facility: str = ""
    sending_facility: str = SENDING_FACILITY
    charset: str = CHARSET_UTF8

    def __post_init__(self) -> None:
        if not self.charset or self.charset not in _CODECS:
            supported = ", ".join(repr(c) for c in _CODECS if c)
            raise HL7Error(f"unsupported character set {self.charset!r}; expected one of {supported}")

    @property
    def encoding(self) -> str:
        """The Python codec for :attr:`charset` (``utf-8`` or ``gb18030``)."""
        return _CODECS[self.charset]


@dataclass(frozen=True)
class Ack:
    code: str
    control_id: str
    text: str

    @property
    def accepted(self) -> bool:
        return self.code == "AA"


@dataclass(frozen=True)
class MessageInfo:
    """The header facts of a received message; empty strings where a message does not say."""

    message_type: str = ""
    control_id: str = ""
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    appointment_id: str = ""
    patient_id: str = ""
    charset: str = ""

    @property
    def trigger(self) -> str:
        return self.message_type.partition("^")[2]


@dataclass(frozen=True)
class Inbound:
    """What a HIS told us in an SIU^S23 (block) or S24 (unblock), in the platform's ids."""

    info: MessageInfo
    kind: Literal["block", "unblock"]
    doctor_id: str
    session_id: str = ""
    start: datetime | None = None
    reason: str = ""
    block_id: str = ""
    requested_by: str = ""


def build_siu(
    trigger: str,
    appointment: Mapping[str, Any],
    control_id: str,
    now: datetime,
    *,
    duration_minutes: int = DEFAULT_DURATION_MINUTES,
    receiving_application: str = RECEIVING_APPLICATION,
    facility: Facility | None = None,
) -> str:
    """SIU^<trigger> (S12, S14, S15 or S26) for one appointment.

    `receiving_application` is used only without a `facility` (which names its own).
    """
    if trigger not in SIU_TRIGGERS:
        raise HL7Error(f"unsupported SIU trigger {trigger!r}; expected one of {', '.join(SIU_TRIGGERS)}")
    if duration_minutes <= 0:
        raise HL7Error(f"duration_minutes must be positive, got {duration_minutes}")
    appt = _checked(appointment)
    patient = _pid(appt)
    reason_code, reason_text, status = SIU_TRIGGERS[trigger]
    start_at = _appointment_start(appt)
    start = _ts(start_at)
    end = _ts(start_at + timedelta(minutes=duration_minutes))
    minutes = str(duration_minutes)
    units = _cmp("min", "minute", "ISO+")
    filler_status = _cmp(status, status, "HL70278")
    free_reason = _text(appt.get("reason")) or reason_text
    segments = [
        _msh(f"SIU^{trigger}^SIU_S12", control_id, now, _profile(facility, appt, receiving_application)),
        _segment(
            "SCH",
            {
                1: _cmp(_id(appt["appointment_id"]), SENDING_APPLICATION),
                2: _cmp(_id(appt.get("code")), SENDING_APPLICATION) if appt.get("code") else "",
                5: _id(appt.get("session_id")),
                6: _cmp(reason_code, free_reason, "L"),
                7: _cmp("ROUTINE", "Routine appointment", "HL70276"),
                8: _cmp("Normal", "Normal", "HL70277"),
                9: minutes,
                10: units,
                11: _cmp("", "", f"M{minutes}", start),
                16: SENDING_APPLICATION,
                20: _id(appt.get("channel")) or SENDING_APPLICATION,
                25: filler_status,
            },
        ),
        _segment("TQ1", {1: "1", 6: _cmp(minutes, "min"), 7: start, 8: end}),
    ]
    note = _visit_note(appt)
    if note:
        segments.append(_segment("NTE", {1: "1", 2: "L", 3: note, 4: _cmp("RE", "Remark", "HL70364")}))
    segments += [
        patient,
        _segment("RGS", {1: "1"}),
        _segment(
            "AIL",
            {
                1: "1",
                3: _location(appt),
                4: _cmp("CLINIC", "Clinic", "L"),
                6: start,
                9: minutes,
                10: units,
                12: filler_status,
            },
        ),
        _segment(
            "AIP",
            {
                1: "1",
                3: _id(appt["doctor_id"]),
                4: _cmp("DOCTOR", "Doctor", "L"),
                6: start,
                9: minutes,
                10: units,
                12: filler_status,
            },
        ),
    ]
    return "\r".join(segments)


def build_adt_a04(
    appointment: Mapping[str, Any],
    control_id: str,
    now: datetime,
    *,
    checked_in_at: datetime | None = None,
    receiving_application: str = RECEIVING_APPLICATION,
    facility: Facility | None = None,
) -> str:
    """ADT^A04 (register an outpatient) when the patient checks in; `checked_in_at` defaults to `now`."""
    appt = _checked(appointment)
    arrived = _ts(checked_in_at or now)
    segments = [
        _msh("ADT^A04^ADT_A01", control_id, now, _profile(facility, appt, receiving_application)),
        _segment("EVN", {1: "A04", 2: _ts(now), 6: arrived, 7: _id(appt["hospital_id"])}),
        _pid(appt),
        _segment("PV1", {**_visit(appt), 44: arrived}),
    ]
    return "\r".join(segments)


def build_adt_a11(
    appointment: Mapping[str, Any],
    control_id: str,
    now: datetime,
    *,
    facility: Facility | None = None,
    reason: str = "",
) -> str:
    """ADT^A11 (cancel the visit) when a registration made by an A04 is withdrawn at the window (退号)."""
    appt = _checked(appointment)
    segments = [
        _msh("ADT^A11^ADT_A09", control_id, now, _profile(facility, appt)),
        _segment("EVN", {1: "A11", 2: _ts(now), 6: _ts(now), 7: _id(appt["hospital_id"])}),
        _pid(appt),
        _segment("PV1", _visit(appt)),
    ]
    text = _text(reason)
    if text:
        observation = _cmp("CANCEL-REASON", "Cancellation reason", "L")
        segments.append(_segment("OBX", {1: "1", 2: "TX", 3: observation, 5: text, 11: "F"}))
    return "\r".join(segments)


def build_adt_a05(
    appointment: Mapping[str, Any],
    control_id: str,
    now: datetime,
    *,
    facility: Facility | None = None,
) -> str:
    """ADT^A05 (pre-register) a paid booking for the next day, at the 16:00 hand-over (预挂号)."""
    appt = _checked(appointment)
    patient = _pid(appt)
    start = _ts(_appointment_start(appt))
    fee = _fee(appt)
    segments = [
        _msh("ADT^A05^ADT_A05", control_id, now, _profile(facility, appt)),
        _segment("EVN", {1: "A05", 2: _ts(now), 3: start, 6: _ts(now), 7: _id(appt["hospital_id"])}),
        patient,
        _segment("PV1", {**_visit(appt), 44: start, 47: fee, 49: fee}),
        _segment("PV2", {8: start}),
    ]
    return "\r".join(segments)


def build_siu_block(
    kind: Literal["block", "unblock"],
    control_id: str,
    now: datetime,
    *,
    facility: Facility,
    doctor_id: str,
    session_id: str = "",
    start: datetime | None = None,
    duration_minutes: int | None = None,
    reason: str = "",
    block_id: str = "",
    requested_by: str = "",
) -> str:
    """SIU^S23 (block) or S24 (unblock) as a HIS sends it: what the simulator and tests play.

    `facility` is the link as the platform sees it, used mirrored: the message comes from its
    receiving application and facility (the hospital's code) and goes to its sending facility.
    """
    if kind not in _BLOCK_TRIGGERS:
        raise HL7Error(f"kind must be 'block' or 'unblock', got {kind!r}")
    if not facility.receiving_facility:
        raise HL7Error("the facility must name the hospital's code (receiving_facility)")
    if not doctor_id:
        raise HL7Error("a block needs a doctor")
    if not session_id and start is None:
        raise HL7Error("a block needs a session_id or a start")
    if duration_minutes is not None and duration_minutes <= 0:
        raise HL7Error(f"duration_minutes must be positive, got {duration_minutes}")
    trigger, reason_code, reason_text, status = _BLOCK_TRIGGERS[kind]
    his = _id(facility.receiving_facility)
    filler_status = _cmp(status, status, "HL70278")
    begins = _ts(start) if start is not None else ""
    ends = _ts(start + timedelta(minutes=duration_minutes)) if start is not None and duration_minutes else ""
    minutes = str(duration_minutes) if duration_minutes else ""
    header = Facility(
        receiving_application=SENDING_APPLICATION,
        receiving_facility=facility.sending_facility,
        sending_facility=facility.receiving_facility,
        charset=facility.charset,
    )
    segments = [
        _msh(f"SIU^{trigger}^SIU_S12", control_id, now, header, sending_application=facility.receiving_application),
        _segment(
            "SCH",
            {
                2: _cmp(_id(block_id), his) if block_id else "",
                5: _id(session_id),
                6: _cmp(reason_code, _text(reason) or reason_text, "L"),
                16: his,
                20: _id(requested_by) or his,
                25: filler_status,
            },
        ),
    ]
    if begins:
        segments.append(_segment("TQ1", {1: "1", 6: _cmp(minutes, "min") if minutes else "", 7: begins, 8: ends}))
    segments += [
        _segment("RGS", {1: "1"}),
        _segment(
            "AIP",
            {
                1: "1",
                3: _id(doctor_id),
                4: _cmp("DOCTOR", "Doctor", "L"),
                6: begins,
                9: minutes,
                10: _cmp("min", "minute", "ISO+") if minutes else "",
                12: filler_status,
            },
        ),
    ]
    return "\r".join(segments)


def parse_inbound(message: str) -> Inbound:
    """Read an SIU^S23 / S24 from a HIS. Raises HL7Error (with `field`) for what cannot be used."""
    parsed = _Parsed.of(message, what="message")
    info = _describe(parsed)
    if parsed.get("MSH", 9, 1) != "SIU" or info.trigger not in ("S23", "S24"):
        raise HL7Error(
            f"unsupported message {info.message_type or '(no MSH-9)'}; expected SIU^S23 or SIU^S24", field="MSH-9"
        )
    if not parsed.has("SCH"):
        raise HL7Error("SIU has no SCH segment", field="SCH")
    doctor_id = parsed.get("AIP", 3, 1) or parsed.get("AIG", 3, 1)
    if not doctor_id:
        raise HL7Error("the block names no doctor (AIP-3 or AIG-3)", field="AIP-3")
    session_id = parsed.get("SCH", 5, 1)
    start_field, start_text = next(
        (
            (where, value)
            for where, value in (
                ("AIP-6", parsed.get("AIP", 6, 1)),
                ("TQ1-7", parsed.get("TQ1", 7, 1)),
                ("SCH-11.4", parsed.get("SCH", 11, 4)),
            )
            if value
        ),
        ("", ""),
    )
    start = _parse_ts(start_text, start_field) if start_text else None
    if not session_id and start is None:
        raise HL7Error("the block names neither a session (SCH-5) nor a start (AIP-6, TQ1-7)", field="SCH-5")
    return Inbound(
        info=info,
        kind="block" if info.trigger == "S23" else "unblock",
        doctor_id=doctor_id,
        session_id=session_id,
        start=start,
        reason=parsed.get("SCH", 6, 2) or parsed.get("SCH", 6, 1),
        block_id=parsed.get("SCH", 2, 1) or parsed.get("SCH", 1, 1),
        requested_by=parsed.get("SCH", 20, 1) or parsed.get("SCH", 20, 2) or info.sending_facility,
    )


def parse_ack(text: str, expected_control_id: str) -> Ack:
    """Read an ACK and check that it answers `expected_control_id` (the MSH-10 we sent).

    AE and AR are returned, not raised: they are valid answers the caller decides about. A reply that
    is not an ACK, has no MSA, an unknown MSA-1 or answers another message raises HL7Error.
    """
    message = _Parsed.of(text, what="ACK")
    message_code = message.get("MSH", 9, 1)
    if message_code != "ACK":
        raise HL7Error(f"expected an ACK, got MSH-9 {message.get('MSH', 9)!r}")
    if not message.has("MSA"):
        raise HL7Error("ACK has no MSA segment")
    code = message.get("MSA", 1)
    if code not in ACK_CODES:
        raise HL7Error(f"MSA-1 {code!r} is not one of {', '.join(ACK_CODES)}")
    control_id = message.get("MSA", 2)
    if control_id != expected_control_id:
        raise HL7Error(f"ACK answers control id {control_id!r}, expected {expected_control_id!r}")
    detail = message.get("MSA", 3) or message.get("ERR", 8) or message.get("ERR", 3, 2)
    return Ack(code=code, control_id=control_id, text=detail)


def describe(message: str) -> MessageInfo:
    """Header facts of any message: type (``SIU^S12``), control id, parties, appointment and patient id."""
    return _describe(_Parsed.of(message, what="message"))


def encoding_of(frame: bytes) -> str:
    """The Python codec for the charset a raw message declares in MSH-18 (``utf-8`` when it says none).

    For a receiver that serves several character sets on one port. The header is decoded with each
    codec we know and believed only when what it declares is that codec (or the header is plain
    ASCII, the same in both): a GB18030 character may have ``|`` (0x7C) as its second byte, so
    counting fields in undecoded bytes could read the wrong one.
    """
    header = re.split(rb"\r\n|\r|\n", frame, maxsplit=1)[0]
    if not header.startswith(b"MSH") or len(header) < 8:
        return _CODECS[""]
    declared = ""
    for codec in dict.fromkeys(_CODECS.values()):
        try:
            text = header.decode(codec)
        except UnicodeDecodeError:
            continue
        fields = text.split(text[3])
        repetition = fields[1][1:2] or "~"
        declared = fields[17].split(repetition)[0].strip() if len(fields) > 17 else ""
        if declared in _CODECS and (_CODECS[declared] == codec or text.isascii()):
            return _CODECS[declared]
    raise HL7Error(f"unsupported character set {declared!r} in MSH-18", field="MSH-18")


def build_ack(
    original: MessageInfo,
    code: str,
    control_id: str,
    now: datetime,
    text: str = "",
    *,
    error_field: str = "",
) -> str:
    """The receiver's answer to `original`: the HIS's (or its simulator's) to us, or ours to the HIS.

    `error_field` (``AIP-3``, ``SCH-6.2``) names the field at fault in ERR-2 of a negative ACK.
    """
    if code not in ACK_CODES:
        raise HL7Error(f"ACK code must be one of {', '.join(ACK_CODES)}, got {code!r}")
    _check_control_id(control_id)
    location = _error_location(error_field)
    header = {
        3: _id(original.receiving_application),
        4: _id(original.receiving_facility),
        5: _id(original.sending_application),
        6: _id(original.sending_facility),
        7: _ts(now),
        9: _cmp("ACK", _id(original.trigger), "ACK"),
        10: control_id,
        11: "P",
        12: "2.5",
        18: _id(original.charset) or CHARSET_UTF8,
    }
    segments = [
        _msh_segment(header),
        _segment("MSA", {1: code, 2: _id(original.control_id), 3: _text(text)}),
    ]
    if code in _ERR_CODES:
        err_code, err_text = _ERR_CODES[code]
        segments.append(
            _segment("ERR", {2: location, 3: _cmp(err_code, err_text, "HL70357"), 4: "E", 8: _text(text)})
        )
    return "\r".join(segments)


def build_inbound_ack(
    info: MessageInfo,
    code: Literal["AA", "AE", "AR"],
    now: datetime,
    text: str = "",
    *,
    error_field: str = "",
) -> str:
    """The platform's ACK to a message from a HIS (S23/S24).

    Its own control id is derived from what it answers (a hash of the original control id, the code
    and `now`), so building it twice gives the same text; a duplicate is answered by replaying the
    stored ACK, not by building a new one.
    """
    digest = hashlib.blake2b(f"{info.control_id}|{code}|{_ts(now)}".encode(), digest_size=10).hexdigest()
    return build_ack(info, code, digest, now, text, error_field=error_field)


def escape(value: str) -> str:
    """Escape the standard HL7 delimiters ``|^~\\&`` in one value; CR and LF become spaces."""
    return value.translate(_ESCAPES)


def unescape(value: str, escape_char: str = "\\") -> str:
    """Undo :func:`escape` and the other common sequences (``\\.br\\`` becomes a newline)."""
    if escape_char not in value:
        return value
    pattern = re.compile(re.escape(escape_char) + r"(.*?)" + re.escape(escape_char))
    return pattern.sub(_unescape_sequence, value)


# --- building blocks -------------------------------------------------------------------------------


def _checked(appointment: Mapping[str, Any]) -> Mapping[str, Any]:
    missing = [key for key in _REQUIRED_KEYS if not appointment.get(key)]
    if missing:
        raise HL7Error(f"appointment is missing {', '.join(missing)}")
    return appointment


def _profile(
    facility: Facility | None, appt: Mapping[str, Any], receiving_application: str = RECEIVING_APPLICATION
) -> Facility:
    if facility is None:
        facility = Facility(receiving_application=receiving_application)
    if facility.receiving_facility:
        return facility
    return Facility(
        receiving_application=facility.receiving_application,
        receiving_facility=str(appt["hospital_id"]),
        sending_facility=facility.sending_facility,
        charset=facility.charset,
    )


def _msh(
    message_type: str,
    control_id: str,
    now: datetime,
    facility: Facility,
    *,
    sending_application: str = SENDING_APPLICATION,
) -> str:
    _check_control_id(control_id)
    return _msh_segment(
        {
            3: _id(sending_application),
            4: _id(facility.sending_facility),
            5: _id(facility.receiving_application),
            6: _id(facility.receiving_facility),
            7: _ts(now),
            9: message_type,
            10: control_id,
            11: "P",
            12: "2.5",
            17: "CHN",
            18: facility.charset,
        }
    )


def _msh_segment(fields: dict[int, str]) -> str:
    # MSH-1 is the field separator itself, so MSH-2 is the first value after "MSH|".
    values = ["^~\\&"] + [fields.get(i, "") for i in range(3, max(fields) + 1)]
    return "MSH|" + "|".join(values)


def _segment(name: str, fields: dict[int, str]) -> str:
    """One segment from {field number: already encoded value}; numbers are HL7 positions."""
    last = max((i for i, v in fields.items() if v), default=0)
    return "|".join([name, *(fields.get(i, "") for i in range(1, last + 1))])


def _cmp(*components: str) -> str:
    return "^".join(components).rstrip("^")


def _pid(appt: Mapping[str, Any]) -> str:
    platform_id = _cmp(_id(appt["patient_id"]), "", "", SENDING_APPLICATION, "PI")
    patient = appt.get("patient")
    if not patient:
        return _segment("PID", {1: "1", 3: platform_id, 5: _cmp(*[""] * 6, "S")})
    if not isinstance(patient, Mapping):
        raise HL7Error(f"appointment patient must be a mapping, got {type(patient).__name__}")
    missing = [key for key in ("name", "id_number") if not patient.get(key)]
    if missing:
        raise HL7Error(f"appointment patient is missing {', '.join(missing)}")
    id_number = str(patient["id_number"]).strip().upper()
    if not _RESIDENT_ID.fullmatch(id_number):
        raise HL7Error("patient id_number is not an 18-character resident ID number")
    sex = str(patient.get("sex") or "")
    if sex and sex not in _SEXES:
        raise HL7Error(f"patient sex must be one of {', '.join(_SEXES)} (table 0001), got {sex!r}")
    phone = str(patient.get("phone") or "").replace(" ", "").replace("-", "")
    if phone and not _PHONE.fullmatch(phone):
        raise HL7Error("patient phone must be digits, optionally with a leading +")
    resident_id = _cmp(id_number, "", "", "CHN", "NNCHN")
    return _segment(
        "PID",
        {
            1: "1",
            3: f"{platform_id}~{resident_id}",
            5: _cmp(_id(patient["name"]), *[""] * 5, "L"),
            7: _birth_date(patient.get("birth_date")),
            8: sex,
            13: _cmp("", "PRN", "CP", *[""] * 8, _id(phone)) if phone else "",
        },
    )


def _birth_date(value: Any) -> str:
    if not value:
        return ""
    try:
        return date.fromisoformat(str(value)).strftime("%Y%m%d")
    except ValueError as exc:
        raise HL7Error(f"patient birth_date {value!r} is not an ISO date: {exc}") from exc


def _visit(appt: Mapping[str, Any]) -> dict[int, str]:
    """PV1 of an outpatient visit: class O, where, which doctor, the appointment as visit number."""
    return {
        1: "1",
        2: "O",
        3: _location(appt),
        7: _id(appt["doctor_id"]),
        19: _cmp(_id(appt["appointment_id"]), "", "", SENDING_APPLICATION, "VN"),
    }


def _fee(appt: Mapping[str, Any]) -> str:
    fee = appt.get("fee")
    if fee in (None, ""):
        return ""
    if not _NUMBER.fullmatch(str(fee)):
        raise HL7Error(f"fee must be a number such as 50.00, got {fee!r}")
    return str(fee)


def _location(appt: Mapping[str, Any]) -> str:
    # PL: point of care (department) ^ room ^ bed ^ facility (the hospital)
    return _cmp(_id(appt["department_id"]), "", "", _id(appt["hospital_id"]))


def _visit_note(appt: Mapping[str, Any]) -> str:
    parts = [
        f"{key}={value}"
        for key in ("code", "sequence_number", "period", "fee")
        if (value := appt.get(key)) not in (None, "")
    ]
    return _text("; ".join(parts))


def _appointment_start(appt: Mapping[str, Any]) -> datetime:
    try:
        local = datetime.fromisoformat(f"{appt['date']}T{appt['start']}")
    except ValueError as exc:
        raise HL7Error(f"bad appointment date/start {appt['date']!r} {appt['start']!r}: {exc}") from exc
    return local.replace(tzinfo=CHINA_TZ)


def _ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise HL7Error("timestamps must be timezone-aware; a naive datetime would be ambiguous to the HIS")
    return moment.astimezone(CHINA_TZ).strftime("%Y%m%d%H%M%S+0800")


def _parse_ts(value: str, field: str) -> datetime:
    """An HL7 TS to the minute at least; without an offset it is China time."""
    match = _HL7_TS.fullmatch(value)
    if not match:
        raise HL7Error(f"{field} {value!r} is not a date and time (YYYYMMDDHHMM[SS][+ZZZZ])", field=field)
    minutes, seconds, offset = match.groups()
    try:
        moment = datetime.strptime(minutes + (seconds or "00"), "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise HL7Error(f"{field} {value!r} is not a date and time: {exc}", field=field) from exc
    if not offset:
        return moment.replace(tzinfo=CHINA_TZ)
    sign = 1 if offset[0] == "+" else -1
    return moment.replace(tzinfo=timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))))


def _error_location(error_field: str) -> str:
    """``AIP-3`` -> ERL ``AIP^1^3``; ``SCH-6.2`` -> ``SCH^1^6^1^2`` (first segment, first repetition)."""
    if not error_field:
        return ""
    match = _FIELD_LOCATION.fullmatch(error_field)
    if not match:
        raise HL7Error(f"error_field must look like AIP-3 or SCH-6.2, got {error_field!r}")
    segment, field, component = match.groups()
    return _cmp(segment, "1", field, "1", component) if component else _cmp(segment, "1", field)


def _check_control_id(control_id: str) -> None:
    if not control_id or len(control_id) > MAX_CONTROL_ID_LENGTH or escape(control_id) != control_id:
        raise HL7Error(
            f"control id must be 1-{MAX_CONTROL_ID_LENGTH} characters without delimiters, got {control_id!r}"
        )


def _id(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _text(value: Any) -> str:
    return "" if value is None else escape(mask_text(str(value)))


_NAMED_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\", ".br": "\n"}


def _unescape_sequence(match: re.Match[str]) -> str:
    body = match.group(1)
    if body in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[body]
    if body.startswith("X") and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", body):
        return bytes.fromhex(body[1:]).decode("utf-8", errors="replace")
    if body in ("H", "N"):
        return ""  # highlight on/off: formatting only
    return match.group(0)


# --- reading ---------------------------------------------------------------------------------------


def _describe(parsed: _Parsed) -> MessageInfo:
    appointment_id = parsed.get("SCH", 1, 1) or parsed.get("PV1", 19, 1)
    return MessageInfo(
        message_type="^".join(p for p in (parsed.get("MSH", 9, 1), parsed.get("MSH", 9, 2)) if p),
        control_id=parsed.get("MSH", 10),
        sending_application=parsed.get("MSH", 3, 1),
        sending_facility=parsed.get("MSH", 4, 1),
        receiving_application=parsed.get("MSH", 5, 1),
        receiving_facility=parsed.get("MSH", 6, 1),
        appointment_id=appointment_id,
        patient_id=parsed.get("PID", 3, 1),
        charset=parsed.get("MSH", 18),
    )


@dataclass(frozen=True)
class _Parsed:
    """A message split into fields, with the delimiters its own MSH declares."""

    segments: list[list[str]]
    component_sep: str
    repetition_sep: str
    escape_char: str

    @classmethod
    def of(cls, text: str, *, what: str) -> _Parsed:
        lines = [line for line in _SEGMENT_SPLIT.split(text.strip()) if line]
        if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
            raise HL7Error(f"{what} does not start with an MSH segment: {text[:40]!r}")
        field_sep = lines[0][3]
        encoding = lines[0].split(field_sep)[1]
        if len(encoding) < 3:
            raise HL7Error(f"{what} has bad encoding characters in MSH-2: {encoding!r}")
        segments = [line.split(field_sep) for line in lines]
        # Insert MSH-1 so that list index == HL7 field number in every segment.
        segments[0].insert(1, field_sep)
        return cls(segments, encoding[0], encoding[1], encoding[2])

    def has(self, name: str) -> bool:
        return any(seg[0] == name for seg in self.segments)

    def get(self, name: str, field: int, component: int | None = None) -> str:
        """First repetition of a field (or one component of it), unescaped; "" when absent."""
        seg = next((s for s in self.segments if s[0] == name), None)
        if seg is None or field >= len(seg):
            return ""
        value = seg[field] if name == "MSH" and field <= 2 else seg[field].split(self.repetition_sep)[0]
        if component is not None:
            parts = value.split(self.component_sep)
            value = parts[component - 1] if component <= len(parts) else ""
        return unescape(value, self.escape_char)
