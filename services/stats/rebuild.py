"""Rebuild the figures from position 0 into a copy of their own, and compare it with the live tables.

    python -m services.stats rebuild [--check] [--batch N] [--wait S]

The copy (REBUILD_DSN, by default `<prefix>_stats_rebuild`) is dropped and recreated, then the same
projection (readmodel.FiguresProjection) replays the store into it. `--check` then compares every
table of the copy with the live ones at one position: it reads the live tables in one snapshot,
brings the copy to exactly the live checkpoint, and lists each difference (exit 1), or says
"identical" (exit 0). Exit 2 when no comparison was possible (the live projection is behind the
copy for longer than --wait, or the live tables are missing).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg2
import psycopg2.extensions
from pydantic import Field

from infra.db import Database, apply_schema, drop_database, ensure_database
from infra.eventstore import EventStore, PostgresEventStore, row_to_envelope
from infra.projections import PROJECTION_SCHEMA
from infra.settings import Settings, load_config
from services.stats import readmodel

CONFIG = Path(__file__).with_name("config.yaml")
Progress = Callable[[int, int], None]


class StatsSettings(Settings):
    rebuild_dsn: str = Field(alias="REBUILD_DSN")


@dataclass
class Difference:
    table: str
    key: tuple[Any, ...]
    column: str | None  # None: the row is on one side only
    live: Any
    rebuilt: Any

    def __str__(self) -> str:
        key = ", ".join(str(k) for k in self.key)
        if self.column is None:
            side = "only live" if self.rebuilt is None else "only rebuilt"
            return f"{self.table} ({key}): row {side}"
        return f"{self.table} ({key}).{self.column}: live {self.live!r}, rebuilt {self.rebuilt!r}"


def rebuild(store: EventStore, copy_dsn: str, upto: int | None = None, batch: int = 2000,
            progress: Progress | None = None) -> readmodel.FiguresProjection:
    """A fresh copy of the figures, replayed from position 0 up to `upto` (the store's head)."""
    drop_database(copy_dsn)
    ensure_database(copy_dsn)
    db = Database(copy_dsn, size=1)
    apply_schema(db, PROJECTION_SCHEMA + readmodel.SCHEMA)
    projection = readmodel.FiguresProjection(readmodel.PROJECTOR, store, db)
    replay(projection, store.head() if upto is None else upto, batch, progress)
    return projection


def replay(projection: readmodel.FiguresProjection, upto: int, batch: int = 2000,
           progress: Progress | None = None) -> int:
    """Apply the store's events up to position `upto` (no further), as the live subscription would:
    the projector's types filtered in the database, a batch per transaction."""
    position = projection.load_checkpoint()
    types = sorted(projection.projector.types)
    while position < upto:
        rows, reached = projection.store.read_filtered_raw(position, types, batch)
        rows = [r for r in rows if int(r[0]) <= upto]
        if rows:
            projection.handle_batch([row_to_envelope(r) for r in rows])
        reached = min(reached, upto)
        if reached <= position:
            break
        position = reached
        if progress is not None:
            progress(position, upto)
    return position


def compare(live: psycopg2.extensions.connection, copy: psycopg2.extensions.connection) -> tuple[list[Difference], int]:
    """Every difference between the projection's tables on two connections (each read in the
    transaction it is in), and how many rows were compared."""
    differences: list[Difference] = []
    rows = 0
    for table, key in readmodel.TABLES.items():
        for difference_or_row in _compare_table(live, copy, table, key):
            if isinstance(difference_or_row, Difference):
                differences.append(difference_or_row)
            else:
                rows += 1
    return differences, rows


def check(store: EventStore, live_dsn: str, copy: readmodel.FiguresProjection, wait: float,
          out: TextIO) -> int:
    """Compare the live tables with the copy at the live checkpoint; the exit code."""
    deadline = time.monotonic() + wait
    copy_position = copy.load_checkpoint()
    while True:
        live = psycopg2.connect(live_dsn, application_name="stats-check")
        try:
            with live.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SELECT to_regclass('stats_bookings') IS NOT NULL")
                found = cur.fetchone()
                if not (found and found[0]):
                    print("the live database has no stats tables: has the stats service ever run?", file=out)
                    return 2
                live_position = readmodel.checkpoint(cur)
            if live_position >= copy_position:
                if live_position > copy_position:
                    replay(copy, live_position)
                with copy.db.connection() as copy_conn:
                    copy_conn.set_session(isolation_level="REPEATABLE READ")
                    try:
                        differences, rows = compare(live, copy_conn)
                    finally:
                        copy_conn.rollback()
                        copy_conn.set_session(isolation_level="DEFAULT")
                break
        finally:
            live.close()
        if time.monotonic() >= deadline:
            print(f"the live projection is at position {live_position}, behind the copy at {copy_position}: "
                  "start the stats service or wait for it, then check again", file=out)
            return 2
        time.sleep(0.5)
    for difference in differences:
        print(difference, file=out)
    if differences:
        print(f"{len(differences)} differences between the live figures and the rebuilt copy "
              f"at position {live_position}", file=out)
        return 1
    print(f"identical: {len(readmodel.TABLES)} tables, {rows} rows, at position {live_position}", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stats rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the copy with the live tables")
    parser.add_argument("--batch", type=int, default=2000, help="events per transaction (default 2000)")
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for a live projection behind the copy (default 30)")
    parser.add_argument("--eventstore-dsn", help="default: EVENTSTORE_DSN of services/stats/config.yaml")
    parser.add_argument("--database-dsn", help="the live figures; default: DATABASE_DSN of the config")
    parser.add_argument("--rebuild-dsn", help="the copy, dropped and recreated; default: REBUILD_DSN of the config")
    args = parser.parse_args(argv)
    cfg = StatsSettings.model_validate({"SERVICE_NAME": "stats", **load_config(CONFIG)})
    events_dsn = args.eventstore_dsn or cfg.eventstore_dsn
    live_dsn = args.database_dsn or cfg.database_dsn or ""
    copy_dsn = args.rebuild_dsn or cfg.rebuild_dsn
    if copy_dsn in (live_dsn, events_dsn):
        print(f"refusing to rebuild into {copy_dsn}: it is the live or the event store's database", file=sys.stderr)
        return 2
    store = PostgresEventStore(events_dsn, pool_size=1)
    try:
        started = time.monotonic()
        copy = rebuild(store, copy_dsn, batch=args.batch, progress=_progress(sys.stderr))
        position = copy.load_checkpoint()
        print(f"rebuilt {copy_dsn} up to position {position} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        if not args.check:
            return 0
        return check(store, live_dsn, copy, args.wait, sys.stdout)
    finally:
        store.close()


def _progress(out: TextIO, every: float = 2.0) -> Progress:
    started = time.monotonic()
    last = [started]

    def report(position: int, upto: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every or position >= upto:
            last[0] = now
            rate = position / max(now - started, 1e-9)
            print(f"rebuild: position {position} of {upto} ({100 * position / max(upto, 1):.0f}%), "
                  f"{rate:,.0f} positions/s", file=out, flush=True)
    return report


def _rows(conn: psycopg2.extensions.connection, table: str, key: tuple[str, ...]
          ) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    # Byte order ("C") is Python's order of str, so the two sorted streams can be merged.
    order = ", ".join(f'{k} COLLATE "C"' if k != "day" else k for k in key)
    with conn.cursor(name=f"check_{table}") as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT * FROM {table} ORDER BY {order}")
        names: list[str] | None = None
        for values in cur:
            if names is None:
                names = [d[0] for d in cur.description or ()]
            row = dict(zip(names, values, strict=True))
            yield tuple(row[k] for k in key), row


def _compare_table(live: psycopg2.extensions.connection, copy: psycopg2.extensions.connection, table: str,
                   key: tuple[str, ...]) -> Iterator[Difference | tuple[Any, ...]]:
    """A merge of the two sorted tables: each compared row's key, or a Difference."""
    left, right = _rows(live, table, key), _rows(copy, table, key)
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield Difference(table, a[0], None, a[1], None)
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            yield Difference(table, b[0], None, None, b[1])
            b = next(right, None)
        else:
            for column, value in a[1].items():
                if b[1].get(column) != value:
                    yield Difference(table, a[0], column, value, b[1].get(column))
            yield a[0]
            a, b = next(left, None), next(right, None)
