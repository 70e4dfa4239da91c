r"""HL7 v2.5 messages the platform sends to a hospital HIS, and the ACKs that come back.

Pure functions, strings in and strings out, no I/O. Segments end with ``\r``, delimiters are the
standard ``|^~\&``, and every value taken from an appointment is escaped (``\F\ \S\ \R\ \E\ \T\``),
so a ``|`` in a reason cannot shift the fields after it. Line breaks become spaces: a raw CR would end
the segment, and the hex escape ``\X0D\`` is not understood by every engine (hl7apy re-escapes it).
Times are China Standard Time (``+0800``): Hebei has one zone and no daylight saving, and the HIS
must not have to guess.

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
channel. The queue number (sequence_number) and fee have no SIU field of their own, so they travel
in the NTE.

ADT^A04 at check-in (structure ADT_A01)::

    MSH|...|ADT^A04^ADT_A01|<control_id>|P|2.5|||||CHN|UNICODE UTF-8
    EVN|A04|<now>||||<checked_in_at>|<hospital_id>
    PID|1||<patient_id>^^^APPT-PLATFORM^PI||^^^^^^S
    PV1|1|O|<department_id>^^^<hospital_id>||||<doctor_id>||||||||||||<appointment_id>^^^APPT-PLATFORM^VN|
        ...|<checked_in_at> (PV1-44)

Patient identity: PID carries the platform patient id (PID-3) and nothing else. The resident ID
number, phone and real name never leave the platform in HL7; PID-5 is required by the standard, so it
is an empty name of type ``S`` (pseudonym, table 0200). Free text is also passed through the
project's PII mask, in case a patient typed a phone number into a reason.

ACKs use original acknowledgement mode: MSA-1 AA (accepted), AE (error), AR (rejected); MSA-2 must
echo our MSH-10, anything else is an :class:`HL7Error`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from infra.logging import mask_text

__all__ = [
    "DEFAULT_DURATION_MINUTES",
    "RECEIVING_APPLICATION",
    "SENDING_APPLICATION",
    "SENDING_FACILITY",
    "SIU_TRIGGERS",
    "Ack",
    "HL7Error",
    "MessageInfo",
    "build_ack",
    "build_adt_a04",
    "build_siu",
    "describe",
    "escape",
    "parse_ack",
    "unescape",
]

SENDING_APPLICATION = "APPT-PLATFORM"
SENDING_FACILITY = "HEBEI-APPT"
RECEIVING_APPLICATION = "HIS"
DEFAULT_DURATION_MINUTES = 15
CHINA_TZ = timezone(timedelta(hours=8), "CST")
# MSH-10 is an ST(20) in v2.5; a longer id would be truncated by some engines and then never match.
MAX_CONTROL_ID_LENGTH = 20

# trigger -> (SCH-6 event reason code, its text, filler status code of table 0278)
SIU_TRIGGERS: dict[str, tuple[str, str, str]] = {
    "S12": ("BOOKED", "New booking", "Booked"),
    "S14": ("MODIFIED", "Booking modified", "Booked"),
    "S15": ("CANCELLED", "Booking cancelled", "Cancelled"),
    "S26": ("NOSHOW", "Patient did not arrive", "Noshow"),
}
ACK_CODES = ("AA", "AE", "AR")
# ERR-3 (table 0357) for a negative ACK: 207 application internal error, 200 unsupported message.
_ERR_CODES = {"AE": ("207", "Application internal error"), "AR": ("200", "Unsupported message type")}

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


class HL7Error(ValueError):
    """A message cannot be built from the given data, or an answer is not the ACK we expect."""


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

    @property
    def trigger(self) -> str:
        return self.message_type.partition("^")[2]


def build_siu(
    trigger: str,
    appointment: Mapping[str, Any],
    control_id: str,
    now: datetime,
    *,
    duration_minutes: int = DEFAULT_DURATION_MINUTES,
    receiving_application: str = RECEIVING_APPLICATION,
) -> str:
    """SIU^<trigger> (S12, S14, S15 or S26) for one appointment."""
    if trigger not in SIU_TRIGGERS:
        raise HL7Error(f"unsupported SIU trigger {trigger!r}; expected one of {', '.join(SIU_TRIGGERS)}")
    if duration_minutes <= 0:
        raise HL7Error(f"duration_minutes must be positive, got {duration_minutes}")
    appt = _checked(appointment)
    reason_code, reason_text, status = SIU_TRIGGERS[trigger]
    start_at = _appointment_start(appt)
    start = _ts(start_at)
    end = _ts(start_at + timedelta(minutes=duration_minutes))
    minutes = str(duration_minutes)
    units = _cmp("min", "minute", "ISO+")
    filler_status = _cmp(status, status, "HL70278")
    free_reason = _text(appt.get("reason")) or reason_text
    segments = [
        _msh(f"SIU^{trigger}^SIU_S12", appt, control_id, now, receiving_application),
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
        _pid(appt),
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
) -> str:
    """ADT^A04 (register an outpatient) when the patient checks in; `checked_in_at` defaults to `now`."""
    appt = _checked(appointment)
    arrived = _ts(checked_in_at or now)
    segments = [
        _msh("ADT^A04^ADT_A01", appt, control_id, now, receiving_application),
        _segment("EVN", {1: "A04", 2: _ts(now), 6: arrived, 7: _id(appt["hospital_id"])}),
        _pid(appt),
        _segment(
            "PV1",
            {
                1: "1",
                2: "O",
                3: _location(appt),
                7: _id(appt["doctor_id"]),
                19: _cmp(_id(appt["appointment_id"]), "", "", SENDING_APPLICATION, "VN"),
                44: arrived,
            },
        ),
    ]
    return "\r".join(segments)


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
    parsed = _Parsed.of(message, what="message")
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
    )


def build_ack(original: MessageInfo, code: str, control_id: str, now: datetime, text: str = "") -> str:
    """The receiver's answer to `original` (what the HIS, or its simulator, sends back)."""
    if code not in ACK_CODES:
        raise HL7Error(f"ACK code must be one of {', '.join(ACK_CODES)}, got {code!r}")
    _check_control_id(control_id)
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
        18: "UNICODE UTF-8",
    }
    segments = [
        _msh_segment(header),
        _segment("MSA", {1: code, 2: _id(original.control_id), 3: _text(text)}),
    ]
    if code in _ERR_CODES:
        err_code, err_text = _ERR_CODES[code]
        segments.append(_segment("ERR", {3: _cmp(err_code, err_text, "HL70357"), 4: "E", 8: _text(text)}))
    return "\r".join(segments)


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


def _msh(
    message_type: str, appt: Mapping[str, Any], control_id: str, now: datetime, receiving_application: str
) -> str:
    _check_control_id(control_id)
    return _msh_segment(
        {
            3: SENDING_APPLICATION,
            4: SENDING_FACILITY,
            5: _id(receiving_application),
            6: _id(appt["hospital_id"]),
            7: _ts(now),
            9: message_type,
            10: control_id,
            11: "P",
            12: "2.5",
            17: "CHN",
            18: "UNICODE UTF-8",
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
    patient = _cmp(_id(appt["patient_id"]), "", "", SENDING_APPLICATION, "PI")
    return _segment("PID", {1: "1", 3: patient, 5: _cmp(*[""] * 6, "S")})


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
