"""Counting, from the store (not RabbitMQ): a projection of the global order (infra.projections),
so a rebuild from position 0 replays exactly what the live projection saw. All SQL of stats."""

from __future__ import annotations

from typing import Any

from contracts import AppointmentBooked, Envelope
from infra.projections import Projector

SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    day         date NOT NULL,
    hospital_id text NOT NULL,
    metric      text NOT NULL,
    channel     text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (day, hospital_id, metric, channel)
);
"""

PROJECTOR = Projector("stats")


@PROJECTOR.on(AppointmentBooked)
def _booked(cur: Any, event: AppointmentBooked, env: Envelope) -> None:
    _bump(cur, event.date, event.hospital_id, "booked", event.channel)


def _bump(cur: Any, day: str, hospital_id: str, metric: str, channel: str, by: int = 1) -> None:
    cur.execute(
        "INSERT INTO counts VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (day, hospital_id, metric, channel) DO UPDATE SET n = counts.n + EXCLUDED.n",
        (day, hospital_id, metric, channel, by),
    )


def summary(cur: Any) -> dict[str, Any]:
    cur.execute("SELECT metric, channel, sum(n) FROM counts GROUP BY metric, channel ORDER BY 1, 2")
    out: dict[str, dict[str, int]] = {}
    for metric, channel, n in cur.fetchall():
        out.setdefault(metric, {})[channel] = int(n)
    cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (PROJECTOR.name,))
    row = cur.fetchone()
    return {"metrics": out, "position": int(row[0]) if row else 0}
