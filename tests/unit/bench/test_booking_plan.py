"""bench/steady.py's booking plan (also big_store.py's): what keeps every booking within the
default per-patient rules, so a 409 in those benches can only mean a full session."""

from __future__ import annotations

from collections import Counter
from datetime import date

from bench.steady import booking_plan, steady_data


def test_each_patient_books_two_sessions_on_different_days_and_neighbours_differ() -> None:
    data, ids, _ = steady_data(20, 100, date(2026, 1, 5))
    day = {s["session_id"]: s["date"] for s in data["sessions"]}

    plan = booking_plan(30, ids)

    assert len(plan) == 60
    by_patient: dict[int, list[str]] = {}
    for p, sid in plan:
        by_patient.setdefault(p, []).append(sid)
    assert sorted(by_patient) == list(range(30))
    assert all(len(s) == 2 and day[s[0]] != day[s[1]] for s in by_patient.values())
    assert all(a[1] != b[1] for a, b in zip(plan, plan[1:], strict=False))
    assert [p for p, _ in plan[:30]] == list(range(30))  # every first booking before any second one
    assert max(Counter(sid for _, sid in plan).values()) - min(Counter(sid for _, sid in plan).values()) <= 1


def test_n_keeps_the_first_bookings_in_order() -> None:
    _, ids, _ = steady_data(10, 100, date(2026, 1, 5))
    assert booking_plan(8, ids, 5) == booking_plan(8, ids)[:5]
