"""Import files (JSON and CSV) read into the records of one `import_plan` command. No I/O beyond
reading the files; the CLI that sends the command is services/schedule/importer.py, whose docstring
describes both formats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

# CSV header -> record field. Chinese first (what a hospital's spreadsheet has), English accepted.
CSV_HEADERS = {
    "hospital_id": ("医院编码", "hospital_id"),
    "department_id": ("科室编码", "department_id"),
    "department_name": ("科室名称", "科室", "department_name"),
    "parent_id": ("上级科室编码", "parent_id"),
    "doctor_id": ("医生编码", "doctor_id"),
    "doctor_name": ("医生姓名", "姓名", "doctor_name"),
    "title": ("职称", "title"),
    "clinic_type": ("门诊类型", "clinic_type"),
    "specialty": ("专长", "specialty"),
    "bio": ("简介", "bio"),
    "weekday": ("星期", "weekday"),
    "period": ("时段", "period"),
    "start": ("开始时间", "start"),
    "end": ("结束时间", "end"),
    "capacity": ("号源总数", "capacity"),
    "web": ("网络号源", "web"),
    "phone": ("电话号源", "phone"),
    "window": ("窗口号源", "window"),
    "band_minutes": ("分时段分钟", "band_minutes"),
}
_WEEKDAYS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "日": 7, "天": 7,
             "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
_PERIODS = {"上午": "morning", "下午": "afternoon", "晚上": "evening", "夜间": "evening", "夜诊": "evening"}
_CLINICS = {"专家": "expert", "专家门诊": "expert", "普通": "general", "普通门诊": "general"}


class FileProblem(Exception):
    """The file itself cannot be read (not a record of it): reported before anything is sent."""


def records_from_json(path: Path, today: date) -> tuple[list[dict[str, Any]], dict[str, int] | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise FileProblem(f"{path}: 不是有效的 JSON / not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FileProblem(f"{path}: 顶层应为对象 / the top level must be an object")
    out: list[dict[str, Any]] = []

    def add(line: str, kind: str, item: dict[str, Any]) -> None:
        out.append({"line": f"{path.name} {line}", "kind": kind, "data": _dated(item, today)})

    for i, item in enumerate(_items(data, "hospitals", path)):
        hospital = {k: v for k, v in item.items() if k not in ("fees", "holidays")}
        add(f"hospitals[{i}]", "hospital", hospital)
        for fee_class, fee in (item.get("fees") or {}).items():
            add(f"hospitals[{i}].fees.{fee_class}", "fee",
                {"hospital_id": item.get("hospital_id"), "fee_class": fee_class, "fee": fee})
        for j, holiday in enumerate(item.get("holidays") or []):
            add(f"hospitals[{i}].holidays[{j}]", "holiday", {"hospital_id": item.get("hospital_id"), **holiday})
    for i, item in enumerate(_items(data, "departments", path)):
        add(f"departments[{i}]", "department", item)
    for i, item in enumerate(_items(data, "doctors", path)):
        add(f"doctors[{i}]", "doctor", {k: v for k, v in item.items() if k != "plan"})
        for j, slot in enumerate(item.get("plan") or []):
            add(f"doctors[{i}].plan[{j}]", "plan_slot", {"doctor_id": item.get("doctor_id"), **slot})
    for i, item in enumerate(_items(data, "sessions", path)):
        add(f"sessions[{i}]", "session", item)
    horizon = data.get("horizon")
    return out, horizon if isinstance(horizon, dict) else None


def records_from_csv(path: Path, hospital_id: str | None) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):  # Excel in China saves CSV as GB18030 unless told otherwise
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise FileProblem(f"{path}: 无法识别的编码 / unknown encoding (use UTF-8 or GB18030)")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise FileProblem(f"{path}: 空文件 / empty file")
    columns: dict[str, int] = {}
    for index, name in enumerate(h.strip() for h in header):
        field = next((f for f, names in CSV_HEADERS.items() if name in names), None)
        if field is None and name:
            raise FileProblem(f"{path}: 未知列「{name}」/ unknown column {name!r}")
        if field:
            columns[field] = index
    for required in ("department_id", "department_name"):
        if required not in columns:
            raise FileProblem(f"{path}: 缺少列「{CSV_HEADERS[required][0]}」/ missing column {required}")
    if "hospital_id" not in columns and not hospital_id:
        raise FileProblem(f"{path}: 缺少「医院编码」列，请用 --hospital 指定 / no hospital_id column: give --hospital")
    out: list[dict[str, Any]] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        cells = {f: row[i].strip() for f, i in columns.items() if i < len(row) and row[i].strip()}
        line = f"{path.name}:{reader.line_num}"
        hospital = cells.get("hospital_id", hospital_id)
        if "department_name" in cells or "department_id" not in cells:  # a bare 科室编码 only refers to it
            out.append({"line": line, "kind": "department", "data": _present(
                hospital_id=hospital, department_id=cells.get("department_id"), name=cells.get("department_name"),
                parent_id=cells.get("parent_id"))})
        if "doctor_id" in cells:
            out.append({"line": line, "kind": "doctor", "data": _present(
                doctor_id=cells["doctor_id"], hospital_id=hospital, department_id=cells.get("department_id"),
                name=cells.get("doctor_name"), title=cells.get("title"),
                clinic_type=_CLINICS.get(cells.get("clinic_type", ""), cells.get("clinic_type")),
                specialty=cells.get("specialty"), bio=cells.get("bio"))})
        if "weekday" in cells or "period" in cells:
            out.append({"line": line, "kind": "plan_slot", "data": _present(
                doctor_id=cells.get("doctor_id"), weekday=_weekday(cells.get("weekday", "")),
                period=_PERIODS.get(cells.get("period", ""), cells.get("period")),
                start=_clock(cells.get("start")), end=_clock(cells.get("end")), capacity=cells.get("capacity"),
                quota=_present(web=cells.get("web"), phone=cells.get("phone"), window=cells.get("window")),
                band_minutes=cells.get("band_minutes"))})
    return out


def build(paths: list[Path], today: date, hospital_id: str | None = None, days: int | None = None,
          from_day: int | None = None, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The import_plan command for these files (its idempotency key from their content and the day).
    `days`/`from_day` (else the JSON's "horizon") ask for the weekly plans' sessions to be generated."""
    records: list[dict[str, Any]] = []
    horizon: dict[str, int] | None = None
    digest = hashlib.sha256(f"{today}|{hospital_id}|{days}|{from_day}".encode())
    for path in paths:
        if not path.is_file():
            raise FileProblem(f"{path}: 文件不存在 / no such file")
        digest.update(path.read_bytes())
        if path.suffix.lower() == ".csv":
            found = records_from_csv(path, hospital_id)
        else:
            found, file_horizon = records_from_json(path, today)
            horizon = horizon or file_horizon
        progress(f"读取 {path}: {len(found)} 条记录 / read {len(found)} records")
        records += found
    command: dict[str, Any] = {
        "idempotency_key": f"import:{digest.hexdigest()[:48]}",
        "source": ", ".join(p.name for p in paths)[:200],
        "records": records,
    }
    days = days if days is not None else (horizon or {}).get("days")
    if days:
        first = today + timedelta(days=from_day if from_day is not None else (horizon or {}).get("from_day", 1))
        command["generate_from"] = first.isoformat()
        command["generate_to"] = (first + timedelta(days=int(days) - 1)).isoformat()
    return command


def _items(data: dict[str, Any], section: str, path: Path) -> list[dict[str, Any]]:
    items = data.get(section) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise FileProblem(f"{path}: {section} 应为对象列表 / {section} must be a list of objects")
    return items


def _dated(item: dict[str, Any], today: date) -> dict[str, Any]:
    if "day_offset" not in item:
        return item
    out = {k: v for k, v in item.items() if k != "day_offset"}
    try:
        out["date"] = (today + timedelta(days=int(item["day_offset"]))).isoformat()
    except (TypeError, ValueError):
        out["date"] = item["day_offset"]  # left for the service to refuse, naming the field
    return out


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "", {})}


def _weekday(value: str) -> Any:
    text = re.sub(r"^(周|星期|礼拜)", "", value.strip()).lower()[:3]
    return _WEEKDAYS.get(text, value or None)


def _clock(value: str | None) -> str | None:
    if value and re.fullmatch(r"\d:\d\d", value):
        return "0" + value
    return value
