"""bench/big_store.py's bulk load keeps the event store's invariants: positions after the head
with no gap, consecutive versions per stream across loads, and a store that appends, checks
expected versions and filters types afterwards exactly as before."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from bench.big_store import HISTORICAL, load_history
from contracts.envelope import Envelope
from infra.eventstore import WrongExpectedVersion

pytestmark = pytest.mark.integration


def event(stream: str, type_: str = "SessionScheduled") -> Envelope:
    return Envelope(event_id=uuid.uuid4(), type=type_, stream=stream, source="booking", correlation_id="test",
                    data={"n": 1})


@pytest.fixture
def conn(store):
    c = psycopg2.connect(store.dsn)
    c.autocommit = True
    yield c
    c.close()


def rows(conn, sql: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def test_two_loads_continue_the_head_and_every_stream_version(store, conn):
    store.append_to("ledger-live", 0, event("ledger-live"))  # a real event first: the load goes after it

    assert load_history(conn, 0, 10, ledgers=3, patients=4) == (1, 11)
    assert load_history(conn, 10, 7, ledgers=3, patients=4) == (11, 18)

    assert rows(conn, "SELECT count(*), min(position), max(position), (SELECT position FROM es_head) "
                      "FROM es_events") == [(18, 1, 18, 18)]
    versions = dict(rows(conn, "SELECT stream, array_agg(version ORDER BY position) FROM es_events "
                               "WHERE type = %s GROUP BY stream", (HISTORICAL,)))
    # 17 events = bookings 0..8 (booking 8 has its ledger event only): ledger b % 3, patient b % 4
    assert versions == {"ledger-hist-s00000": [1, 2, 3], "ledger-hist-s00001": [1, 2, 3],
                        "ledger-hist-s00002": [1, 2, 3], "patient-hist-p000000": [1, 2],
                        "patient-hist-p000001": [1, 2], "patient-hist-p000002": [1, 2],
                        "patient-hist-p000003": [1, 2]}
    # a booking's two events are neighbours and name the same appointment
    pair = rows(conn, "SELECT stream, data->>'appointment_id' FROM es_events WHERE position IN (6, 7) "
                      "ORDER BY position")
    assert pair == [("ledger-hist-s00002", "hist-a2"), ("patient-hist-p000002", "hist-a2")]


def test_the_store_appends_and_filters_as_before_after_a_load(store, conn):
    store.append_to("ledger-live", 0, event("ledger-live"))
    load_history(conn, 0, 12, ledgers=2, patients=5)

    appended = store.append_to("ledger-hist-s00000", 3, event("ledger-hist-s00000", "AppointmentBooked"))
    assert [(e.position, e.version) for e in appended.events] == [(14, 4)]
    with pytest.raises(WrongExpectedVersion):
        store.append_to("ledger-hist-s00001", 2, event("ledger-hist-s00001"))  # it is at version 3
    store.append_to("ledger-live", 1, event("ledger-live"))

    matched, upto = store.read_filtered_raw(0, ["SessionScheduled"], limit=10)
    assert [(r[0], r[1]) for r in matched] == [(1, "ledger-live"), (15, "ledger-live")]
    assert upto == store.head() == 15
