"""The tables the analyst reads: their dimensions and columns, the query they accept, the rates
computed from summed counts (never stored), and CSV for Excel. Pure: no SQL, no nameko.

A table answers rows grouped by any subset of its dimensions, for an inclusive date range of at
most MAX_DAYS days, optionally narrowed to one hospital, department or channel (a filter the table
has no dimension for is ignored and left out of the normalized query).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from contracts import InvalidInput

MAX_DAYS = 400
Kind = Literal["dim", "count", "rate", "minutes", "days", "name"]


@dataclass(frozen=True)
class Column:
    key: str
    zh: str
    en: str
    kind: Kind

    def describe(self) -> dict[str, str]:
        return {"key": self.key, "zh": self.zh, "en": self.en, "kind": self.kind}


@dataclass(frozen=True)
class Rate:
    """A rate computed at query time: numerator ÷ denominator, each a sum of counted columns."""

    column: Column
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]


# Each dimension: its columns in a row (the id, then its name where it has one).
DIM_COLUMNS: dict[str, tuple[Column, ...]] = {
    "day": (Column("day", "日期", "day", "dim"),),
    "hospital": (Column("hospital_id", "医院编号", "hospital id", "dim"),
                 Column("hospital_name", "医院", "hospital", "name")),
    "department": (Column("department_id", "科室编号", "department id", "dim"),
                   Column("department_name", "科室", "department", "name")),
    "doctor": (Column("doctor_id", "医生编号", "doctor id", "dim"),
               Column("doctor_name", "医生", "doctor", "name")),
    "channel": (Column("channel", "渠道", "channel", "dim"),),
}
DIM_ORDER = tuple(DIM_COLUMNS)
FILTERS = {"hospital_id": "hospital", "department_id": "department", "channel": "channel"}
CHANNELS = ("web", "phone", "window")


@dataclass(frozen=True)
class Table:
    name: str
    zh: str
    en: str
    dims: tuple[str, ...]
    default_group_by: tuple[str, ...]
    counts: tuple[Column, ...]  # summed in SQL
    derived: tuple[Column, ...] = ()  # computed here from the counts (sums or rates)
    rates: tuple[Rate, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "zh": self.zh, "en": self.en, "dims": list(self.dims),
                "default_group_by": list(self.default_group_by)}

    def columns(self, group_by: tuple[str, ...]) -> list[Column]:
        dims = [c for d in group_by for c in DIM_COLUMNS[d]]
        return [*dims, *self.counts, *self.derived, *(r.column for r in self.rates)]


def _count(key: str, zh: str, en: str) -> Column:
    return Column(key, zh, en, "count")


def _rate(key: str, zh: str, en: str, numerator: tuple[str, ...], denominator: tuple[str, ...]) -> Rate:
    return Rate(Column(key, zh, en, "rate"), numerator, denominator)


CANCELLATIONS = ("cancelled_patient", "cancelled_operator", "cancelled_hospital")

BOOKINGS = Table(
    "bookings", "预约与号源", "bookings and places",
    dims=("day", "hospital", "department", "doctor", "channel"),
    default_group_by=("day", "channel"),
    counts=(
        _count("released", "放号数", "released places"),
        _count("booked", "预约数", "booked"),
        _count("cancelled_patient", "患者取消", "cancelled by patient"),
        _count("cancelled_operator", "话务员取消", "cancelled by operator"),
        _count("cancelled_hospital", "停诊取消", "cancelled by hospital"),
        _count("refunded", "窗口退号", "refunded at the window"),
        _count("moved", "转入补诊", "moved to a replacement"),
        _count("moved_in", "补诊转入", "moved in from a stopped session"),
        _count("checked_in", "取号", "checked in"),
        _count("no_show", "爽约", "no-show"),
    ),
    derived=(_count("cancelled", "取消合计", "cancelled (all)"),),
    rates=(
        _rate("utilisation", "号源利用率", "utilisation", ("booked",), ("released",)),
        _rate("no_show_rate", "爽约率", "no-show rate", ("no_show",), ("booked",)),
        _rate("cancellation_rate", "取消率", "cancellation rate", CANCELLATIONS, ("booked",)),
    ),
)

STOPS = Table(
    "stops", "医生停诊", "doctor stops",
    dims=("day", "hospital", "department", "doctor"),
    default_group_by=("hospital",),
    counts=(
        _count("sessions", "出诊数", "sessions"),
        _count("stopped_sessions", "停诊出诊数", "stopped sessions"),
        _count("stop_requested", "停诊申请", "stops requested"),
        _count("stop_approved", "停诊批准", "stops approved"),
        _count("stop_rejected", "停诊驳回", "stops rejected"),
        _count("stop_withdrawn", "停诊撤回", "stops withdrawn"),
        _count("affected", "受影响预约", "bookings affected"),
        _count("affected_moved", "转入补诊", "moved"),
        _count("affected_cancelled", "取消", "cancelled"),
    ),
    rates=(_rate("stop_rate", "停诊率", "stop rate", ("stopped_sessions",), ("sessions",)),),
)

SELLOUT = Table(
    "sellout", "约满用时与提前预约", "time to sell out and lead time",
    dims=("hospital", "department"),
    default_group_by=("hospital", "department"),
    counts=(
        _count("sessions", "出诊数", "sessions"),
        _count("sold_out", "约满出诊数", "sessions sold out"),
        Column("sellout_median_minutes", "约满用时中位数(分钟)", "time to sell out, median (minutes)", "minutes"),
        Column("sellout_p90_minutes", "约满用时P90(分钟)", "time to sell out, p90 (minutes)", "minutes"),
        _count("bookings", "预约数", "bookings"),
        Column("lead_median_days", "提前预约中位数(天)", "lead time, median (days)", "days"),
        Column("lead_p90_days", "提前预约P90(天)", "lead time, p90 (days)", "days"),
    ),
)

ACCOUNTS = Table(
    "accounts", "患者注册与爽约封禁", "registrations and bans",
    dims=("day",),
    default_group_by=("day",),
    counts=(
        _count("registrations", "注册患者", "registrations"),
        _count("bans", "爽约封禁", "bans"),
    ),
)

SHARE = Table(
    "share", "预约诊疗率与电话占比", "booking share of visits and phone share",
    dims=("day", "hospital"),
    default_group_by=("day", "hospital"),
    counts=(
        _count("booked_web", "网络预约", "booked on the web"),
        _count("booked_phone", "电话预约", "booked by phone"),
        _count("booked_window", "窗口预约", "booked at the window"),
        _count("checked_in", "预约取号", "checked in"),
        _count("checked_in_reported", "有门诊量日的预约取号", "checked in, days with a visit total"),
        _count("visits", "门诊人次(HIS)", "outpatient visits (HIS)"),
        _count("days_without_report", "无门诊量报告的医院日", "hospital-days without a visit total"),
    ),
    rates=(
        _rate("phone_share", "电话预约占比", "phone share", ("booked_phone",), ("booked_phone", "booked_web")),
        _rate("booking_share", "预约诊疗率", "booking share of visits", ("checked_in_reported",), ("visits",)),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (BOOKINGS, STOPS, SELLOUT, ACCOUNTS, SHARE)}


@dataclass(frozen=True)
class Query:
    day_from: date
    day_to: date
    group_by: tuple[str, ...]
    hospital_id: str | None = None
    department_id: str | None = None
    channel: str | None = None

    def normalized(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.day_from.isoformat(), "to": self.day_to.isoformat()}
        for key in FILTERS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["group_by"] = list(self.group_by)
        return out


def describe() -> list[dict[str, Any]]:
    return [t.describe() for t in TABLES.values()]


def parse(name: Any, query: Any) -> tuple[Table, Query]:
    """The table and the normalized query, or InvalidInput naming the field at fault."""
    table = TABLES.get(name) if isinstance(name, str) else None
    if table is None:
        raise InvalidInput(f"没有这张统计表 / unknown table {name!r} (one of {', '.join(TABLES)})", field="table")
    if query is None:
        query = {}
    if not isinstance(query, Mapping):
        raise InvalidInput("查询须为对象 / the query must be an object", field="query")
    unknown = sorted(set(query) - {"from", "to", "group_by", *FILTERS})
    if unknown:
        raise InvalidInput(f"未知的查询参数 / unknown query field {unknown[0]!r}", field=unknown[0])
    day_from, day_to = _day(query, "from"), _day(query, "to")
    if day_from > day_to:
        raise InvalidInput("开始日期晚于结束日期 / from is after to", field="to")
    if (day_to - day_from).days + 1 > MAX_DAYS:
        raise InvalidInput(f"日期范围最多 {MAX_DAYS} 天 / a range covers at most {MAX_DAYS} days", field="to")
    filters: dict[str, str] = {}
    for key, dim in FILTERS.items():
        value = query.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > 80:
            raise InvalidInput(f"{key} 无效 / invalid {key}", field=key)
        if key == "channel" and value not in CHANNELS:
            raise InvalidInput(f"渠道须为 {'/'.join(CHANNELS)} / channel must be one of {CHANNELS}", field="channel")
        if dim in table.dims:
            filters[key] = value
    return table, Query(day_from, day_to, _group_by(table, query.get("group_by")), **filters)


def finish(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of summed counts with its derived columns and rates added."""
    out = dict(row)
    if table is BOOKINGS:
        out["cancelled"] = sum(int(row[k] or 0) for k in CANCELLATIONS)
    for r in table.rates:
        out[r.column.key] = rate(_sum(row, r.numerator), _sum(row, r.denominator))
    return out


def rate(numerator: int | None, denominator: int | None) -> float | None:
    """numerator ÷ denominator to 4 places; None when the denominator is 0 or unknown."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def to_csv(answer: Mapping[str, Any]) -> str:
    """The rows of a `table` answer as CSV for Excel: UTF-8 with a BOM, one header row
    "中文 English" per column, ISO dates, rates as plain numbers, empty for no data."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    columns = answer["columns"]
    writer.writerow([f"{c['zh']} {c['en']}" for c in columns])
    for row in answer["rows"]:
        writer.writerow(["" if row.get(c["key"]) is None else row[c["key"]] for c in columns])
    return out.getvalue()


def _sum(row: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    total = 0
    for k in keys:
        value = row.get(k)
        if value is None:
            return None  # unknown (e.g. no visit total reported): no rate, never a guess
        total += int(value)
    return total


def _day(query: Mapping[str, Any], key: str) -> date:
    value = query.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"缺少日期 {key}（YYYY-MM-DD）/ {key} is required (YYYY-MM-DD)", field=key)
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"日期无效 / {key} is not a date YYYY-MM-DD: {value!r}", field=key) from None


def _group_by(table: Table, value: Any) -> tuple[str, ...]:
    if value is None:
        return table.default_group_by
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("group_by 须为维度列表 / group_by must be a list of dimensions", field="group_by")
    unknown = [v for v in value if v not in table.dims]
    if unknown:
        raise InvalidInput(f"{table.name} 没有维度 {unknown[0]!r} / unknown dimension (one of {', '.join(table.dims)})",
                           field="group_by")
    return tuple(d for d in DIM_ORDER if d in value)
