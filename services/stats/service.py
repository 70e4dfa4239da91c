"""stats: the nameko entrypoints. The figures are kept by a projection of the event store
(readmodel.FiguresRunner); each RPC validates its query (catalogue.parse) and reads one snapshot."""

from __future__ import annotations

from typing import Any

from infra.health import HealthChecks
from infra.metrics import Metrics
from infra.projections import Projection
from infra.providers import Clock, LogContext, ServiceDatabase, contract
from infra.rpc import rpc
from services.stats import catalogue, readmodel


class StatsService:
    name = "stats"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    figures: Projection = readmodel.FiguresRunner(readmodel.PROJECTOR)
    now = Clock()
    metrics = Metrics()
    checks = HealthChecks()

    @rpc
    def health(self) -> dict[str, Any]:
        """The service's facts (infra.health): database, store, broker, relay, the figures' lag."""
        return self.checks.report()

    @rpc
    @contract()
    def tables(self) -> list[dict[str, Any]]:
        return catalogue.describe()

    @rpc
    @contract()
    def table(self, name: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._table(name, query)

    @rpc
    @contract()
    def table_csv(self, name: str, query: dict[str, Any] | None = None) -> str:
        return catalogue.to_csv(self._table(name, query))

    @rpc
    @contract()
    def lag(self) -> dict[str, Any]:
        return readmodel.lag(self.figures, self.now())

    @rpc
    @contract()
    def summary(self) -> dict[str, Any]:
        with self.db.transaction() as cur:
            return readmodel.summary(cur)

    def _table(self, name: str, query: dict[str, Any] | None) -> dict[str, Any]:
        t, q = catalogue.parse(name, query)
        with self.db.transaction() as cur:
            return readmodel.table(cur, t, q)
