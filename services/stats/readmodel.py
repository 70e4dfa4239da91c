"""stats' tables and all of its SQL: the projection of the event store's global order into them
(infra.projections; checkpoint in the same transaction as the rows) and the queries the RPC answers.

The projection folds a whole batch in memory (figures.fold) and writes each table with one
statement per batch; it keeps the kernel's rule exactly: the checkpoint row is locked, events at or
below it are skipped, and it moves in the same transaction, so a redelivered or re-read event is
never counted twice and replicas can run it side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg2.extras

from contracts import Envelope, Event
from infra.eventstore import EventStore
from infra.projections import Projection, ProjectionRunner, Projector
from services.stats import catalogue, figures
from services.stats.catalogue import Query, Table

# Versioned: a projection whose meaning changes gets a new name, so it starts from position 0
# instead of continuing from the old one's checkpoint.
NAME = "stats.figures.v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS stats_sessions (
    session_id    text        PRIMARY KEY,
    day           date        NOT NULL,
    hospital_id   text        NOT NULL,
    department_id text        NOT NULL,
    doctor_id     text        NOT NULL,
    opens_at      timestamptz NOT NULL,
    starts_at     timestamptz NOT NULL,
    quota_web     integer     NOT NULL,
    quota_phone   integer     NOT NULL,
    quota_window  integer     NOT NULL,
    taken         integer     NOT NULL,
    stopped       boolean     NOT NULL,
    sold_out_at   timestamptz
);
CREATE INDEX IF NOT EXISTS stats_sessions_day ON stats_sessions (day);
CREATE TABLE IF NOT EXISTS stats_bookings (
    day                date    NOT NULL,
    hospital_id        text    NOT NULL,
    department_id      text    NOT NULL,
    doctor_id          text    NOT NULL,
    channel            text    NOT NULL,
    released           integer NOT NULL,
    booked             integer NOT NULL,
    cancelled_patient  integer NOT NULL,
    cancelled_operator integer NOT NULL,
    cancelled_hospital integer NOT NULL,
    refunded           integer NOT NULL,
    moved              integer NOT NULL,
    moved_in           integer NOT NULL,
    checked_in         integer NOT NULL,
    no_show            integer NOT NULL,
    PRIMARY KEY (day, hospital_id, department_id, doctor_id, channel)
);
CREATE TABLE IF NOT EXISTS stats_stops (
    day                date    NOT NULL,
    hospital_id        text    NOT NULL,
    department_id      text    NOT NULL,
    doctor_id          text    NOT NULL,
    sessions           integer NOT NULL,
    stopped_sessions   integer NOT NULL,
    stop_requested     integer NOT NULL,
    stop_approved      integer NOT NULL,
    stop_rejected      integer NOT NULL,
    stop_withdrawn     integer NOT NULL,
    affected           integer NOT NULL,
    affected_moved     integer NOT NULL,
    affected_cancelled integer NOT NULL,
    PRIMARY KEY (day, hospital_id, department_id, doctor_id)
);
CREATE TABLE IF NOT EXISTS stats_leads (
    appointment_id text        PRIMARY KEY,
    day            date        NOT NULL,
    hospital_id    text        NOT NULL,
    department_id  text        NOT NULL,
    booked_at      timestamptz NOT NULL,
    starts_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS stats_leads_day ON stats_leads (day);
CREATE TABLE IF NOT EXISTS stats_accounts (
    day           date    PRIMARY KEY,
    registrations integer NOT NULL,
    bans          integer NOT NULL
);
CREATE TABLE IF NOT EXISTS stats_visits (
    day         date    NOT NULL,
    hospital_id text    NOT NULL,
    visits      integer NOT NULL,
    position    bigint  NOT NULL,
    PRIMARY KEY (day, hospital_id)
);
CREATE TABLE IF NOT EXISTS stats_hospitals (
    hospital_id text PRIMARY KEY,
    name        text NOT NULL
);
CREATE TABLE IF NOT EXISTS stats_departments (
    department_id text PRIMARY KEY,
    hospital_id   text NOT NULL,
    name          text NOT NULL
);
CREATE TABLE IF NOT EXISTS stats_doctors (
    doctor_id     text PRIMARY KEY,
    hospital_id   text NOT NULL,
    department_id text NOT NULL,
    name          text NOT NULL
);
-- The first projection's table (bookings by channel only), superseded by stats_bookings.
DROP TABLE IF EXISTS counts;
"""

# Every table of the projection with its key columns: what `rebuild --check` compares.
TABLES: dict[str, tuple[str, ...]] = {
    "stats_sessions": ("session_id",),
    "stats_bookings": ("day", "hospital_id", "department_id", "doctor_id", "channel"),
    "stats_stops": ("day", "hospital_id", "department_id", "doctor_id"),
    "stats_leads": ("appointment_id",),
    "stats_accounts": ("day",),
    "stats_visits": ("day", "hospital_id"),
    "stats_hospitals": ("hospital_id",),
    "stats_departments": ("department_id",),
    "stats_doctors": ("doctor_id",),
}


def apply_batch(cur: Any, events: Sequence[Envelope]) -> None:
    """Fold `events` onto the sessions they refer to and write what changed."""
    changes = figures.fold(events, load_sessions(cur, figures.session_ids(events)))
    write(cur, changes)


def _apply_one(cur: Any, event: Event, env: Envelope) -> None:
    apply_batch(cur, [env])


PROJECTOR = Projector(NAME)
PROJECTOR.on(*figures.event_classes())(_apply_one)


class FiguresProjection(Projection):
    """The kernel's Projection, a batch at a time: the same checkpoint rule, one fold and one
    statement per table for the whole batch instead of a round trip per event."""

    def handle_batch(self, batch: Sequence[Envelope]) -> None:
        last = batch[-1].position or 0
        with self.db.transaction() as cur:
            cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s FOR UPDATE", (self.name,))
            done = int(cur.fetchone()[0])
            new = figures.fresh(batch, done)
            if new:
                apply_batch(cur, new)
            if last > done:
                cur.execute("UPDATE projection_checkpoints SET position = %s WHERE name = %s", (last, self.name))
        self._reached_position(last)


class FiguresRunner(ProjectionRunner):
    """ProjectionRunner with the batch-at-a-time projection."""

    def setup(self) -> None:
        super().setup()
        self.projection = FiguresProjection(self.projector, self.projection.store, self.projection.db)


# --- writing ----------------------------------------------------------------------------------

_SESSION_COLUMNS = ("session_id, day, hospital_id, department_id, doctor_id, opens_at, starts_at, "
                    "quota_web, quota_phone, quota_window, taken, stopped, sold_out_at")
_SESSION_MUTABLE = ("quota_web", "quota_phone", "quota_window", "taken", "stopped", "sold_out_at")


def load_sessions(cur: Any, ids: Iterable[str]) -> dict[str, figures.Session]:
    wanted = list(ids)
    if not wanted:
        return {}
    cur.execute(f"SELECT {_SESSION_COLUMNS} FROM stats_sessions WHERE session_id = ANY (%s)", (wanted,))
    out: dict[str, figures.Session] = {}
    for sid, day, hosp, dept, doc, opens, starts, web, phone, window, taken, stopped, sold in cur.fetchall():
        out[sid] = figures.Session(sid, day, hosp, dept, doc, opens, starts,
                                   {"web": web, "phone": phone, "window": window}, taken, stopped, sold)
    return out


def write(cur: Any, ch: figures.Changes) -> None:
    sessions = [ch.sessions[sid] for sid in sorted(ch.touched)]
    if sessions:
        _upsert(cur, "stats_sessions", _SESSION_COLUMNS, "session_id",
                [(s.session_id, s.day, s.hospital_id, s.department_id, s.doctor_id, s.opens_at, s.starts_at,
                  s.quota["web"], s.quota["phone"], s.quota["window"], s.taken, s.stopped, s.sold_out_at)
                 for s in sessions],
                replace=_SESSION_MUTABLE)
    _add(cur, "stats_bookings", ("day", "hospital_id", "department_id", "doctor_id", "channel"),
         figures.BOOKING_COUNTS, ch.bookings)
    _add(cur, "stats_stops", ("day", "hospital_id", "department_id", "doctor_id"), figures.STOP_COUNTS, ch.stops)
    _add(cur, "stats_accounts", ("day",), figures.ACCOUNT_COUNTS, {(d,): c for d, c in ch.accounts.items()})
    if ch.leads:
        psycopg2.extras.execute_values(
            cur, "INSERT INTO stats_leads (appointment_id, day, hospital_id, department_id, booked_at, starts_at) "
                 "VALUES %s", [(x.appointment_id, x.day, x.hospital_id, x.department_id, x.booked_at, x.starts_at)
                               for x in ch.leads], page_size=len(ch.leads))
    if ch.visits:
        _upsert(cur, "stats_visits", "day, hospital_id, visits, position", "day, hospital_id",
                [(d, h, v, p) for (d, h), (v, p) in ch.visits.items()], replace=("visits", "position"),
                only_if="EXCLUDED.position > stats_visits.position")
    if ch.hospitals:
        _upsert(cur, "stats_hospitals", "hospital_id, name", "hospital_id", list(ch.hospitals.items()),
                replace=("name",))
    if ch.departments:
        _upsert(cur, "stats_departments", "department_id, hospital_id, name", "department_id",
                [(k, h, n) for k, (h, n) in ch.departments.items()], replace=("hospital_id", "name"))
    if ch.doctors:
        _upsert(cur, "stats_doctors", "doctor_id, hospital_id, department_id, name", "doctor_id",
                [(k, h, d, n) for k, (h, d, n) in ch.doctors.items()], replace=("hospital_id", "department_id", "name"))


def _add(cur: Any, table: str, keys: tuple[str, ...], counts: tuple[str, ...],
         deltas: Any) -> None:
    """Add count deltas to rows (created at zero): one statement for every key of the batch. A key
    an event touched is written even when its deltas cancel out, so that which rows exist does not
    depend on where batches happen to end."""
    rows = [(*key, *(c[m] for m in counts)) for key, c in deltas.items()]
    if not rows:
        return
    added = ", ".join(f"{m} = {table}.{m} + EXCLUDED.{m}" for m in counts)
    psycopg2.extras.execute_values(
        cur, f"INSERT INTO {table} ({', '.join(keys + counts)}) VALUES %s "
             f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}", rows, page_size=len(rows))


def _upsert(cur: Any, table: str, columns: str, key: str, rows: list[tuple[Any, ...]], replace: tuple[str, ...],
            only_if: str | None = None) -> None:
    assigned = ", ".join(f"{c} = EXCLUDED.{c}" for c in replace)
    where = f" WHERE {only_if}" if only_if else ""
    psycopg2.extras.execute_values(
        cur, f"INSERT INTO {table} ({columns}) VALUES %s ON CONFLICT ({key}) DO UPDATE SET {assigned}{where}",
        rows, page_size=len(rows))


# --- reading ----------------------------------------------------------------------------------

_DIM_SQL = {"day": "day", "hospital": "hospital_id", "department": "department_id", "doctor": "doctor_id",
            "channel": "channel"}
_NAMES = {
    "hospital": "(SELECT name FROM stats_hospitals n WHERE n.hospital_id = g.hospital_id) AS hospital_name",
    "department": "(SELECT name FROM stats_departments n WHERE n.department_id = g.department_id) AS department_name",
    "doctor": "(SELECT name FROM stats_doctors n WHERE n.doctor_id = g.doctor_id) AS doctor_name",
}


def checkpoint(cur: Any, name: str = NAME) -> int:
    cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (name,))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def table(cur: Any, t: Table, q: Query) -> dict[str, Any]:
    """The answer of the `table` RPC: rows and the position they were read at, in one snapshot."""
    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    sql, params = _QUERIES[t.name](q)
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    rows = []
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        if "day" in row and row["day"] is not None:
            row["day"] = row["day"].isoformat()
        rows.append(catalogue.finish(t, row))
    return {"table": t.name, "columns": [c.describe() for c in t.columns(q.group_by)], "rows": rows,
            "query": q.normalized(), "position": checkpoint(cur)}


def _where(q: Query, day: str = "day") -> tuple[str, dict[str, Any]]:
    clauses = [f"{day} BETWEEN %(day_from)s AND %(day_to)s"]
    params: dict[str, Any] = {"day_from": q.day_from, "day_to": q.day_to}
    for key in catalogue.FILTERS:
        value = getattr(q, key)
        if value is not None:
            clauses.append(f"{key} = %({key})s")
            params[key] = value
    return " AND ".join(clauses), params


def _grouped(q: Query, inner: str, sums: str, where: str) -> str:
    """SELECT the grouped dims (with names) and `sums` over `inner` rows; one total row when no dims."""
    dims = [_DIM_SQL[d] for d in q.group_by]
    select = ", ".join([*dims, sums]) if dims else sums
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    names = [_NAMES[d] for d in q.group_by if d in _NAMES]
    outer = ", ".join(["g.*", *names])
    order = f" ORDER BY {', '.join(dims)}" if dims else ""
    return f"SELECT {outer} FROM (SELECT {select} FROM {inner} WHERE {where}{group}) g{order}"


def _sums(columns: Iterable[str]) -> str:
    return ", ".join(f"coalesce(sum({c}), 0)::bigint AS {c}" for c in columns)


def _bookings_sql(q: Query) -> tuple[str, dict[str, Any]]:
    where, params = _where(q)
    return _grouped(q, "stats_bookings", _sums(figures.BOOKING_COUNTS), where), params


def _stops_sql(q: Query) -> tuple[str, dict[str, Any]]:
    where, params = _where(q)
    return _grouped(q, "stats_stops", _sums(figures.STOP_COUNTS), where), params


def _accounts_sql(q: Query) -> tuple[str, dict[str, Any]]:
    where, params = _where(q)
    return _grouped(q, "stats_accounts", _sums(figures.ACCOUNT_COUNTS), where), params


def _percentiles(expr: str, prefix: str, unit: str) -> str:
    return ", ".join(f"round(percentile_cont({p}) WITHIN GROUP (ORDER BY {expr})::numeric, 2)::float8 "
                     f"AS {prefix}_{label}_{unit}" for p, label in ((0.5, "median"), (0.9, "p90")))


def _sellout_sql(q: Query) -> tuple[str, dict[str, Any]]:
    where, params = _where(q)
    dims = [_DIM_SQL[d] for d in q.group_by]
    sellout = _grouped(
        q, "stats_sessions",
        "count(*)::bigint AS sessions, count(sold_out_at)::bigint AS sold_out, "
        + _percentiles("extract(epoch FROM sold_out_at - opens_at) / 60", "sellout", "minutes"), where)
    leads = _grouped(
        q, "stats_leads",
        "count(*)::bigint AS bookings, "
        + _percentiles("extract(epoch FROM starts_at - booked_at) / 86400", "lead", "days"), where)
    columns = ", ".join([*(f"coalesce(s.{c}, l.{c}) AS {c}" for c in _sellout_dim_columns(q)),
                         "coalesce(s.sessions, 0) AS sessions", "coalesce(s.sold_out, 0) AS sold_out",
                         "s.sellout_median_minutes", "s.sellout_p90_minutes", "coalesce(l.bookings, 0) AS bookings",
                         "l.lead_median_days", "l.lead_p90_days"])
    if not dims:
        return f"SELECT {columns} FROM ({sellout}) s CROSS JOIN ({leads}) l", params
    on = " AND ".join(f"s.{d} = l.{d}" for d in dims)
    return (f"SELECT {columns} FROM ({sellout}) s FULL JOIN ({leads}) l ON {on} "
            f"ORDER BY {', '.join(f'coalesce(s.{d}, l.{d})' for d in dims)}"), params


def _sellout_dim_columns(q: Query) -> list[str]:
    return [c.key for d in q.group_by for c in catalogue.DIM_COLUMNS[d]]


def _share_sql(q: Query) -> tuple[str, dict[str, Any]]:
    where, params = _where(q)
    per_day = (
        "(SELECT coalesce(b.day, v.day) AS day, coalesce(b.hospital_id, v.hospital_id) AS hospital_id, "
        "coalesce(b.booked_web, 0) AS booked_web, coalesce(b.booked_phone, 0) AS booked_phone, "
        "coalesce(b.booked_window, 0) AS booked_window, coalesce(b.checked_in, 0) AS checked_in, v.visits "
        "FROM (SELECT day, hospital_id, "
        "sum(booked) FILTER (WHERE channel = 'web') AS booked_web, "
        "sum(booked) FILTER (WHERE channel = 'phone') AS booked_phone, "
        "sum(booked) FILTER (WHERE channel = 'window') AS booked_window, "
        f"sum(checked_in) AS checked_in FROM stats_bookings WHERE {where} GROUP BY day, hospital_id) b "
        f"FULL JOIN (SELECT day, hospital_id, visits FROM stats_visits WHERE {where}) v "
        "ON b.day = v.day AND b.hospital_id = v.hospital_id) hd"
    )
    sums = (_sums(("booked_web", "booked_phone", "booked_window", "checked_in"))
            + ", coalesce(sum(checked_in) FILTER (WHERE visits IS NOT NULL), 0)::bigint AS checked_in_reported"
            + ", sum(visits)::bigint AS visits"
            + ", count(*) FILTER (WHERE visits IS NULL)::bigint AS days_without_report")
    return _grouped(q, per_day, sums, "true"), params


_QUERIES = {"bookings": _bookings_sql, "stops": _stops_sql, "sellout": _sellout_sql, "accounts": _accounts_sql,
            "share": _share_sql}


def summary(cur: Any) -> dict[str, Any]:
    """Bookings figures by channel over everything projected (the gateway's /api/v1/stats/summary)."""
    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cur.execute(f"SELECT channel, {_sums(figures.BOOKING_COUNTS)} FROM stats_bookings GROUP BY channel ORDER BY 1")
    out: dict[str, dict[str, int]] = {}
    for channel, *counts in cur.fetchall():
        for metric, n in zip(figures.BOOKING_COUNTS, counts, strict=True):
            if n:
                out.setdefault(metric, {})[channel] = int(n)
    return {"metrics": out, "position": checkpoint(cur)}


def lag(projection: Projection, now: datetime) -> dict[str, Any]:
    """The `lag` RPC: how far each projection of stats is behind the store."""
    with projection.db.transaction() as cur:
        # The checkpoint moves with applied events only; this process also knows how far past
        # them it has read (events of other types), which is not lag.
        position = max(checkpoint(cur, projection.name), projection.applied)
    return {"projections": [lag_of(projection.name, position, projection.store, projection.projector.types, now)]}


def lag_of(name: str, position: int, store: EventStore, types: Iterable[str], now: datetime) -> dict[str, Any]:
    """head − position, and the age of the oldest event still to apply (0 when caught up)."""
    head = store.head()
    rows, _ = store.read_filtered_raw(position, sorted(types), 1)
    seconds = max(0.0, (now - rows[0][9]).total_seconds()) if rows else 0.0
    return {"name": name, "position": position, "head": head, "behind": max(0, head - position),
            "seconds_behind": round(seconds, 1)}
