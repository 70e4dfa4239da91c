"""infra.memory.JsonMemory on PostgreSQL, and the unit tests' FakeMemory held to the same
behaviour: one suite, two backends, so the fake cannot drift from what the services get."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.db import Database, apply_schema, ensure_database
from infra.memory import JsonMemory, NotKnownYet
from tests.unit.fakes import FakeDb, FakeMemory

pytestmark = pytest.mark.integration

APPT = {"appointment_id": "appt-1", "doctor_id": "dr-王", "sequence_number": 7, "paid": False, "note": None}


@pytest.fixture(params=["postgres", "fake"])
def backend(request, fresh_dsn) -> Iterator[tuple[Any, Any]]:
    if request.param == "fake":
        yield FakeDb(), FakeMemory("appointments", "appointment_id")
        return
    memory = JsonMemory("appointments", "appointment_id")
    dsn = fresh_dsn("memory")
    ensure_database(dsn)
    db = Database(dsn, size=2)
    apply_schema(db, memory.schema + memory.schema)  # idempotent: services apply it at every start
    yield db, memory
    db.close()


def test_what_is_remembered_is_recalled_as_json_keeps_it(backend):
    db, memory = backend
    with db.transaction() as cur:
        memory.remember(cur, "appt-1", APPT)
    with db.transaction() as cur:
        assert memory.recall(cur, "appt-1") == APPT


def test_remembering_again_replaces_the_document(backend):
    db, memory = backend
    with db.transaction() as cur:
        memory.remember(cur, "appt-1", APPT)
        memory.remember(cur, "appt-1", {**APPT, "sequence_number": 3})
    with db.transaction() as cur:
        assert memory.recall(cur, "appt-1")["sequence_number"] == 3


def test_nothing_remembered_is_not_known_yet_a_lookup_error(backend):
    db, memory = backend
    with db.transaction() as cur, pytest.raises(NotKnownYet, match="appointment_id='appt-9'") as caught:
        memory.recall(cur, "appt-9")
    assert isinstance(caught.value, LookupError)


def test_a_rolled_back_transaction_remembers_nothing(backend):
    db, memory = backend
    with pytest.raises(RuntimeError), db.transaction() as cur:
        memory.remember(cur, "appt-1", APPT)
        raise RuntimeError("the HIS said no")
    with db.transaction() as cur, pytest.raises(NotKnownYet):
        memory.recall(cur, "appt-1")


@pytest.mark.parametrize("table, key", [("appointments; DROP TABLE x", "id"), ("t", "Key"), ("", "id")])
def test_only_plain_identifiers_are_spliced_into_sql(table, key):
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        JsonMemory(table, key)
