"""The live notices' pure parts: what a notice says, which streams it reaches, what a reconnect is
sent, and the bounds (streams per process, notices per stream, the ring)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts import InvalidInput
from services.gateway.live import MAX_TOPICS, Directory, Hub, LiveBusy, Notice, Place, Ring, Topics, framed, notice_of

pytestmark = pytest.mark.unit

SESSION, DEPARTMENT, HOSPITAL = "h1-doc-d3-am", "h1-xnk", "h1"


def relayed(kind: str, position: int, source: str = "booking", **data: Any) -> dict[str, Any]:
    return {"type": kind, "source": source, "position": position, "stream": "x", "data": data}


def booked(position: int, session: str = SESSION, department: str = DEPARTMENT) -> dict[str, Any]:
    return relayed("AppointmentBooked", position, session_id=session, department_id=department,
                   hospital_id=HOSPITAL, date="2030-01-03", patient_id="p-1", code="AB12CD34",
                   appointment_id="a-1", sequence_number=4, channel="web")


def note(position: int, session: str | None = SESSION, department: str | None = DEPARTMENT,
         hospital: str | None = HOSPITAL, kind: str = "AppointmentBooked") -> Notice:
    return framed(Notice(position, kind, session, department, hospital, "2030-01-03"))


def topics(**given: str) -> Topics:
    return Topics.parse(given.items())


# --- notices ----------------------------------------------------------------------------------------

def test_a_notice_holds_the_session_and_the_day_never_the_patient() -> None:
    notice = notice_of(booked(41), Directory())
    assert notice is not None and notice.position == 41
    assert notice.public() == {"type": "AppointmentBooked", "session_id": SESSION, "department_id": DEPARTMENT,
                               "hospital_id": HOSPITAL, "date": "2030-01-03"}
    frame = notice.frame.decode()
    assert frame.startswith("id: 41\nevent: AppointmentBooked\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == notice.public()
    for private in ("p-1", "AB12CD34", "a-1"):
        assert private not in frame


def test_only_watched_events_with_a_position_become_notices() -> None:
    directory = Directory()
    assert notice_of(relayed("PatientRegistered", 1, patient_id="p"), directory) is None
    assert notice_of(relayed("SessionScheduled", 2, source="booking", session_id=SESSION), directory) is None
    assert notice_of({**booked(3), "position": None}, directory) is None
    assert notice_of(relayed("SessionScheduled", 4, source="schedule", session_id=SESSION, hospital_id=HOSPITAL,
                             department_id=DEPARTMENT, date="2030-01-03"), directory) is not None


def test_an_event_that_names_only_the_session_is_placed_by_what_was_learnt_or_looked_up() -> None:
    directory = Directory()
    notice_of(booked(5), directory)
    cancelled = notice_of(relayed("AppointmentCancelled", 6, session_id=SESSION, hospital_id=HOSPITAL,
                                  date="2030-01-03", patient_id="p-1", reason="patient"), directory)
    assert cancelled is not None and cancelled.department_id == DEPARTMENT

    asked: list[str] = []

    def lookup(session_id: str) -> Place:
        asked.append(session_id)
        return Place(HOSPITAL, "h1-other", "2030-01-04")

    for position in (7, 8):
        stopped = notice_of(relayed("SessionStopApplied", position, session_id="s-2", stop_id="x",
                                    replacement_session_id=None, moved=0, cancelled=3), directory, lookup)
        assert stopped is not None and (stopped.department_id, stopped.hospital_id) == ("h1-other", HOSPITAL)
    assert asked == ["s-2"], "looked up once, then remembered"
    unknown = notice_of(relayed("SessionStopApplied", 9, session_id="s-3"), directory, lambda _: None)
    assert unknown is not None and unknown.department_id is None and unknown.session_id == "s-3"


def test_the_directory_is_bounded() -> None:
    directory = Directory(size=2)
    for n in range(3):
        directory.learn(f"s{n}", Place(HOSPITAL, DEPARTMENT, None))
    assert directory.get("s0") is None and directory.get("s2") is not None


# --- topics -----------------------------------------------------------------------------------------

def test_topics_are_repeatable_or_comma_separated_and_checked() -> None:
    parsed = Topics.parse([("department", "d1,d2"), ("department", "d3"), ("session", "s1"), ("x", "ignored")])
    assert parsed.departments == {"d1", "d2", "d3"} and parsed.sessions == {"s1"} and not parsed.hospitals
    for bad, field in (([], "department"), ([("session", "a b")], "session"), ([("hospital", "x" * 81)], "hospital"),
                       ([("session", ",".join(f"s{i}" for i in range(MAX_TOPICS + 1)))], "session")):
        with pytest.raises(InvalidInput) as refused:
            Topics.parse(bad)
        assert refused.value.field == field


def test_a_notice_reaches_the_streams_of_its_session_department_or_hospital_only() -> None:
    hub = Hub()
    by_session = hub.open(topics(session=SESSION))
    by_department = hub.open(topics(department=DEPARTMENT))
    by_hospital = hub.open(topics(hospital=HOSPITAL))
    elsewhere = hub.open(topics(department="h1-other", session="s-9"))
    assert hub.publish(note(10)) == 3
    assert [len(s.pending) for s in (by_session, by_department, by_hospital, elsewhere)] == [1, 1, 1, 0]


def test_a_hospital_wide_notice_reaches_the_pages_of_its_departments() -> None:
    hub = Hub()
    hub.directory.learn(SESSION, Place(HOSPITAL, DEPARTMENT, "2030-01-03"))
    mine, theirs = hub.open(topics(department=DEPARTMENT)), hub.open(topics(department="h2-xnk"))
    holiday = notice_of(relayed("HolidayDeclared", 11, source="schedule", hospital_id=HOSPITAL, date="2030-01-03",
                                name="元旦"), hub.directory)
    assert holiday is not None and holiday.session_id is None
    assert hub.publish(holiday) == 1 and len(mine.pending) == 1 and not theirs.pending


# --- the ring and reconnects ------------------------------------------------------------------------

def test_the_ring_answers_what_came_after_an_id_or_none_when_it_cannot_know() -> None:
    ring = Ring(size=3)
    assert ring.since(5) is None, "nothing seen yet: a resuming page must resync"
    for position in (10, 12, 15):
        assert ring.add(note(position))
    assert not ring.add(note(12)), "a republished event is not a second notice"
    assert [n.position for n in ring.since(9) or []] == [10, 12, 15]
    assert [n.position for n in ring.since(12) or []] == [15]
    assert ring.since(15) == [] and ring.since(99) == []
    assert ring.since(8) is None
    ring.add(note(20))  # 10 falls out: everything after 10 is still here
    assert ring.floor == 10 and len(ring) == 3
    assert ring.since(9) is None and [n.position for n in ring.since(10) or []] == [12, 15, 20]
    ring.cut()
    assert ring.since(20) is None and not ring.add(note(20))
    ring.add(note(30))
    assert ring.since(25) is None and [n.position for n in ring.since(29) or []] == [30]


def test_a_reconnect_gets_its_own_missed_notices_or_one_resync() -> None:
    hub = Hub(stream_queue=3)
    for position, session in ((1, SESSION), (2, "s-9"), (3, SESSION)):
        hub.publish(note(position, session=session, department="d-9" if session == "s-9" else DEPARTMENT))
    resumed = hub.open(topics(department=DEPARTMENT), last_id=1)
    assert [f.split(b"\n", 1)[0] for f in resumed.pending] == [b"id: 3"]
    assert not hub.open(topics(department=DEPARTMENT), last_id=3).pending
    stale = hub.open(topics(department=DEPARTMENT), last_id=-5)
    assert b"event: resync" in stale.pending[0] and stale.pending[0].startswith(b"id: 3\n")
    for position in range(4, 10):
        hub.publish(note(position))
    flood = hub.open(topics(session=SESSION), last_id=3)
    assert len(flood.pending) == 1 and b"event: resync" in flood.pending[0], "a long absence is one resync"


def test_a_broken_feed_tells_every_stream_to_resync() -> None:
    hub = Hub()
    hub.publish(note(1))
    stream = hub.open(topics(hospital=HOSPITAL))
    hub.cut()
    assert b"event: resync" in stream.pending[-1]
    assert b"event: resync" in hub.open(topics(hospital=HOSPITAL), last_id=1).pending[0]


# --- bounds -----------------------------------------------------------------------------------------

def test_streams_per_process_are_capped() -> None:
    hub = Hub(max_streams=2)
    first, _ = hub.open(topics(session="a")), hub.open(topics(session="b"))
    with pytest.raises(LiveBusy) as busy:
        hub.open(topics(session="c"))
    assert busy.value.status == 503 and busy.value.retry_after >= 1
    hub.close(first)
    hub.close(first)
    hub.open(topics(session="c"))
    assert len(hub.streams) == 2


def test_a_slow_stream_is_ended_not_buffered_and_the_others_go_on() -> None:
    hub = Hub(stream_queue=2)
    woken: list[str] = []
    slow = hub.open(topics(department=DEPARTMENT), wake=lambda: woken.append("slow"))
    fast = hub.open(topics(department=DEPARTMENT))
    for position in range(1, 6):
        hub.publish(note(position))
        fast.take()
    assert slow.dropped and not slow.pending and hub.dropped == 1
    assert not fast.dropped and woken, "the dropped stream is woken to end"
    hub.close(slow)
    assert hub.publish(note(6)) == 1
    assert hub._by["department"][DEPARTMENT] == {fast}


def test_closing_the_last_stream_of_a_topic_forgets_the_topic() -> None:
    hub = Hub()
    stream = hub.open(topics(session=SESSION, department=DEPARTMENT))
    hub.close(stream)
    assert hub._by == {"session": {}, "department": {}, "hospital": {}}
