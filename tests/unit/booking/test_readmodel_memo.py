"""BookingReadModel reads a session once per request (one instance per worker): a batch of
bookings of one session costs one query, and a session not projected yet is asked again."""

from __future__ import annotations

from typing import Any

from services.booking.readmodel import BookingReadModel

SESSION = {"session_id": "s1", "hospital_id": "h1", "department_id": "d1", "doctor_id": "doc1",
           "date": "2026-12-10", "period": "morning", "start": "08:00", "end": "11:30", "fee": "20.00",
           "quota": {"web": 30, "phone": 10, "window": 0}, "opens_at": "2026-12-03T08:00:00+08:00",
           "closes_at": "2026-12-09T16:00:00+08:00", "lapse_at": "2026-12-10T11:30:00+08:00"}


class CountingDb:
    """The Database's one-statement reads, answering from a dict of sessions and counting calls."""

    def __init__(self, sessions: dict[str, dict[str, Any]]) -> None:
        self.sessions = sessions
        self.queries = 0

    def fetchall(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.queries += 1
        found = self.sessions.get(params[0])
        return [(found, False, {"max_active": 4})] if found else []


def test_a_session_is_read_once_per_instance_and_each_instance_reads_afresh():
    db = CountingDb({"s1": SESSION})
    first = BookingReadModel(db)  # type: ignore[arg-type]
    answers = [first.session_and_rules("s1") for _ in range(5)]
    assert db.queries == 1
    assert answers[0][0] is not None and answers[0][0].quota == {"web": 30, "phone": 10, "window": 0}
    assert answers[0][1].max_active == 4
    assert first.session_info("s1") == answers[0][0]
    assert db.queries == 1
    BookingReadModel(db).session_and_rules("s1")  # type: ignore[arg-type]  # the next request's worker
    assert db.queries == 2


def test_an_unknown_session_is_not_remembered():
    db = CountingDb({})
    view = BookingReadModel(db)  # type: ignore[arg-type]
    assert view.session_and_rules("s1")[0] is None
    db.sessions["s1"] = SESSION  # projected meanwhile
    info, _ = view.session_and_rules("s1")
    assert info is not None and info.session_id == "s1"
    assert db.queries == 2
