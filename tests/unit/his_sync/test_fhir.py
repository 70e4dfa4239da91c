"""A HIS's FHIR R4 schedule Bundle mapped to schedule commands: what is published, what is stopped,
and what is refused with a location and a sentence the HIS engineer can act on."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from contracts import Actor, ScheduleSession
from services.his_sync.fhir import (
    DOCTOR_SYSTEM,
    EXTENSION_BASE,
    SESSION_SYSTEM,
    FhirError,
    Plan,
    Refusal,
    bundle_example,
    commands_of,
    parse_bundle,
)

pytestmark = pytest.mark.unit

HOSPITAL = "h-hebei-1"
DOCTOR = "dr-li-wei"
KNOWN = {DOCTOR: HOSPITAL, "dr-wang-fang": HOSPITAL, "dr-zhao-lei": "h-other"}
SESSION_ID = re.compile(r"^[a-z0-9-]{2,80}$")


def plan_of(bundle: dict[str, Any], known: dict[str, str] = KNOWN) -> Plan:
    return commands_of(parse_bundle(json.dumps(bundle)), HOSPITAL, known)


def example() -> dict[str, Any]:
    return copy.deepcopy(bundle_example(DOCTOR))


def slot(bundle: dict[str, Any], index: int) -> dict[str, Any]:
    resource: dict[str, Any] = bundle["entry"][index]["resource"]
    return resource


def extension(url: str, **value: Any) -> dict[str, Any]:
    return {"url": EXTENSION_BASE + url, **value}


def another_doctor(bundle: dict[str, Any], doctor_id: str, schedule_id: str) -> None:
    """Adds a Schedule of `doctor_id` (Practitioner/<id> style) with one free morning slot."""
    bundle["entry"].append({"resource": {"resourceType": "Schedule", "id": schedule_id,
                                         "actor": [{"reference": f"Practitioner/{doctor_id}"}]}})
    free = copy.deepcopy(bundle["entry"][1])
    free["resource"]["schedule"] = {"reference": f"Schedule/{schedule_id}"}
    bundle["entry"].append(free)


def assert_sentence(refusal_or_error: Refusal | FhirError) -> None:
    reason = refusal_or_error.reason
    assert re.fullmatch(r"[A-Z'].{10,}[.)]", reason), reason
    assert "Value error" not in reason and "{'" not in reason, reason  # no pydantic prefix, no dict


# --- the example ----------------------------------------------------------------------------

def test_the_example_maps_to_two_sessions_and_one_stop_in_shanghai_local_time() -> None:
    plan = plan_of(bundle_example(DOCTOR))

    assert plan.refused == []
    assert plan.sessions == [
        {"session_id": "dr-li-wei-20250310-am", "doctor_id": DOCTOR, "date": "2025-03-10", "period": "morning",
         "start": "08:00:00", "end": "12:00:00", "capacity": 30, "quota": {"web": 20, "phone": 5, "window": 5}},
        {"session_id": "dr-li-wei-20250310-pm", "doctor_id": DOCTOR, "date": "2025-03-10", "period": "afternoon",
         "start": "14:00:00", "end": "17:30:00", "capacity": 20, "quota": {"web": 10, "phone": 5, "window": 5},
         "fee": "50.0"},
    ]
    assert plan.stops == [{"session_id": "dr-li-wei-20250311-am",
                           "reason": "Doctor attends a consultation in another hospital."}]


def test_each_session_payload_is_a_valid_schedule_session_command() -> None:
    for payload in plan_of(bundle_example(DOCTOR)).sessions:
        command = ScheduleSession(**payload, idempotency_key="his-fhir-test-1", actor=Actor(kind="service", id="t"))
        assert command.session_id == payload["session_id"]


def test_body_may_be_bytes_and_a_utc_instant_becomes_the_local_day() -> None:
    bundle = example()
    # 2025-03-10T22:30Z is 06:30 on the 11th in Shanghai.
    slot(bundle, 1).update(start="2025-03-10T22:30:00Z", end="2025-03-11T03:00:00Z")
    plan = commands_of(parse_bundle(json.dumps(bundle).encode()), HOSPITAL, KNOWN)

    assert plan.sessions[0]["date"] == "2025-03-11"
    assert (plan.sessions[0]["start"], plan.sessions[0]["end"]) == ("06:30:00", "11:00:00")
    assert plan.sessions[0]["session_id"] == "dr-li-wei-20250311-am"


def test_stop_without_a_comment_gets_the_default_reason() -> None:
    bundle = example()
    del slot(bundle, 3)["comment"]
    assert plan_of(bundle).stops[0]["reason"] == "HIS: slot busy-unavailable"


# --- invalid FHIR: the whole body is refused, with a location --------------------------------

def without_start(bundle: dict[str, Any]) -> None:
    del slot(bundle, 2)["start"]


def wrong_status(bundle: dict[str, Any]) -> None:
    slot(bundle, 1)["status"] = "open"


def searchset(bundle: dict[str, Any]) -> None:
    bundle["type"] = "searchset"


def start_without_offset(bundle: dict[str, Any]) -> None:
    slot(bundle, 1)["start"] = "2025-03-10T08:00:00"


def unknown_element(bundle: dict[str, Any]) -> None:
    slot(bundle, 1)["capacity"] = 30


def unknown_resource_type(bundle: dict[str, Any]) -> None:
    slot(bundle, 3)["resourceType"] = "Slott"


@pytest.mark.parametrize(("spoil", "location", "words"), [
    (without_start, "entry[2].resource.start", "required"),
    (wrong_status, "entry[1].resource.status", "'open' is not a FHIR Slot status"),
    (searchset, "type", "searchset"),
    (start_without_offset, "entry[1].resource.start", "Instant"),
    (unknown_element, "entry[1].resource.capacity", "'capacity' is not an element FHIR R4 defines"),
    (unknown_resource_type, "entry[3].resource.resourceType", "resource type"),
])
def test_invalid_fhir_is_refused_with_the_location_to_fix(spoil: Any, location: str, words: str) -> None:
    bundle = example()
    spoil(bundle)
    with pytest.raises(FhirError) as raised:
        parse_bundle(json.dumps(bundle))

    assert raised.value.location == location
    assert words in raised.value.reason
    assert_sentence(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(("body", "location"), [
    ("{not json", "line 1 column 2"),
    (b"\xff\xfe\xfa", ""),
    ("[1, 2]", "resourceType"),
    (json.dumps({"resourceType": "Patient", "id": "p1"}), "resourceType"),
])
def test_a_body_that_is_not_a_json_bundle_is_refused(body: str | bytes, location: str) -> None:
    with pytest.raises(FhirError) as raised:
        parse_bundle(body)
    assert raised.value.location == location
    assert_sentence(raised.value)


def test_several_problems_are_counted_after_the_first() -> None:
    bundle = example()
    del slot(bundle, 1)["start"], slot(bundle, 2)["start"], slot(bundle, 2)["end"]
    with pytest.raises(FhirError, match="There are 2 more problems after this one"):
        parse_bundle(json.dumps(bundle))


# --- refused entries: named by index, the rest kept ---------------------------------------

def test_a_patient_in_the_bundle_is_refused_and_the_schedule_kept() -> None:
    bundle = example()
    bundle["entry"].insert(2, {"resource": {"resourceType": "Patient", "id": "p1"}})
    plan = plan_of(bundle)

    assert [(r.index, r.location) for r in plan.refused] == [(2, "entry[2].resource")]
    assert "Patient" in plan.refused[0].reason
    assert len(plan.sessions) == 2 and len(plan.stops) == 1


def test_slots_of_another_hospitals_doctor_and_of_an_unknown_doctor_are_refused_the_others_kept() -> None:
    bundle = example()
    another_doctor(bundle, "dr-zhao-lei", "sch-other-hospital")  # entries 4, 5
    another_doctor(bundle, "dr-nobody", "sch-unknown")  # entries 6, 7
    plan = plan_of(bundle)

    assert [r.index for r in plan.refused] == [5, 7]
    assert all(r.location.endswith(".schedule.reference") for r in plan.refused)
    assert "'dr-zhao-lei', who is not a doctor of hospital 'h-hebei-1'" in plan.refused[0].reason
    assert "'dr-nobody', who is not known to the platform" in plan.refused[1].reason
    assert [s["doctor_id"] for s in plan.sessions] == [DOCTOR, DOCTOR]
    assert len(plan.stops) == 1


def test_both_doctor_reference_styles_and_both_schedule_reference_styles_resolve() -> None:
    bundle = example()
    another_doctor(bundle, "dr-wang-fang", "sch-2")  # Practitioner/<doctor_id>, Slot -> Schedule/<id>
    plan = plan_of(bundle)

    # The example's Slots reference its Schedule by id (entry 1) and by fullUrl urn:uuid (entry 2).
    assert bundle["entry"][0]["fullUrl"].startswith("urn:uuid:")
    assert slot(bundle, 2)["schedule"]["reference"] == bundle["entry"][0]["fullUrl"]
    assert plan.refused == []
    assert [s["session_id"] for s in plan.sessions] == [
        "dr-li-wei-20250310-am", "dr-li-wei-20250310-pm", "dr-wang-fang-20250310-am"]


def test_derived_session_ids_are_stable_and_match_the_pattern() -> None:
    bundle = example()
    del slot(bundle, 2)["identifier"]
    slot(bundle, 1).update(start="2025-03-10T11:00:00Z", end="2025-03-10T13:00:00Z")  # 19:00-21:00
    first, again = plan_of(bundle), plan_of(copy.deepcopy(bundle))

    ids = [s["session_id"] for s in first.sessions]
    assert ids == ["dr-li-wei-20250310-ev", "dr-li-wei-20250310-pm"]
    assert ids == [s["session_id"] for s in again.sessions]
    assert all(SESSION_ID.fullmatch(i) for i in ids)
    assert first.sessions[0]["period"] == "evening"


def test_the_period_extension_wins_over_the_start_hour() -> None:
    bundle = example()
    slot(bundle, 1)["extension"].append(extension("session-period", valueCode="afternoon"))
    session = plan_of(bundle).sessions[0]
    assert (session["period"], session["session_id"]) == ("afternoon", "dr-li-wei-20250310-pm")


def test_two_slots_of_one_session_the_second_is_refused() -> None:
    bundle = example()
    slot(bundle, 2)["identifier"][0]["value"] = "dr-li-wei-20250310-am"
    plan = plan_of(bundle)
    assert [(r.index, r.location) for r in plan.refused] == [(2, "entry[2].resource.identifier")]
    assert "entry[1]" in plan.refused[0].reason


def quota_above_capacity(resource: dict[str, Any]) -> None:
    resource["extension"][0]["valueInteger"] = 25  # quota 20 + 5 + 5


def no_capacity(resource: dict[str, Any]) -> None:
    del resource["extension"][0]


def no_quota(resource: dict[str, Any]) -> None:
    del resource["extension"][1]


def unknown_quota_channel(resource: dict[str, Any]) -> None:
    resource["extension"][1]["extension"].append({"url": "online", "valueInteger": 1})


def capacity_as_string(resource: dict[str, Any]) -> None:
    resource["extension"][0] = extension("session-capacity", valueString="30")


def misspelt_extension(resource: dict[str, Any]) -> None:
    resource["extension"].append(extension("session-capcity", valueInteger=30))


def ends_before_it_starts(resource: dict[str, Any]) -> None:
    resource.update(start="2025-03-10T04:00:00Z", end="2025-03-10T00:00:00Z")


def ends_next_local_day(resource: dict[str, Any]) -> None:
    resource.update(start="2025-03-10T20:00:00+08:00", end="2025-03-11T01:00:00+08:00")


def busy_tentative(resource: dict[str, Any]) -> None:
    resource["status"] = "busy-tentative"


def wrong_period(resource: dict[str, Any]) -> None:
    resource["extension"].append(extension("session-period", valueCode="night"))


def fee_with_three_decimals(resource: dict[str, Any]) -> None:
    resource["extension"].append(extension("session-fee", valueDecimal=12.345))


def bad_session_identifier(resource: dict[str, Any]) -> None:
    resource["identifier"] = [{"system": SESSION_SYSTEM, "value": "Session 1"}]


def modifier_extension(resource: dict[str, Any]) -> None:
    resource["modifierExtension"] = [{"url": "https://his.example/no-booking", "valueBoolean": True}]


def unknown_schedule(resource: dict[str, Any]) -> None:
    resource["schedule"] = {"reference": "Schedule/nope"}


@pytest.mark.parametrize(("spoil", "location", "words"), [
    (quota_above_capacity, "entry[1].resource.extension", "more than the capacity of 25"),
    (no_capacity, "entry[1].resource.extension", "session-capacity"),
    (no_quota, "entry[1].resource.extension", "session-quota"),
    (unknown_quota_channel, "entry[1].resource.extension", "'online'"),
    (capacity_as_string, "entry[1].resource.extension", "valueInteger"),
    (misspelt_extension, "entry[1].resource.extension[2]", "session-capcity is not defined"),
    (ends_before_it_starts, "entry[1].resource.end", "end after it starts"),
    (ends_next_local_day, "entry[1].resource.end", "same local day"),
    (busy_tentative, "entry[1].resource.status", "'busy-tentative' is not accepted"),
    (wrong_period, "entry[1].resource.extension", "morning, afternoon or evening"),
    (fee_with_three_decimals, "entry[1].resource.extension", "fee"),
    (bad_session_identifier, "entry[1].resource.identifier", "session_id: String should match"),
    (modifier_extension, "entry[1].resource.modifierExtension", "no-booking"),
    (unknown_schedule, "entry[1].resource.schedule.reference", "'Schedule/nope'"),
])
def test_a_slot_outside_the_profile_is_refused_and_the_others_kept(spoil: Any, location: str, words: str) -> None:
    bundle = example()
    spoil(slot(bundle, 1))
    plan = plan_of(bundle)

    assert [(r.index, r.location) for r in plan.refused] == [(1, location)]
    assert words in plan.refused[0].reason, plan.refused[0].reason
    assert_sentence(plan.refused[0])
    assert [s["session_id"] for s in plan.sessions] == ["dr-li-wei-20250310-pm"]
    assert len(plan.stops) == 1


def test_busy_unavailable_without_a_session_identifier_is_refused() -> None:
    bundle = example()
    del slot(bundle, 3)["identifier"]
    plan = plan_of(bundle)

    assert [(r.index, r.location) for r in plan.refused] == [(3, "entry[3].resource.identifier")]
    assert SESSION_SYSTEM in plan.refused[0].reason
    assert_sentence(plan.refused[0])
    assert plan.stops == [] and len(plan.sessions) == 2


def test_a_schedule_without_a_doctor_is_refused_and_so_are_its_slots() -> None:
    bundle = example()
    bundle["entry"][0]["resource"]["actor"] = [{"reference": "Location/room-3"}]
    plan = plan_of(bundle)

    assert [(r.index, r.location) for r in plan.refused] == [
        (0, "entry[0].resource.actor"), (1, "entry[1].resource.schedule.reference"),
        (2, "entry[2].resource.schedule.reference"), (3, "entry[3].resource.schedule.reference")]
    assert DOCTOR_SYSTEM in plan.refused[0].reason
    assert "entry[0]" in plan.refused[1].reason
    for refusal in plan.refused:
        assert_sentence(refusal)
    assert plan.sessions == [] and plan.stops == []


def test_a_schedule_naming_two_doctors_is_refused() -> None:
    bundle = example()
    bundle["entry"][0]["resource"]["actor"].append({"reference": "Practitioner/dr-wang-fang"})
    plan = plan_of(bundle)
    assert plan.refused[0].index == 0 and "one Schedule per doctor" in plan.refused[0].reason
