"""SMS delivery on the real notification tables (PostgreSQL): the dispatcher's claims, retries,
parking and leases, receipts, the reminders and the digests, each exactly once. The provider is
the boundary here and is scripted (the real adapters have their own tests against real servers:
test_smpp.py, test_sms_http.py); everything else is the service's own code and SQL."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from infra.db import Database, apply_schema, ensure_database
from infra.handling import INBOX_SCHEMA
from infra.pii import PiiVault
from services.notification import domain, handlers, readmodel
from services.notification.providers import Accepted, Outgoing, Receipt, SendFailed, Unavailable

pytestmark = pytest.mark.integration

TZ = domain.HOSPITAL_TZ
NOON = datetime(2025, 3, 5, 12, 0, tzinfo=TZ)
PHONE = "13812345678"


class ScriptedProvider:
    """Answers each send from a script (an exception to raise, or None to accept); counts sends."""

    name = "scripted"

    def __init__(self, script: list[Exception | None] | None = None) -> None:
        self.script = list(script or [])
        self.sent: list[Outgoing] = []
        self.up = True
        self.lock = threading.Lock()

    def start(self, on_receipt: Any) -> None:
        pass

    def stop(self) -> None:
        pass

    def ready(self) -> bool:
        return self.up

    def send(self, message: Outgoing) -> Accepted:
        with self.lock:
            outcome = self.script.pop(0) if self.script else None
            if outcome is not None:
                raise outcome
            self.sent.append(message)
            return Accepted((f"p-{message.message_id}-1", f"p-{message.message_id}-2"))


class Platform:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.vault = PiiVault(Fernet.generate_key().decode())
        self.outbox = readmodel.SmsOutbox()

    def queue(self, n: int = 1, **extra: Any) -> list[str]:
        ids = []
        with self.db.transaction() as cur:
            for _ in range(n):
                key = f"test:{uuid.uuid4()}"
                self.outbox.add(cur, event_id=None, patient_id="p1", phone_enc=self.vault.encrypt(PHONE),
                                phone_masked="138****5678", phone_hash=self.vault.lookup_hash(PHONE),
                                template=extra.get("template", "booking_confirmation"), text="【河北预约挂号】测试",
                                intent_key=key, urgent=extra.get("urgent", False),
                                not_before=extra.get("not_before", NOON), hospital_id="hb3")
                cur.execute("SELECT message_id FROM outbox WHERE intent_key = %s", (key,))
                ids.append(str(cur.fetchone()[0]))
        return ids

    def row(self, message_id: str) -> dict[str, Any]:
        [row] = [m for m in self.messages() if m["message_id"] == message_id]
        return row

    def messages(self, status: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return self.outbox.messages(cur, 1000, status)

    def dispatch(self, provider: ScriptedProvider, now: datetime,
                 delivery: handlers.Delivery = handlers.Delivery(max_attempts=3)) -> int:
        return handlers.dispatch(self.db, self.vault, self.outbox, provider, now, delivery)


@pytest.fixture
def platform(fresh_dsn) -> Iterator[Platform]:
    dsn = fresh_dsn("notification")
    ensure_database(dsn)
    db = Database(dsn, size=6)
    # The outbox as it was before delivery states existed, with a message in it: the new schema
    # must take it over (services apply their schema at every start).
    db.execute("CREATE TABLE outbox (message_id uuid PRIMARY KEY, event_id uuid NOT NULL, patient_id text NOT NULL,"
               " phone_enc text NOT NULL, phone_masked text NOT NULL, template text NOT NULL, text text NOT NULL,"
               " status text NOT NULL DEFAULT 'queued', created_at timestamptz NOT NULL DEFAULT now())")
    db.execute("INSERT INTO outbox (message_id, event_id, patient_id, phone_enc, phone_masked, template, text)"
               " VALUES (%s, %s, 'p0', 'x', '138****0000', 'cancelled', 'old')", (uuid.uuid4(), uuid.uuid4()))
    apply_schema(db, INBOX_SCHEMA + readmodel.SCHEMA)
    apply_schema(db, INBOX_SCHEMA + readmodel.SCHEMA)
    db.execute("DELETE FROM outbox")
    yield Platform(db)
    db.close()


def test_an_old_outbox_is_taken_over_and_one_intent_is_one_row(platform):
    with platform.db.transaction() as cur:
        args = dict(event_id=None, patient_id="p1", phone_enc="e", phone_masked="m", phone_hash="h",
                    template="reminder", text="t", intent_key="reminder:a1:2025-03-06")
        assert platform.outbox.add(cur, **args) is True
        assert platform.outbox.add(cur, **args) is False
    assert len(platform.messages()) == 1


def test_a_due_message_is_sent_with_the_phone_decrypted_only_for_the_send(platform):
    [mid] = platform.queue()
    provider = ScriptedProvider()
    assert platform.dispatch(provider, NOON) == 1
    assert provider.sent[0].phone == PHONE and provider.sent[0].message_id == mid
    row = platform.row(mid)
    assert row["status"] == "sent" and row["provider"] == "scripted" and row["attempts"] == 1
    assert datetime.fromisoformat(row["sent_at"]) == NOON and PHONE not in str(row)
    assert platform.dispatch(provider, NOON + timedelta(seconds=5)) == 0  # nothing twice


def test_a_failing_send_backs_off_then_parks_with_its_reason_and_the_operator_can_send_it_again(platform):
    [mid] = platform.queue()
    provider = ScriptedProvider([SendFailed("ESME_RTHROTTLED")] * 3)
    platform.dispatch(provider, NOON)
    row = platform.row(mid)
    assert row["status"] == "queued" and row["attempts"] == 1 and row["last_error"] == "ESME_RTHROTTLED"
    retry_at = datetime.fromisoformat(row["next_attempt_at"])
    assert NOON + timedelta(seconds=5) <= retry_at <= NOON + timedelta(seconds=6)
    assert platform.dispatch(provider, NOON + timedelta(seconds=2)) == 0  # not yet
    platform.dispatch(provider, retry_at)
    row = platform.row(mid)
    second = datetime.fromisoformat(row["next_attempt_at"])
    assert row["attempts"] == 2 and second - retry_at >= timedelta(seconds=10)  # doubled
    platform.dispatch(provider, second)
    row = platform.row(mid)
    assert row["status"] == "failed" and row["attempts"] == 3 and row["last_error"] == "ESME_RTHROTTLED"
    assert platform.dispatch(provider, second + timedelta(hours=1)) == 0  # parked stays parked

    admin = handlers.Actor(kind="platform_admin", id="admin")
    with pytest.raises(handlers.InvalidInput):
        handlers.retry_message(platform.queue()[0], admin, platform.db, platform.outbox, NOON)  # not failed
    later = second + timedelta(hours=1)
    assert handlers.retry_message(mid, admin, platform.db, platform.outbox, later)["status"] == "queued"
    assert platform.dispatch(provider, later) == 2
    assert platform.row(mid)["status"] == "sent"


def test_a_permanent_refusal_parks_at_once_and_a_clerk_may_not_resend(platform):
    [mid] = platform.queue()
    platform.dispatch(ScriptedProvider([SendFailed("invalid destination", permanent=True)]), NOON)
    assert platform.row(mid)["status"] == "failed" and platform.row(mid)["attempts"] == 1
    with pytest.raises(handlers.Forbidden):
        handlers.retry_message(mid, handlers.Actor(kind="hospital_admin", id="x", hospital_id="other"),
                               platform.db, platform.outbox, NOON)
    own = handlers.Actor(kind="hospital_admin", id="y", hospital_id="hb3")
    assert handlers.retry_message(mid, own, platform.db, platform.outbox, NOON)["status"] == "queued"


def test_a_provider_that_is_down_costs_no_attempt_however_long(platform):
    [mid] = platform.queue()
    provider = ScriptedProvider()
    provider.up = False
    assert platform.dispatch(provider, NOON) == 0 and platform.row(mid)["status"] == "queued"
    provider.up = True
    provider.script = [Unavailable("not bound")] * 20
    for i in range(20):  # an outage far longer than the attempts allow
        platform.dispatch(provider, NOON + timedelta(seconds=3 * i))
    row = platform.row(mid)
    assert row["status"] == "queued" and row["attempts"] == 0 and row["last_error"] == "not bound"
    platform.dispatch(provider, NOON + timedelta(minutes=5))
    assert platform.row(mid)["status"] == "sent"


def test_what_waits_for_the_morning_waits_and_urgent_goes_first(platform):
    morning = datetime(2025, 3, 6, 8, 0, tzinfo=TZ)
    [later] = platform.queue(not_before=morning)
    [plain] = platform.queue()
    [urgent] = platform.queue(urgent=True)
    provider = ScriptedProvider()
    platform.dispatch(provider, NOON)
    assert [m.message_id for m in provider.sent] == [urgent, plain]
    platform.dispatch(provider, morning)
    assert provider.sent[-1].message_id == later


def test_two_dispatchers_at_once_send_every_message_exactly_once(platform):
    ids = platform.queue(120)
    provider = ScriptedProvider()
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        for _ in range(5):
            platform.dispatch(provider, NOON, handlers.Delivery(batch=10))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(m.message_id for m in provider.sent)
    assert set(counts) == set(ids) and max(counts.values()) == 1


def test_a_message_whose_sender_died_goes_again_after_its_lease(platform):
    [mid] = platform.queue()
    with platform.db.transaction() as cur:  # claimed by a process that then died
        assert [c[0] for c in platform.outbox.claim_due(cur, NOON, 10, 60)] == [mid]
    provider = ScriptedProvider()
    assert platform.dispatch(provider, NOON + timedelta(seconds=30)) == 0  # its lease holds
    assert platform.dispatch(provider, NOON + timedelta(seconds=61)) == 1


def test_a_message_is_delivered_when_every_part_has_its_receipt_even_one_that_came_first(platform):
    [mid] = platform.queue()
    # The second part's receipt overtakes the answer that names it.
    handlers.record_receipt(platform.db, platform.outbox, Receipt(f"p-{mid}-2", True, "DELIVRD", NOON))
    platform.dispatch(ScriptedProvider(), NOON)
    assert platform.row(mid)["status"] == "sent"
    done = NOON + timedelta(seconds=4)
    handlers.record_receipt(platform.db, platform.outbox, Receipt(f"p-{mid}-1", True, "DELIVRD", done))
    row = platform.row(mid)
    assert row["status"] == "delivered" and datetime.fromisoformat(row["delivered_at"]) == done

    [bad] = platform.queue()
    platform.dispatch(ScriptedProvider(), NOON)
    handlers.record_receipt(platform.db, platform.outbox, Receipt(f"p-{bad}-1", False, "UNDELIV", done))
    row = platform.row(bad)
    assert row["status"] == "failed" and row["last_error"] == "receipt: UNDELIV" and row["receipt_status"] == "UNDELIV"
    with platform.db.transaction() as cur:
        counts = {(c["template"], c["status"]): c["count"] for c in platform.outbox.counts(
            cur, NOON - timedelta(days=1), datetime.now(TZ) + timedelta(days=1))}
    assert counts == {("booking_confirmation", "delivered"): 1, ("booking_confirmation", "failed"): 1}


# --- reminders and digests ---------------------------------------------------------------------

def _remember(platform: Platform, appt_id: str, status: str, day: str, hospital: str = "hb3",
              doctor: str = "dr-wang", seq: int = 1, start: str = "08:00:00") -> None:
    contact = {"phone_enc": platform.vault.encrypt(PHONE), "phone_masked": "138****5678",
               "phone_hash": platform.vault.lookup_hash(PHONE), "locale": "zh"}
    appt = {"appointment_id": appt_id, "patient_id": f"pat-{appt_id}", "hospital_id": hospital,
            "department_id": "card", "doctor_id": doctor, "session_id": "s", "code": "K7M2QX9P",
            "sequence_number": seq, "date": day, "period": "morning", "start": start, "fee": "50.00",
            "status": status, "contact": contact}
    with platform.db.transaction() as cur:
        readmodel.APPOINTMENTS.remember(cur, appt_id, appt)


def _reminders(platform: Platform, now: datetime, **kw: Any) -> int:
    return handlers.run_reminders(platform.db, platform.vault, None, readmodel.NAMES, readmodel.HOSPITALS,
                                  readmodel.APPOINTMENTS, platform.outbox, now, **kw)


@pytest.fixture
def tomorrow_booked(platform) -> Platform:
    with platform.db.transaction() as cur:
        readmodel.HOSPITALS.remember_address(cur, "hb3", "石家庄")
        readmodel.HOSPITALS.remember_address(cur, "hb4", "保定")
    for i in range(5):
        _remember(platform, f"a{i}", "active", "2025-03-06", seq=i + 1)
    for status in ("cancelled", "checked_in", "refunded", "no_show"):
        _remember(platform, f"x-{status}", status, "2025-03-06")
    _remember(platform, "moved-away", "active", "2025-03-09")
    _remember(platform, "other-hospital", "active", "2025-03-06", hospital="hb4")
    return platform


def test_the_reminder_run_reminds_each_active_booking_once_and_a_second_run_nothing(tomorrow_booked):
    p = tomorrow_booked
    assert _reminders(p, NOON, visit_day=date(2025, 3, 6), hospital_id="hb3") == 5
    assert _reminders(p, NOON, visit_day=date(2025, 3, 6), hospital_id="hb3") == 0
    reminded = sorted(m["patient_id"] for m in p.messages() if m["template"] == "reminder")
    assert reminded == [f"pat-a{i}" for i in range(5)]
    with p.db.transaction() as cur:
        cur.execute("SELECT text FROM outbox WHERE patient_id = 'pat-a0'")
        assert "就诊提醒" in cur.fetchone()[0]


def test_the_timer_reminds_from_the_hour_on_with_replicas_racing_each_other(tomorrow_booked):
    p = tomorrow_booked
    assert _reminders(p, datetime(2025, 3, 5, 17, 59, tzinfo=TZ)) == 0
    at_six = datetime(2025, 3, 5, 18, 0, 30, tzinfo=TZ)
    barrier = threading.Barrier(4)
    totals: list[int] = []

    def replica() -> None:
        barrier.wait()
        totals.append(_reminders(p, at_six))

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(totals) == 6  # hb3's five and hb4's one, whoever queued them
    assert _reminders(p, at_six + timedelta(minutes=1)) == 0
    assert Counter(m["template"] for m in p.messages()) == {"reminder": 6}


def test_a_reminder_run_cut_short_repeats_nothing_and_misses_nothing(tomorrow_booked, monkeypatch):
    p = tomorrow_booked
    calls = {"n": 0}
    real = domain.reminder

    def crash_on_third(*args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed in the middle")
        return real(*args, **kwargs)

    monkeypatch.setattr(domain, "reminder", crash_on_third)
    with pytest.raises(RuntimeError):
        _reminders(p, datetime(2025, 3, 5, 18, 1, tzinfo=TZ), hospital_id="hb3")
    monkeypatch.setattr(domain, "reminder", real)
    assert _reminders(p, datetime(2025, 3, 5, 18, 2, tzinfo=TZ), hospital_id="hb3") == 5
    assert len(p.messages()) == 5


def test_the_doctors_digest_comes_once_a_day_at_the_chosen_hour(platform):
    with platform.db.transaction() as cur:
        readmodel.NAMES.remember(cur, "dr-wang", "王建国")
        readmodel.DOCTORS.remember(cur, "dr-wang", "hb3")
        readmodel.DOCTORS.set_contact(cur, "dr-wang", (platform.vault.encrypt("13900001111"), "139****1111",
                                                       platform.vault.lookup_hash("13900001111")),
                                      domain.DoctorNotice("digest", time(7, 30)))
    _remember(platform, "a1", "active", "2025-03-06", seq=3)
    _remember(platform, "a2", "active", "2025-03-06", seq=1)
    _remember(platform, "a3", "cancelled", "2025-03-06", seq=2)

    def digests(now: datetime) -> int:
        return handlers.run_digests(platform.db, platform.vault, readmodel.NAMES, readmodel.HOSPITALS,
                                    readmodel.DOCTORS, readmodel.APPOINTMENTS, platform.outbox, now)

    assert digests(datetime(2025, 3, 6, 7, 29, tzinfo=TZ)) == 0
    assert digests(datetime(2025, 3, 6, 7, 31, tzinfo=TZ)) == 1
    assert digests(datetime(2025, 3, 6, 7, 32, tzinfo=TZ)) == 0
    with platform.db.transaction() as cur:
        cur.execute("SELECT text, recipient FROM outbox WHERE template = 'doctor_digest'")
        text, recipient = cur.fetchone()
    assert recipient == "doctor"
    assert text == "【河北预约挂号】王建国医生：您2025-03-06上午门诊已预约2人，就诊序号：1、3。"


def test_a_message_sent_again_at_night_still_waits_for_the_morning_unless_urgent(platform):
    [plain] = platform.queue()
    [urgent] = platform.queue(urgent=True)
    platform.dispatch(ScriptedProvider([SendFailed("bad", permanent=True)] * 2), NOON)
    night = datetime(2025, 3, 5, 23, 0, tzinfo=TZ)
    admin = handlers.Actor(kind="platform_admin", id="admin")
    for mid in (plain, urgent):
        handlers.retry_message(mid, admin, platform.db, platform.outbox, night, readmodel.HOSPITALS)
    assert datetime.fromisoformat(platform.row(plain)["not_before"]) == datetime(2025, 3, 6, 8, 0, tzinfo=TZ)
    assert datetime.fromisoformat(platform.row(urgent)["not_before"]) == night
