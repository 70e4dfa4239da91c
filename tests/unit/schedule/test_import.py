"""Bulk import: files read into records (import_files), and the whole file decided at once by the
domain (every refused line reported with its field and reason; nothing staged unless all pass)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import Actor, ImportPlan, PlanImported, SessionScheduled
from services.schedule import domain
from services.schedule.domain import HOSPITAL_TZ
from services.schedule.import_files import FileProblem, build, records_from_csv, records_from_json
from tests.unit.schedule.test_domain import History

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
TODAY = date(2025, 3, 1)
NOW = datetime(2025, 3, 1, 9, 0, tzinfo=HOSPITAL_TZ)

CSV_HEADER = ("科室编码,科室名称,上级科室编码,医生编码,医生姓名,职称,门诊类型,专长,简介,星期,时段,开始时间,结束时间,"
              "号源总数,网络号源,电话号源,窗口号源,分时段分钟\n")


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def plan_of(records: list[dict[str, Any]], generate: tuple[date, date] | None = None,
            actor: Actor | None = None) -> ImportPlan:
    fields: dict[str, Any] = {"idempotency_key": "import:test-0001", "source": "test", "records": records}
    if generate:
        fields["generate_from"], fields["generate_to"] = generate
    if actor:
        fields["actor"] = actor
    return ImportPlan.model_validate(fields)


def hospital_records(hospital_id: str = "hb3") -> list[dict[str, Any]]:
    return [
        {"line": "h:1", "kind": "hospital", "data": {"hospital_id": hospital_id, "name": "河北医科大学第三医院"}},
        {"line": "h:2", "kind": "fee", "data": {"hospital_id": hospital_id, "fee_class": "主任医师", "fee": "30.00"}},
        {"line": "h:3", "kind": "fee", "data": {"hospital_id": hospital_id, "fee_class": "普通门诊", "fee": "6.00"}},
    ]


# --- reading files -------------------------------------------------------------------------------


def test_json_sections_become_records_labelled_by_their_place_with_dates_from_offsets(tmp_path):
    path = write(tmp_path, "h.json", json.dumps({
        "horizon": {"from_day": 1, "days": 14},
        "hospitals": [{"hospital_id": "hb3", "name": "三院", "fees": {"主任医师": "30.00"},
                       "holidays": [{"day_offset": 2, "name": "院庆"}]}],
        "doctors": [{"doctor_id": "d1", "plan": [{"weekday": 1}]}],
        "sessions": [{"session_id": "s1", "day_offset": 3}],
    }, ensure_ascii=False))
    records, horizon = records_from_json(path, TODAY)
    assert [(r["line"], r["kind"]) for r in records] == [
        ("h.json hospitals[0]", "hospital"), ("h.json hospitals[0].fees.主任医师", "fee"),
        ("h.json hospitals[0].holidays[0]", "holiday"), ("h.json doctors[0]", "doctor"),
        ("h.json doctors[0].plan[0]", "plan_slot"), ("h.json sessions[0]", "session")]
    assert records[0]["data"] == {"hospital_id": "hb3", "name": "三院"}
    assert records[1]["data"] == {"hospital_id": "hb3", "fee_class": "主任医师", "fee": "30.00"}
    assert records[2]["data"] == {"hospital_id": "hb3", "date": "2025-03-03", "name": "院庆"}
    assert records[4]["data"] == {"doctor_id": "d1", "weekday": 1}
    assert records[5]["data"] == {"session_id": "s1", "date": "2025-03-04"}
    assert horizon == {"from_day": 1, "days": 14}


def test_a_spreadsheet_row_declares_its_department_doctor_and_weekly_slot(tmp_path):
    path = write(tmp_path, "出诊表.csv", CSV_HEADER
                 + "zl,肿瘤内科,,,,,,,,,,,,,,,,\n"
                 + "zl-xh,消化肿瘤内科,zl,song,宋佳明,主任医师,专家,胃癌,,周一,上午,8:00,11:30,30,12,6,6,30\n"
                 + "zl-xh,,,tang,唐琳,主治医师,普通,,,星期五,下午,14:00,17:00,40,16,8,,\n", encoding="gb18030")
    records = records_from_csv(path, "hebmu4")
    assert [(r["line"], r["kind"]) for r in records] == [
        ("出诊表.csv:2", "department"), ("出诊表.csv:3", "department"), ("出诊表.csv:3", "doctor"),
        ("出诊表.csv:3", "plan_slot"), ("出诊表.csv:4", "doctor"), ("出诊表.csv:4", "plan_slot")]
    assert records[0]["data"] == {"hospital_id": "hebmu4", "department_id": "zl", "name": "肿瘤内科"}
    assert records[2]["data"] == {"doctor_id": "song", "hospital_id": "hebmu4", "department_id": "zl-xh",
                                  "name": "宋佳明", "title": "主任医师", "clinic_type": "expert", "specialty": "胃癌"}
    assert records[3]["data"] == {"doctor_id": "song", "weekday": 1, "period": "morning", "start": "08:00",
                                  "end": "11:30", "capacity": "30", "quota": {"web": "12", "phone": "6",
                                                                              "window": "6"}, "band_minutes": "30"}
    assert records[5]["data"]["weekday"] == 5 and records[5]["data"]["quota"] == {"web": "16", "phone": "8"}


def test_an_unknown_value_is_passed_on_for_the_service_to_refuse(tmp_path):
    path = write(tmp_path, "p.csv", CSV_HEADER + "k,内科,,d,张三,医师,,,,周八,清晨,8:00,9:00,1,1,,,\n")
    slot = records_from_csv(path, "h")[-1]["data"]
    assert (slot["weekday"], slot["period"]) == ("周八", "清晨")


@pytest.mark.parametrize(
    ("text", "hospital", "says"),
    [
        ("科室编码,科室名称,床位数\n", "h", "床位数"),
        ("医生编码,医生姓名\n", "h", "科室编码"),
        (CSV_HEADER, None, "--hospital"),
        ("", "h", "空文件"),
    ],
    ids=["unknown-column", "missing-column", "no-hospital", "empty"],
)
def test_a_file_that_cannot_be_read_is_refused_before_anything_is_sent(tmp_path, text, hospital, says):
    with pytest.raises(FileProblem, match=says):
        records_from_csv(write(tmp_path, "x.csv", text), hospital)


def test_the_import_key_follows_the_content_and_the_day_and_the_horizon_starts_tomorrow(tmp_path):
    path = write(tmp_path, "h.json", json.dumps({"horizon": {"days": 14}, "hospitals": []}))
    first = build([path], TODAY)
    assert build([path], TODAY)["idempotency_key"] == first["idempotency_key"]
    assert build([path], TODAY + timedelta(days=1))["idempotency_key"] != first["idempotency_key"]
    assert (first["generate_from"], first["generate_to"]) == ("2025-03-02", "2025-03-15")
    path.write_text(json.dumps({"hospitals": [{"hospital_id": "x"}]}))
    changed = build([path], TODAY)
    assert changed["idempotency_key"] != first["idempotency_key"]
    assert "generate_from" not in changed


# --- deciding a whole import ---------------------------------------------------------------------


def demo_plan() -> ImportPlan:
    command = build([ROOT / "demo/hebei-demo.json", ROOT / "demo/hebmu4-plan.csv"], TODAY, "hebmu4")
    return ImportPlan.model_validate(command)


def test_the_demo_imports_cleanly_three_hospitals_twenty_doctors_two_weeks_of_sessions():
    w = History().world()
    report = domain.import_plan(w, demo_plan(), NOW, "demo")
    assert report.ok, report.rejected
    assert report.created["hospitals"] == 3
    assert report.created["doctors"] >= 20
    assert report.created["departments"] >= 12
    sessions = [e for _, e in w.staged if isinstance(e, SessionScheduled)]
    assert {s.hospital_id for s in sessions} == {"hebmu2", "hbph", "hebmu4"}
    assert min(s.date for s in sessions) == date(2025, 3, 2)
    assert max(s.date for s in sessions) == date(2025, 3, 15)
    assert any(s.time_bands for s in sessions) and any(not s.time_bands for s in sessions)
    assert all(s.quota.total() <= s.capacity for s in sessions)
    assert report.sessions_generated == len(sessions) - 1  # one one-off session
    assert isinstance(w.staged[-1][1], PlanImported)


def test_importing_the_same_files_again_changes_nothing():
    h = History()
    first = h.world()
    domain.import_plan(first, demo_plan(), NOW, "demo")
    h.commit(first)
    again = h.world()
    report = domain.import_plan(again, demo_plan(), NOW, "demo-again")
    assert report.ok
    assert (report.created, report.changed, report.sessions_generated) == ({}, {}, 0)
    assert [type(e).__name__ for _, e in again.staged] == ["PlanImported"]


def test_every_bad_line_is_reported_with_its_field_and_nothing_is_staged():
    records = [
        *hospital_records(),
        {"line": "f:1", "kind": "fee", "data": {"hospital_id": "hb3", "fee_class": "医师", "fee": "-1.00"}},
        {"line": "f:2", "kind": "department", "data": {"hospital_id": "hb3", "department_id": "hb3-card",
                                                        "name": "心内科"}},
        {"line": "f:3", "kind": "doctor", "data": {"doctor_id": "d1", "hospital_id": "hb3",
                                                    "department_id": "hb3-ghost", "name": "甲", "title": "主任医师"}},
        {"line": "f:4", "kind": "doctor", "data": {"doctor_id": "d2", "hospital_id": "hb3",
                                                    "department_id": "hb3-card", "name": "乙", "title": "主任医师"}},
        {"line": "f:5", "kind": "plan_slot", "data": {"doctor_id": "d2", "weekday": 1, "period": "morning",
                                                       "start": "08:00", "end": "11:30", "capacity": 10,
                                                       "quota": {"web": 8, "phone": 4}}},
        {"line": "f:6", "kind": "plan_slot", "data": {"doctor_id": "d2", "weekday": 2, "period": "morning",
                                                       "start": "11:00", "end": "08:00", "capacity": 10,
                                                       "quota": {"web": 8}}},
        {"line": "f:7", "kind": "plan_slot", "data": {"doctor_id": "d2", "weekday": 3, "period": "morning",
                                                       "start": "08:00", "end": "11:30", "capacity": 10,
                                                       "quota": {"web": 8}}},
        {"line": "f:8", "kind": "plan_slot", "data": {"doctor_id": "d2", "weekday": 3, "period": "morning",
                                                       "start": "09:00", "end": "10:00", "capacity": 10,
                                                       "quota": {"web": 8}}},
        {"line": "f:9", "kind": "session", "data": {"session_id": "s-old", "doctor_id": "d2", "date": "2025-02-27",
                                                     "period": "morning", "start": "08:00", "end": "11:30",
                                                     "capacity": 10, "quota": {"web": 5}}},
    ]
    w = History().world()
    report = domain.import_plan(w, plan_of(records, (date(2025, 3, 2), date(2025, 3, 15))), NOW, "bad")
    assert not report.ok
    assert [(p.line, p.field) for p in report.rejected] == [
        ("f:1", "fee"), ("f:3", "department_id"), ("f:9", "date"), ("f:5", "quota"), ("f:6", "end"),
        ("f:8", "start")]
    assert "f:7" in report.rejected[-1].message  # the overlap names the line it overlaps
    assert w.staged == []


def test_records_may_refer_to_records_later_in_the_file():
    records = [
        {"line": "c:1", "kind": "doctor", "data": {"doctor_id": "d1", "hospital_id": "hb3",
                                                    "department_id": "hb3-xnk", "name": "甲", "title": "主任医师"}},
        {"line": "c:2", "kind": "department", "data": {"hospital_id": "hb3", "department_id": "hb3-xnk",
                                                        "name": "心血管内科", "parent_id": "hb3-nk"}},
        {"line": "c:3", "kind": "department", "data": {"hospital_id": "hb3", "department_id": "hb3-nk",
                                                        "name": "内科"}},
        *hospital_records(),
    ]
    w = History().world()
    report = domain.import_plan(w, plan_of(records), NOW, "order")
    assert report.ok, report.rejected
    assert list(w.appends())[:4] == ["hospital-hb3", "department-hb3-nk", "department-hb3-xnk", "doctor-d1"]


def test_a_repeated_identical_record_is_fine_and_a_differing_one_is_refused():
    dept = {"hospital_id": "hb3", "department_id": "hb3-nk", "name": "内科"}
    records = [*hospital_records(), {"line": "r:1", "kind": "department", "data": dept},
               {"line": "r:2", "kind": "department", "data": dict(dept)},
               {"line": "r:3", "kind": "department", "data": {**dept, "name": "外科"}}]
    report = domain.import_plan(History().world(), plan_of(records), NOW, "dup")
    assert [(p.line, p.field) for p in report.rejected] == [("r:3", None)]
    assert "r:1" in report.rejected[0].message


def test_an_import_by_a_hospital_admin_cannot_touch_another_hospital_or_forge_its_actor():
    h = History()
    w = h.world()
    assert domain.import_plan(w, plan_of(hospital_records("hb3") + hospital_records("hb2")), NOW, "setup").ok
    h.commit(w)
    admin = Actor(kind="hospital_admin", id="a3", hospital_id="hb3")
    forged = {"line": "x:1", "kind": "fee", "data": {"hospital_id": "hb2", "fee_class": "主任医师", "fee": "99.00",
                                                     "actor": {"kind": "platform_admin", "id": "me"}}}
    own = {"line": "x:2", "kind": "fee", "data": {"hospital_id": "hb3", "fee_class": "主任医师", "fee": "35.00"}}
    report = domain.import_plan(h.world(), plan_of([forged, own], actor=admin), NOW, "forged")
    assert [(p.line, p.field) for p in report.rejected] == [("x:1", "actor")]


def test_existing_entities_that_differ_are_updated():
    h = History()
    w = h.world()
    domain.import_plan(w, plan_of(hospital_records()), NOW, "one")
    h.commit(w)
    changed = hospital_records()
    changed[0]["data"] = {**changed[0]["data"], "address": "石家庄市自强路139号",
                          "rules": {"release_days": 14}}
    changed[1]["data"] = {**changed[1]["data"], "fee": "35.00"}
    w2 = h.world()
    report = domain.import_plan(w2, plan_of(changed), NOW, "two")
    assert report.changed == {"hospitals": 1, "fees": 1}
    assert [type(e).__name__ for _, e in w2.staged] == ["HospitalUpdated", "HospitalRulesChanged", "FeeChanged",
                                                        "PlanImported"]


def test_a_half_given_or_bad_horizon_is_reported():
    fields = {"idempotency_key": "import:test-0002", "source": "t", "records": [], "generate_from": "2025-03-02"}
    report = domain.import_plan(History().world(), ImportPlan.model_validate(fields), NOW, "h")
    assert [(p.kind, p.field) for p in report.rejected] == [("horizon", "generate_to")]
