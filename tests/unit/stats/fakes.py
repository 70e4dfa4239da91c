"""stats' tables as dicts, kept the way readmodel.write keeps the SQL ones: counts added, sessions,
visits and names replaced, one lead per booking; with the projection's checkpoint rule
(figures.fresh), so that unit tests fold real event sequences exactly as the projection does."""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from contracts import Envelope
from infra.eventstore import CatchUpSubscription, EventStore
from services.stats import catalogue, figures


class MemoryFigures:
    def __init__(self) -> None:
        self.checkpoint = 0
        self.batches = 0
        self.sessions: dict[str, figures.Session] = {}
        self.bookings: defaultdict[figures.BookingKey, Counter[str]] = defaultdict(Counter)
        self.stops: defaultdict[figures.StopKey, Counter[str]] = defaultdict(Counter)
        self.accounts: defaultdict[date, Counter[str]] = defaultdict(Counter)
        self.leads: dict[str, figures.Lead] = {}
        self.visits: dict[tuple[date, str], tuple[int, int]] = {}
        self.hospitals: dict[str, str] = {}
        self.departments: dict[str, tuple[str, str]] = {}
        self.doctors: dict[str, tuple[str, str, str]] = {}

    def handle_batch(self, batch: Sequence[Envelope]) -> None:
        self.batches += 1
        new = figures.fresh(batch, self.checkpoint)
        known = {i: copy.deepcopy(self.sessions[i]) for i in figures.session_ids(new) if i in self.sessions}
        ch = figures.fold(new, known)
        for sid in ch.touched:
            self.sessions[sid] = ch.sessions[sid]
        for table, deltas in ((self.bookings, ch.bookings), (self.stops, ch.stops), (self.accounts, ch.accounts)):
            for key, counts in deltas.items():
                table[key].update(counts)  # type: ignore[index]
        for lead in ch.leads:
            assert lead.appointment_id not in self.leads, f"a second lead for {lead.appointment_id}"
            self.leads[lead.appointment_id] = lead
        for key, (visits, position) in ch.visits.items():
            if position > self.visits.get(key, (0, 0))[1]:
                self.visits[key] = (visits, position)
        self.hospitals.update(ch.hospitals)
        self.departments.update(ch.departments)
        self.doctors.update(ch.doctors)
        self.checkpoint = max(self.checkpoint, batch[-1].position or 0)

    def catch_up(self, store: EventStore, batch_size: int = 500) -> None:
        """Through the subscription the service runs (types filtered by the store)."""
        CatchUpSubscription(store, self.handle_batch, lambda: self.checkpoint, batch_size=batch_size,
                            types=figures.event_types()).catch_up()

    # --- what the queries would answer, summed in Python -------------------------------------

    def counts(self, table: str) -> dict[Any, dict[str, int]]:
        source = {"bookings": self.bookings, "stops": self.stops, "accounts": self.accounts}[table]
        names = {"bookings": figures.BOOKING_COUNTS, "stops": figures.STOP_COUNTS,
                 "accounts": figures.ACCOUNT_COUNTS}[table]
        return {k: {n: c[n] for n in names} for k, c in source.items()}

    def grouped(self, table: catalogue.Table, by: Callable[[Any], Any]) -> dict[Any, dict[str, Any]]:
        """Counts of `table` summed by by(key), with the catalogue's derived columns and rates."""
        sums: dict[Any, Counter[str]] = defaultdict(Counter)
        for key, counts in self.counts(table.name).items():
            sums[by(key)].update(counts)
        return {k: catalogue.finish(table, dict(c)) for k, c in sums.items()}
