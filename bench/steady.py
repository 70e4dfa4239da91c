"""Steady booking: many patients book across many sessions; throughput and p50/p99 as a ratio to
the bare nameko @http -> RPC echo measured in the same run.

    python bench/steady.py [--sessions 50] [--quota 100] [--patients 2000] [--concurrency 50]
                           [--n N | --seconds S] [--keep-logs]

Starts its own platform on scratch databases and a scratch vhost (see bench/flash_crowd.py,
whose harness it uses), imports `--sessions` sessions (a multiple of 5: 5 days x sessions/5
doctors, one morning session per doctor and day, doctors spread over up to 5 departments, web
quota `--quota`), registers `--patients` patients through the gateway (timed separately), then
sends bookings over `--concurrency` keep-alive connections: every patient books two sessions on
different days (within the default rules: 2 a day, 1 per department and day, 5 active), all
first bookings before all second ones, consecutive requests going to different sessions.

By default every patient's two bookings are sent (2 x patients requests); `--n` sends only the
first N of them, `--seconds` stops sending new ones after S seconds. The echo baseline gets the
same number of requests with the same bodies and concurrency (POST /echo).

Checks: every booking answered 201 (409 session_full only where a session's quota runs out),
no other answer, no timeout; from the store, no session's ledger holds more AppointmentBooked
than its quota, and each holds exactly the bookings answered 201. Targets (DESIGN.md section 5):
throughput >= 0.6 x the echo rate, p99 reported; CPU per booking <= 8 ms, summed over every
process of the CPU table (the platform's, PostgreSQL's and RabbitMQ's; not the load generator)
divided by the bookings per second. Both go to bench/results.py for `make bench`'s summary.
Exit code 1 when overbooked or any error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.flash_crowd import (  # noqa: E402
    Answers,
    BenchPlatform,
    echo_crowd,
    kind,
    local_today,
    met,
    phase_line,
    verdict,
)
from bench.loadgen import post_json, run_for  # noqa: E402
from bench.results import record  # noqa: E402

STEADY_TARGET = 0.6
CPU_TARGET_MS = 8.0
NOT_THE_PLATFORM = ("[load generator]", "[machine busy]")  # CPU table entries a booking does not cost
DAYS = 5
FIRST_DAY = 2  # default rules: open 7 days ahead at 08:00, close the day before at 16:00


def steady_data(sessions: int, quota: int, today: date) -> tuple[dict[str, Any], list[str], dict[str, set[str]]]:
    """Hospital, departments, doctors and sessions; session s is on day FIRST_DAY + s % 5 with
    doctor s // 5. Returns the import data, the session ids in index order and the days of each
    department (for waiting until they are visible)."""
    doctors = sessions // DAYS
    departments = min(5, doctors)
    data: dict[str, Any] = {
        "hospitals": [{"hospital_id": "bench-h1", "name": "压测医院", "level": "三级甲等"}],
        "departments": [{"department_id": f"bench-h1-d{k}", "hospital_id": "bench-h1", "name": f"压测科室{k}"}
                        for k in range(departments)],
        "doctors": [{"doctor_id": f"bench-h1-doc{k}", "hospital_id": "bench-h1",
                     "department_id": f"bench-h1-d{k % departments}", "name": f"压测医生{k}", "title": "主治医师",
                     "clinic_type": "general"} for k in range(doctors)],
        "sessions": [],
    }
    ids = []
    dept_days: dict[str, set[str]] = {}
    for s in range(sessions):
        day = today + timedelta(days=FIRST_DAY + s % DAYS)
        doc = s // DAYS
        sid = f"bench-s{s:03d}-doc{doc}-{day:%m%d}-am"
        ids.append(sid)
        dept_days.setdefault(f"bench-h1-d{doc % departments}", set()).add(day.isoformat())
        data["sessions"].append({"session_id": sid, "doctor_id": f"bench-h1-doc{doc}", "date": day.isoformat(),
                                 "period": "morning", "start": "08:00", "end": "11:30", "capacity": quota,
                                 "quota": {"web": quota, "phone": 0, "window": 0}, "fee": "20.00"})
    return data, ids, dept_days


def booking_plan(patients: int, session_ids: list[str]) -> list[tuple[int, str]]:
    """(patient, session) of each booking, 2 x patients of them: booking k is patient k % P's
    (k // P)-th, on session (2p + k // P) % S, so a patient's two are on consecutive sessions
    (different days) and consecutive requests go to different sessions."""
    n = len(session_ids)
    return [(k % patients, session_ids[(2 * (k % patients) + k // patients) % n]) for k in range(2 * patients)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50, help="a multiple of 5")
    parser.add_argument("--quota", type=int, default=100, help="web quota of each session")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--n", type=int, help="send only the first N bookings (default: 2 x patients)")
    limit.add_argument("--seconds", type=float, help="stop sending new bookings after this many seconds")
    parser.add_argument("--register-concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request before it counts as a timeout")
    parser.add_argument("--keep-logs", action="store_true", help="keep .run/bench-steady-*/logs after a good run")
    args = parser.parse_args()
    if args.sessions < 5 or args.sessions % DAYS:
        parser.error("--sessions must be a positive multiple of 5")

    data, session_ids, dept_days = steady_data(args.sessions, args.quota, local_today())
    n_sessions = len(session_ids)
    plan = booking_plan(args.patients, session_ids)
    if args.n is not None:
        plan = plan[:args.n]
    print(f"steady booking: {len(plan)} bookings by {args.patients} patients across {n_sessions} sessions "
          f"(web quota {args.quota}, {n_sessions // DAYS} doctors, days +{FIRST_DAY}..+{FIRST_DAY + DAYS - 1}), "
          f"concurrency {args.concurrency}" + (f", stop after {args.seconds:.0f} s" if args.seconds else ""))

    with BenchPlatform("steady", keep_logs=args.keep_logs) as bp:
        print(f"platform: gateway {bp.address}, databases {bp.prefix}_*, vhost {bp.vhost}")
        bp.import_data(data)
        bp.wait_sessions_open(dept_days, {sid: args.quota for sid in session_ids})
        patient_ids, reg = bp.register_patients(args.patients, args.register_concurrency)
        print(f"registered {args.patients} patients in {reg.seconds:.1f} s ({reg.rate:.0f} req/s, p50 "
              f"{reg.p50_ms:.0f} ms, p99 {reg.p99_ms:.0f} ms, concurrency {args.register_concurrency}; "
              "not part of the timed run)")
        bp.timings["quiet before run"] = bp.wait_quiet()

        reqs = [post_json("/api/v1/appointments", {"session_id": sid},
                          {"Idempotency-Key": f"steady-{k:06d}-{bp.tag}", **bp.auth(patient_ids[p])})
                for k, (p, sid) in enumerate(plan)]
        cpu_before = bp.cpu_snapshot()
        sent, results, summary = run_for(bp.address, reqs, args.concurrency, args.timeout,
                                         args.seconds if args.seconds else float("inf"))
        cpu_after = bp.cpu_snapshot()
        cpu = bp.cpu_line(cpu_before, cpu_after, summary.seconds)
        cores = bp.cpu_cores(cpu_before, cpu_after, summary.seconds)
        booking = Answers.of(results, summary)
        bp.timings["bookings"] = summary.seconds

        from infra.eventstore import PostgresEventStore

        store = PostgresEventStore(bp.dsn("events"), pool_size=1)
        try:
            stored = {sid: [e for e in store.read_stream(f"ledger-{sid}") if e.type == "AppointmentBooked"]
                      for sid in session_ids}
        finally:
            store.close()

        bp.timings["quiet before echo"] = bp.wait_quiet()
        t = time.perf_counter()
        echo = echo_crowd(bp.amqp, [("POST", "/echo", reqs[i][2], reqs[i][3]) for i in sent], args.concurrency,
                          args.timeout)
        bp.timings["echo (start+warm-up+run)"] = time.perf_counter() - t
        logs = bp.log_report()

        # --- checks ----------------------------------------------------------------------
        asked: Counter[str] = Counter()
        answered_booked: Counter[str] = Counter()
        answered_full: Counter[str] = Counter()
        for i, r in zip(sent, results, strict=True):
            sid = plan[i][1]
            asked[sid] += 1
            if kind(r) == "booked":
                answered_booked[sid] += 1
                if json.loads(r.body).get("session_id", sid) != sid:
                    answered_booked["(answer for another session)"] += 1
            elif kind(r) == "full":
                answered_full[sid] += 1
        over = {sid: len(evs) for sid, evs in stored.items() if len(evs) > args.quota}
        mismatch = {sid: (len(stored[sid]), answered_booked[sid]) for sid in session_ids
                    if len(stored[sid]) != answered_booked[sid]}
        dup_seq = [sid for sid, evs in stored.items()
                   if len({e.data["sequence_number"] for e in evs}) != len(evs)]
        wrong_full = {sid: answered_full[sid] for sid in session_ids
                      if answered_full[sid] and answered_booked[sid] < args.quota}
        expected_booked = sum(min(asked[sid], args.quota) for sid in session_ids)
        other = {k: v for k, v in booking.by_kind.items() if k not in ("booked", "full", "timeout", "conn_error")}
        checks = {
            "booked": booking.by_kind["booked"] == expected_booked,
            "full": not wrong_full,
            "other": not other,
            "timeouts": booking.timeouts == 0,
            "conn": booking.conn_errors == 0,
            "over": not over,
            "store": not mismatch and not dup_seq,
        }
        total_stored = sum(len(v) for v in stored.values())
        s, e = booking.summary, echo.summary
        rate_ratio = s.rate / e.rate if e.rate else 0.0
        p99_ratio = s.p99_ms / e.p99_ms if e.p99_ms else 0.0
        p50_ratio = s.p50_ms / e.p50_ms if e.p50_ms else 0.0
        per_session = [len(v) for v in stored.values()]
        booked_rate = booking.by_kind["booked"] / s.seconds if s.seconds else 0.0
        platform_cores = sum(v for k, v in cores.items() if k not in NOT_THE_PLATFORM)
        cpu_ms = platform_cores / booked_rate * 1000 if booked_rate else float("inf")

        print()
        print(f"phases: {phase_line(bp.timings)}")
        print()
        print("| check | got | expected | |")
        print("|---|---:|---:|---|")
        print(f"| booked (201) | {booking.by_kind['booked']} | {expected_booked} | {verdict(checks['booked'])} |")
        print(f"| full (409 session_full) where a session still had room | {sum(wrong_full.values())} | 0 | "
              f"{verdict(checks['full'])} |")
        print(f"| other answers | {sum(other.values())} {dict(other) or ''} | 0 | {verdict(checks['other'])} |")
        print(f"| timeouts (> {args.timeout:.0f} s) | {booking.timeouts} | 0 | {verdict(checks['timeouts'])} |")
        print(f"| connection errors | {booking.conn_errors} | 0 | {verdict(checks['conn'])} |")
        print(f"| store: sessions over quota {args.quota} | {len(over)} {over or ''} | 0 | {verdict(checks['over'])} |")
        print(f"| store: AppointmentBooked total (per session min/max {min(per_session)}/{max(per_session)}) | "
              f"{total_stored} | {booking.by_kind['booked']} (answered 201) | {verdict(checks['store'])} |")
        if mismatch or dup_seq:
            print(f"  store vs answers differ: {dict(list(mismatch.items())[:10])}; duplicate sequence numbers in "
                  f"{dup_seq[:10]}")
        print()
        print("| run | requests | seconds | req/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| steady POST /api/v1/appointments | {s.count} | {s.seconds:.2f} | {s.rate:.0f} | "
              f"{s.p50_ms:.1f} | {s.p99_ms:.1f} |")
        print(f"| echo baseline POST /echo (@http -> RPC) | {e.count} | {e.seconds:.2f} | {e.rate:.0f} | "
              f"{e.p50_ms:.1f} | {e.p99_ms:.1f} |")
        print()
        print(cpu)
        print(f"throughput steady / echo = {s.rate:.0f} / {e.rate:.0f} = {rate_ratio:.2f}   "
              f"target >= {STEADY_TARGET}: {met(rate_ratio >= STEADY_TARGET)}")
        print(f"latency steady / echo: p50 {p50_ratio:.2f} x, p99 {p99_ratio:.2f} x (reported, no target)")
        print(f"CPU per booking = {platform_cores:.2f} cores (every process above but the load generator) / "
              f"{booked_rate:.0f} bookings/s = {cpu_ms:.1f} ms   target <= {CPU_TARGET_MS:g} ms: "
              f"{met(cpu_ms <= CPU_TARGET_MS)}")
        size = {"sessions": n_sessions, "bookings": s.count, "concurrency": args.concurrency}
        record("steady", "steady booking / echo", s.rate, e.rate, STEADY_TARGET, "ratio", value_unit="req/s",
               p99_ms=s.p99_ms, echo_p99_ms=e.p99_ms, **size)
        record("steady", "CPU per steady booking", cpu_ms, None, CPU_TARGET_MS, "ms", better="lower",
               cores=round(platform_cores, 3), bookings_per_s=booked_rate, **size)
        if echo.by_kind.keys() - {"200"} or echo.summary.errors:
            print(f"WARNING: the echo baseline itself had failures: {dict(echo.by_kind)} {echo.error_samples}")
        if booking.error_samples:
            print("first failures: " + " | ".join(booking.error_samples))
        print("platform logs (warnings / errors):")
        print("\n".join(logs))
        correct = all(checks.values())
        if over:
            print(f"OVERBOOKED: {over}")
        print(f"result: {'correct' if correct else 'INCORRECT'}")
        if not correct:
            bp.failed = True  # keep the logs
        return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
