"""The in-memory event store passes the same conformance suite as PostgreSQL, with no server."""

from __future__ import annotations

import time

import pytest

from infra.eventstore import InMemoryEventStore
from tests.eventstore_contract import EventStoreContract

pytestmark = pytest.mark.unit


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self):
        return InMemoryEventStore()

    def slow_append(self, store, events, hold, started, ended):
        def held(positions: list[int]) -> None:
            started()
            time.sleep(hold)

        try:
            result = store.append_slowly({events[0].stream: (None, events)}, held)
        finally:
            ended()
        return [e.position for e in result.events]
