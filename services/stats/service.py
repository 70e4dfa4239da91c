"""stats: RPC queries over counts kept by a projection of the event store."""

from __future__ import annotations

from typing import Any

from nameko.rpc import rpc

from infra.projections import ProjectionRunner
from infra.providers import LogContext, ServiceDatabase, contract
from services.stats import readmodel


class StatsService:
    name = "stats"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    counter = ProjectionRunner(readmodel.PROJECTOR)

    @rpc
    @contract()
    def summary(self) -> dict[str, Any]:
        with self.db.transaction() as cur:
            return readmodel.summary(cur)
