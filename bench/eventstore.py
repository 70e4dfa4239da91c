"""Event store benchmark: our PostgreSQL store against the `eventsourcing` library's recorder and
a raw psycopg2 loop, all in one run on the same server (DESIGN.md section 5).

    python bench/eventstore.py [--n N] [--rounds R] [--prefill K] [--threads T] [--json PATH]

Appends are single events, one transaction each, sequential, with the server's own durability
settings for every contender (nothing turns synchronous_commit off). Each contender runs N
appends split into R interleaved rounds (the order rotates per round), so drifting machine noise
hits all of them alike. `--prefill K` first bulk-loads K similar rows into every contender's
table (one INSERT ... SELECT each, then ANALYZE), to measure a store that is not nearly empty.
`--threads T` (default 8) adds a concurrent section: T threads sharing one store, each appending
N/T single events to new streams (the store groups them into shared commits), against T threads
each on its own connection doing raw INSERT; COMMIT. Everything runs in scratch databases that are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# infra.db probes for eventlet, whose import warns that it is deprecated: noise here.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import psycopg2  # noqa: E402
import psycopg2.extras  # noqa: E402
from eventsourcing.persistence import StoredEvent  # noqa: E402
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore  # noqa: E402

from bench.results import record  # noqa: E402
from contracts.envelope import Envelope  # noqa: E402
from infra.db import drop_database, ensure_database  # noqa: E402
from infra.eventstore import PostgresEventStore  # noqa: E402
from infra.settings import pg_dsn  # noqa: E402

PAGE = 1000
TARGET_VS_EVENTSOURCING = 3.0
TARGET_VS_RAW = 0.5
TARGET_CONCURRENT = 0.5
RAW_TABLE = """
CREATE TABLE bench_raw (
    id          bigserial   PRIMARY KEY,
    stream      text        NOT NULL,
    event_id    uuid        NOT NULL UNIQUE,
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    meta        jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL
)"""


def raw_inserts(conn: Any, events: Sequence[Envelope]) -> None:
    """The raw baseline: one INSERT and one COMMIT per event on `conn`."""
    with conn.cursor() as cur:
        for ev in events:
            data, meta = payload(ev)
            cur.execute(
                "INSERT INTO bench_raw (stream, event_id, type, data, meta, occurred_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (ev.stream, ev.event_id, ev.type, json.dumps(data), json.dumps(meta), ev.occurred_at),
            )
            conn.commit()


@dataclass
class Rate:
    name: str
    kind: str  # "append" or "read"
    ops: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def make_event(i: int, stream: str) -> Envelope:
    return Envelope(
        type="AppointmentBooked",
        stream=stream,
        source="booking",
        correlation_id=f"bench-{i}",
        data={"patient": f"p-{i}", "session": "s-2024-06-01-am", "slot": i % 30, "channel": "web"},
    )


def payload(ev: Envelope) -> tuple[dict[str, Any], dict[str, Any]]:
    meta = {
        "correlation_id": ev.correlation_id,
        "causation_id": ev.causation_id,
        "actor": ev.actor.model_dump(),
    }
    return ev.data, meta


class Bench:
    def __init__(self, n: int, rounds: int, prefill: int = 0, threads: int = 8) -> None:
        self.threads = threads
        self.n = n
        self.rounds = rounds
        self.prefill = prefill
        tag = uuid.uuid4().hex[:8]
        self.ours_dsn = pg_dsn(f"bench_es_{tag}")
        self.es_dsn = pg_dsn(f"bench_eventsourcing_{tag}")
        self.rates: dict[str, Rate] = {}

    # --- setup / teardown -----------------------------------------------------------------

    def setup(self) -> None:
        ensure_database(self.ours_dsn)
        ensure_database(self.es_dsn)
        self.store = PostgresEventStore(self.ours_dsn, pool_size=max(2, self.threads))
        self.store.setup()

        self.raw = psycopg2.connect(self.ours_dsn, application_name="bench-raw")
        with self.raw.cursor() as cur:
            cur.execute(RAW_TABLE)
        self.raw.commit()

        parts = urlsplit(self.es_dsn)
        self.datastore = PostgresDatastore(
            dbname=parts.path.lstrip("/"),
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or "",
            pool_size=1,
        )
        self.recorder = PostgresApplicationRecorder(self.datastore)
        self.recorder.create_table()

        self.one_stream_version = 0
        self.counter = 0
        if self.prefill:
            self._prefill(self.prefill)

    def _prefill(self, k: int) -> None:
        data, meta = (json.dumps(p) for p in payload(make_event(0, "prefill")))
        ours = psycopg2.connect(self.ours_dsn, application_name="bench-prefill")
        with ours, ours.cursor() as cur:
            cur.execute(
                "INSERT INTO es_events (position, stream, version, event_id, type, schema_version, source, "
                "data, meta, occurred_at) SELECT g, 'prefill-' || g, 1, gen_random_uuid(), "
                "'AppointmentBooked', 1, 'booking', %s, %s, now() FROM generate_series(1, %s) g",
                (data, meta, k),
            )
            cur.execute("UPDATE es_head SET position = %s WHERE id = 1", (k,))
            cur.execute(
                "INSERT INTO bench_raw (stream, event_id, type, data, meta, occurred_at) "
                "SELECT 'prefill-' || g, gen_random_uuid(), 'AppointmentBooked', %s, %s, now() "
                "FROM generate_series(1, %s) g",
                (data, meta, k),
            )
        ours.autocommit = True
        with ours.cursor() as cur:
            cur.execute("ANALYZE")
        ours.close()
        theirs = psycopg2.connect(self.es_dsn, application_name="bench-prefill")
        state = json.dumps({"data": json.loads(data), "meta": json.loads(meta)})
        with theirs, theirs.cursor() as cur:
            cur.execute(
                "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                "SELECT gen_random_uuid(), 1, 'booking:AppointmentBooked', convert_to(%s, 'UTF8') "
                "FROM generate_series(1, %s)",
                (state, k),
            )
        theirs.autocommit = True
        with theirs.cursor() as cur:
            cur.execute("ANALYZE")
        theirs.close()

    def teardown(self) -> None:
        for attr in ("store", "raw", "datastore"):  # whatever setup got to open
            opened = getattr(self, attr, None)
            if opened is None:
                continue
            try:
                opened.close()
            except Exception as exc:  # noqa: BLE001 - keep dropping the databases
                print(f"warning: closing failed: {exc}", file=sys.stderr)
        drop_database(self.ours_dsn)
        drop_database(self.es_dsn)

    def server_settings(self) -> dict[str, str]:
        with self.raw.cursor() as cur:
            cur.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('synchronous_commit', 'fsync', 'wal_sync_method', 'server_version')"
            )
            settings = dict(cur.fetchall())
        self.raw.rollback()
        return settings

    # --- the contenders: each appends `count` single events, one transaction each -----------

    def ours_new_streams(self, count: int) -> float:
        events = [make_event(self._next(), f"booking-{uuid.uuid4()}") for _ in range(count)]
        start = time.perf_counter()
        for ev in events:
            self.store.append_to(ev.stream, 0, ev)
        return time.perf_counter() - start

    def ours_one_stream(self, count: int) -> float:
        events = [make_event(self._next(), "session-s-2024-06-01-am") for _ in range(count)]
        version = self.one_stream_version
        start = time.perf_counter()
        for ev in events:
            self.store.append_to(ev.stream, version, ev)
            version += 1
        elapsed = time.perf_counter() - start
        self.one_stream_version = version
        return elapsed

    def eventsourcing(self, count: int) -> float:
        stored = []
        for _ in range(count):
            ev = make_event(self._next(), "unused")
            data, meta = payload(ev)
            state = json.dumps(
                {
                    "data": data,
                    "meta": meta,
                    "event_id": str(ev.event_id),
                    "occurred_at": ev.occurred_at.isoformat(),
                }
            ).encode()
            stored.append(
                StoredEvent(
                    originator_id=uuid.uuid4(),
                    originator_version=1,
                    topic="booking:AppointmentBooked",
                    state=state,
                )
            )
        start = time.perf_counter()
        for se in stored:
            self.recorder.insert_events([se])
        return time.perf_counter() - start

    def raw_insert(self, count: int) -> float:
        events = [make_event(self._next(), f"booking-{uuid.uuid4()}") for _ in range(count)]
        start = time.perf_counter()
        raw_inserts(self.raw, events)
        return time.perf_counter() - start

    # --- concurrent: T threads at once ------------------------------------------------------

    def _concurrently(self, work: Callable[[int], None]) -> float:
        ready = threading.Barrier(self.threads + 1)

        def run(t: int) -> None:
            ready.wait()
            work(t)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(self.threads)]
        for th in threads:
            th.start()
        ready.wait()
        start = time.perf_counter()
        for th in threads:
            th.join()
        return time.perf_counter() - start

    def ours_concurrent(self, count: int) -> float:
        per = [[make_event(self._next(), f"booking-{uuid.uuid4()}") for _ in range(count // self.threads)]
               for _ in range(self.threads)]

        def work(t: int) -> None:
            for ev in per[t]:
                self.store.append_to(ev.stream, 0, ev)

        return self._concurrently(work)

    def raw_concurrent(self, count: int) -> float:
        per = [[make_event(self._next(), f"booking-{uuid.uuid4()}") for _ in range(count // self.threads)]
               for _ in range(self.threads)]
        conns = [psycopg2.connect(self.ours_dsn, application_name="bench-raw-concurrent")
                 for _ in range(self.threads)]

        def work(t: int) -> None:
            raw_inserts(conns[t], per[t])

        try:
            return self._concurrently(work)
        finally:
            for conn in conns:
                conn.close()

    # --- reads: every stored row, in pages of PAGE ----------------------------------------

    def read_ours(self) -> tuple[int, float]:
        return self._pages(lambda after: [(e.position,) for e in self.store.read_all(after, PAGE)])

    def read_ours_raw_rows(self) -> tuple[int, float]:
        return self._pages(lambda after: self.store.read_all_raw(after, PAGE))

    def read_raw_select(self) -> tuple[int, float]:
        conn = psycopg2.connect(self.ours_dsn, application_name="bench-raw-read")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:

                def page(after: int) -> list[tuple[Any, ...]]:
                    cur.execute(
                        "SELECT position, stream, version, event_id, type, schema_version, source, data, "
                        "meta, occurred_at FROM es_events WHERE position > %s ORDER BY position LIMIT %s",
                        (after, PAGE),
                    )
                    return cur.fetchall()

                return self._pages(page)
        finally:
            conn.close()

    def read_eventsourcing(self) -> tuple[int, float]:
        return self._pages(
            lambda after: [(n.id,) for n in self.recorder.select_notifications(after, PAGE, inclusive_of_start=False)]
        )

    @staticmethod
    def _pages(read_page: Callable[[int], list[Any]]) -> tuple[int, float]:
        rows, after = 0, 0
        start = time.perf_counter()
        while True:
            page = read_page(after)
            if not page:
                return rows, time.perf_counter() - start
            rows += len(page)
            after = page[-1][0]

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    # --- the run --------------------------------------------------------------------------

    def run(self) -> None:
        appenders: list[tuple[str, Callable[[int], float]]] = [
            ("ours: append_to, new stream, expected 0", self.ours_new_streams),
            ("ours: append_to, one stream, expected v", self.ours_one_stream),
            ("eventsourcing 9.5.6: insert_events", self.eventsourcing),
            ("raw psycopg2: INSERT; COMMIT", self.raw_insert),
        ]
        for name, fn in appenders:  # warm-up: connections, plans, the es_head row
            fn(20)
            self.rates[name] = Rate(name, "append")
        base, extra = divmod(self.n, self.rounds)
        per_round = [base + (1 if r < extra else 0) for r in range(self.rounds)]
        for r, count in enumerate(per_round):
            for name, fn in appenders[r % len(appenders) :] + appenders[: r % len(appenders)]:
                rate = self.rates[name]
                rate.seconds += fn(count)
                rate.ops += count

        if self.threads > 1:
            concurrent: list[tuple[str, Callable[[int], float]]] = [
                (f"ours: {self.threads} threads append_to, new streams", self.ours_concurrent),
                (f"raw psycopg2: {self.threads} threads INSERT; COMMIT", self.raw_concurrent),
            ]
            for name, fn in concurrent:
                fn(self.threads * 5)
                self.rates[name] = Rate(name, "concurrent")
            for r, count in enumerate(per_round):
                for name, fn in concurrent[r % 2:] + concurrent[: r % 2]:
                    done = count // self.threads * self.threads
                    self.rates[name].seconds += fn(count)
                    self.rates[name].ops += done

        readers: list[tuple[str, Callable[[], tuple[int, float]]]] = [
            ("ours: read_all, pages of 1000", self.read_ours),
            ("ours: read_all_raw, pages of 1000", self.read_ours_raw_rows),
            ("raw psycopg2: SELECT same rows", self.read_raw_select),
            ("eventsourcing 9.5.6: select_notifications", self.read_eventsourcing),
        ]
        for name, _ in readers:
            self.rates[name] = Rate(name, "read")
        for r in range(self.rounds):
            for name, fn in readers[r % len(readers) :] + readers[: r % len(readers)]:
                rows, seconds = fn()
                self.rates[name].ops += rows
                self.rates[name].seconds += seconds


def report(bench: Bench, settings: dict[str, str], total_seconds: float) -> dict[str, Any]:
    rates = bench.rates
    es_append = rates["eventsourcing 9.5.6: insert_events"].per_second
    raw_append = rates["raw psycopg2: INSERT; COMMIT"].per_second
    es_read = rates["eventsourcing 9.5.6: select_notifications"].per_second
    raw_read = rates["raw psycopg2: SELECT same rows"].per_second

    raw_concurrent = next((r.per_second for r in rates.values() if r.kind == "concurrent"
                           and r.name.startswith("raw")), 0.0)
    rows = []
    for rate in rates.values():
        es, raw = {"append": (es_append, raw_append), "read": (es_read, raw_read),
                   "concurrent": (0.0, raw_concurrent)}[rate.kind]
        ours = rate.name.startswith("ours")
        rows.append(
            {
                **asdict(rate),
                "per_second": rate.per_second,
                "ours_over_eventsourcing": rate.per_second / es if ours and es else None,
                "ours_over_raw": rate.per_second / raw if ours and raw else None,
            }
        )

    targets = []
    for name in ("ours: append_to, new stream, expected 0", "ours: append_to, one stream, expected v"):
        ours = rates[name].per_second
        for baseline, value, goal in (
            ("eventsourcing", ours / es_append, TARGET_VS_EVENTSOURCING),
            ("raw", ours / raw_append, TARGET_VS_RAW),
        ):
            targets.append(
                {
                    "what": f"{name} >= {goal:g} x {baseline}",
                    "ratio": value,
                    "goal": goal,
                    "met": value >= goal,
                }
            )

    single = rates["ours: append_to, one stream, expected v"].per_second
    record("eventstore", "store: single appends / eventsourcing", single, es_append, TARGET_VS_EVENTSOURCING,
           unit="/s")
    record("eventstore", "store: single appends / raw INSERT", single, raw_append, TARGET_VS_RAW, unit="/s")
    ours_concurrent = next((r.per_second for r in rates.values() if r.kind == "concurrent"
                            and r.name.startswith("ours")), None)
    if ours_concurrent is not None:
        ratio = ours_concurrent / raw_concurrent if raw_concurrent else 0.0
        targets.append({"what": f"ours: {bench.threads} concurrent appenders >= {TARGET_CONCURRENT:g} x "
                                f"{bench.threads} raw inserters",
                        "ratio": ratio, "goal": TARGET_CONCURRENT, "met": ratio >= TARGET_CONCURRENT})
        record("eventstore", "store: 8 concurrent appenders / 8 raw inserters", ours_concurrent,
               raw_concurrent, TARGET_CONCURRENT, unit="/s", threads=bench.threads)

    width = max(len(r["name"]) for r in rows)
    print(
        f"\nevent store bench: N={bench.n} single-event appends per contender in {bench.rounds} "
        f"interleaved rounds, after prefilling {bench.prefill} rows each; "
        f"reads = every stored row, pages of {PAGE}, {bench.rounds} passes"
    )
    print("server: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) + "\n")
    header = f"{'ops':>7}  {'seconds':>8}  {'ops/s':>9}  {'ours/es':>8}  {'ours/raw':>8}"
    print(f"{'operation':<{width}}  {header}")
    print("-" * (width + 50))
    for r in rows:

        def ratio(v: float | None) -> str:
            return f"{v:7.2f}x" if v is not None else f"{'':8}"

        print(
            f"{r['name']:<{width}}  {r['ops']:>7}  {r['seconds']:>8.3f}  {r['per_second']:>9.0f}  "
            f"{ratio(r['ours_over_eventsourcing'])}  {ratio(r['ours_over_raw'])}"
        )
    print("\ntargets (DESIGN.md section 5):")
    for t in targets:
        print(f"  {t['what']:<{width + 22}} {t['ratio']:6.2f}x  {'met' if t['met'] else 'NOT MET'}")
    print(f"\ntotal {total_seconds:.1f} s")
    return {
        "n": bench.n,
        "rounds": bench.rounds,
        "prefill": bench.prefill,
        "server": settings,
        "results": rows,
        "targets": targets,
        "total_seconds": total_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="single-event appends per contender")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (noise control)")
    parser.add_argument("--prefill", type=int, default=0, help="rows bulk-loaded into each table first")
    parser.add_argument("--threads", type=int, default=8, help="concurrent section's threads (1: skip it)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.n < args.rounds:
        parser.error("--n must be at least --rounds")

    started = time.perf_counter()
    bench = Bench(args.n, args.rounds, args.prefill, args.threads)
    try:
        bench.setup()
        settings = bench.server_settings()
        bench.run()
    finally:
        bench.teardown()
    result = report(bench, settings, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
