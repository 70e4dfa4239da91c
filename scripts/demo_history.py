"""Weeks of past activity for the demo hospitals, so the analyst page has something to show on a
fresh install (`make run` runs it after the import):

    python -m scripts.demo_history [--weeks 3] [--seed 13] [--until YYYY-MM-DD]

Every fact is decided by the services' own command handlers, run here in-process with a simulated
clock (`now`) stepping through the past, and appended to the real event store, so `occurred_at`
is the simulated time; no projection table is written here (read models and statistics follow
the store as they always do). The plan (scripts/demo_plan.py, pure) says who does what when; the
rules themselves (booking opens N days ahead, closes at the cut-off, check-in on the visit day,
quotas, per-patient limits, bans) are the handlers', satisfied by the clock, never bypassed.

Why here and not in services/stats: it drives schedule's, booking's and his_sync's handlers in one
process, which no service may do (a service never imports another's package); scripts/ is where
the operator's tools that span the platform live (the launcher, the supervisor).

The dependencies the handlers get, and the two adapters at their boundary:
- `store`: `SimulatedClockStore`, the PostgreSQL store whose appends carry the simulated time as
  `occurred_at` (a service's envelopes take the wall clock; nothing else differs).
- `readmodel`: `HistoryReadModel`, booking's own read model and queries (the same tables and SQL);
  read-your-writes applies booking's projection here, in this thread, before each read that needs
  it, instead of waiting for a booking process (none runs in a test; in `make run` both apply it,
  each event once); and the lapse timer's query is asked for the back-fill's own bookings, which
  the live timer leaves alone (services/booking/readmodel.py).
- `vault`: the installation's PiiVault (PII_KEY, or `<run dir>/pii.key` as the launcher makes it):
  names, resident IDs and phones are stored encrypted by booking's registration, as always.
- `settings`, `cache`, `now`: booking's configuration, a fresh ledger cache, the simulated clock.
Doctor stops: schedule's approval is followed by booking's own reaction
(`on_doctor_stop_approved`), called here at the approval's time; the live booking service skips
back-filled approvals (`backfill=False`), so it is decided once, at the simulated time.

Marked as history: every command carries the correlation id `backfill:demo-<until>`; notification
and his_sync leave such events alone (no SMS, no HL7 about visits weeks over), the gateway never
passes a client's id with that prefix (contracts.envelope.BACKFILL_PREFIX).

Idempotent: the stream `demo-history` holds `DemoHistoryStarted` (the anchor day, weeks and seed)
and, at the end, `DemoHistoryCompleted`. A second run finds the latter and appends nothing. A run
cut short is resumed from the former: the same plan, the same idempotency keys
(`demo-<until>-<ref>`), so every command already stored answers from the store and only the rest is
appended. The fake patients (names, resident IDs with a valid check digit, mobile numbers) come from
the seed; nothing here prints one unmasked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, TextIO

# nameko (imported with booking's settings) imports eventlet, which announces its deprecation.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from contracts import (  # noqa: E402
    Actor,
    ApproveDoctorStop,
    BookAppointment,
    BookingRules,
    CancelAppointment,
    CheckInAppointment,
    DoctorStopApproved,
    DomainError,
    Envelope,
    GenerateSessions,
    LapseDueAppointments,
    RefundAtWindow,
    RegisterPatient,
    RejectDoctorStop,
    ReplacementSession,
    RequestDoctorStop,
)
from contracts.envelope import BACKFILL_PREFIX, Event  # noqa: E402
from infra.db import Database, apply_schema, ensure_database  # noqa: E402
from infra.eventstore import PostgresEventStore, idempotent_event_id, new_envelope, row_to_envelope  # noqa: E402
from infra.eventstore.base import AppendResult  # noqa: E402
from infra.logging import configure, mask_text  # noqa: E402
from infra.passwords import PASSWORDS  # noqa: E402
from infra.pii import PiiVault  # noqa: E402
from infra.projections import PROJECTION_SCHEMA, Projection  # noqa: E402
from infra.settings import load_config  # noqa: E402
from scripts import demo_plan  # noqa: E402
from services.booking import handlers as booking  # noqa: E402
from services.booking import readmodel as booking_readmodel  # noqa: E402
from services.booking.readmodel import BookingReadModel  # noqa: E402
from services.booking.service import BookingSettings  # noqa: E402
from services.his_sync.handlers import report_visits  # noqa: E402
from services.schedule import handlers as schedule  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MARKER = "demo-history"
HOSPITAL_TZ = demo_plan.HOSPITAL_TZ
OPERATOR = Actor(kind="operator", id="demo-op-12580")
MARKER_ACTOR = Actor(kind="system", id="demo-history")
# What booking's sessions and hospitals tables follow (services/booking/readmodel.py).
SESSION_EVENTS = frozenset({"SessionScheduled", "SessionQuotaChanged", "SessionStopApplied", "HospitalRegistered",
                            "HospitalRulesChanged"})


class DemoHistoryStarted(Event):
    until: date
    weeks: int
    seed: int


class DemoHistoryCompleted(Event):
    actions: int
    refused: int
    appended: int


@dataclass
class Clock:
    now: datetime


class SimulatedClockStore:
    """The event store with one change at its boundary: appended events occurred at the clock's
    time (the kernel's envelopes take the wall clock). Counts what it really appended, and where
    the last change to a session booking knows of was stored (for `HistoryReadModel`)."""

    def __init__(self, inner: PostgresEventStore, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.appended = 0
        self.session_changed = 0  # position of the last appended event booking's sessions table follows
        self.placed = 0  # ... and of the last booking or move (what says which appointment a code is)

    def append(self, appends: Mapping[str, tuple[int | None, Sequence[Envelope]]]) -> AppendResult:
        at = self.clock.now
        stamped = {stream: (expected, [e.model_copy(update={"occurred_at": at}) for e in events])
                   for stream, (expected, events) in appends.items()}
        result = self.inner.append(stamped)
        if not result.duplicate:
            self.appended += len(result.events)
        for e in result.events:
            if e.type in SESSION_EVENTS:
                self.session_changed = max(self.session_changed, e.position or 0)
            elif e.type in ("AppointmentBooked", "AppointmentMoved"):
                self.placed = max(self.placed, e.position or 0)
        return result

    def append_to(self, stream: str, expected: int | None, *events: Envelope) -> AppendResult:
        return self.append({stream: (expected, list(events))})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class HistoryReadModel(BookingReadModel):
    """booking's read model (its tables, its SQL, its projection) with two changes at the boundary,
    see the module docstring.

    Read-your-writes is kept at the next read rather than at the end of each command: a command's
    `caught_up(position)` notes the position, and a read first applies the projection up to the
    last event this run appended that could change what it reads: for a session or a hospital,
    schedule's events and stops; for which appointment a code or an id is (its session, its
    patient), a booking or a move; for the lapse query, everything noted. Ten thousand commands in
    a row would otherwise each pay a projection transaction that the next one does not need (a
    booking reads only its session; a check-in only its code). The patients table is not projected
    (registration writes it): its reads wait for nothing."""

    def __init__(self, db: Database, projection: Projection, store: SimulatedClockStore) -> None:
        super().__init__(db, projection)
        self._projection = projection
        self._store = store
        self._types = sorted(projection.projector.types)
        self._wanted = projection.load_checkpoint()

    def caught_up(self, position: int, timeout: float = 10.0) -> bool:
        self._wanted = max(self._wanted, position)
        return True

    def apply_upto(self, position: int) -> None:
        p = self._projection
        while p.applied < position:
            rows, upto = p.store.read_filtered_raw(p.applied, self._types, 2000)
            if rows:
                p.handle_batch([row_to_envelope(r) for r in rows])
            p.applied = max(p.applied, upto)

    def _sessions_current(self) -> None:
        self.apply_upto(self._store.session_changed)

    # what only schedule's events and stops change

    def session_and_rules(self, session_id: str) -> tuple[Any, BookingRules]:
        self._sessions_current()
        return super().session_and_rules(session_id)

    def sessions_info(self, session_ids: list[str]) -> dict[str, Any]:
        self._sessions_current()
        return super().sessions_info(session_ids)

    def hospital_rules(self, hospital_id: str) -> BookingRules:
        self._sessions_current()
        return super().hospital_rules(hospital_id)

    # the appointments

    def appointment(self, appointment_id: str) -> dict[str, Any] | None:
        self.apply_upto(self._store.placed)
        return super().appointment(appointment_id)

    def appointment_by_code(self, code: str) -> dict[str, Any] | None:
        self.apply_upto(self._store.placed)
        return super().appointment_by_code(code)

    def due_for_lapse(self, now: datetime, limit: int = 500, backfill: bool = False) -> list[tuple[str, str]]:
        """The lapse timer's query, for the back-fill's own bookings (the live timer's are not its)."""
        self.apply_upto(self._wanted)
        return super().due_for_lapse(now, limit, backfill=True)


@dataclass
class Outcome:
    anchor: date
    weeks: int
    actions: int = 0
    appended: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    already: bool = False
    seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)


def run(eventstore_dsn: str, booking_dsn: str, vault: PiiVault, settings: Any, weeks: int = 3, seed: int = 13,
        until: date | None = None, out: TextIO = sys.stdout, stop_after: int | None = None) -> Outcome:
    """Back-fill the history (or resume it, or find it done). `stop_after`: stop after that many
    actions without marking the history complete (what a crash leaves; for tests)."""
    started = time.monotonic()
    eventstore_dsn, booking_dsn = _without_flush_wait(eventstore_dsn), _without_flush_wait(booking_dsn)
    raw = PostgresEventStore(eventstore_dsn, pool_size=2)
    raw.setup()
    try:
        marker = {e.type: e for e in raw.read_stream(MARKER)}
        if "DemoHistoryCompleted" in marker:
            began = marker["DemoHistoryStarted"].data
            print(f"demo history: already there ({began['weeks']} weeks up to {began['until']}); nothing appended",
                  file=out, flush=True)
            return Outcome(date.fromisoformat(began["until"]), int(began["weeks"]), already=True)
        if "DemoHistoryStarted" in marker:
            began = marker["DemoHistoryStarted"].data
            until, weeks, seed = date.fromisoformat(began["until"]), int(began["weeks"]), int(began["seed"])
            print(f"demo history: resuming the run of {weeks} weeks up to {until} (seed {seed})", file=out, flush=True)
        else:
            until = until or datetime.now(HOSPITAL_TZ).date() - timedelta(days=1)
            event = DemoHistoryStarted(until=until, weeks=weeks, seed=seed)
            # Expected version 0: of two first runs at once, one fails here (run again: it resumes).
            raw.append_to(MARKER, 0, new_envelope(event, MARKER, "demo", actor=MARKER_ACTOR))
        history = _History(raw, booking_dsn, vault, settings, until, weeks, seed, out)
        try:
            outcome = history.play(stop_after)
        finally:
            history.db.close()
        if stop_after is None:
            raw.append_to(MARKER, None, new_envelope(
                DemoHistoryCompleted(actions=outcome.actions, refused=sum(outcome.refused.values()),
                                     appended=outcome.appended),
                MARKER, "demo", actor=MARKER_ACTOR, event_id=idempotent_event_id("demo-history", "completed")))
        outcome.seconds = time.monotonic() - started
        return outcome
    finally:
        raw.close()


class _History:
    def __init__(self, raw: PostgresEventStore, booking_dsn: str, vault: PiiVault, settings: Any, until: date,
                 weeks: int, seed: int, out: TextIO) -> None:
        self.raw, self.vault, self.settings, self.until, self.weeks, self.seed, self.out = (
            raw, vault, settings, until, weeks, seed, out)
        self.first = until - timedelta(days=7 * weeks - 1)
        self.clock = Clock(datetime.combine(self.first - timedelta(days=12), clock_time(6, 0), HOSPITAL_TZ))
        self.store = SimulatedClockStore(raw, self.clock)
        ensure_database(booking_dsn)
        self.db = Database(booking_dsn, size=2)
        apply_schema(self.db, PROJECTION_SCHEMA)
        apply_schema(self.db, booking_readmodel.SCHEMA)
        self.readmodel = HistoryReadModel(self.db, Projection(booking_readmodel.PROJECTOR, raw, self.db), self.store)
        self.cache = booking.LedgerCache()
        self.key = f"demo-{until.isoformat()}"
        self.correlation = f"{BACKFILL_PREFIX}{self.key}"
        self.patient_ids: dict[str, str] = {}
        self.bookings: dict[str, tuple[str, str]] = {}  # ref → (appointment_id, code)
        self.stop_ids: dict[str, str] = {}
        self.booked_by: dict[str, str] = {}  # booking ref → patient ref
        self.lost: set[str] = set()  # refs whose first command was refused: their later actions are skipped

    # --- the run ---------------------------------------------------------------------------------

    def play(self, stop_after: int | None) -> Outcome:
        outcome = Outcome(self.until, self.weeks)
        began = time.monotonic()
        sessions = self._publish_sessions()
        plan = demo_plan.plan(sessions, self.until, self.seed, self._rules())
        self.patients = plan.patients
        print(f"demo history: {len(sessions)} sessions from {self.first} to {self.until}, {len(plan.actions)} "
              f"actions ({plan.count('book')} bookings, {len(plan.patients)} patients, {plan.stops} stop requests)",
              file=self.out, flush=True)
        days = sorted({a.at.astimezone(HOSPITAL_TZ).date() for a in plan.actions})
        done_days = 0
        current: date | None = None
        for i, action in enumerate(plan.actions):
            if stop_after is not None and i >= stop_after:
                break
            day = action.at.astimezone(HOSPITAL_TZ).date()
            if day != current:
                if current is not None:
                    done_days += 1
                    if done_days % 7 == 0:
                        self._progress(done_days, len(days), current, began)
                current = day
            self.clock.now = action.at
            outcome.actions += 1
            try:
                self._do(action)
                outcome.counts[action.kind] += 1
            except DomainError as err:
                self.lost.add(action.ref)
                outcome.refused[f"{action.kind}:{err.code}"] += 1
                if sum(outcome.refused.values()) <= 10:
                    print(f"  refused {action.kind} {action.ref} at {action.at:%Y-%m-%d %H:%M}: {err.code} "
                          f"{mask_text(err.message)}", file=self.out, flush=True)
        self.readmodel.apply_upto(self.raw.head())  # booking's tables as the store has them, before we go
        self._progress(len(days) if stop_after is None else done_days, len(days), current, began)
        outcome.appended = self.store.appended
        return outcome

    def _progress(self, done: int, total: int, day: date | None, began: float) -> None:
        print(f"demo history: {done}/{total} days (up to {day}), {self.store.appended} events appended, "
              f"{time.monotonic() - began:.1f} s", file=self.out, flush=True)

    def _publish_sessions(self) -> list[demo_plan.Session]:
        """Schedule's weekly plans generated for the past weeks, as an admin would have done it
        twelve days before the first of them (before any of them opened for booking)."""
        hospitals, doctors = self._catalogue()
        session_ids: list[str] = []
        for hospital_id in sorted(hospitals):
            staff = sorted(d for d, (h, _) in doctors.items() if h == hospital_id)
            cmd = GenerateSessions(hospital_id=hospital_id, date_from=self.first, date_to=self.until,
                                   doctor_ids=staff, idempotency_key=f"{self.key}-generate-{hospital_id}",
                                   correlation_id=self.correlation, actor=_admin(hospital_id))
            answer = schedule.APP.handle(cmd, {"store": self.store, "now": self.clock.now,
                                               "planned_doctors": lambda h, staff=staff: staff})
            session_ids += answer.get("session_ids", [])
        self.readmodel.caught_up(self.raw.head())
        self.readmodel.apply_upto(self.raw.head())
        infos = self.readmodel.sessions_info(session_ids)
        out = []
        for sid in session_ids:
            info = infos[sid]
            day = date.fromisoformat(info.date)
            out.append(demo_plan.Session(
                session_id=sid, hospital_id=info.hospital_id, department_id=info.department_id,
                doctor_id=info.doctor_id, day=day, period=info.period, start=info.starts_at(),
                end=datetime.combine(day, clock_time.fromisoformat(info.end), HOSPITAL_TZ),
                opens_at=info.opens_at, closes_at=info.closes_at, lapse_at=info.lapse_at, quota=dict(info.quota),
                expert=doctors[info.doctor_id][1] == "expert"))
        return out

    def _catalogue(self) -> tuple[set[str], dict[str, tuple[str, str]]]:
        """The hospitals and doctors (hospital, clinic type) in the store, as schedule published them."""
        hospitals: set[str] = set()
        doctors: dict[str, tuple[str, str]] = {}
        position = 0
        types = ["HospitalRegistered", "DoctorRegistered", "DoctorUpdated"]
        while True:
            rows, upto = self.raw.read_filtered_raw(position, types, 5000)
            for r in rows:
                env = row_to_envelope(r)
                if env.type == "HospitalRegistered":
                    hospitals.add(env.data["hospital_id"])
                else:
                    doctors[env.data["doctor_id"]] = (env.data["hospital_id"], env.data.get("clinic_type", "general"))
            if upto <= position or not rows:
                break
            position = upto
        return hospitals, doctors

    def _rules(self) -> demo_plan.Rules:
        """The strictest per-patient limits of the hospitals: the plan keeps them everywhere."""
        rules = [self.readmodel.hospital_rules(h) for h in self.readmodel.hospitals()] or [BookingRules()]
        return demo_plan.Rules(max_active=min(r.max_active for r in rules),
                               max_per_day=min(r.max_per_day for r in rules),
                               max_per_department_day=min(r.max_per_department_day for r in rules))

    # --- one action ----------------------------------------------------------------------------

    def _do(self, a: demo_plan.Action) -> None:
        if a.ref in self.lost or a.data.get("patient") in self.lost:
            raise _Skipped()
        handler: Callable[[demo_plan.Action], None] = getattr(self, f"_{a.kind}")
        handler(a)

    def _deps(self) -> dict[str, Any]:
        return {"store": self.store, "readmodel": self.readmodel, "vault": self.vault, "cache": self.cache,
                "now": self.clock.now, "settings": self.settings, "planned_doctors": lambda _h: [],
                "passwords": PASSWORDS}

    def _ids(self, a: demo_plan.Action, what: str) -> dict[str, Any]:
        return {"idempotency_key": f"{self.key}-{a.ref}-{what}", "correlation_id": self.correlation}

    def _register(self, a: demo_plan.Action) -> None:
        p = self.patients[a.ref]
        answer = booking.APP.handle(RegisterPatient(
            name=p.name, id_number=p.id_number, phone=p.phone, **self._ids(a, "register"),
            actor=Actor(kind="patient", id="self-registration")), self._deps())
        self.patient_ids[a.ref] = answer["patient_id"]

    def _book(self, a: demo_plan.Action) -> None:
        patient_id = self.patient_ids[a.data["patient"]]
        channel = a.data["channel"]
        actor, operator_id = {
            "web": (Actor(kind="patient", id=patient_id), None),
            "phone": (OPERATOR, OPERATOR.id),
            "window": (_clerk(a.data["hospital_id"]), _clerk(a.data["hospital_id"]).id),
        }[channel]
        answer = booking.APP.handle(BookAppointment(
            session_id=a.data["session_id"], patient_id=patient_id, channel=channel, operator_id=operator_id,
            **self._ids(a, "book"), actor=actor), self._deps())
        self.bookings[a.ref] = (answer.appointment_id, answer.code)
        self.booked_by[a.ref] = a.data["patient"]

    def _cancel(self, a: demo_plan.Action) -> None:
        appointment_id, _ = self.bookings[a.ref]
        actor = OPERATOR if a.data["by"] == "operator" else Actor(
            kind="patient", id=self.patient_ids[self.booked_by[a.ref]])
        booking.APP.handle(CancelAppointment(appointment_id=appointment_id, **self._ids(a, "cancel"), actor=actor),
                           self._deps())

    def _check_in(self, a: demo_plan.Action) -> None:
        _, code = self.bookings[a.ref]
        patient = self.patients[self.booked_by[a.ref]]
        booking.APP.handle(CheckInAppointment(code=code, id_number=patient.id_number, **self._ids(a, "check-in"),
                                              actor=_clerk(a.data["hospital_id"])), self._deps())

    def _refund(self, a: demo_plan.Action) -> None:
        _, code = self.bookings[a.ref]
        booking.APP.handle(RefundAtWindow(code=code, reason=a.data["reason"], **self._ids(a, "refund"),
                                          actor=_clerk(a.data["hospital_id"])), self._deps())

    def _lapse(self, a: demo_plan.Action) -> None:
        booking.APP.handle(LapseDueAppointments(now=self.clock.now, **self._ids(a, "lapse")), self._deps())

    def _stop_request(self, a: demo_plan.Action) -> None:
        answer = schedule.APP.handle(RequestDoctorStop(
            session_id=a.data["session_id"], reason=a.data["reason"], requested_by="门诊部",
            **self._ids(a, "stop-request"), actor=self._session_admin(a.data["session_id"])), self._deps())
        self.stop_ids[a.ref] = answer["stop_id"]

    def _stop_reject(self, a: demo_plan.Action) -> None:
        schedule.APP.handle(RejectDoctorStop(
            session_id=a.data["session_id"], stop_id=self.stop_ids[a.ref], reason=a.data["reason"],
            **self._ids(a, "stop-reject"), actor=self._session_admin(a.data["session_id"])), self._deps())

    def _stop_approve(self, a: demo_plan.Action) -> None:
        r = a.data["replacement"]
        ids = self._ids(a, "stop-approve")
        schedule.APP.handle(ApproveDoctorStop(
            session_id=a.data["session_id"], stop_id=self.stop_ids[a.ref],
            replacement=ReplacementSession.model_validate(r) if r else None, **ids,
            actor=self._session_admin(a.data["session_id"])), self._deps())
        # booking's reaction, at the approval's time (the live service leaves back-filled ones alone)
        env = self.raw.get_event(idempotent_event_id("approve_doctor_stop", ids["idempotency_key"]))
        assert env is not None
        booking.on_doctor_stop_approved(DoctorStopApproved.model_validate(env.data), env, store=self.store,
                                        readmodel=self.readmodel, cache=self.cache)

    def _visits(self, a: demo_plan.Action) -> None:
        report_visits(a.data["hospital_id"], {"date": a.data["day"], "visits": a.data["visits"]}, self.store,
                      self.clock.now, self.correlation)

    def _session_admin(self, session_id: str) -> Actor:
        info = self.readmodel.session_info(session_id)
        return _admin(info.hospital_id if info is not None else "")


class _Skipped(DomainError):
    """An action on something whose own command was refused before."""

    code = "skipped"
    status = 409

    def __init__(self) -> None:
        super().__init__("skipped: an earlier command for it was refused")


def _without_flush_wait(dsn: str) -> str:
    """The DSN with `synchronous_commit = off` for this tool's sessions: ten thousand small
    commits would otherwise each wait for the WAL flush (two thirds of the run, measured). Still
    atomic; a server crash may lose the last instant's commits, which a resumed run appends again
    under the same keys."""
    option = "options=-c%20synchronous_commit%3Doff"
    return dsn if option in dsn else f"{dsn}{'&' if '?' in dsn else '?'}{option}"


def _admin(hospital_id: str) -> Actor:
    return Actor(kind="hospital_admin", id=f"demo-admin-{hospital_id}"[:64], hospital_id=hospital_id)


def _clerk(hospital_id: str) -> Actor:
    return Actor(kind="clerk", id=f"demo-clerk-{hospital_id}"[:64], hospital_id=hospital_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo_history", description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=3, choices=range(1, 7), metavar="1-6",
                        help="weeks of history up to --until (default 3)")
    parser.add_argument("--seed", type=int, default=13, help="the plan's seed (default 13)")
    parser.add_argument("--until", type=date.fromisoformat, help="the last day of the history (default yesterday)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run",
                        help="where the installation's pii.key is, when PII_KEY is not set (default .run)")
    parser.add_argument("--eventstore-dsn", help="default: EVENTSTORE_DSN of services/booking/config.yaml")
    parser.add_argument("--booking-dsn", help="booking's database; default: DATABASE_DSN of its config")
    args = parser.parse_args(argv)
    configure("demo_history", level="WARNING")  # the handlers' own info lines would drown the progress
    settings = BookingSettings.model_validate({"SERVICE_NAME": "booking", **load_config(
        ROOT / "services" / "booking" / "config.yaml")})
    key = settings.pii_key or os.environ.get("PII_KEY")
    if not key:
        from scripts.launcher import installation_key

        key = installation_key(args.run_dir)
    vault = PiiVault.from_config(key, settings.pii_old_keys)
    today = datetime.now(HOSPITAL_TZ).date()
    if args.until is not None and args.until >= today:
        print("--until must be a day before today: history is the past", file=sys.stderr)
        return 2
    outcome = run(args.eventstore_dsn or settings.eventstore_dsn, args.booking_dsn or str(settings.database_dsn),
                  vault, settings, args.weeks, args.seed, args.until)
    if not outcome.already:
        refused = sum(outcome.refused.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(outcome.counts.items()))
        print(f"demo history: {outcome.weeks} weeks up to {outcome.anchor}: {outcome.appended} events appended in "
              f"{outcome.seconds:.1f} s ({kinds}); {refused} refused", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
