"""The demo history (scripts/demo_history.py) on a fresh store with the demo imported, as `make run`
leaves it: cut short half-way, then resumed, then run again. The statistics rebuilt from the store
show every figure the analyst page draws; no session is over its quota; nothing was refused; the
live lapse timer never touched the back-fill's bookings; a third run appends nothing."""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from cryptography.fernet import Fernet

from contracts import ImportPlan, LapseDueAppointments
from contracts.envelope import BACKFILL_PREFIX
from infra.db import Database
from infra.eventstore import row_to_envelope
from infra.logging import mask_text
from infra.pii import PiiVault
from scripts import demo_history, demo_plan
from services.booking import domain as booking_domain
from services.booking import handlers as booking
from services.booking import readmodel as booking_readmodel
from services.booking.service import BookingSettings
from services.schedule import handlers as schedule
from services.schedule.domain import HOSPITAL_TZ
from services.schedule.import_files import build
from services.stats import rebuild
from tests.integration.test_stats_rebuild import catch_up, projection_into

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WEEKS = 2


def unmasked(text: str) -> bool:
    """Whether `text` shows a resident ID or a mobile number (what the log redaction would mask)."""
    return mask_text(text) != text


def all_events(store, types=None):
    position, out = 0, []
    while True:
        rows = store.read_all_raw(position, 5000) if types is None else \
            store.read_filtered_raw(position, types, 5000)[0]
        if not rows:
            return out
        out += [row_to_envelope(r) for r in rows]
        position = int(rows[-1][0])


@pytest.fixture
def platform(store, fresh_dsn):
    """The store with the demo imported exactly as `make run`'s importer does (through schedule's
    import_plan, today's horizon), booking's database and this installation's key."""
    today = datetime.now(HOSPITAL_TZ).date()
    command = build([ROOT / "demo" / "hebei-demo.json", ROOT / "demo" / "hebmu4-plan.csv"], today, "hebmu4",
                    None, None, progress=lambda line: None)
    answer = schedule.APP.handle(ImportPlan.model_validate({**command, "idempotency_key": "demo-import-test"}),
                                 {"store": store, "now": datetime.now(HOSPITAL_TZ)})
    assert answer["ok"]
    booking_dsn = fresh_dsn("booking")
    key = Fernet.generate_key().decode()
    settings = BookingSettings.model_validate({"SERVICE_NAME": "booking", "EVENTSTORE_DSN": store.dsn,
                                               "DATABASE_DSN": booking_dsn, "PII_KEY": key})
    return store, booking_dsn, PiiVault(key), settings


def test_history_is_decided_by_the_handlers_resumes_after_a_crash_and_is_appended_once(platform, fresh_dsn):
    store, booking_dsn, vault, settings = platform
    until = datetime.now(HOSPITAL_TZ).date() - timedelta(days=1)
    future_sessions = {e.data["session_id"] for e in all_events(store, ["SessionScheduled"])}
    out = io.StringIO()

    # A run cut short: what a crash half-way leaves (no "completed" marker).
    cut = demo_history.run(store.dsn, booking_dsn, vault, settings, weeks=WEEKS, until=until, out=out,
                           stop_after=2500)
    assert cut.actions == 2500 and cut.appended > 0 and not cut.refused
    # Meanwhile the live lapse timer (real clock, booking's real read model) leaves the back-fill's
    # overdue bookings to the back-fill: they wait for their check-ins, not for a lapse.
    db = Database(booking_dsn, size=1)
    live = booking_readmodel.BookingReadModel(db, None)
    overdue = live.due_for_lapse(datetime.now(HOSPITAL_TZ), backfill=True)
    assert overdue, "the cut-short run should leave bookings of past sessions still to come"
    head = store.head()
    lapsed = booking.APP.handle(LapseDueAppointments(now=datetime.now(HOSPITAL_TZ), idempotency_key="live-lapse-1"),
                                {"store": store, "readmodel": live, "cache": booking.LedgerCache(),
                                 "settings": settings})
    assert lapsed == 0 and store.head() == head

    resumed = demo_history.run(store.dsn, booking_dsn, vault, settings, weeks=4, until=until, out=out)
    assert not resumed.refused, resumed.refused
    assert "resuming the run of 2 weeks" in out.getvalue()  # the anchor and size of the first run
    assert re.search(r"demo history: \d+/\d+ days \(up to [\d-]+\), \d+ events appended", out.getvalue())

    head = store.head()
    again = demo_history.run(store.dsn, booking_dsn, vault, settings, weeks=WEEKS, out=out)
    assert again.already and store.head() == head  # a second complete run appends nothing

    events = all_events(store)
    assert not unmasked(out.getvalue())  # progress never shows a resident ID or a phone
    history = [e for e in events if e.correlation_id.startswith(BACKFILL_PREFIX)]
    kinds = Counter(e.type for e in history)
    # Everything the history appended is marked as such (the marker stream aside), so that no SMS,
    # HIS message or live reaction follows it; the import before it is not.
    unmarked = Counter(e.type for e in events if not e.correlation_id.startswith(BACKFILL_PREFIX)
                       and e.stream != demo_history.MARKER)
    assert unmarked["AppointmentBooked"] == unmarked["AppointmentLapsed"] == unmarked["PatientBanned"] == 0
    assert set(unmarked) <= {"HospitalRegistered", "HospitalRulesChanged", "FeeChanged", "HolidayDeclared",
                             "DepartmentCreated", "DoctorRegistered", "WeeklyPlanChanged", "SessionScheduled",
                             "DoctorSessionAdded", "SessionsGenerated", "PlanImported"}, unmarked
    # Every planned booking stored exactly once, the crash notwithstanding (no refusals, so the
    # plan's bookings and the store's are the same count).
    sessions = [e for e in history if e.type == "SessionScheduled"]
    assert {e.data["session_id"] for e in sessions}.isdisjoint(future_sessions)
    booked = [e for e in events if e.type == "AppointmentBooked"]
    assert booked and all(e.correlation_id.startswith(BACKFILL_PREFIX) for e in booked)
    assert len({e.data["appointment_id"] for e in booked}) == len(booked)
    for kind in ("AppointmentCancelled", "AppointmentCheckedIn", "AppointmentLapsed", "AppointmentRefunded",
                 "AppointmentMoved", "DoctorStopRequested", "DoctorStopApproved", "DoctorStopRejected",
                 "SessionStopApplied", "PatientRegistered", "PatientBanned"):
        assert kinds[kind] > 0, kind
    assert any(e.type == "OutpatientVisitsReported" for e in events)

    # The simulated clock, not a bypass, satisfied the rules: each booking occurred inside its
    # session's booking window, weeks ago, and nothing occurred after the last history day.
    window = {e.data["session_id"]: e.data for e in events if e.type == "SessionScheduled"}
    for e in booked:
        s = window[e.data["session_id"]]
        assert datetime.fromisoformat(s["opens_at"]) <= e.occurred_at < datetime.fromisoformat(s["closes_at"])
    last = datetime.combine(until + timedelta(days=1), datetime.min.time(), HOSPITAL_TZ)
    assert max(e.occurred_at for e in history) < last
    assert min(e.occurred_at for e in booked) < last - timedelta(days=7 * WEEKS)

    # No session over its quota in the store: every ledger folded by booking's own domain.
    for sid, s in window.items():
        ledger = booking_domain.Ledger.fold(store.read_stream(booking_domain.ledger_stream(sid)))
        for channel, quota in s["quota"].items():
            assert ledger.booked(channel) <= quota, (sid, channel)

    # Patients were registered through booking's vault: encrypted at rest, masked in events.
    with psycopg2.connect(booking_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id_enc, phone_enc, id_masked FROM patients LIMIT 5")
        for id_enc, phone_enc, id_masked in cur.fetchall():
            clear = vault.decrypt(id_enc)
            booking_domain.parse_resident_id(clear)
            assert clear not in id_enc and "*" in id_masked and vault.decrypt(phone_enc) not in phone_enc
    assert not any(unmasked(str(e.data)) for e in events if e.type == "PatientRegistered")

    # The statistics, rebuilt from the store by the operator's command, show the history, and the
    # live projection agrees with the rebuild.
    live_dsn, copy_dsn = fresh_dsn("stats_live"), fresh_dsn("stats_copy")
    figures = projection_into(store, live_dsn)
    catch_up(figures, batch_size=2000)
    copy = rebuild.rebuild(store, copy_dsn)
    report = io.StringIO()
    assert rebuild.check(store, live_dsn, copy, wait=0, out=report) == 0, report.getvalue()
    first = until - timedelta(days=7 * WEEKS - 1)
    with psycopg2.connect(copy_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(released), sum(booked), sum(cancelled_patient), sum(cancelled_operator), "
                    "sum(cancelled_hospital), sum(no_show), sum(checked_in), sum(moved), sum(refunded) "
                    "FROM stats_bookings WHERE day BETWEEN %s AND %s", (first, until))
        released, booked_n, by_patient, by_operator, by_hospital, no_show, checked_in, moved, refunded = cur.fetchone()
        assert min(booked_n, by_patient, by_operator, by_hospital, no_show, checked_in, moved, refunded) > 0
        assert 0.6 <= booked_n / released <= 1.0
        assert 0.03 <= no_show / booked_n <= 0.12
        cur.execute("SELECT sum(stop_requested), sum(stop_approved), sum(stop_rejected), sum(stopped_sessions) "
                    "FROM stats_stops WHERE day BETWEEN %s AND %s", (first, until + timedelta(days=6)))
        assert all(n > 0 for n in cur.fetchone())
        cur.execute("SELECT count(*) FROM stats_visits WHERE day BETWEEN %s AND %s", (first, until))
        reported = cur.fetchone()[0]
        cur.execute("SELECT count(DISTINCT (day, hospital_id)) FROM stats_bookings WHERE day BETWEEN %s AND %s "
                    "AND checked_in > 0", (first, until))
        assert 0 < reported < cur.fetchone()[0]  # some days have a visit total, some show "no data"
        cur.execute("SELECT sum(registrations), sum(bans) FROM stats_accounts")
        registrations, bans = cur.fetchone()
        assert registrations > 0 and bans > 0
        cur.execute("SELECT count(*) FILTER (WHERE sold_out_at IS NOT NULL) FROM stats_sessions s "
                    "WHERE day BETWEEN %s AND %s", (first, until))
        assert cur.fetchone()[0] > 0  # experts sold out
    db.close()
    figures.db.close()
    copy.db.close()


def test_the_plan_the_run_played_is_the_plan_of_its_anchor(platform):
    """The plan depends on nothing but the published sessions, the anchor and the seed: what a
    resumed run relies on to replay the same keys."""
    store, booking_dsn, vault, settings = platform
    until = datetime.now(HOSPITAL_TZ).date() - timedelta(days=1)
    history = demo_history._History(store, booking_dsn, vault, settings, until, 1, 13, io.StringIO())
    first = history._publish_sessions()
    second = history._publish_sessions()  # a repeat of the generation: the same sessions
    assert first == second and first
    a, b = demo_plan.plan(first, until, 13), demo_plan.plan(second, until, 13)
    assert [(x.at, x.kind, x.ref) for x in a.actions] == [(x.at, x.kind, x.ref) for x in b.actions]
    history.db.close()
