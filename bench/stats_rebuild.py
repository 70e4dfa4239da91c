"""Stats rebuild benchmark: replaying a million mixed events into the figures, against merely
reading them from the store, in the same run on the same server (DESIGN.md section 5), and the
analyst's year-long query against a bare count of the same rows.

    python bench/stats_rebuild.py [--events N] [--batch B] [--runs R] [--json PATH]

Set-up (not timed): a fresh store receives N events (default 1,000,000) of a simulated year of a
province: 12 hospitals × 8 departments × 4 doctors, sessions with quotas per channel, bookings on
every channel (some sessions sell out), cancellations by patient / operator, quota changes, doctor
stops (approved with and without a replacement, rejected, withdrawn), check-ins, refunds at the
window, no-shows, bans, registrations, the HIS's daily visit totals (some corrected), and the
patients' own index events the booking service appends with every ledger event (which stats
does not project). They are written with COPY in position order, a week of visits at a time sorted
by time, exactly as rows es_append would have stored. Then:

- baseline: `read_all` in pages of 1000 from position 0 to the head (envelopes, as a reader gets
  them), timed before and after the rebuild; their mean is the baseline rate;
- measure: `services.stats.rebuild.rebuild` from position 0 into a fresh database (the projection
  the service runs: types filtered in the database, a batch of B events per transaction);
  rate = N positions ÷ seconds; target ≥ 0.5 × the baseline;
- query: `table("bookings", a year, group_by department)` over every hospital, the median of R runs
  (after one warm-up), target < 200 ms, and the ratio to a bare `SELECT count(*)` of the rows it
  reads; the other tables' year-long queries are reported (no target).

Checks: each figure of the rebuilt copy equals an independent count of the stored events (SQL over
es_events: bookings, cancellations by reason, moves, check-ins, no-shows, refunds, sessions, stops,
registrations, bans, visit totals, and the released places from each session's latest quota).
Exit code 1 when a check fails. The scratch databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# infra.projections imports nameko, whose eventlet import warns that it is deprecated: noise here.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import psycopg2  # noqa: E402

from bench.results import record  # noqa: E402
from contracts import SessionScheduled  # noqa: E402
from infra.db import drop_database  # noqa: E402
from infra.eventstore import PostgresEventStore  # noqa: E402
from infra.settings import pg_dsn  # noqa: E402
from services.stats import catalogue, figures, readmodel, rebuild  # noqa: E402

PAGE = 1000
EVENTS_PER_SESSION = 80  # about, in this simulation (the session, its bookings and what became of them)
TARGET_REBUILD = 0.5
TARGET_QUERY_MS = 200.0
YEAR = 2025
TZ = figures.HOSPITAL_TZ
META = json.dumps({"correlation_id": "bench", "causation_id": None,
                   "actor": {"kind": "system", "id": "platform", "hospital_id": None}})
COPY_SQL = ("COPY es_events (position, stream, version, event_id, type, schema_version, source, data, meta, "
            "occurred_at) FROM STDIN WITH (FORMAT csv)")


# --- the simulated year ------------------------------------------------------------------------

def _ts(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ).timestamp()


class Year:
    """Generates the events of a simulated year, a week of visit days at a time, sorted by time."""

    def __init__(self, per_doctor_day: float, seed: int = 2025) -> None:
        self.per_doctor_day = per_doctor_day  # the chance that a doctor holds a session on a day
        self.rnd = random.Random(seed)
        self.hospitals = [f"h{h:02d}" for h in range(12)]
        self.departments = [(h, f"{h}-d{d}") for h in self.hospitals for d in range(8)]
        self.doctors = [(h, d, f"{d}-doc{k}") for h, d in self.departments for k in range(4)]
        self.patients = 0
        self.sessions = 0
        self.appointments = 0
        self.stops = 0

    def names(self) -> list[tuple[float, str, str, str, dict[str, Any]]]:
        t = _ts(date(YEAR - 1, 12, 1), 9)
        out: list[tuple[float, str, str, str, dict[str, Any]]] = []
        for i, h in enumerate(self.hospitals):
            out.append((t, f"hospital-{h}", "HospitalRegistered", "schedule",
                        {"hospital_id": h, "name": f"河北省第{i + 1}医院", "level": "三级甲等", "address": "石家庄",
                         "contact": ""}))
        for h, d in self.departments:
            out.append((t, f"department-{d}", "DepartmentCreated", "schedule",
                        {"department_id": d, "hospital_id": h, "name": f"科室{d[-1]}", "parent_id": None}))
        for h, d, doc in self.doctors:
            out.append((t, f"doctor-{doc}", "DoctorRegistered", "schedule",
                        {"doctor_id": doc, "hospital_id": h, "department_id": d, "name": f"医生{doc[-4:]}",
                         "title": "主任医师", "specialty": "", "bio": "", "clinic_type": "expert"}))
        return out

    def week(self, first: date) -> list[tuple[float, str, str, str, dict[str, Any]]]:
        events: list[tuple[float, str, str, str, dict[str, Any]]] = []
        for offset in range(7):
            day = first + timedelta(days=offset)
            for h, d, doc in self.doctors:
                if self.rnd.random() < self.per_doctor_day:
                    self._session(events, day, h, d, doc)
            for h in self.hospitals:
                visits = self.rnd.randint(800, 3000)
                payload = {"hospital_id": h, "date": day.isoformat(), "visits": visits, "reported_by": "HIS"}
                events.append((_ts(day, 20), f"his-{h}", "OutpatientVisitsReported", "his_sync", payload))
                if self.rnd.random() < 0.05:  # a correction: a new event, the latest counts
                    events.append((_ts(day, 22), f"his-{h}", "OutpatientVisitsReported", "his_sync",
                                   {**payload, "visits": visits + self.rnd.randint(-50, 50)}))
        events.sort(key=lambda e: e[0])
        return events

    def _session(self, out: list[Any], day: date, h: str, d: str, doc: str, replaces: str | None = None,
                 published: float | None = None) -> dict[str, Any]:
        rnd = self.rnd
        self.sessions += 1
        sid = f"s{self.sessions}"
        quota = {"web": rnd.randint(8, 20), "phone": rnd.randint(2, 8), "window": rnd.randint(0, 4)}
        opens = _ts(day - timedelta(days=7), 8)
        closes = _ts(day - timedelta(days=1), 16)
        session = {
            "session_id": sid, "hospital_id": h, "department_id": d, "doctor_id": doc, "doctor_name": "",
            "doctor_title": "主任医师", "date": day.isoformat(), "period": "morning", "start": "08:00:00",
            "end": "12:00:00", "capacity": 40, "quota": quota, "fee": "50.00",
            "opens_at": datetime.fromtimestamp(opens, UTC).isoformat(),
            "closes_at": datetime.fromtimestamp(closes, UTC).isoformat(),
            "lapse_at": datetime.fromtimestamp(_ts(day, 11), UTC).isoformat(), "time_bands": [],
            "replaces_session_id": replaces, "clinic_type": "expert",
        }
        when = published if published is not None else _ts(day - timedelta(days=8), 9)
        out.append((when, f"session-{sid}", "SessionScheduled", "schedule", session))
        out.append((when, f"calendar-{doc}", "DoctorSessionAdded", "schedule",
                    {"doctor_id": doc, "session_id": sid, "date": day.isoformat(), "start": "08:00:00",
                     "end": "12:00:00"}))
        if replaces is not None:
            return session
        if rnd.random() < 0.03:
            quota = {**quota, "web": quota["web"] + rnd.randint(-3, 5)}
            quota["web"] = max(quota["web"], 0)
            out.append((opens - 3600, f"session-{sid}", "SessionQuotaChanged", "schedule",
                        {"session_id": sid, "hospital_id": h, "quota": quota}))
        sells_out = rnd.random() < 0.3
        held: list[tuple[dict[str, Any], float]] = []
        for channel, places in quota.items():
            n = places if sells_out else rnd.randint(places // 2, places)
            for _ in range(n):
                at = opens + (rnd.uniform(60, 4 * 3600) if sells_out else rnd.uniform(60, closes - opens - 60))
                held.append((self._book(out, session, channel, at), at))
        for a, at in held:
            if rnd.random() < 0.08:
                cancel_at = rnd.uniform(at + 60, closes)
                reason = "operator" if a["channel"] == "phone" else "patient"
                self._ledger(out, cancel_at, "AppointmentCancelled", a, "cancelled",
                             reason=reason, refund_due="50.00" if a["paid"] else None)
                a["gone"] = True
        active = [a for a, _ in held if not a.get("gone")]
        r = rnd.random()
        if r < 0.02:
            self._stop(out, session, active, day)
            return session
        for a in active:
            fate = rnd.random()
            if fate < 0.75:
                self._ledger(out, _ts(day, 7, rnd.randint(0, 59)), "AppointmentCheckedIn", a, "checked_in",
                             clerk_id="clerk", fee_taken="0.00" if a["paid"] else "50.00")
            elif fate < 0.8 and a["paid"]:
                self._ledger(out, _ts(day, 7, 50), "AppointmentRefunded", a, "refunded", clerk_id="clerk",
                             refund_due="50.00", reason="患者改期", place_released=True)
            else:
                self._ledger(out, _ts(day, 11), "AppointmentLapsed", a, "no_show")
                if rnd.random() < 0.01:
                    out.append((_ts(day, 11) + 1, f"patient-{a['patient_id']}", "PatientBanned", "booking",
                                {"patient_id": a["patient_id"], "until": (day + timedelta(days=90)).isoformat(),
                                 "no_shows": 3, "reason": "no_show"}))
        return session

    def _book(self, out: list[Any], s: dict[str, Any], channel: str, at: float) -> dict[str, Any]:
        rnd = self.rnd
        if self.patients == 0 or rnd.random() < 0.4:
            self.patients += 1
            pid = f"p{self.patients}"
            out.append((at - 600, f"patient-{pid}", "PatientRegistered", "booking",
                        {"patient_id": pid, "id_masked": "130102********0023", "phone_masked": "138****8000",
                         "birth_date": "1988-03-15", "sex": "F", "guardian_patient_id": None}))
        else:
            pid = f"p{rnd.randint(1, self.patients)}"
        self.appointments += 1
        a = {"appointment_id": f"a{self.appointments}", "session_id": s["session_id"], "hospital_id": s["hospital_id"],
             "patient_id": pid, "channel": channel, "date": s["date"], "code": f"C{self.appointments:07d}",
             "department_id": s["department_id"], "doctor_id": s["doctor_id"], "sequence_number": 1,
             "period": "morning", "start": "08:00:00", "fee": "50.00", "arrival_window": None,
             "paid": channel == "phone", "operator_id": "op" if channel == "phone" else None}
        out.append((at, f"ledger-{s['session_id']}", "AppointmentBooked", "booking", dict(a)))
        self._patient(out, at, a, True, "booked")
        return a

    def _stop(self, out: list[Any], s: dict[str, Any], active: list[dict[str, Any]], day: date) -> None:
        rnd = self.rnd
        self.stops += 1
        stop = {"stop_id": f"stop{self.stops}", "session_id": s["session_id"], "hospital_id": s["hospital_id"]}
        asked = _ts(day - timedelta(days=1), 9)
        out.append((asked, f"session-{s['session_id']}", "DoctorStopRequested", "schedule",
                    {**stop, "reason": "外出会诊", "requested_by": s["doctor_id"]}))
        outcome = rnd.random()
        if outcome < 0.2:
            out.append((asked + 3600, f"session-{s['session_id']}", "DoctorStopRejected", "schedule",
                        {**stop, "reason": "无替班", "rejected_by": "admin"}))
            return
        if outcome < 0.3:
            out.append((asked + 3600, f"session-{s['session_id']}", "DoctorStopRetracted", "schedule",
                        {**stop, "reason": "会诊取消", "retracted_by": s["doctor_id"]}))
            return
        replacement = None
        if rnd.random() < 0.5:
            replacement = self._session(out, day + timedelta(days=7), s["hospital_id"], s["department_id"],
                                        s["doctor_id"], replaces=s["session_id"], published=asked + 3000)
        out.append((asked + 3600, f"session-{s['session_id']}", "DoctorStopApproved", "schedule",
                    {**stop, "reason": "外出会诊", "approved_by": "admin",
                     "replacement_session_id": replacement["session_id"] if replacement else None}))
        applied = asked + 3700
        out.append((applied, f"ledger-{s['session_id']}", "SessionStopApplied", "booking",
                    {"stop_id": stop["stop_id"], "session_id": s["session_id"],
                     "replacement_session_id": replacement["session_id"] if replacement else None,
                     "moved": len(active) if replacement else 0, "cancelled": 0 if replacement else len(active)}))
        for a in active:
            if replacement is None:
                self._ledger(out, applied + 1, "AppointmentCancelled", a, "cancelled", reason="doctor_stop",
                             refund_due="50.00" if a["paid"] else None)
            else:
                moved = {k: v for k, v in a.items() if k not in ("operator_id", "gone")}
                moved.update(session_id=replacement["session_id"], date=replacement["date"],
                             from_session_id=s["session_id"])
                out.append((applied + 1, f"ledger-{replacement['session_id']}", "AppointmentMoved", "booking", moved))
                self._patient(out, applied + 1, moved, True, "moved")

    def _ledger(self, out: list[Any], at: float, kind: str, a: dict[str, Any], outcome: str, **extra: Any) -> None:
        data = {k: a[k] for k in ("appointment_id", "session_id", "hospital_id", "patient_id", "channel", "date")}
        out.append((at, f"ledger-{a['session_id']}", kind, "booking", {**data, **extra}))
        self._patient(out, at, a, False, outcome)

    @staticmethod
    def _patient(out: list[Any], at: float, a: dict[str, Any], active: bool, outcome: str) -> None:
        # The patient's own index, appended with every ledger event: not projected by stats.
        out.append((at, f"patient-{a['patient_id']}", "PatientAppointmentsChanged", "booking",
                    {"patient_id": a["patient_id"], "appointment_id": a["appointment_id"],
                     "session_id": a["session_id"], "hospital_id": a["hospital_id"],
                     "department_id": a["department_id"], "date": a["date"], "active": active, "outcome": outcome}))

    def events(self) -> Iterator[tuple[float, str, str, str, dict[str, Any]]]:
        yield from self.names()
        first = date(YEAR, 1, 1)
        while True:  # a run longer than a year goes on into the next
            yield from self.week(first)
            first += timedelta(days=7)


def load(dsn: str, n: int, chunk: int = 50_000) -> float:
    """N events into a fresh store with COPY, in position order; the seconds it took."""
    started = time.perf_counter()
    versions: dict[str, int] = {}
    # Sessions as frequent as makes N events fill about one year.
    year = Year(per_doctor_day=min(1.0, n / (365 * 384 * EVENTS_PER_SESSION)))
    conn = psycopg2.connect(dsn, application_name="bench-stats-load")
    try:
        with conn, conn.cursor() as cur:
            buf = io.StringIO()
            writer = csv.writer(buf)
            position = 0
            for when, stream, kind, source, data in year.events():
                position += 1
                version = versions.get(stream, 0) + 1
                versions[stream] = version
                writer.writerow((position, stream, version, uuid.uuid4(), kind, 1, source,
                                 json.dumps(data, ensure_ascii=False), META,
                                 datetime.fromtimestamp(when, UTC).isoformat()))
                if position % chunk == 0 or position == n:
                    buf.seek(0)
                    cur.copy_expert(COPY_SQL, buf)
                    buf = io.StringIO()
                    writer = csv.writer(buf)
                    print(f"  set-up: {position:,} of {n:,} events stored", file=sys.stderr, flush=True)
                if position == n:
                    break
            cur.execute("UPDATE es_head SET position = %s WHERE id = 1", (n,))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE es_events")
    finally:
        conn.close()
    return time.perf_counter() - started


# --- the measurements ---------------------------------------------------------------------------

def read_everything(store: PostgresEventStore) -> tuple[int, float]:
    rows, after = 0, 0
    started = time.perf_counter()
    while True:
        page = store.read_all(after, PAGE)
        if not page:
            return rows, time.perf_counter() - started
        rows += len(page)
        after = page[-1].position or 0


def timed(runs: int, fn: Callable[[], Any]) -> float:
    """Median milliseconds of `runs` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def query_timings(dsn: str, runs: int) -> list[dict[str, Any]]:
    year = {"from": f"{YEAR}-01-01", "to": f"{YEAR}-12-31"}
    conn = psycopg2.connect(dsn, application_name="bench-stats-query")
    out = []
    try:
        def run_table(name: str, group_by: list[str]) -> Callable[[], Any]:
            t, q = catalogue.parse(name, {**year, "group_by": group_by})

            def go() -> Any:
                with conn.cursor() as cur:
                    result = readmodel.table(cur, t, q)
                conn.rollback()
                return result
            return go

        def run_count(table: str) -> Callable[[], Any]:
            def go() -> Any:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT count(*) FROM {table} WHERE day BETWEEN %s AND %s",
                                (year["from"], year["to"]))
                    n = cur.fetchone()
                conn.rollback()
                return n
            return go

        for name, group_by, source in (("bookings", ["department"], "stats_bookings"),
                                       ("stops", ["department"], "stats_stops"),
                                       ("sellout", ["hospital", "department"], "stats_sessions"),
                                       ("share", ["hospital"], "stats_bookings")):
            ms = timed(runs, run_table(name, group_by))
            count_ms = timed(runs, run_count(source))
            rows = len(run_table(name, group_by)()["rows"])
            read = run_count(source)()[0]
            out.append({"query": f"{name} by {'+'.join(group_by)}, a year, every hospital", "ms": ms,
                        "count_ms": count_ms, "ratio": ms / count_ms if count_ms else None, "answer_rows": rows,
                        "rows_read": read, "source": source})
    finally:
        conn.close()
    return out


def independent_checks(events_dsn: str, figures_dsn: str) -> list[tuple[str, int, int]]:
    """(what, counted in the store, in the rebuilt figures) for every figure that has a count."""
    def one(dsn: str, sql: str) -> int:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
                return int(row[0] or 0) if row else 0
        finally:
            conn.close()

    def events(where: str, what: str = "count(*)") -> str:
        return f"SELECT {what} FROM es_events WHERE {where}"

    latest_quota = ("SELECT sum((q->>'web')::int + (q->>'phone')::int + (q->>'window')::int) FROM ("
                    "SELECT DISTINCT ON (data->>'session_id') data->'quota' AS q FROM es_events "
                    "WHERE type IN ('SessionScheduled', 'SessionQuotaChanged') "
                    "ORDER BY data->>'session_id', position DESC) latest")
    pairs = [
        ("AppointmentBooked = booked", events("type = 'AppointmentBooked'"),
         "SELECT sum(booked) FROM stats_bookings"),
        ("AppointmentBooked = lead-time samples", events("type = 'AppointmentBooked'"),
         "SELECT count(*) FROM stats_leads"),
        ("latest quotas = released", latest_quota, "SELECT sum(released) FROM stats_bookings"),
        ("cancelled, reason patient", events("type = 'AppointmentCancelled' AND data->>'reason' = 'patient'"),
         "SELECT sum(cancelled_patient) FROM stats_bookings"),
        ("cancelled, reason operator", events("type = 'AppointmentCancelled' AND data->>'reason' = 'operator'"),
         "SELECT sum(cancelled_operator) FROM stats_bookings"),
        ("cancelled, reason doctor_stop", events("type = 'AppointmentCancelled' AND data->>'reason' = 'doctor_stop'"),
         "SELECT sum(cancelled_hospital) FROM stats_bookings"),
        ("AppointmentMoved = moved", events("type = 'AppointmentMoved'"), "SELECT sum(moved) FROM stats_bookings"),
        ("AppointmentMoved = moved in", events("type = 'AppointmentMoved'"),
         "SELECT sum(moved_in) FROM stats_bookings"),
        ("AppointmentCheckedIn = checked in", events("type = 'AppointmentCheckedIn'"),
         "SELECT sum(checked_in) FROM stats_bookings"),
        ("AppointmentLapsed = no-show", events("type = 'AppointmentLapsed'"),
         "SELECT sum(no_show) FROM stats_bookings"),
        ("AppointmentRefunded = refunded", events("type = 'AppointmentRefunded'"),
         "SELECT sum(refunded) FROM stats_bookings"),
        ("SessionScheduled = sessions", events("type = 'SessionScheduled'"), "SELECT sum(sessions) FROM stats_stops"),
        ("DoctorStopApproved = stopped sessions", events("type = 'DoctorStopApproved'"),
         "SELECT sum(stopped_sessions) FROM stats_stops"),
        ("DoctorStopRequested = requested", events("type = 'DoctorStopRequested'"),
         "SELECT sum(stop_requested) FROM stats_stops"),
        ("DoctorStopRejected = rejected", events("type = 'DoctorStopRejected'"),
         "SELECT sum(stop_rejected) FROM stats_stops"),
        ("DoctorStopRetracted = withdrawn", events("type = 'DoctorStopRetracted'"),
         "SELECT sum(stop_withdrawn) FROM stats_stops"),
        ("SessionStopApplied moved+cancelled = affected",
         events("type = 'SessionStopApplied'", "sum((data->>'moved')::int + (data->>'cancelled')::int)"),
         "SELECT sum(affected) FROM stats_stops"),
        ("PatientRegistered = registrations", events("type = 'PatientRegistered'"),
         "SELECT sum(registrations) FROM stats_accounts"),
        ("PatientBanned = bans", events("type = 'PatientBanned'"), "SELECT sum(bans) FROM stats_accounts"),
        ("hospital-days reported = visit rows",
         events("type = 'OutpatientVisitsReported'", "count(DISTINCT (data->>'hospital_id', data->>'date'))"),
         "SELECT count(*) FROM stats_visits"),
    ]
    return [(what, one(events_dsn, a), one(figures_dsn, b)) for what, a, b in pairs]


def sample_validates(dsn: str) -> bool:
    """The generated payloads are real contract events (the rebuild validates every one too)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT data FROM es_events WHERE type = 'SessionScheduled' LIMIT 100")
            for (data,) in cur.fetchall():
                SessionScheduled.model_validate(data)
    finally:
        conn.close()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to store and replay (1,000,000)")
    parser.add_argument("--batch", type=int, default=2000, help="events per rebuild transaction (2000)")
    parser.add_argument("--runs", type=int, default=7, help="runs of each query; the median counts (7)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    events_dsn, figures_dsn = pg_dsn(f"bench_stats_{tag}_events"), pg_dsn(f"bench_stats_{tag}_figures")
    store = PostgresEventStore(events_dsn, pool_size=2)
    store.setup()
    started = time.perf_counter()
    try:
        conn = psycopg2.connect(events_dsn)
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            sync = cur.fetchone()[0]
            cur.execute("SHOW shared_buffers")
            buffers = cur.fetchone()[0]
        conn.close()
        print(f"stats rebuild bench: {args.events:,} events, batch {args.batch}, server synchronous_commit={sync} "
              f"shared_buffers={buffers}", flush=True)
        setup_s = load(events_dsn, args.events)
        print(f"set-up: {args.events:,} events stored with COPY in {setup_s:.1f} s", flush=True)

        read_before, read_before_s = read_everything(store)
        print(f"baseline read_all (before): {read_before / read_before_s:,.0f} events/s", flush=True)
        rebuilt_at = time.perf_counter()
        copy = rebuild.rebuild(store, figures_dsn, batch=args.batch, progress=_progress())
        rebuild_s = time.perf_counter() - rebuilt_at
        copy.db.close()
        print(f"rebuild: {args.events / rebuild_s:,.0f} positions/s", flush=True)
        read_after, read_after_s = read_everything(store)
        print(f"baseline read_all (after): {read_after / read_after_s:,.0f} events/s", flush=True)

        baseline = statistics.mean([read_before / read_before_s, read_after / read_after_s])
        rebuild_rate = args.events / rebuild_s
        ratio = rebuild_rate / baseline
        queries = query_timings(figures_dsn, args.runs)
        checks = [(f"rebuilt {what}", a == b, f"store {a:,}, figures {b:,}")
                  for what, a, b in independent_checks(events_dsn, figures_dsn)]
        checks.append(("read_all saw every event", read_before == read_after == args.events,
                       f"{read_before:,} / {read_after:,} of {args.events:,}"))
        checks.append(("payloads are contract events (sample of SessionScheduled)", sample_validates(events_dsn), ""))
        projected = _count(events_dsn, "SELECT count(*) FROM es_events WHERE type = ANY (%s)",
                           sorted(figures.event_types()))
    finally:
        store.close()
        drop_database(figures_dsn)
        drop_database(events_dsn)

    q = queries[0]
    record("stats_rebuild", "stats rebuild / read", rebuild_rate, baseline, TARGET_REBUILD, "ratio",
           value_unit="events/s", events=args.events, batch=args.batch)
    print()
    print(f"{'what':58} {'rate or time':>16} {'baseline':>16} {'ratio':>7}  target")
    print(f"{'rebuild from 0 (positions/s) vs read_all (events/s)':58} {rebuild_rate:16,.0f} {baseline:16,.0f} "
          f"{ratio:7.2f}  >= {TARGET_REBUILD} {'met' if ratio >= TARGET_REBUILD else 'NOT MET'}")
    for item in queries:
        target = ""
        if item is q:
            target = f"< {TARGET_QUERY_MS:.0f} ms {'met' if item['ms'] < TARGET_QUERY_MS else 'NOT MET'}"
        print(f"{item['query']:58} {item['ms']:13.1f} ms {item['count_ms']:13.1f} ms {item['ratio']:7.1f}  {target}")
    print(f"  (baselines: SELECT count(*) of the rows each query reads; {q['rows_read']:,} rows of "
          f"{q['source']} for the first, {q['answer_rows']} rows answered)")
    print(f"  events projected by stats: {projected:,} of {args.events:,} (the rest are the patients' own index "
          "and doctors' calendars); rebuild took "
          f"{rebuild_s:.1f} s, read_all {read_before_s:.1f} s / {read_after_s:.1f} s")
    print()
    print(f"{'check':58} {'':4} detail")
    for what, ok, detail in checks:
        print(f"{what:58} {'ok' if ok else 'NOT OK':6} {detail}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s (set-up {setup_s:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "events": args.events, "batch": args.batch, "setup_seconds": setup_s,
            "read_all_per_second": [read_before / read_before_s, read_after / read_after_s],
            "rebuild_per_second": rebuild_rate, "rebuild_over_read_all": ratio, "queries": queries,
            "checks": [{"what": w, "ok": ok, "detail": d} for w, ok, d in checks],
        }, indent=2), encoding="utf-8")
    return 0 if all(ok for _, ok, _ in checks) else 1


def _count(dsn: str, sql: str, types: list[str]) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, (types,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _progress(every: float = 10.0) -> rebuild.Progress:
    last = [time.monotonic()]

    def report(position: int, upto: int) -> None:
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            print(f"  rebuild: position {position:,} of {upto:,}", file=sys.stderr, flush=True)
    return report


if __name__ == "__main__":
    sys.exit(main())
