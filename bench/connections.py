"""PostgreSQL connections held by a whole platform: at rest, at peak under load, at rest after.

DESIGN.md section 5: a platform at rest holds <= 24. The pools grow under load (up to DB_POOL_SIZE
each) and the reaper of infra/db.py closes what stays idle longer than DB_IDLE_S, one per pool
kept; so the count after load must come back under the same bound.

Starts a platform of its own as `make run` does (scripts.launcher.Platform, scratch databases and
vhost: bench/flash_crowd.py's BenchPlatform; `--replicas N` runs N of each service), then:

1. at rest: once it is quiet, `--settle` seconds later;
2. at peak: `--patients` registrations, then 2 x patients bookings (bench/steady.py's sessions and
   plan, `--sessions` of them) through the gateway, while `pg_stat_activity` is sampled; the
   largest count seen;
3. at rest after load: once quiet again, the pools' idle time and a reaper tick later (plus
   `--margin`).

Each count is the rows of `pg_stat_activity` on the platform's databases, by database and by
process (a backend's client port is matched to the platform process that owns the socket). With
the default replicas the three counts are recorded (bench/results.py) for `make bench`'s summary;
with `--replicas N` > 1 they are printed only (the table's rows are the platform of `make run`).

    .venv/bin/python bench/connections.py                 # about 3 min
    .venv/bin/python bench/connections.py --replicas 2    # what each replica adds
    .venv/bin/python bench/connections.py --idle-s 100000 --after 18   # control: pools never shrink

`--idle-s` is passed to the platform as DB_IDLE_S; `--after` replaces the computed wait. Either
one differing from the defaults, like `--replicas`, prints without recording.

Exit code 1 when a registration or booking did not succeed (the load was not what it says).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench.flash_crowd import PG_URL, Answers, BenchPlatform, local_today  # noqa: E402
from bench.loadgen import post_json, run  # noqa: E402
from bench.results import record  # noqa: E402
from bench.steady import booking_plan, steady_data  # noqa: E402
from infra.db import DEFAULT_IDLE_S, REAPER_MAX_TICK_S  # noqa: E402
from scripts.launcher import SERVICES  # noqa: E402

TARGET = 24
NOT_OURS = "(not a platform process)"


def _owners(pids: dict[str, int]) -> dict[int, str]:
    """Local TCP port -> platform process name, from /proc/<pid>/fd sockets and /proc/net/tcp."""
    inodes: dict[str, str] = {}
    for name, pid in pids.items():
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    target = str(fd.readlink())
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = name
        except OSError:
            continue
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, inode = cols[1], cols[9]
            if inode in inodes:
                ports[int(local.rsplit(":", 1)[1], 16)] = inodes[inode]
    return ports


@dataclass
class Count:
    total: int = 0
    by_db: Counter[str] = field(default_factory=Counter)
    by_process: Counter[str] = field(default_factory=Counter)

    def lines(self, label: str) -> list[str]:
        return [f"PostgreSQL connections {label}: {self.total}",
                "  by database: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_db.items())),
                "  by process:  " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_process.items()))]


class Backends:
    """Counts the platform's backends on a connection of its own (to `postgres`, not counted)."""

    def __init__(self, bp: BenchPlatform) -> None:
        self.bp = bp
        self.conn = psycopg2.connect(f"{PG_URL}/postgres")
        self.conn.autocommit = True

    def rows(self) -> list[tuple[str, int]]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT datname, client_port FROM pg_stat_activity WHERE datname LIKE %s",
                        (self.bp.prefix + "\\_%",))
            return [(str(r[0]), int(r[1] or 0)) for r in cur.fetchall()]

    def count(self, rows: list[tuple[str, int]] | None = None) -> Count:
        rows = self.rows() if rows is None else rows
        owners = _owners(self.bp.platform.pids())
        return Count(len(rows), Counter(db.removeprefix(self.bp.prefix + "_") for db, _ in rows),
                     Counter(owners.get(port, NOT_OURS) for _, port in rows))

    def close(self) -> None:
        self.conn.close()


class PeakSampler:
    """Samples the count every `interval` seconds in a thread of its own while the load runs; at
    each new maximum it also attributes the backends to processes (ports change as pools shrink)."""

    def __init__(self, bp: BenchPlatform, interval: float = 0.2) -> None:
        self.counter = Backends(bp)
        self.interval = interval
        self.peak = Count()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.counter.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self.counter.rows()
            self.samples += 1
            if len(rows) > self.peak.total:
                self.peak = self.counter.count(rows)
            self._stop.wait(self.interval)


def per_process_table(counts: dict[str, Count]) -> list[str]:
    names = sorted({n for c in counts.values() for n in c.by_process})
    out = ["| process | " + " | ".join(counts) + " |", "|---|" + "---:|" * len(counts)]
    out += [f"| {n} | " + " | ".join(str(c.by_process.get(n, 0)) for c in counts.values()) + " |" for n in names]
    out.append("| **total** | " + " | ".join(f"**{c.total}**" for c in counts.values()) + " |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=1, help="replicas of each service (the relay stays one)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds at rest before the first count")
    parser.add_argument("--patients", type=int, default=200, help="registrations; each then books twice")
    parser.add_argument("--sessions", type=int, default=10, help="sessions booked (a multiple of 5)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S,
                        help="the platform's DB_IDLE_S (a huge one is the control: pools that never shrink)")
    parser.add_argument("--margin", type=float, default=3.0,
                        help="seconds after the idle time and a reaper tick before the count after load")
    parser.add_argument("--after", type=float, help="seconds idle before the count after load (default: "
                        "--idle-s + a reaper tick + --margin)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    if args.sessions < 5 or args.sessions % 5:
        parser.error("--sessions must be a positive multiple of 5")
    quota = 2 * args.patients  # no session fills: every booking must answer 201
    tick = min(REAPER_MAX_TICK_S, args.idle_s / 2)
    after_wait = args.after if args.after is not None else args.idle_s + tick + args.margin
    replicas = {svc: args.replicas for svc in SERVICES} if args.replicas > 1 else {}

    data, session_ids, dept_days = steady_data(args.sessions, quota, local_today())
    plan = booking_plan(args.patients, session_ids)
    print(f"connections: a platform with {args.replicas} replica(s) of each service; at rest, under "
          f"{args.patients} registrations + {len(plan)} bookings (concurrency {args.concurrency}), and "
          f"{after_wait:.0f} s after it (DB_IDLE_S {args.idle_s:g} s)")
    with BenchPlatform("conn", keep_logs=args.keep_logs, replicas=replicas,
                       env={"DB_IDLE_S": f"{args.idle_s:g}"}) as bp:
        print(f"platform: gateway {bp.address}, databases {bp.prefix}_*, vhost {bp.vhost}, "
              f"{len(bp.platform.pids())} processes")
        counter = Backends(bp)
        try:
            bp.wait_quiet()
            time.sleep(args.settle)
            at_rest = counter.count()
            print("\n".join(at_rest.lines("at rest")))

            bp.import_data(data)
            bp.wait_sessions_open(dept_days, {sid: quota for sid in session_ids})
            with PeakSampler(bp) as sampler:
                patient_ids, reg = bp.register_patients(args.patients, args.concurrency)
                reqs = [post_json("/api/v1/appointments", {"session_id": sid},
                                  {"Idempotency-Key": f"conn-{k:06d}-{bp.tag}", **bp.auth(patient_ids[p])})
                        for k, (p, sid) in enumerate(plan)]
                results, summary = run(bp.address, reqs, args.concurrency)
                under_load = counter.count()  # the moment the load ends, before any reaping
            booking = Answers.of(results, summary)
            print(f"registered {args.patients} in {reg.seconds:.1f} s; {summary.line('bookings')}")
            peak = sampler.peak if sampler.peak.total >= under_load.total else under_load
            print("\n".join(peak.lines(f"at peak under load ({sampler.samples} samples)")))

            quiet = bp.wait_quiet()
            time.sleep(after_wait)
            after = counter.count()
            print(f"quiet {quiet:.0f} s after the load, then {after_wait:.0f} s idle")
            print("\n".join(after.lines("at rest after load")))
        finally:
            counter.close()
        print()
        print("\n".join(per_process_table({"at rest": at_rest, "at peak": peak, "after load": after})))
        print()
        for label, c in (("at rest", at_rest), ("at rest after load", after)):
            print(f"{label}: {c.total}   target <= {TARGET}: {'met' if c.total <= TARGET else 'NOT MET'}")
        if args.replicas == 1 and args.idle_s == DEFAULT_IDLE_S and args.after is None:
            record("connections", "PostgreSQL connections at rest", float(at_rest.total), None, TARGET,
                   unit="count", better="lower", by_process=dict(at_rest.by_process))
            record("connections", "PostgreSQL connections at peak under load", float(peak.total), None, None,
                   unit="count", better="lower", by_process=dict(peak.by_process), patients=args.patients,
                   bookings=len(plan), concurrency=args.concurrency)
            record("connections", "PostgreSQL connections at rest after load", float(after.total), None, TARGET,
                   unit="count", better="lower", by_process=dict(after.by_process), waited_s=after_wait)
        else:
            print("(not recorded: the table's rows are the platform of `make run`, one of each, DB_IDLE_S "
                  f"{DEFAULT_IDLE_S:g})")
        ok = booking.by_kind["booked"] == len(plan)
        if not ok:
            print(f"bookings not all 201: {dict(booking.by_kind)}; first failures: {booking.error_samples}")
            bp.failed = True
        print(f"result: {'correct' if ok else 'INCORRECT'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
