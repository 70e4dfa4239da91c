"""gateway: the statistics endpoints (a mixin of GatewayService): the tables the stats service
projects from the event store, as JSON for the analyst page and as CSV for Excel, and how far the
projections are behind the store. The analyst and the platform admin see the province; a hospital
admin only their own hospital (the filter is forced to it, another hospital is refused)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from contracts import Forbidden, InvalidInput, NotFound
from services.gateway.api import api, call, day_param, json_response
from services.gateway.auth import Principal, Role
from services.gateway.openapi import DAY, query

READERS: tuple[Role, ...] = ("analyst", "platform_admin", "hospital_admin")
CHANNELS = ("web", "phone", "window")
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
DEFAULT_DAYS = 30
_NAME = re.compile(r"^[a-z][a-z_]{0,39}$")
_TABLE_QUERY = (
    query("from", {**DAY, "description": "first day, inclusive (default: 29 days before `to`)"}),
    query("to", {**DAY, "description": "last day, inclusive (default: today, Beijing time)"}),
    query("hospital_id", {"type": "string", "description": "a hospital admin's is always their own"}),
    query("department_id"),
    query("channel", {"type": "string", "enum": list(CHANNELS)}),
    query("group_by", {"type": "string", "description": "dimensions, comma-separated (default: the table's "
                                                        "default_group_by, see /api/v1/stats/tables)"}),
)
_TABLE_PATH = {"table": "bookings, stops, sellout, accounts or share (GET /api/v1/stats/tables)"}
_TABLE_ANSWER = {
    "type": "object", "required": ["table", "columns", "rows", "query"],
    "properties": {
        "table": {"type": "string"},
        "columns": {"type": "array", "items": {"type": "object", "required": ["key", "kind"], "properties": {
            "key": {"type": "string"}, "zh": {"type": "string"}, "en": {"type": "string"},
            "kind": {"type": "string"}}}},
        "rows": {"type": "array", "items": {"type": "object"}},
        "query": {"type": "object"},
        "position": {"type": "integer"},
    },
}


class StatsEndpoints:
    stats: Any  # RpcProxy("stats"), declared on GatewayService
    limits: Any

    @api("GET", "/api/v1/stats/tables", "the statistics tables: their dimensions and default grouping", "stats",
         roles=READERS)
    def stats_tables(self, request: Request, principal: Principal) -> Response:
        return json_response({"tables": call(self.stats.tables)})

    @api("GET", "/api/v1/stats/lag", "how far each statistics projection is behind the event store", "stats",
         roles=READERS)
    def stats_lag(self, request: Request, principal: Principal) -> Response:
        return json_response(call(self.stats.lag))

    @api("GET", "/api/v1/stats/<string:table>", "a statistics table for a date range (default: the last 30 days), "
         "filtered and grouped", "stats", roles=READERS, query=_TABLE_QUERY, path_help=_TABLE_PATH,
         answer=_TABLE_ANSWER)
    def stats_table(self, request: Request, principal: Principal, table: str) -> Response:
        asked = stats_query(request, principal)  # refused before any RPC when the query is bad
        return json_response(call(self.stats.table, self._readable(table, principal), asked))

    @api("GET", "/api/v1/stats/<string:table>.csv", "the same table as CSV for Excel (UTF-8 with BOM, Chinese and "
         "English headers, ISO dates)", "stats", roles=READERS, query=_TABLE_QUERY, path_help=_TABLE_PATH,
         media_type="text/csv")
    def stats_table_csv(self, request: Request, principal: Principal, table: str) -> Response:
        asked = stats_query(request, principal)
        text = call(self.stats.table_csv, self._readable(table, principal), asked)
        filename = f"stats-{table}-{asked['from']}-{asked['to']}.csv"
        return Response(text, mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})

    def _readable(self, table: str, principal: Principal) -> str:
        """A table the stats service has (its list cached for a minute; anything else is 404 here)
        and the principal may read: a hospital admin only tables with a hospital dimension, as the
        service ignores a filter a table has no dimension for (registrations are the province's)."""
        dims = self.limits.names.get("stats:tables", lambda: {
            t["name"]: ",".join(t["dims"]) for t in call(self.stats.tables)})
        if not _NAME.match(table) or table not in dims:
            raise NotFound(f"没有这个统计表 / no statistics table {table[:40]}", field="table")
        if principal.role == "hospital_admin" and "hospital" not in dims[table].split(","):
            raise Forbidden("此表为全省数据 / this table holds the province's figures, not a hospital's",
                            field="table")
        return table


def stats_query(request: Request, principal: Principal) -> dict[str, Any]:
    """The query of the stats contract from the request's parameters, the hospital scope applied.
    Refusals name the parameter; the stats service checks the dimensions and the range's length."""
    args = request.args
    last = day_param(args.get("to"), _today(), "to")
    first = day_param(args.get("from"), last - timedelta(days=DEFAULT_DAYS - 1), "from")
    if first > last:
        raise InvalidInput("开始日期晚于结束日期 / from is after to", field="from")
    asked: dict[str, Any] = {"from": first.isoformat(), "to": last.isoformat()}
    hospital_id = args.get("hospital_id") or None
    if principal.role == "hospital_admin":
        if hospital_id is not None and hospital_id != principal.hospital_id:
            raise Forbidden("只能查看本院统计 / a hospital admin sees their own hospital's figures",
                            field="hospital_id")
        hospital_id = principal.hospital_id
    if hospital_id:
        asked["hospital_id"] = hospital_id
    if department_id := args.get("department_id"):
        asked["department_id"] = department_id
    if channel := args.get("channel"):
        if channel not in CHANNELS:
            raise InvalidInput(f"channel 应为 {'、'.join(CHANNELS)} / channel: one of {', '.join(CHANNELS)}",
                               field="channel")
        asked["channel"] = channel
    if group_by := args.get("group_by"):
        dims = [d.strip() for d in group_by.split(",") if d.strip()]
        if not dims or len(dims) > 5 or not all(_NAME.match(d) for d in dims):
            raise InvalidInput("group_by 应为逗号分隔的维度 / group_by: dimensions, comma-separated",
                               field="group_by")
        asked["group_by"] = dims
    return asked


def _today() -> date:
    return datetime.now(HOSPITAL_TZ).date()
