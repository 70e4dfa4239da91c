"""The schedule service in a real nameko container against real PostgreSQL and RabbitMQ.

Commands and queries go through the service's own RPC entrypoints (entrypoint_hook); the events
they store are put on the bus by the real relay (infra.relay.Relay) and received by a nameko event
handler (entrypoint_waiter) and by a plain queue bound to every schedule event, which shows the
order they were published in. The import CLI runs as a subprocess against the same container.

The module uses a RabbitMQ vhost of its own: the relay publishes to `schedule.events`, and other
sessions' services listening to schedule events in the shared test vhost must not receive these.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
from eventlet.green import subprocess
from nameko.events import event_handler
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from contracts import from_wire
from infra.eventstore import PostgresEventStore
from infra.relay import Relay
from services.schedule.domain import HOSPITAL_TZ
from services.schedule.service import ScheduleService
from tests.conftest import delete_vhost, ensure_vhost

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"kind": "hospital_admin", "id": "admin-hb3", "hospital_id": "hb3"}
OTHER_ADMIN = {"kind": "hospital_admin", "id": "admin-hb2", "hospital_id": "hb2"}


@pytest.fixture(scope="module")
def schedule_vhost():
    name = f"appt_test_schedule_{uuid.uuid4().hex[:8]}"
    uri = ensure_vhost(name)
    yield uri
    delete_vhost(name)


@pytest.fixture
def rabbit_config(schedule_vhost, fresh_dsn) -> dict[str, Any]:
    return {
        "AMQP_URI": schedule_vhost,
        "EVENTSTORE_DSN": fresh_dsn("events"),
        "DATABASE_DSN": fresh_dsn("svc"),
        "RETRY_ATTEMPTS": 3,
        "RETRY_BASE_DELAY_MS": 50,
        "max_workers": 10,
    }


@pytest.fixture
def schedule(container_factory, rabbit_config):
    container = container_factory(ScheduleService, rabbit_config)
    container.start()
    return container


@pytest.fixture
def store(rabbit_config):
    s = PostgresEventStore(rabbit_config["EVENTSTORE_DSN"], pool_size=2)
    s.setup()
    yield s
    s.close()


_keys = iter(range(1_000_000))


def call(container, method: str, *args: Any, **kwargs: Any) -> Any:
    with entrypoint_hook(container, method) as hook:
        return hook(*args, **kwargs)


def command(container, method: str, actor: dict[str, Any] | None = None, key: str | None = None,
            **fields: Any) -> dict[str, Any]:
    payload = {"idempotency_key": key or f"test-{method}-{next(_keys):06d}", **fields}
    if actor:
        payload["actor"] = actor
    answer = call(container, method, payload)
    assert from_wire(answer) is None, f"{method} refused: {answer}"
    return answer


def refusal(container, method: str, actor: dict[str, Any] | None = ADMIN, **fields: Any) -> tuple[str, str | None]:
    payload = {"idempotency_key": f"test-{method}-{next(_keys):06d}", **fields}
    if actor:
        payload["actor"] = actor
    err = from_wire(call(container, method, payload))
    assert err is not None, f"{method} was not refused"
    assert err.message, "a refusal says why"
    return err.code, err.field


def tomorrow_plus(days: int) -> date:
    return datetime.now(HOSPITAL_TZ).date() + timedelta(days=days)


def next_weekday(weekday: int, after: int = 1) -> date:
    day = tomorrow_plus(after)
    while day.isoweekday() != weekday:
        day += timedelta(days=1)
    return day


def publish_hospital(schedule) -> None:
    """hb3 with fees, 内科 → 心血管内科, two 主任医师 and a 主治医师, as its admin would."""
    command(schedule, "register_hospital", hospital_id="hb3", name="河北医科大学第三医院",
            address="石家庄市自强路139号",
            rules={"release_days": 7, "release_time": "08:00", "cutoff_days_before": 1, "cutoff_time": "16:00"})
    for fee_class, fee in (("主任医师", "30.00"), ("主治医师", "10.00"), ("普通门诊", "6.00")):
        command(schedule, "change_fee", ADMIN, hospital_id="hb3", fee_class=fee_class, fee=fee)
    command(schedule, "create_department", ADMIN, department_id="hb3-nk", hospital_id="hb3", name="内科")
    command(schedule, "create_department", ADMIN, department_id="hb3-xnk", hospital_id="hb3", name="心血管内科",
            parent_id="hb3-nk")
    for doctor_id, name, title in (("dr-wang", "王建国", "主任医师"), ("dr-li", "李明", "主任医师"),
                                   ("dr-zhou", "周平", "主治医师")):
        command(schedule, "register_doctor", ADMIN, doctor_id=doctor_id, hospital_id="hb3", department_id="hb3-xnk",
                name=name, title=title)


def session_fields(session_id: str, day: date, start: str = "08:00", end: str = "11:30", **kw: Any) -> dict[str, Any]:
    fields = {"session_id": session_id, "doctor_id": "dr-wang", "date": day.isoformat(), "period": "morning",
              "start": start, "end": end, "capacity": 30, "quota": {"web": 12, "phone": 6, "window": 6}}
    fields.update(kw)
    return fields


def test_what_a_hospital_publishes_is_answered_by_the_queries(schedule, store):
    publish_hospital(schedule)
    plan = [{"weekday": 1, "period": "morning", "start": "08:00", "end": "11:30", "capacity": 30,
             "quota": {"web": 12, "phone": 6, "window": 6}, "band_minutes": 30},
            {"weekday": 4, "period": "afternoon", "start": "14:00", "end": "17:00", "capacity": 20,
             "quota": {"web": 10, "phone": 5, "window": 5}}]
    command(schedule, "set_weekly_plan", ADMIN, doctor_id="dr-wang", slots=plan)
    first, last = tomorrow_plus(1), tomorrow_plus(14)
    generated = command(schedule, "generate_sessions", ADMIN, hospital_id="hb3", date_from=first.isoformat(),
                        date_to=last.isoformat())
    assert len(generated["session_ids"]) == 4  # two Mondays and two Thursdays in any 14 days

    departments = call(schedule, "list_departments", "hb3")
    assert [(d["department_id"], d["depth"], d["path"]) for d in departments] == [
        ("hb3-nk", 0, "内科"), ("hb3-xnk", 1, "内科 / 心血管内科")]
    doctors = call(schedule, "list_doctors", "hb3", department_id="hb3-xnk")
    assert [(d["doctor_id"], d["title"]) for d in doctors] == [
        ("dr-li", "主任医师"), ("dr-wang", "主任医师"), ("dr-zhou", "主治医师")]
    assert len(call(schedule, "get_doctor", "dr-wang")["plan"]) == 2
    hospital = call(schedule, "get_hospital", "hb3")
    assert hospital["fees"] == {"主任医师": "30.00", "主治医师": "10.00", "普通门诊": "6.00"}

    table = call(schedule, "department_schedule", {"department_id": "hb3-nk", "date_from": first.isoformat(),
                                                   "date_to": last.isoformat(), "include_subdepartments": True})
    assert [s["session_id"] for s in table] == generated["session_ids"]
    monday = next(s for s in table if s["period"] == "morning")
    assert monday["quota"] == {"web": 12, "phone": 6, "window": 6}
    assert monday["fee"] == "30.00" and monday["state"] == "scheduled" and len(monday["time_bands"]) == 7
    # Released 7 days ahead at 08:00: the first week is open (or past today's 08:00), the second not yet.
    later = max(table, key=lambda s: s["date"])
    assert later["booking"]["state"] == "not_open"
    assert later["booking"]["opens_at"] == later["opens_at"]
    assert call(schedule, "department_schedule", {"department_id": "hb3-nk", "date_from": first.isoformat(),
                                                  "date_to": last.isoformat()}) == []

    # A quota change reaches the table; the same command again is the same answer and no new event.
    before = store.head()
    changed = command(schedule, "change_session_quota", ADMIN, key="quota-change-0001",
                      session_id=monday["session_id"], quota={"web": 20, "phone": 5, "window": 5})
    again = command(schedule, "change_session_quota", ADMIN, key="quota-change-0001",
                    session_id=monday["session_id"], quota={"web": 20, "phone": 5, "window": 5})
    assert store.head() == before + 1
    assert again["duplicate"] is True and again["quota"] == changed["quota"]
    assert call(schedule, "get_session", monday["session_id"])["quota"] == {"web": 20, "phone": 5, "window": 5}


def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(schedule, store):
    publish_hospital(schedule)
    day = tomorrow_plus(5)
    command(schedule, "schedule_session", ADMIN, **session_fields("s-am", day))
    head = store.head()

    assert refusal(schedule, "schedule_session", **session_fields("s-x", day, "09:00", "10:00")) == (
        "conflict", "start")
    assert refusal(schedule, "schedule_session", **session_fields("s-x", day, capacity=20)) == (
        "invalid_input", "quota")
    assert refusal(schedule, "schedule_session", **session_fields("s-x", day, "14:00", "13:00")) == (
        "invalid_input", "end")
    assert refusal(schedule, "schedule_session", **session_fields("s-x", tomorrow_plus(-2))) == (
        "invalid_input", "date")
    assert refusal(schedule, "change_fee", hospital_id="hb3", fee_class="医师", fee="-1.00") == (
        "invalid_input", "fee")
    assert refusal(schedule, "register_doctor", doctor_id="dr-x", hospital_id="hb3", department_id="hb3-ghost",
                   name="某", title="医师") == ("not_found", "department_id")
    assert refusal(schedule, "request_doctor_stop", session_id="s-ghost", reason="病假",
                   requested_by="dr-wang") == ("not_found", "session_id")
    stop = command(schedule, "request_doctor_stop", ADMIN, session_id="s-am", reason="病假", requested_by="dr-wang")
    head = store.head()
    assert refusal(schedule, "approve_doctor_stop", actor=OTHER_ADMIN, session_id="s-am",
                   stop_id=stop["stop_id"]) == ("forbidden", "actor")
    assert refusal(schedule, "approve_doctor_stop", actor={"kind": "patient", "id": "p-1"}, session_id="s-am",
                   stop_id=stop["stop_id"]) == ("forbidden", "actor")
    assert refusal(schedule, "schedule_session", actor=OTHER_ADMIN, **session_fields("s-pm", day, "14:00",
                                                                                     "17:00")) == ("forbidden", "actor")
    assert store.head() == head
    assert call(schedule, "get_session", "s-am")["stop_pending"] is True


def test_a_stop_approved_with_a_replacement_publishes_the_replacement_first(
    container_factory, schedule, store, rabbit_config, unique_name
):
    received: list[tuple[str, dict[str, Any]]] = []

    class Listener:
        name = unique_name("schedule_listener")

        @event_handler("schedule", "SessionScheduled")
        def on_session_scheduled(self, body):
            received.append(("SessionScheduled", body))

        @event_handler("schedule", "DoctorStopApproved")
        def on_doctor_stop_approved(self, body):
            received.append(("DoctorStopApproved", body))

    listener = container_factory(Listener, rabbit_config)
    listener.start()
    tap = _Tap(rabbit_config["AMQP_URI"])

    publish_hospital(schedule)
    day = next_weekday(3, after=3)
    command(schedule, "schedule_session", ADMIN, **session_fields("s-wed", day))
    stop = command(schedule, "request_doctor_stop", {"kind": "service", "id": "his-sync"}, session_id="s-wed",
                   reason="外出会诊", requested_by="dr-wang")
    assert stop["stop_id"] == "s-wed.stop1"
    assert call(schedule, "list_doctor_stops", "hb3", state="requested")[0]["stop_id"] == "s-wed.stop1"

    approved = command(schedule, "approve_doctor_stop", ADMIN, session_id="s-wed", stop_id="s-wed.stop1",
                       replacement={"doctor_id": "dr-li", "date": day.isoformat(), "period": "morning",
                                    "start": "08:00", "end": "11:30"})
    assert approved["replacement_session_id"] == "s-wed-bz1"
    assert approved["approved_by"] == "admin-hb3"

    # In the store: the replacement's SessionScheduled, then the approval, in one append.
    events = store.read_all(0, 1000)
    tail = [(e.type, e.stream) for e in events[-3:]]
    assert tail == [("SessionScheduled", "session-s-wed-bz1"), ("DoctorSessionAdded", "doctor-sessions-dr-li"),
                    ("DoctorStopApproved", "session-s-wed")]
    assert events[-1].position == events[-3].position + 2

    # On the bus, through the real relay: published in store order, consumed by a nameko handler.
    relay = Relay(store, rabbit_config["AMQP_URI"])
    try:
        with entrypoint_waiter(listener, "on_doctor_stop_approved", timeout=30):
            relay.publish_batch(store.read_all_raw(0, 1000))
    finally:
        relay.close_channel()
    order = tap.drain()
    replacement_at = order.index(("SessionScheduled", "s-wed-bz1"))
    assert order.index(("DoctorStopApproved", "s-wed")) > replacement_at
    replacement = next(b for t, b in received if t == "SessionScheduled" and b["data"]["session_id"] == "s-wed-bz1")
    assert replacement["data"]["replaces_session_id"] == "s-wed"
    assert (replacement["data"]["doctor_id"], replacement["data"]["doctor_title"]) == ("dr-li", "主任医师")
    approval = next(b for t, b in received if t == "DoctorStopApproved")
    assert approval["data"] == {"stop_id": "s-wed.stop1", "session_id": "s-wed", "hospital_id": "hb3",
                                "reason": "外出会诊", "approved_by": "admin-hb3",
                                "replacement_session_id": "s-wed-bz1"}

    # The read model: the stopped session shows its replacement; the replacement is bookable like any other.
    stopped = call(schedule, "get_session", "s-wed")
    assert (stopped["state"], stopped["replaced_by"], stopped["booking"]["state"]) == ("replaced", "s-wed-bz1",
                                                                                       "stopped")
    assert call(schedule, "get_session", "s-wed-bz1")["state"] == "scheduled"
    decided = call(schedule, "list_doctor_stops", "hb3")[0]
    assert (decided["state"], decided["decided_by"], decided["replacement_session_id"]) == (
        "approved", "admin-hb3", "s-wed-bz1")
    assert refusal(schedule, "approve_doctor_stop", session_id="s-wed", stop_id="s-wed.stop1") == (
        "conflict", "stop_id")


class _Tap:
    """A plain queue bound to every schedule event: what arrives is in publish order."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.queue = f"tap-{uuid.uuid4().hex[:8]}"
        conn = pika.BlockingConnection(pika.URLParameters(uri))
        try:
            channel = conn.channel()
            channel.exchange_declare(exchange="schedule.events", exchange_type="topic", durable=True)
            channel.queue_declare(queue=self.queue)
            channel.queue_bind(queue=self.queue, exchange="schedule.events", routing_key="#")
        finally:
            conn.close()

    def drain(self) -> list[tuple[str, str]]:
        conn = pika.BlockingConnection(pika.URLParameters(self.uri))
        out = []
        try:
            channel = conn.channel()
            while True:
                method, _props, body = channel.basic_get(queue=self.queue, auto_ack=True)
                if method is None:
                    return out
                event = json.loads(body)
                out.append((event["type"], event["data"].get("session_id", "")))
        finally:
            conn.close()


def test_an_import_is_all_or_nothing_and_a_repeat_changes_nothing(schedule, store, tmp_path, rabbit_config):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bad = tmp_path / "出诊表.csv"
    bad.write_text(
        "科室编码,科室名称,上级科室编码,医生编码,医生姓名,职称,星期,时段,开始时间,结束时间,号源总数,网络号源,电话号源,窗口号源\n"
        "hebmu4-zlnk,肿瘤内科,,,,,,,,,,,,\n"
        "hebmu4-xhzl,消化肿瘤内科,hebmu4-zlnk,hebmu4-a,甲,主任医师,周一,上午,8:00,11:30,20,12,6,6\n"
        "hebmu4-xhzl,消化肿瘤内科,hebmu4-zlnk,hebmu4-b,乙,主治医师,周二,下午,17:00,14:00,30,12,6,6\n"
        "hebmu4-flk,放射治疗科,hebmu4-ghost,hebmu4-c,丙,医师,周三,上午,8:00,11:30,30,12,6,6\n",
        encoding="utf-8")
    head = store.head()
    refused = _importer(env, rabbit_config, "--hospital", "hebmu4", "demo/hebei-demo.json", str(bad))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = [x for x in refused.stderr.splitlines() if x.startswith("拒绝 / rejected")]
    assert len(lines) == 5, refused.stderr
    assert "出诊表.csv:5  department [parent_id]" in lines[0]
    # What depended on the refused department is refused too, and says why.
    assert "出诊表.csv:5  doctor [department_id]" in lines[1] and "出诊表.csv:5 was rejected" in lines[1]
    assert "出诊表.csv:5  plan_slot [doctor_id]" in lines[2]
    assert "出诊表.csv:3  plan_slot [quota]" in lines[3]
    assert "出诊表.csv:4  plan_slot [end]" in lines[4]
    assert "5 record(s) rejected, nothing was imported" in refused.stderr
    assert store.head() == head
    assert call(schedule, "list_hospitals") == []

    done = _importer(env, rabbit_config, "--hospital", "hebmu4", "demo/hebei-demo.json", "demo/hebmu4-plan.csv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "读取 demo/hebei-demo.json" in done.stdout and "imported in" in done.stdout
    assert [h["hospital_id"] for h in call(schedule, "list_hospitals")] == ["hbph", "hebmu2", "hebmu4"]
    total = sum(len(call(schedule, "list_doctors", h)) for h in ("hbph", "hebmu2", "hebmu4"))
    assert total >= 20
    table = call(schedule, "department_schedule", {"department_id": "hebmu2-nk",
                                                   "date_from": tomorrow_plus(1).isoformat(),
                                                   "date_to": tomorrow_plus(14).isoformat(),
                                                   "include_subdepartments": True})
    assert len({s["doctor_id"] for s in table}) >= 5 and len({s["date"] for s in table}) >= 8
    head = store.head()

    again = _importer(env, rabbit_config, "--hospital", "hebmu4", "demo/hebei-demo.json", "demo/hebmu4-plan.csv")
    assert again.returncode == 0, again.stderr
    assert "a repeat" in again.stdout
    assert store.head() == head


def _importer(env: dict[str, str], config: dict[str, Any], *args: str) -> Any:
    # eventlet's subprocess: the container in this process must keep answering while we wait.
    return subprocess.run([sys.executable, "-m", "services.schedule.importer", "--amqp", config["AMQP_URI"], *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_replacement_is_a_session_of_the_same_hospital_department_and_title(schedule):
    publish_hospital(schedule)
    day = tomorrow_plus(4)
    command(schedule, "schedule_session", ADMIN, **session_fields("s-1", day))
    command(schedule, "request_doctor_stop", ADMIN, session_id="s-1", reason="病假", requested_by="科室")
    replacement = {"doctor_id": "dr-zhou", "date": day.isoformat(), "period": "morning", "start": "08:00",
                   "end": "11:30"}
    assert refusal(schedule, "approve_doctor_stop", session_id="s-1", stop_id="s-1.stop1",
                   replacement=replacement) == ("invalid_input", "replacement.doctor_id")
    rejected = command(schedule, "reject_doctor_stop", ADMIN, session_id="s-1", stop_id="s-1.stop1",
                       reason="无同级医生替诊")
    assert rejected["rejected_by"] == "admin-hb3"
    session = call(schedule, "get_session", "s-1")
    assert (session["state"], session["stop_pending"], session["booking"]["state"] != "stopped") == (
        "scheduled", False, True)
    assert isinstance(time.fromisoformat(session["start"]), time)


def test_a_holiday_stops_the_day_s_published_sessions_once_the_admin_confirms_how_many(schedule, store):
    publish_hospital(schedule)
    day, next_day = tomorrow_plus(5), tomorrow_plus(6)
    command(schedule, "schedule_session", ADMIN, **session_fields("s-am", day))
    command(schedule, "schedule_session", ADMIN, **session_fields("s-pm", day, "14:00", "17:00", doctor_id="dr-li",
                                                                  period="afternoon"))
    command(schedule, "schedule_session", ADMIN, **session_fields("s-next", next_day))

    preview = call(schedule, "holiday_preview", "hb3", day.isoformat(), ADMIN)
    assert preview == {"hospital_id": "hb3", "date": day.isoformat(), "declared": None, "sessions": [
        {"session_id": "s-am", "doctor_id": "dr-wang", "doctor_name": "王建国", "department_id": "hb3-xnk",
         "period": "morning", "start": "08:00:00", "end": "11:30:00"},
        {"session_id": "s-pm", "doctor_id": "dr-li", "doctor_name": "李明", "department_id": "hb3-xnk",
         "period": "afternoon", "start": "14:00:00", "end": "17:00:00"}]}
    for args, expected in (((OTHER_ADMIN,), ("forbidden", "actor")), (({"kind": "patient", "id": "p"},),
                                                                       ("forbidden", "actor"))):
        err = from_wire(call(schedule, "holiday_preview", "hb3", day.isoformat(), *args))
        assert err is not None and (err.code, err.field) == expected
    err = from_wire(call(schedule, "holiday_preview", "hb3", "next tuesday", ADMIN))
    assert err is not None and (err.code, err.field) == ("invalid_input", "date")
    err = from_wire(call(schedule, "holiday_preview", "hb9", day.isoformat(), {"kind": "platform_admin", "id": "o"}))
    assert err is not None and (err.code, err.field) == ("not_found", "hospital_id")

    head = store.head()
    unconfirmed = call(schedule, "declare_holiday", {"idempotency_key": "holiday-0001", "actor": ADMIN,
                                                     "hospital_id": "hb3", "date": day.isoformat(), "name": "院庆"})
    assert unconfirmed["domain_error"]["code"] == "confirm_holiday_stops"
    assert unconfirmed["domain_error"]["field"] == "confirm_stops" and unconfirmed["domain_error"]["status"] == 409
    assert "2 个" in unconfirmed["domain_error"]["message"]
    assert store.head() == head

    declared = command(schedule, "declare_holiday", ADMIN, key="holiday-0002", hospital_id="hb3",
                       date=day.isoformat(), name="院庆", confirm_stops=len(preview["sessions"]))
    assert declared["stopped_session_ids"] == ["s-am", "s-pm"] and declared["position"] == store.head()
    again = command(schedule, "declare_holiday", ADMIN, key="holiday-0002", hospital_id="hb3",
                    date=day.isoformat(), name="院庆", confirm_stops=2)
    assert again == {**declared, "duplicate": True} and store.head() == declared["position"]
    assert [call(schedule, "get_session", s)["state"] for s in ("s-am", "s-pm", "s-next")] == [
        "stopped", "stopped", "scheduled"]
    assert call(schedule, "get_session", "s-am")["booking"]["state"] == "stopped"

    # The hospital's own stop tools still work, and the stop list shows both kinds with their reason.
    command(schedule, "request_doctor_stop", ADMIN, session_id="s-next", reason="外出会诊", requested_by="dr-wang")
    command(schedule, "approve_doctor_stop", ADMIN, session_id="s-next", stop_id="s-next.stop1")
    stops = {s["stop_id"]: s for s in call(schedule, "list_doctor_stops", "hb3", state="approved")}
    assert set(stops) == {"s-am.stop1", "s-pm.stop1", "s-next.stop1"}
    assert (stops["s-am.stop1"]["reason"], stops["s-am.stop1"]["requested_by"], stops["s-am.stop1"]["decided_by"]) == (
        "节假日：院庆", "admin-hb3", "admin-hb3")
    assert stops["s-next.stop1"]["reason"] == "外出会诊"

    holidays = [{"date": day.isoformat(), "name": "院庆"}]
    assert call(schedule, "get_hospital", "hb3")["holidays"] == holidays
    assert call(schedule, "list_hospitals")[0]["holidays"] == holidays
    assert call(schedule, "holiday_preview", "hb3", day.isoformat(), ADMIN)["sessions"] == []

    cancelled = command(schedule, "cancel_holiday", ADMIN, hospital_id="hb3", date=day.isoformat())
    assert cancelled["date"] == day.isoformat()
    assert call(schedule, "get_hospital", "hb3")["holidays"] == []
    assert call(schedule, "list_hospitals")[0]["holidays"] == []
    assert call(schedule, "get_session", "s-am")["state"] == "stopped"  # what the holiday stopped stays stopped
    assert refusal(schedule, "cancel_holiday", hospital_id="hb3", date=day.isoformat()) == ("not_found", "date")
    assert refusal(schedule, "cancel_holiday", actor=OTHER_ADMIN, hospital_id="hb3", date=day.isoformat()) == (
        "forbidden", "actor")


def test_a_hospital_is_registered_by_the_platform_and_changed_by_its_own_admin_or_the_platform(schedule):
    platform = {"kind": "platform_admin", "id": "ops"}
    fields = {"hospital_id": "hb3", "name": "河北医科大学第三医院"}
    assert refusal(schedule, "register_hospital", actor=ADMIN, **fields) == ("forbidden", "actor")
    assert refusal(schedule, "register_hospital", actor={"kind": "service", "id": "his-sync"}, **fields) == (
        "forbidden", "actor")
    assert command(schedule, "register_hospital", platform, **fields)["hospital_id"] == "hb3"
    rules = {"release_days": 14, "release_time": "07:30"}
    clerk = {"kind": "clerk", "id": "c", "hospital_id": "hb3"}
    for actor in (OTHER_ADMIN, {"kind": "service", "id": "his-sync"}, clerk):
        assert refusal(schedule, "update_hospital", actor=actor, **fields, address="石家庄") == ("forbidden", "actor")
        assert refusal(schedule, "change_booking_rules", actor=actor, hospital_id="hb3", rules=rules) == (
            "forbidden", "actor")
    command(schedule, "update_hospital", ADMIN, **fields, address="石家庄市自强路139号")
    command(schedule, "change_booking_rules", platform, hospital_id="hb3", rules=rules)
    found = call(schedule, "get_hospital", "hb3")
    assert (found["address"], found["rules"]["release_days"]) == ("石家庄市自强路139号", 14)
