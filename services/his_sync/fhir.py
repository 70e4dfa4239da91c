"""A hospital HIS's outpatient schedule as FHIR R4 (a Bundle of Schedule and Slot), mapped to the
schedule service's commands. Pure code, no I/O.

Parsed and validated with ``fhir.resources.R4B``: R4B left Schedule, Slot and Bundle as R4 defined
them (it only added the Bundle type ``subscription-notification``, refused here), so an R4 HIS's
JSON is read as it is. fhir.resources does not check code values, so the Bundle type and the Slot
status are checked here.

Profile the platform accepts (the contract of a HIS integration)::

    Bundle          type collection | batch | transaction; entry.request is ignored (every entry
                    publishes or stops, none deletes). Entries are Schedule and Slot only, any order.
    Schedule        one per doctor; Slots reference it as "Schedule/<id>" or by the entry's fullUrl.
      actor         exactly one doctor, either {"reference": "Practitioner/<doctor_id>"} or
                    {"identifier": {"system": "urn:appt-platform:doctor", "value": "<doctor_id>"}};
                    other actors (Location, PractitionerRole…) are ignored, as are serviceType,
                    specialty, planningHorizon, active and comment.
    Slot            one outpatient session.
      schedule      {"reference": "Schedule/<id>"} or {"reference": "<fullUrl, e.g. urn:uuid:…>"}
      start, end    instants with an offset; the session's date, start and end are their
                    Asia/Shanghai local values: on one local day, end after start.
      status        free: publish the session (or update it: same session id);
                    busy-unavailable: the doctor cannot hold it, a stop request (停诊);
                    busy, busy-tentative, entered-in-error: refused.
      identifier    system "urn:appt-platform:session", value our session id. Required for
                    busy-unavailable; a free Slot without one gets "<doctor_id>-<YYYYMMDD>-<am|pm|ev>".
      comment       the stop's reason (default "HIS: slot busy-unavailable").
      extension     under https://appt.hebei.example/fhir/StructureDefinition/ (each at most once):
        session-capacity  valueInteger 1..1000; required when free.
        session-quota     required when free; sub-extensions web, phone, window (valueInteger,
                          absent = 0), together at most the capacity.
        session-period    valueCode morning | afternoon | evening; absent: from the local start
                          hour (before 12 morning, before 18 afternoon, else evening).
        session-fee       valueDecimal in yuan; absent: the hospital's fee for the doctor's title.
      modifierExtension   refused (the platform understands none).

A body that is not JSON, not a Bundle or not valid FHIR raises :class:`FhirError` (the whole
Bundle is refused). A valid Bundle is mapped entry by entry: an entry outside the profile (an
unknown doctor, a doctor of another hospital, a missing capacity…) becomes a :class:`Refusal`
naming its index and location, and the other entries are kept.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from contracts import Actor, RequestDoctorStop, ScheduleSession

__all__ = ["DOCTOR_SYSTEM", "EXTENSION_BASE", "SESSION_SYSTEM", "FhirError", "Plan", "Refusal", "bundle_example",
           "commands_of", "parse_bundle"]

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
DOCTOR_SYSTEM = "urn:appt-platform:doctor"
SESSION_SYSTEM = "urn:appt-platform:session"
EXTENSION_BASE = "https://appt.hebei.example/fhir/StructureDefinition/"
CAPACITY, QUOTA, PERIOD, FEE = (EXTENSION_BASE + name for name in ("session-capacity", "session-quota",
                                                                   "session-period", "session-fee"))
ACCEPTED_BUNDLE_TYPES = ("collection", "batch", "transaction")
SLOT_STATUSES = ("busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error")  # FHIR's value set
DEFAULT_STOP_REASON = "HIS: slot busy-unavailable"
_PERIOD_ABBREVIATIONS = {"morning": "am", "afternoon": "pm", "evening": "ev"}
_PAYLOAD_FIELDS = {"session_id", "doctor_id", "date", "period", "start", "end", "capacity", "quota", "fee"}
# Where a field of ScheduleSession came from in the Slot, to point a refusal at it.
_SOURCE_OF = {"session_id": "identifier", "start": "start", "end": "end", "date": "start"}
# Only to validate the commands built here; the caller sends them with its own key and actor.
_VALIDATION_KEY = "fhir-validation-only"
_HIS_SYNC = Actor(kind="service", id="his_sync")
P = ParamSpec("P")
T = TypeVar("T")


class FhirError(ValueError):
    """The whole body is refused: `location` is a FHIRPath-like place (``entry[2].resource.start``)."""

    def __init__(self, reason: str, location: str = "") -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.reason = reason
        self.location = location


@dataclass(frozen=True)
class Refusal:
    index: int  # of the entry in Bundle.entry
    location: str
    reason: str


@dataclass(frozen=True)
class Plan:
    sessions: list[dict[str, Any]] = field(default_factory=list)  # ScheduleSession payloads, JSON-ready
    stops: list[dict[str, str]] = field(default_factory=list)  # {session_id, reason}
    refused: list[Refusal] = field(default_factory=list)


def parse_bundle(body: bytes | str) -> Bundle:
    """The body as a validated FHIR R4 Bundle of the accepted types, or :class:`FhirError`."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise FhirError(f"The body is not valid JSON: {exc.msg}.", f"line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # bytes that are not UTF-8 (or UTF-16/32)
        raise FhirError("The body is not JSON text in UTF-8.") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise FhirError('The body must be a FHIR Bundle (a JSON object with "resourceType": "Bundle").',
                        "resourceType")
    _check_resource_types(data.get("entry"))
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        raise _invalid_fhir(exc) from None
    except KeyError as exc:  # fhir.resources looks a contained resource's type up by name
        raise FhirError(f"The Bundle contains a resource of unknown type {exc}.") from None
    if bundle.type not in ACCEPTED_BUNDLE_TYPES:
        raise FhirError(f"A Bundle of type '{bundle.type}' is not accepted: send a collection, batch or transaction.",
                        "type")
    for index, entry in enumerate(bundle.entry or []):
        if isinstance(entry.resource, Slot) and entry.resource.status not in SLOT_STATUSES:
            raise FhirError(f"'{entry.resource.status}' is not a FHIR Slot status: use one of "
                            f"{', '.join(SLOT_STATUSES)}.", f"entry[{index}].resource.status")
    return bundle


def commands_of(bundle: Bundle, hospital_id: str, known_doctors: Mapping[str, str]) -> Plan:
    """The sessions to publish and the stops to request, for `hospital_id`; `known_doctors` maps each
    doctor_id the platform knows to its hospital_id. Every entry it cannot take is in `refused`."""
    plan = Plan()
    entries = list(enumerate(bundle.entry or []))
    schedules: dict[str, tuple[int, str | None]] = {}  # reference -> (entry index, doctor_id or None if refused)
    for index, entry in entries:
        if isinstance(entry.resource, Schedule):
            doctor_id = _attempt(plan, index, _doctor_of, index, entry.resource, schedules)
            for key in (entry.fullUrl, entry.resource.id and f"Schedule/{entry.resource.id}"):
                if key and key not in schedules:
                    schedules[key] = (index, doctor_id)
    claimed: dict[str, int] = {}  # session_id -> entry index that described it
    for index, entry in entries:
        resource = entry.resource
        if isinstance(resource, Slot):
            _attempt(plan, index, _map_slot, plan, index, resource, schedules, claimed, hospital_id, known_doctors)
        elif not isinstance(resource, Schedule):
            kind = type(resource).__name__ if resource is not None else None
            plan.refused.append(Refusal(index, f"entry[{index}].resource", (
                f"A {kind} resource is not accepted: the Bundle may hold only Schedule and Slot resources."
                if kind else "The entry has no resource: every entry must be a Schedule or a Slot.")))
    plan.refused.sort(key=lambda refusal: refusal.index)
    return plan


def bundle_example(doctor_id: str = "dr-li-wei", day: date = date(2025, 3, 10)) -> dict[str, Any]:
    """A Bundle of the accepted profile: the doctor's Schedule, a morning and an afternoon session
    (free) on `day`, and a stop (busy-unavailable) of the next day's morning session."""
    schedule_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{DOCTOR_SYSTEM}:{doctor_id}')}"
    next_day = day + timedelta(days=1)

    def slot(start: str, end: str, status: str, **more: Any) -> dict[str, Any]:
        return {"resource": {"resourceType": "Slot", "status": status, "start": start, "end": end, **more}}

    def session(capacity: int, web: int, phone: int, window: int) -> list[dict[str, Any]]:
        quota = [{"url": k, "valueInteger": v} for k, v in (("web", web), ("phone", phone), ("window", window))]
        return [{"url": CAPACITY, "valueInteger": capacity}, {"url": QUOTA, "extension": quota}]

    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": schedule_url, "resource": {"resourceType": "Schedule", "id": "sch-1", "actor": [
            {"identifier": {"system": DOCTOR_SYSTEM, "value": doctor_id}}]}},
        # 08:00-12:00 in Shanghai, sent in UTC; no identifier: the session id is derived.
        slot(f"{day}T00:00:00Z", f"{day}T04:00:00Z", "free", schedule={"reference": "Schedule/sch-1"},
             extension=session(30, 20, 5, 5)),
        slot(f"{day}T14:00:00+08:00", f"{day}T17:30:00+08:00", "free", schedule={"reference": schedule_url},
             identifier=[{"system": SESSION_SYSTEM, "value": f"{doctor_id}-{day:%Y%m%d}-pm"}],
             extension=[*session(20, 10, 5, 5), {"url": FEE, "valueDecimal": 50.0}]),
        slot(f"{next_day}T08:00:00+08:00", f"{next_day}T12:00:00+08:00", "busy-unavailable",
             schedule={"reference": "Schedule/sch-1"}, comment="Doctor attends a consultation in another hospital.",
             identifier=[{"system": SESSION_SYSTEM, "value": f"{doctor_id}-{next_day:%Y%m%d}-am"}]),
    ]}


class _Refused(Exception):
    def __init__(self, location: str, reason: str) -> None:
        super().__init__(reason)
        self.location, self.reason = location, reason


def _attempt(plan: Plan, index: int, mapping: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    try:
        return mapping(*args, **kwargs)
    except _Refused as refused:
        plan.refused.append(Refusal(index, refused.location, refused.reason))
        return None


def _doctor_of(index: int, schedule: Schedule, schedules: Mapping[str, tuple[int, str | None]]) -> str:
    at = f"entry[{index}].resource"
    _no_modifiers(at, schedule.modifierExtension)
    doctors: set[str] = set()
    for actor in schedule.actor:
        if actor.identifier is not None and actor.identifier.system == DOCTOR_SYSTEM and actor.identifier.value:
            doctors.add(actor.identifier.value)
        elif actor.reference and actor.reference.startswith("Practitioner/"):
            doctors.add(actor.reference.removeprefix("Practitioner/"))
    if len(doctors) != 1:
        raise _Refused(f"{at}.actor", (
            f"The Schedule names {len(doctors)} doctors ({', '.join(sorted(doctors))}): send one Schedule per doctor."
            if doctors else f"The Schedule names no doctor: give an actor reference Practitioner/<doctor_id> or "
                            f"an actor identifier with system {DOCTOR_SYSTEM}."))
    if schedule.id and f"Schedule/{schedule.id}" in schedules:
        other = schedules[f"Schedule/{schedule.id}"][0]
        raise _Refused(f"{at}.id", f"Schedule id '{schedule.id}' is already used by entry[{other}].")
    return doctors.pop()


def _map_slot(plan: Plan, index: int, slot: Slot, schedules: Mapping[str, tuple[int, str | None]],
              claimed: dict[str, int], hospital_id: str, known_doctors: Mapping[str, str]) -> None:
    at = f"entry[{index}].resource"
    _no_modifiers(at, slot.modifierExtension)
    reference = slot.schedule.reference or ""
    if reference not in schedules:
        raise _Refused(f"{at}.schedule.reference", f"The Slot's schedule reference '{reference}' names no Schedule in "
                                                   "this Bundle (use Schedule/<id> or the Schedule entry's fullUrl).")
    schedule_index, doctor_id = schedules[reference]
    problem = ("was refused" if doctor_id is None
               else f"names doctor '{doctor_id}', who is not known to the platform" if doctor_id not in known_doctors
               else f"names doctor '{doctor_id}', who is not a doctor of hospital '{hospital_id}'"
               if known_doctors[doctor_id] != hospital_id else None)
    if doctor_id is None or problem is not None:
        raise _Refused(f"{at}.schedule.reference", f"The Slot's Schedule (entry[{schedule_index}]) {problem}.")
    if slot.status not in ("free", "busy-unavailable"):
        raise _Refused(f"{at}.status", f"A Slot with status '{slot.status}' is not accepted: send free to publish a "
                                       "session or busy-unavailable to stop one.")
    _no_unknown_extensions(at, slot.extension or [])
    session_id = next((i.value for i in slot.identifier or [] if i.system == SESSION_SYSTEM and i.value), None)
    if session_id in claimed:
        raise _Refused(f"{at}.identifier",
                       f"Session '{session_id}' is already described by entry[{claimed[session_id]}]: send one Slot "
                       "per session.")
    if slot.status == "busy-unavailable":
        if session_id is None:
            raise _Refused(f"{at}.identifier", "A busy-unavailable Slot must name the session it stops with an "
                                               f"identifier of system {SESSION_SYSTEM}.")
        stop = {"session_id": session_id, "reason": slot.comment or DEFAULT_STOP_REASON}
        try:
            RequestDoctorStop(**stop, requested_by="his", idempotency_key=_VALIDATION_KEY, actor=_HIS_SYNC)
        except ValidationError as exc:
            raise _Refused(f"{at}.comment", _first_problem("stop request", exc)) from None
        claimed[session_id] = index
        plan.stops.append(stop)
        return
    payload = _session(at, slot, doctor_id, session_id)
    claimed[payload["session_id"]] = index
    plan.sessions.append(payload)


def _session(at: str, slot: Slot, doctor_id: str, session_id: str | None) -> dict[str, Any]:
    if slot.start is None or slot.end is None:  # required by FHIR; a Bundle built in code may lack them
        raise _Refused(at, "The Slot needs both a start and an end.")
    start, end = _local(slot.start), _local(slot.end)
    if end <= start:
        raise _Refused(f"{at}.end", "The Slot must end after it starts.")
    if start.date() != end.date():
        raise _Refused(f"{at}.end", f"The Slot runs from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} Asia/Shanghai: "
                                    "a session must start and end on the same local day.")
    capacity = _integer(at, _required(at, slot, CAPACITY), "session-capacity")
    quota = {"web": 0, "phone": 0, "window": 0}
    for part in _required(at, slot, QUOTA).extension or []:
        if part.url not in quota:
            raise _Refused(f"{at}.extension", f"Extension session-quota has a sub-extension '{part.url}': only "
                                              "web, phone and window are defined.")
        quota[part.url] = _integer(at, part, f"session-quota {part.url}")
    if sum(quota.values()) > capacity:
        raise _Refused(f"{at}.extension", f"The quota (web {quota['web']} + phone {quota['phone']} + window "
                                          f"{quota['window']}) is more than the capacity of {capacity}.")
    period_extension = _extension(at, slot, PERIOD)
    period = period_extension.valueCode if period_extension else _period_at(start)
    if period not in _PERIOD_ABBREVIATIONS:
        raise _Refused(f"{at}.extension", "Extension session-period must have valueCode morning, afternoon or evening.")
    fee_extension = _extension(at, slot, FEE)
    if fee_extension is not None and fee_extension.valueDecimal is None:
        raise _Refused(f"{at}.extension", "Extension session-fee must have a valueDecimal (the fee in yuan).")
    payload: dict[str, Any] = {
        "session_id": session_id or f"{doctor_id}-{start:%Y%m%d}-{_PERIOD_ABBREVIATIONS[period]}",
        "doctor_id": doctor_id, "date": start.date(), "period": period, "start": start.time(), "end": end.time(),
        "capacity": capacity, "quota": quota, "fee": fee_extension.valueDecimal if fee_extension else None}
    try:
        command = ScheduleSession(**payload, idempotency_key=_VALIDATION_KEY, actor=_HIS_SYNC)
    except ValidationError as exc:
        where = next((str(loc[0]) for loc in (e["loc"] for e in exc.errors()) if loc), "")
        raise _Refused(f"{at}.{_SOURCE_OF.get(where, 'extension')}", _first_problem("session", exc)) from None
    return command.model_dump(mode="json", include=_PAYLOAD_FIELDS, exclude_none=True)


def _local(instant: datetime) -> datetime:
    return instant.astimezone(HOSPITAL_TZ).replace(tzinfo=None)


def _period_at(start: datetime) -> str:
    return "morning" if start.hour < 12 else "afternoon" if start.hour < 18 else "evening"


def _extension(at: str, slot: Slot, url: str) -> Extension | None:
    found = [e for e in slot.extension or [] if e.url == url]
    if len(found) > 1:
        raise _Refused(f"{at}.extension", f"Extension {url.removeprefix(EXTENSION_BASE)} is given more than once.")
    return found[0] if found else None


def _required(at: str, slot: Slot, url: str) -> Extension:
    extension = _extension(at, slot, url)
    if extension is None:
        raise _Refused(f"{at}.extension", f"A free Slot needs the extension {url}.")
    return extension


def _integer(at: str, extension: Extension | None, name: str) -> int:
    if extension is None or extension.valueInteger is None:
        raise _Refused(f"{at}.extension", f"Extension {name} must have a valueInteger.")
    return int(extension.valueInteger)


def _no_unknown_extensions(at: str, extensions: list[Extension]) -> None:
    for k, extension in enumerate(extensions):
        if (extension.url or "").startswith(EXTENSION_BASE) and extension.url not in (CAPACITY, QUOTA, PERIOD, FEE):
            raise _Refused(f"{at}.extension[{k}]", f"Extension {extension.url} is not defined by the platform.")


def _no_modifiers(at: str, modifiers: list[Extension] | None) -> None:
    if modifiers:
        raise _Refused(f"{at}.modifierExtension", f"The resource has a modifierExtension ({modifiers[0].url}) the "
                                                  "platform does not understand, so it cannot be read safely.")


def _check_resource_types(entries: Any) -> None:
    """An unknown resourceType makes fhir.resources raise a bare KeyError: name the entry instead."""
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            continue
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        try:
            get_fhir_model_class(kind)
        except (ValueError, TypeError):
            raise FhirError("The resource must be a JSON object whose resourceType is a FHIR R4 resource type.",
                            f"entry[{index}].resource.resourceType") from None


def _invalid_fhir(exc: ValidationError) -> FhirError:
    errors = exc.errors()
    location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in errors[0]["loc"]).lstrip(".")
    more = {1: "", 2: " There is 1 more problem after this one."}.get(
        len(errors), f" There are {len(errors) - 1} more problems after this one.")
    return FhirError(f"Not valid FHIR R4: {_describe(errors[0])}.{more}", location)


def _first_problem(what: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = ".".join(str(part) for part in first["loc"])
    return f"The {what} this Slot describes is not valid: {name + ': ' if name else ''}{_describe(first)}."


def _describe(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return f"'{error['loc'][-1]}' is not an element FHIR R4 defines here"
    message = error["msg"].removeprefix("Value error, ").rstrip(".")
    value = error.get("input")
    if isinstance(value, str | int | float) and "missing" not in error["type"] and len(repr(value)) <= 60:
        message += f" (got {value!r})"
    return message
