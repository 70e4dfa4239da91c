"""The event store's conformance suite on PostgreSQL, plus what can only be shown with
PostgreSQL's own tools: the append-only trigger, a transaction held open inside `es_append`, the
bigserial counter-example, a repeat racing its original. Concurrency tests use real threads, each
on its own connection, against the real server."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import psycopg2
import pytest

from contracts.envelope import Envelope
from infra.eventstore import CatchUpSubscription
from infra.eventstore.store import append_statement
from tests.eventstore_contract import EventStoreContract, Threads, event, run_gap_workload, wait_for

pytestmark = pytest.mark.integration


class TestPostgresEventStore(EventStoreContract):
    """The PostgreSQL backend; `store` is the conftest fixture (a fresh database)."""

    def slow_append(self, store, events, hold, started, ended):
        # A transaction of our own around es_append, exactly the call store.py makes, then a
        # pause before COMMIT: it holds the es_head row lock (and its positions) meanwhile.
        conn = psycopg2.connect(store.dsn, application_name="test-slow-writer")
        try:
            with conn.cursor() as cur:
                sql, params = append_statement({events[0].stream: (None, events)})
                cur.execute(sql, params)
                positions = sorted(r[3] for r in cur.fetchall())
                started()
                try:
                    cur.execute("SELECT pg_sleep(%s)", (hold,))
                    conn.commit()
                finally:
                    ended()
            return positions
        finally:
            conn.close()

    def test_events_table_is_append_only(self, store):
        store.append_to("s", 0, event("s"))
        conn = psycopg2.connect(store.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for sql in (
                    "UPDATE es_events SET type = 'Forged'",
                    "DELETE FROM es_events",
                    "DELETE FROM es_events WHERE false",
                    "TRUNCATE es_events",
                ):
                    with pytest.raises(psycopg2.Error) as info:
                        cur.execute(sql)
                    assert info.value.pgcode == "ES003", sql
        finally:
            conn.close()
        assert [e.type for e in store.read_stream("s")] == ["SlotHeld"]

    def test_plain_bigserial_lets_a_tailing_reader_skip(self, store):
        """Why es_head exists: the same workload on a bigserial table. A slow writer takes a
        sequence value, then commits after others committed higher ones and the reader moved
        past: the reader never sees its event, although it is committed."""
        setup = psycopg2.connect(store.dsn)
        setup.autocommit = True
        with setup.cursor() as cur:
            cur.execute(
                "CREATE TABLE naive_events (position bigserial PRIMARY KEY, "
                "event_id uuid NOT NULL, stream text NOT NULL, data jsonb NOT NULL)"
            )
        setup.close()

        conns: list[Any] = []
        local = threading.local()
        fast_done = threading.Event()
        reader_last = [0]
        rng = random.Random(13)

        def connect() -> Any:
            conn = psycopg2.connect(store.dsn, application_name="test-naive-writer")
            conns.append(conn)
            return conn

        def insert(cur: Any, events: list[Envelope]) -> list[int]:
            positions = []
            for ev in events:
                cur.execute(
                    "INSERT INTO naive_events (event_id, stream, data) VALUES (%s, %s, %s) RETURNING position",
                    (ev.event_id, ev.stream, json.dumps(ev.data)),
                )
                positions.append(cur.fetchone()[0])
            return positions

        def fast(events):
            if not hasattr(local, "conn"):
                local.conn = connect()
            with local.conn, local.conn.cursor() as cur:
                return insert(cur, events)

        def slow(events, started, ended):
            conn = connect()
            with conn.cursor() as cur:
                positions = insert(cur, events)
                started()
                try:
                    cur.execute("SELECT pg_sleep(%s)", (rng.uniform(0.05, 0.2),))
                    # Commit once the reader has gone past us, while other writers still write
                    # (bounded, so the demonstration cannot hang).
                    deadline = time.monotonic() + 10
                    while reader_last[0] <= positions[-1] and not fast_done.is_set() and time.monotonic() < deadline:
                        time.sleep(0.005)
                    conn.commit()
                finally:
                    ended()
            return positions

        reader = connect()
        reader.autocommit = True

        def read_after(last: int):
            with reader.cursor() as cur:
                cur.execute(
                    "SELECT position, event_id FROM naive_events WHERE position > %s ORDER BY position LIMIT 1000",
                    (last,),
                )
                rows = [(p, uuid.UUID(str(e))) for p, e in cur.fetchall()]
            if rows:
                reader_last[0] = rows[-1][0]
            return rows

        try:
            run = run_gap_workload(fast, slow, read_after, fast_done=fast_done)
        finally:
            for conn in conns:
                conn.close()
        missed = set(run.committed) - {pos for pos, _ in run.seen}
        print(
            f"bigserial: {len(run.committed)} events, {run.polls} polls, "
            f"{len(run.skips)} skips, {len(missed)} events never seen"
        )

        total = len(run.committed)
        assert total == 8 * 150
        assert run.skips, "a plain bigserial reader should have skipped a late commit"
        assert missed, "the skipped events are committed, yet the reader never saw them"
        check = psycopg2.connect(store.dsn)
        with check.cursor() as cur:
            cur.execute("SELECT count(*) FROM naive_events")
            assert cur.fetchone()[0] == total
        check.close()

    # --- regressions of defects found by these tests ---------------------------------------

    @pytest.mark.parametrize("expected", [0, None])
    def test_repeat_racing_the_original_append_is_a_duplicate(self, store, expected):
        """A client retries an append (same event ids) while the first attempt is still
        committing. The repeat must get duplicate=True like any repeat (it once got
        WrongExpectedVersion or PartialDuplicate because the duplicate check ran before the wait)."""
        ev = event("s")
        first = psycopg2.connect(store.dsn, application_name="test-first-attempt")
        outcome: list[Any] = []
        try:
            with first.cursor() as cur:
                sql, params = append_statement({"s": (expected, [ev])})
                cur.execute(sql, params)

            def repeat() -> None:
                try:
                    outcome.append(store.append_to("s", expected, ev))
                except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
                    outcome.append(exc)

            threads = Threads()
            threads.start(repeat)
            probe = psycopg2.connect(store.dsn)
            probe.autocommit = True  # pg_stat_activity is a snapshot per transaction
            try:
                with probe.cursor() as cur:

                    def repeat_is_waiting() -> bool:
                        cur.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'appt' "
                            "AND wait_event_type = 'Lock' AND datname = current_database()"
                        )
                        return cur.fetchone()[0] == 1

                    wait_for(repeat_is_waiting, 20, "the repeat to wait for the first attempt's lock")
            finally:
                probe.close()
            first.commit()
            threads.join()
        finally:
            first.close()
        assert len(store.read_stream("s")) == 1
        assert not isinstance(outcome[0], Exception), f"the repeat raised {outcome[0]!r}"
        assert outcome[0].duplicate is True

    def test_append_does_not_scan_the_whole_events_table(self, store):
        """es_append once looked for stored event ids with `IN (SELECT ... jsonb_array_elements)`,
        planned as a scan of es_events below ~15k rows, so each append cost O(events stored).
        Not a timed test: it counts sequential scans of es_events inside one append's transaction."""
        conn = psycopg2.connect(store.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO es_events (position, stream, version, event_id, type, schema_version, "
                    "source, data, meta, occurred_at) SELECT g, 'bulk-' || g, 1, gen_random_uuid(), 'X', 1, "
                    "'booking', '{\"n\": 1}', '{}', now() FROM generate_series(1, 5000) g"
                )
                cur.execute("UPDATE es_head SET position = 5000")
            conn.commit()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("ANALYZE es_events")
            conn.autocommit = False
            ev = event("s")
            with conn.cursor() as cur:
                # A difference inside one transaction: on PostgreSQL 15 the xact view also counts
                # scans of earlier transactions whose statistics were not flushed yet.
                count = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'es_events'"
                cur.execute(count)
                before = cur.fetchone()[0]
                sql, params = append_statement({"s": (0, [ev])})
                cur.execute(sql, params)
                assert [r[3] for r in cur.fetchall()] == [5001]
                cur.execute(count)
                seq_scans = cur.fetchone()[0] - before
            conn.rollback()
        finally:
            conn.close()
        assert seq_scans == 0, f"one append scanned all of es_events {seq_scans} time(s)"

    def test_subscription_stops_promptly_when_idle(self, store):
        sub = CatchUpSubscription(store, lambda batch: None, lambda: 0, idle_timeout=30.0)
        runner = Threads()
        runner.start(sub.run)
        try:
            time.sleep(0.5)  # caught up (nothing stored) and waiting on LISTEN
            sub.stop()
            runner.threads[0].join(timeout=5)
            assert not runner.threads[0].is_alive(), "run() still blocked 5 s after stop()"
        finally:
            sub.stop()
            store.append_to("wake", None, event("wake"))
            runner.join(timeout=60)


def test_a_subscription_run_again_after_a_failure_listens_afresh(store):
    """ProjectionRunner and the relay call run() again after it raised. Each run must listen on a
    listener of its own: the old object closed its wake pipe in `finally` and then selected on the
    closed descriptor numbers, which the kernel had handed to new sockets (issue 14)."""
    handled: list[int] = []
    failures = [1]

    def handle(batch):
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("a lost database, say")
        handled.extend(e.position for e in batch)

    sub = CatchUpSubscription(store, handle, lambda: handled[-1] if handled else 0, idle_timeout=30.0)
    store.append_to("s", 0, event("s"))
    with pytest.raises(RuntimeError):
        sub.run()
    # Sockets opened now may take the numbers the first run's pipe had.
    spare = [psycopg2.connect(store.dsn) for _ in range(3)]
    runner = Threads()
    runner.start(sub.run)
    try:
        wait_for(lambda: handled == [1], 10, "the event after the restart")
        time.sleep(0.3)  # idle on its listener: a NOTIFY must wake it, not the 30 s timeout
        store.append_to("s", 1, event("s"))
        wait_for(lambda: handled == [1, 2], 10, "an event appended while the second run was idle")
        sub.stop()
        runner.threads[0].join(timeout=5)
        assert not runner.threads[0].is_alive(), "the second run did not stop on stop()"
    finally:
        sub.stop()
        runner.join(timeout=30)
        for conn in spare:
            conn.close()


def test_one_grouped_call_answers_each_request_on_its_own(store):
    """Several requests in one es_append call (what group commit sends): a conflict, a partial
    duplicate and a repeat among them get their own answers; the others are stored, gap-free."""
    first = event("a")
    store.append_to("a", 0, first)
    ok1, ok2, dup_new = event("b"), event("c"), event("d")
    sql, params = append_statement(
        {"b": (0, [ok1])},
        {"a": (0, [event("a")])},           # conflict: a is at version 1
        {"a": (1, [first])},                # a repeat of the first append
        {"d": (0, [dup_new]), "a": (None, [first])},  # partial duplicate
        {"c": (0, [ok2])},
        {"b": (0, [ok1])},                  # a repeat of a request earlier in the same call
    )
    conn = psycopg2.connect(store.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
    finally:
        conn.close()
    status = {r[5]: r[6] for r in rows}
    assert status == {1: "ok", 2: "conflict", 3: "duplicate", 4: "partial", 5: "ok", 6: "duplicate"}
    assert [e.position for e in store.read_all(0)] == [1, 2, 3]
    assert [e.stream for e in store.read_all(0)] == ["a", "b", "c"]
    assert store.head() == 3


def test_concurrent_appenders_of_one_store_each_get_their_own_answer(store):
    """Threads appending at once through one store are grouped; conflicts and repeats mixed in
    get their own answer, every good append is stored once, the global order has no gap."""
    from infra.eventstore import WrongExpectedVersion

    repeat = event("r")
    store.append_to("r", 0, repeat)
    outcomes: dict[tuple[int, int], Any] = {}

    def worker(t: int) -> None:
        for i in range(40):
            try:
                if i % 10 == 3:
                    outcomes[(t, i)] = store.append_to("r", 0, event("r"))  # always a conflict
                elif i % 10 == 7:
                    outcomes[(t, i)] = store.append_to("r", 1, repeat)  # always a repeat
                else:
                    outcomes[(t, i)] = store.append_to(f"s-{t}-{i}", 0, event(f"s-{t}-{i}"))
            except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
                outcomes[(t, i)] = exc

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for (_, i), out in outcomes.items():
        if i % 10 == 3:
            assert isinstance(out, WrongExpectedVersion) and out.actual == 1
        elif i % 10 == 7:
            assert not isinstance(out, Exception) and out.duplicate is True
            assert out.events[0].position == 1
        else:
            assert not isinstance(out, Exception), out
            assert out.duplicate is False
    stored = store.read_all(0, 10_000)
    assert [e.position for e in stored] == list(range(1, 1 + 1 + 8 * 32))
    assert len({e.event_id for e in stored}) == len(stored)
