"""Guarantee 7 (projections are reproducible) for stats, on a real store: after a mixed workload the
live figures equal a rebuild from position 0 (`python -m services.stats rebuild --check`), a count
altered by hand is named, and re-reading events (a redelivered batch, a replica starting from a
stale position, two replicas at once) never counts anything twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg2
import pytest

from infra.db import Database, apply_schema, ensure_database
from infra.eventstore import CatchUpSubscription
from infra.projections import PROJECTION_SCHEMA
from services.stats import readmodel, rebuild
from tests.unit.stats.workload import D1, D2, at, random_bulk, standard

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def projection_into(store, dsn: str) -> readmodel.FiguresProjection:
    ensure_database(dsn)
    db = Database(dsn, size=2)
    apply_schema(db, PROJECTION_SCHEMA + readmodel.SCHEMA)
    return readmodel.FiguresProjection(readmodel.PROJECTOR, store, db)


def catch_up(projection: readmodel.FiguresProjection, batch_size: int = 7, start: int | None = None) -> None:
    projection.load_checkpoint()  # creates the checkpoint row, as a run of the service does
    load = projection.load_checkpoint if start is None else (lambda: start)
    CatchUpSubscription(projection.store, projection.handle_batch, load, batch_size=batch_size,
                        types=projection.projector.types).catch_up()


def cli(store, live_dsn: str, copy_dsn: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.stats", "rebuild", "--check", "--eventstore-dsn", store.dsn,
         "--database-dsn", live_dsn, "--rebuild-dsn", copy_dsn, "--batch", "50", *extra],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )


def differences(a_dsn: str, b_dsn: str) -> list[rebuild.Difference]:
    a, b = psycopg2.connect(a_dsn), psycopg2.connect(b_dsn)
    try:
        return rebuild.compare(a, b)[0]
    finally:
        a.close()
        b.close()


@pytest.fixture
def workload(store):
    w = standard(store)
    random_bulk(w, seed=13, sessions=40)
    return w


def test_rebuild_check_is_identical_then_names_a_count_altered_by_hand(store, workload, fresh_dsn):
    live_dsn, copy_dsn = fresh_dsn("stats_live"), fresh_dsn("stats_copy")
    live = projection_into(store, live_dsn)
    catch_up(live, batch_size=7)  # other batch boundaries than the rebuild's 50
    kinds = {e.type for e in workload.envelopes}
    assert {"AppointmentMoved", "AppointmentRefunded", "AppointmentLapsed", "AppointmentCheckedIn",
            "PatientBanned", "SessionQuotaChanged", "DoctorStopRejected"} <= kinds
    assert {e.data["reason"] for e in workload.envelopes if e.type == "AppointmentCancelled"} == {
        "patient", "operator", "doctor_stop"}

    ok = cli(store, live_dsn, copy_dsn)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "identical" in ok.stdout
    assert "rebuild: position" in ok.stderr  # progress

    altered = "WHERE day = '2025-03-10' AND doctor_id = 'doc-a1' AND channel = 'web'"
    with live.db.transaction() as cur:
        cur.execute(f"SELECT booked FROM stats_bookings {altered}")
        booked = cur.fetchone()[0]
        cur.execute(f"UPDATE stats_bookings SET booked = booked + 1 {altered}")
    try:
        bad = cli(store, live_dsn, copy_dsn)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert (f"stats_bookings (2025-03-10, hosp-a, dept-a1, doc-a1, web).booked: live {booked + 1}, "
                f"rebuilt {booked}") in bad.stdout
        assert "1 differences" in bad.stdout
    finally:
        with live.db.transaction() as cur:
            cur.execute(f"UPDATE stats_bookings SET booked = booked - 1 {altered}")
    assert differences(live_dsn, copy_dsn) == []
    live.db.close()


def test_check_brings_the_copy_to_the_live_position_and_refuses_a_live_projection_behind(store, workload,
                                                                                          fresh_dsn, capsys):
    live_dsn, copy_dsn = fresh_dsn("stats_live"), fresh_dsn("stats_copy")
    live = projection_into(store, live_dsn)
    catch_up(live)
    copy = rebuild.rebuild(store, copy_dsn, upto=store.head() // 2)  # built while the store was half as long
    assert rebuild.check(store, live_dsn, copy, wait=0, out=sys.stdout) == 0
    assert "identical" in capsys.readouterr().out
    assert copy.load_checkpoint() == live.load_checkpoint()

    workload.register("p-new", at(D2, 10))  # the copy now goes further than the live projection
    rebuild.replay(copy, store.head())
    assert rebuild.check(store, live_dsn, copy, wait=0, out=sys.stdout) == 2
    assert "behind the copy" in capsys.readouterr().out
    copy.db.close()
    live.db.close()


def test_events_applied_twice_through_the_projection_count_once(store, workload, fresh_dsn):
    live_dsn, reference_dsn = fresh_dsn("stats_live"), fresh_dsn("stats_ref")
    reference = projection_into(store, reference_dsn)
    catch_up(reference, batch_size=1000)
    live = projection_into(store, live_dsn)
    catch_up(live, batch_size=9)
    every = store.read_all(0, 100_000)
    live.handle_batch(every)             # the whole store redelivered as one batch
    live.handle_batch(every[-25:])       # and its tail again
    catch_up(live, batch_size=4, start=0)  # a replica that starts from a stale position re-reads it all
    assert differences(live_dsn, reference_dsn) == []

    workload.book("late-1", "s2", "web", at(D1, 6))  # a new event after a redelivery is still counted
    catch_up(live, start=0)
    rows = live.db.fetchone("SELECT booked FROM stats_bookings WHERE day = %s AND doctor_id = 'doc-a2' "
                            "AND channel = 'web'", (D1,))
    assert rows == (2,)
    live.db.close()
    reference.db.close()


def test_two_replicas_projecting_at_once_count_each_event_once(store, workload, fresh_dsn):
    shared_dsn, reference_dsn = fresh_dsn("stats_shared"), fresh_dsn("stats_ref")
    reference = projection_into(store, reference_dsn)
    catch_up(reference, batch_size=1000)
    replicas = [projection_into(store, shared_dsn) for _ in range(2)]
    errors: list[BaseException] = []

    def run(p: readmodel.FiguresProjection, size: int) -> None:
        try:
            catch_up(p, batch_size=size, start=0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p, size)) for p, size in zip(replicas, (5, 8), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert differences(shared_dsn, reference_dsn) == []
    for p in (*replicas, reference):
        p.db.close()
