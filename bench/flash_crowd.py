"""Flash crowd: N distinct patients book one session with S web slots at the same moment.

    python bench/flash_crowd.py [--patients 5000] [--slots 30] [--concurrency 200] [--keep-logs]

Starts its own platform (every service its own process, scripts.launcher.Platform) on scratch
databases and a scratch RabbitMQ vhost, imports one open session, registers the patients through
the gateway (timed separately, not part of the crowd), then sends every patient's booking at once
over `--concurrency` keep-alive connections. Once the platform is quiet again it reads the RSS of
every platform process. Afterwards the same crowd shape (same count, same bodies, same concurrency)
goes to two baselines (bench/rpc_echo.py's processes): the bare nameko @http answering at once, and
the @http -> RPC echo.

Checks (DESIGN.md section 5): exactly S answers 201, N - S answers 409 session_full, nothing else,
no timeouts; exactly S AppointmentBooked events in the store's ledger stream. Targets: the crowd's
rate >= 3 x the echo rate and >= 0.6 x the bare @http; registration >= 60/s; every process <= 200 MB
RSS after the crowd (bench/results.py rows for `make bench`). Exit code 1 when overbooked or any
error / timeout. Everything it created (processes, databases, vhost, and the run directory unless
--keep-logs) is removed at the end, also on failure or Ctrl-C.

The harness part of this file (BenchPlatform and friends) is shared with bench/steady.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # infra.db imports eventlet.patcher

import psycopg2  # noqa: E402

from bench.loadgen import Request, Result, Summary, get, post_json, proved, run  # noqa: E402
from bench.profile import Profiler  # noqa: E402
from bench.results import record  # noqa: E402
from bench.rpc_echo import EchoProcesses, _free_port, add_vhost, delete_vhost  # noqa: E402
from scripts.launcher import Platform  # noqa: E402

PG_URL = os.environ.get("PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
AMQP_BASE = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
FLASH_TARGET = 3.0           # x the @http -> RPC echo
BARE_TARGET = 0.6            # x the bare @http answering at once
REGISTRATION_TARGET = 60.0   # registrations per second at concurrency 50
RSS_TARGET_MB = 200.0        # every service process after the crowd


# ============================================================================================
# harness (also used by bench/steady.py)
# ============================================================================================

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def resident_id(i: int) -> str:
    """The i-th synthetic resident ID: region 130102, a birth date from 1950 on, GB 11643 check char.
    Distinct for i < 18,000 x 900; every holder is an adult."""
    born = date(1950, 1, 1) + timedelta(days=i % 18000)
    body = f"130102{born:%Y%m%d}{100 + (i // 18000) % 900:03d}"
    return body + _CHECK[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


def phone(i: int) -> str:
    """The i-th mobile number, distinct for every i (one patient per number)."""
    return f"1{3 + (i // 10**9) % 7}{i % 10**9:09d}"


def local_today() -> date:
    """Today in the hospitals' time zone (booking windows are computed there)."""
    return datetime.now(HOSPITAL_TZ).date()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000 if s else 0.0


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def rss_mb(pid: int) -> float | None:
    """VmRSS of a live process in MB (MiB), None when it is gone or has no such line."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    return None


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


@dataclass
class Answers:
    """A crowd's answers sorted into what the checks need."""

    results: list[Result]
    summary: Summary
    by_kind: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    conn_errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, results: list[Result], summary: Summary) -> Answers:
        a = cls(results, summary)
        for r in results:
            a.by_kind[kind(r)] += 1
            if r.error:
                if "Timeout" in r.error:
                    a.timeouts += 1
                else:
                    a.conn_errors += 1
            if (r.error or r.status not in (200, 201, 409)) and len(a.error_samples) < 5:
                a.error_samples.append(r.error or f"{r.status} {r.body[:300].decode('utf-8', 'replace')}")
        return a

    def latency(self, k: str) -> tuple[float, float]:
        lat = [r.latency for r in self.results if kind(r) == k]
        return pct(lat, 0.5), pct(lat, 0.99)


def kind(r: Result) -> str:
    """201 -> "booked"; 409 session_full -> "full"; otherwise "<status>:<error code>"."""
    if r.error:
        return "timeout" if "Timeout" in r.error else "conn_error"
    if r.status == 201:
        return "booked"
    code = ""
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        code = json.loads(r.body)["error"]["code"]
    if r.status == 409 and code == "session_full":
        return "full"
    return f"{r.status}:{code}" if code else str(r.status)


class BenchPlatform:
    """A whole platform of its own: scratch databases (APPT_DB_PREFIX), a scratch vhost, its own
    ports and run directory. Torn down on exit whatever happened."""

    def __init__(self, label: str, keep_logs: bool = False, replicas: dict[str, int] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"appt_bench_{label}_{self.tag}"
        self.vhost = self.prefix
        self.amqp = AMQP_BASE.rstrip("/") + "/" + self.vhost
        self.run_dir = ROOT / ".run" / f"bench-{label}-{self.tag}"
        self.keep_logs = keep_logs
        self.failed = False
        self.platform = Platform(
            run_dir=self.run_dir,
            # The load comes from one address: lift the per-client limit (the per-patient one stays).
            env={"APPT_DB_PREFIX": self.prefix, "AMQP_URI": self.amqp, "LOG_FORMAT": "json",
                 "RATE_PER_CLIENT": "1000000", "RATE_BURST_CLIENT": "1000000",
                 "SMS_PER_CLIENT": "1000000", "SMS_BURST_CLIENT": "1000000",
                 "METRICS_ADDRESS": "",  # none: `make run` serves /metrics on its fixed ports
                 **(env or {})},
            # every port its own: a platform of `make run` may hold the default ones
            gateway_address=f"127.0.0.1:{_free_port()}",
            his_port=_free_port(), his_listen_port=_free_port(), his_http_port=_free_port(),
            replicas=dict(replicas or {}),
        )
        self.address = self.platform.gateway_address
        self.timings: dict[str, float] = {}
        self._old_term: Any = None

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> BenchPlatform:
        self._old_term = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._ensure_vhost()
            t = time.perf_counter()
            self.platform.start(wait=120)
            self.timings["platform start"] = time.perf_counter() - t
            # the demo staff accounts: the platform admin reads the verification codes from the outbox
            subprocess.run([sys.executable, "-m", "services.gateway.staff", "demo"], cwd=ROOT,
                           env=self.platform.process_env(), check=True, capture_output=True, timeout=120)
        except BaseException:
            self.failed = True
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.failed = True
        t = time.perf_counter()
        problems = []
        for what, step in (("stop processes", self.platform.stop), ("drop databases", self._drop_databases),
                           ("delete vhost", self._delete_vhost)):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - try every step, report what failed
                problems.append(f"{what}: {type(e).__name__}: {e}")
        if self.keep_logs or self.failed:
            print(f"logs kept in {self.run_dir / 'logs'}")
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        print(f"teardown: processes stopped, databases {self.prefix}_* dropped, vhost {self.vhost} deleted "
              f"({time.perf_counter() - t:.1f} s)" + (f"; PROBLEMS: {problems}" if problems else ""))
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)

    def _ensure_vhost(self) -> None:
        add_vhost(self.vhost)

    def _delete_vhost(self) -> None:
        delete_vhost(self.vhost)

    def _drop_databases(self) -> None:
        conn = psycopg2.connect(f"{PG_URL}/postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database")
                names = [r[0] for r in cur.fetchall() if r[0].startswith(self.prefix + "_")]
                for name in names:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    # --- data -----------------------------------------------------------------------------

    def dsn(self, database: str) -> str:
        return f"{PG_URL}/{self.prefix}_{database}"

    def import_data(self, data: dict[str, Any]) -> None:
        """Through the schedule service's RPC, with the importer `make run` uses."""
        t = time.perf_counter()
        path = self.run_dir / "bench-import.json"
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "services.schedule.importer", str(path)], cwd=ROOT,
                              env=self.platform.process_env(), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
        self.timings["import"] = time.perf_counter() - t

    def wait_sessions_open(self, department_days: dict[str, set[str]], expected: dict[str, int],
                           timeout: float = 120.0) -> None:
        """Until every expected session shows as open at the gateway with its full web quota
        (schedule's events reach booking through the relay and the broker)."""
        t = time.perf_counter()
        deadline = time.monotonic() + timeout
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            seen = {}
            reqs = [get(f"/api/v1/departments/{dept}/schedule?from={min(days)}&to={max(days)}")
                    for dept, days in department_days.items()]
            results, _ = run(self.address, reqs, min(8, len(reqs)), timeout=30)
            for r in results:
                if r.status == 200:
                    for s in json.loads(r.body).get("sessions", []):
                        if s["state"] == "open":
                            seen[s["session_id"]] = s["remaining"]["web"]
            if all(seen.get(sid) == n for sid, n in expected.items()):
                self.timings["sessions visible"] = time.perf_counter() - t
                return
            time.sleep(0.5)
        missing = {sid: seen.get(sid) for sid, n in expected.items() if seen.get(sid) != n}
        raise RuntimeError(f"sessions not open with their quota after {timeout:.0f}s: {list(missing.items())[:5]}")

    def register_patients(self, n: int, concurrency: int) -> tuple[list[str], Summary]:
        """n distinct patients through POST /api/v1/patients; returns their ids in order."""
        t = time.perf_counter()
        people = proved(self.address, [{"name": f"压测患者{i}", "id_number": resident_id(i), "phone": phone(i),
                                        "password": f"bench-pw-{i:06d}"} for i in range(n)], concurrency)
        self.timings["prove phones"] = time.perf_counter() - t
        reqs = [post_json("/api/v1/patients", person) for person in people]
        results, summary = run(self.address, reqs, concurrency, timeout=60)
        self.timings["register patients"] = summary.seconds
        bad = [(i, r) for i, r in enumerate(results) if r.status != 201]
        if bad:
            i, r = bad[0]
            raise RuntimeError(f"{len(bad)} of {n} registrations failed; statuses {summary.statuses}; first "
                               f"(patient {i}): {r.error or r.body[:300]!r}")
        answers = [json.loads(r.body) for r in results]
        self.tokens = {a["patient_id"]: a["token"] for a in answers}  # registration answers a login session
        return [a["patient_id"] for a in answers], summary

    def auth(self, patient_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[patient_id]}"}

    # --- measuring ------------------------------------------------------------------------

    def wait_quiet(self, threshold: float = 0.15, max_wait: float = 45.0) -> float:
        """Wait until the platform's processes together use < threshold of one core (the relay,
        notification, HIS and stats work behind the last run must not slow the next one)."""
        t = time.perf_counter()
        pids = list(self.platform.pids().values())
        hz = os.sysconf("SC_CLK_TCK")
        while time.perf_counter() - t < max_wait:
            before = _cpu_ticks(pids)
            time.sleep(1.0)
            if (_cpu_ticks(pids) - before) / hz < threshold:
                break
        return time.perf_counter() - t

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each platform process, by PostgreSQL and by RabbitMQ (the
        last two: every process of theirs on this machine, other users' work included), by this
        script (the load generator) and the machine's busy time (all cores, everyone's)."""
        hz = os.sysconf("SC_CLK_TCK")
        out = {name: _cpu_ticks([pid]) / hz for name, pid in self.platform.pids().items()}
        servers: dict[str, list[int]] = {"postgres": [], "rabbitmq": []}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    comm = (d / "comm").read_text().strip()
                    if comm == "postgres":
                        servers["postgres"].append(int(d.name))
                    elif comm.startswith("beam"):
                        servers["rabbitmq"].append(int(d.name))
        for name, pids in servers.items():
            out[f"[{name}]"] = _cpu_ticks(pids) / hz
        out["[load generator]"] = _cpu_ticks([os.getpid()]) / hz
        with contextlib.suppress(OSError):
            cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            out["[machine busy]"] = (sum(cpu) - cpu[3] - cpu[4]) / hz
        return out

    def db_snapshot(self) -> dict[str, tuple[int, int, int]]:
        """Per database of this platform: transactions (committed + rolled back), rows written
        (inserted + updated + deleted) and rows returned, so far (pg_stat_database)."""
        conn = psycopg2.connect(f"{PG_URL}/postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname, xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, "
                            "tup_returned FROM pg_stat_database WHERE datname LIKE %s", (self.prefix + "\\_%",))
                return {r[0][len(self.prefix) + 1:]: (int(r[1]), int(r[2]), int(r[3])) for r in cur.fetchall()}
        finally:
            conn.close()

    def pg_cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by the PostgreSQL backends of this platform, by database (a
        backend that ends between two snapshots is not counted; the pools keep theirs under load)."""
        conn = psycopg2.connect(f"{PG_URL}/postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pid, datname FROM pg_stat_activity WHERE datname LIKE %s", (self.prefix + "\\_%",))
                rows = cur.fetchall()
        finally:
            conn.close()
        hz = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for pid, datname in rows:
            name = datname[len(self.prefix) + 1:]
            out[name] = out.get(name, 0.0) + _cpu_ticks([int(pid)]) / hz
        return out

    @staticmethod
    def db_line(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]], per: int) -> str:
        """What `per` operations cost each database between two snapshots: transactions and rows
        written per operation (pg_stat_database is updated when a backend reports, about every
        second: take the second snapshot a little after the load)."""
        parts = []
        for name in sorted(after, key=lambda n: -(after[n][0] - before.get(n, (0, 0, 0))[0])):
            b = before.get(name, (0, 0, 0))
            xacts, writes = after[name][0] - b[0], after[name][1] - b[1]
            if xacts and per:
                parts.append(f"{name} {xacts / per:.1f} xact/{writes / per:.1f} rows")
        return "PostgreSQL per booking (transactions / rows written, by database): " + ", ".join(parts)

    @staticmethod
    def cpu_cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
        """Cores each entry of two snapshots kept busy over `seconds`, busiest first. PostgreSQL
        backends that ended in between are not counted."""
        used = {k: (after.get(k, 0.0) - v) / seconds for k, v in before.items() if k in after and seconds}
        return dict(sorted(used.items(), key=lambda kv: -kv[1]))

    @staticmethod
    def cpu_line(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
        """CPU seconds per process between two snapshots, as cores busy over the timed part."""
        parts = [f"{k} {v:.2f}" for k, v in BenchPlatform.cpu_cores(before, after, seconds).items() if v >= 0.01]
        return "CPU during the timed part, in cores (2 on this machine): " + ", ".join(parts)

    def rss(self) -> dict[str, float]:
        """VmRSS in MB of every platform process (the launcher's pid files), largest first."""
        got = {name: rss_mb(pid) for name, pid in self.platform.pids().items()}
        return dict(sorted(((k, v) for k, v in got.items() if v is not None), key=lambda kv: -kv[1]))

    def log_report(self, limit: int = 6) -> list[str]:
        """Warnings, errors and tracebacks in the platform's logs, counted by file and event."""
        out = []
        for log in sorted((self.run_dir / "logs").glob("*.log")):
            counts: Counter[str] = Counter()
            samples: dict[str, str] = {}
            traceback_lines = 0
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Traceback"):
                    traceback_lines += 1
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                level = str(rec.get("level", "")).lower()
                if level in ("warning", "error", "critical", "exception"):
                    key = f"{level} {rec.get('event')}"
                    counts[key] += 1
                    samples.setdefault(key, line[:400])
            if counts or traceback_lines:
                out.append(f"  {log.name}: " + ", ".join(f"{k} x{v}" for k, v in counts.most_common())
                           + (f", plain-text tracebacks x{traceback_lines}" if traceback_lines else ""))
                out += [f"      e.g. {s}" for s in list(samples.values())[:limit]]
        return out or ["  no warnings, errors or tracebacks in any log"]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def echo_crowd(amqp: str, reqs: list[Request], concurrency: int, timeout: float) -> Answers:
    """The bare nameko @http -> one RPC -> echo service through the same broker, same crowd shape."""
    return baseline_crowds(amqp, reqs, concurrency, timeout, bare=False)["echo"]


def baseline_crowds(amqp: str, reqs: list[Request], concurrency: int, timeout: float,
                    bare: bool = True) -> dict[str, Answers]:
    """The same crowd (its bodies and headers, POST) sent to the echo processes: "bare" to the
    nameko @http that answers at once (POST /plain), then "echo" to the @http -> one RPC -> echo
    service through the same broker (POST /echo)."""
    out = {}
    with EchoProcesses(amqp) as echo:
        run(echo.address, [get("/echo")] * 200, concurrency)  # warm up connections and workers
        for name, path in (("bare", "/plain"), ("echo", "/echo")):
            if name == "bare" and not bare:
                continue
            results, summary = run(echo.address, [(m, path, b, h) for (m, _, b, h) in reqs], concurrency,
                                   timeout=timeout)
            out[name] = Answers.of(results, summary)
    return out


def phase_line(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())


# ============================================================================================
# the flash crowd
# ============================================================================================

SESSION = "bench-flash-d3-am"


def flash_data(slots: int, day: date) -> dict[str, Any]:
    return {
        "hospitals": [{"hospital_id": "bench-h1", "name": "压测医院", "level": "三级甲等"}],
        "departments": [{"department_id": "bench-h1-d1", "hospital_id": "bench-h1", "name": "心血管内科"}],
        "doctors": [{"doctor_id": "bench-h1-doc1", "hospital_id": "bench-h1", "department_id": "bench-h1-d1",
                     "name": "压测医生", "title": "主任医师", "clinic_type": "expert"}],
        "sessions": [{"session_id": SESSION, "doctor_id": "bench-h1-doc1", "date": day.isoformat(),
                      "period": "morning", "start": "08:00", "end": "11:30", "capacity": slots,
                      "quota": {"web": slots, "phone": 0, "window": 0}, "fee": "50.00"}],
    }


def record_rows(flash: Answers, echo: Answers, bare: Answers, reg: Summary, rss: dict[str, float],
                args: argparse.Namespace) -> None:
    """The flash crowd's rows of the performance table (bench/results.py; `make bench` sums up)."""
    size = {"patients": args.patients, "slots": args.slots, "concurrency": args.concurrency}
    rate = flash.summary.rate
    record("flash_crowd", "flash crowd / echo", rate, echo.summary.rate, FLASH_TARGET, "ratio",
           value_unit="req/s", **size)
    record("flash_crowd", "flash crowd / bare @http", rate, bare.summary.rate, BARE_TARGET, "ratio",
           value_unit="req/s", **size)
    record("flash_crowd", "patient registration", reg.rate, None, REGISTRATION_TARGET, "/s",
           concurrency=args.register_concurrency, patients=args.patients)
    for name in ("gateway", "booking"):
        if name in rss:
            record("flash_crowd", f"RSS {name} after flash crowd", rss[name], None, RSS_TARGET_MB, "MB",
                   better="lower", process=name)
    others = {k: v for k, v in rss.items() if k not in ("gateway", "booking")}
    if others:
        name = max(others, key=lambda k: others[k])
        record("flash_crowd", "RSS largest other process after flash crowd", others[name], None, RSS_TARGET_MB,
               "MB", better="lower", process=name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--slots", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--register-concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request before it counts as a timeout")
    parser.add_argument("--keep-logs", action="store_true", help="keep .run/bench-flash-*/logs after a good run")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy profiles of every platform process during the crowd (bench/profile.py)")
    args = parser.parse_args()
    if args.slots >= args.patients:
        parser.error("--slots must be smaller than --patients")

    day = local_today() + timedelta(days=3)  # default rules: open 7 days ahead 08:00, close the day before 16:00
    print(f"flash crowd: {args.patients} patients -> 1 session ({SESSION}, {day}) with {args.slots} web slots, "
          f"concurrency {args.concurrency}, timeout {args.timeout:.0f} s")
    with BenchPlatform("flash", keep_logs=args.keep_logs) as bp:
        print(f"platform: gateway {bp.address}, databases {bp.prefix}_*, vhost {bp.vhost}")
        bp.import_data(flash_data(args.slots, day))
        bp.wait_sessions_open({"bench-h1-d1": {day.isoformat()}}, {SESSION: args.slots})
        patient_ids, reg = bp.register_patients(args.patients, args.register_concurrency)
        print(f"registered {args.patients} patients in {reg.seconds:.1f} s ({reg.rate:.0f} req/s, p50 "
              f"{reg.p50_ms:.0f} ms, p99 {reg.p99_ms:.0f} ms, concurrency {args.register_concurrency}; "
              "not part of the crowd)")
        bp.timings["quiet before crowd"] = bp.wait_quiet()

        crowd = [post_json("/api/v1/appointments", {"session_id": SESSION},
                           {"Idempotency-Key": f"flash-{i:06d}-{bp.tag}", **bp.auth(pid)})
                 for i, pid in enumerate(patient_ids)]
        with Profiler(bp.platform.pids(), args.profile) if args.profile else contextlib.nullcontext():
            cpu_before = bp.cpu_snapshot()
            results, summary = run(bp.address, crowd, args.concurrency, timeout=args.timeout)
            cpu = bp.cpu_line(cpu_before, bp.cpu_snapshot(), summary.seconds)
        flash = Answers.of(results, summary)
        bp.timings["crowd"] = summary.seconds

        from infra.eventstore import PostgresEventStore

        store = PostgresEventStore(bp.dsn("events"), pool_size=1)
        try:
            ledger = store.read_stream(f"ledger-{SESSION}")
        finally:
            store.close()
        stored = [e for e in ledger if e.type == "AppointmentBooked"]
        answered = [json.loads(r.body) for r in results if kind(r) == "booked"]

        bp.timings["quiet before echo"] = bp.wait_quiet()
        rss = bp.rss()  # after the crowd, with its background work (relay, SMS, HIS, stats) done
        t = time.perf_counter()
        baselines = baseline_crowds(bp.amqp, crowd, args.concurrency, args.timeout)
        bare, echo = baselines["bare"], baselines["echo"]
        bp.timings["bare + echo (start+warm-up+run)"] = time.perf_counter() - t
        logs = bp.log_report()

        # --- report ----------------------------------------------------------------------
        full_expected = args.patients - args.slots
        other = {k: v for k, v in flash.by_kind.items() if k not in ("booked", "full", "timeout", "conn_error")}
        seqs = sorted(a.get("sequence_number") for a in answered)
        stored_seqs = sorted(e.data["sequence_number"] for e in stored)
        stored_patients = {e.data["patient_id"] for e in stored}
        answered_ids = {a.get("appointment_id") for a in answered}
        stored_ids = {e.data["appointment_id"] for e in stored}
        checks = {
            "booked": flash.by_kind["booked"] == args.slots,
            "full": flash.by_kind["full"] == full_expected,
            "other": not other,
            "timeouts": flash.timeouts == 0,
            "conn": flash.conn_errors == 0,
            "store": len(stored) == args.slots,
            "seq": stored_seqs == list(range(1, args.slots + 1)) and seqs == stored_seqs,
            "same": answered_ids == stored_ids and len(stored_patients) == len(stored),
        }
        rate_ratio = flash.summary.rate / echo.summary.rate if echo.summary.rate else 0.0
        bare_ratio = flash.summary.rate / bare.summary.rate if bare.summary.rate else 0.0
        b50, b99 = flash.latency("booked")
        f50, f99 = flash.latency("full")

        print()
        print(f"phases: {phase_line(bp.timings)}")
        print()
        print("| check | got | expected | |")
        print("|---|---:|---:|---|")
        print(f"| booked (201) | {flash.by_kind['booked']} | {args.slots} | {verdict(checks['booked'])} |")
        print(f"| full (409 session_full) | {flash.by_kind['full']} | {full_expected} | {verdict(checks['full'])} |")
        print(f"| other answers | {sum(other.values())} {dict(other) or ''} | 0 | {verdict(checks['other'])} |")
        print(f"| timeouts (> {args.timeout:.0f} s) | {flash.timeouts} | 0 | {verdict(checks['timeouts'])} |")
        print(f"| connection errors | {flash.conn_errors} | 0 | {verdict(checks['conn'])} |")
        print(f"| store: AppointmentBooked in ledger-{SESSION} | {len(stored)} | {args.slots} | "
              f"{verdict(checks['store'])} |")
        print(f"| sequence numbers 1..{args.slots}, answers = store | {len(set(stored_seqs))} distinct | "
              f"{args.slots} | {verdict(checks['seq'] and checks['same'])} |")
        print()
        print("| run | requests | time to last answer | req/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|")
        s = flash.summary
        print(f"| flash crowd POST /api/v1/appointments | {s.count} | {s.seconds:.2f} s | {s.rate:.0f} | "
              f"{s.p50_ms:.1f} | {s.p99_ms:.1f} |")
        print(f"|   of which booked (201) | {flash.by_kind['booked']} | | | {b50:.1f} | {b99:.1f} |")
        print(f"|   of which full (409) | {flash.by_kind['full']} | | | {f50:.1f} | {f99:.1f} |")
        e, b = echo.summary, bare.summary
        print(f"| echo baseline POST /echo (@http -> RPC) | {e.count} | {e.seconds:.2f} s | {e.rate:.0f} | "
              f"{e.p50_ms:.1f} | {e.p99_ms:.1f} |")
        print(f"| bare baseline POST /plain (@http answering at once) | {b.count} | {b.seconds:.2f} s | "
              f"{b.rate:.0f} | {b.p50_ms:.1f} | {b.p99_ms:.1f} |")
        print()
        print(cpu)
        print(f"flash rate / echo rate = {s.rate:.0f} / {e.rate:.0f} = {rate_ratio:.2f}   "
              f"target >= {FLASH_TARGET:g}: {met(rate_ratio >= FLASH_TARGET)}")
        print(f"flash rate / bare @http rate = {s.rate:.0f} / {b.rate:.0f} = {bare_ratio:.2f}   "
              f"target >= {BARE_TARGET:g}: {met(bare_ratio >= BARE_TARGET)}")
        print(f"patient registration: {reg.rate:.1f} /s at concurrency {args.register_concurrency}   "
              f"target >= {REGISTRATION_TARGET:g} /s: {met(reg.rate >= REGISTRATION_TARGET)}")
        for name, base in (("echo", echo), ("bare @http", bare)):
            if base.by_kind.keys() - {"200"} or base.summary.errors:
                print(f"WARNING: the {name} baseline itself had failures: {dict(base.by_kind)} {base.error_samples}")
        print()
        print("| process | RSS after the crowd (platform quiet) | |")
        print("|---|---:|---|")
        for name, mb in rss.items():
            print(f"| {name} | {mb:.0f} MB | {met(mb <= RSS_TARGET_MB)} (<= {RSS_TARGET_MB:.0f}) |")
        if flash.error_samples:
            print("first failures: " + " | ".join(flash.error_samples))
        print("platform logs (warnings / errors):")
        print("\n".join(logs))
        overbooked = len(stored) > args.slots or flash.by_kind["booked"] > args.slots
        correct = all(checks.values())
        record_rows(flash, echo, bare, reg, rss, args)
        if overbooked:
            print(f"OVERBOOKED: {len(stored)} stored, {flash.by_kind['booked']} answered 201, {args.slots} slots")
        print(f"result: {'correct' if correct else 'INCORRECT'}")
        if not correct:
            bp.failed = True  # keep the logs
        return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
