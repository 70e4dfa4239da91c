"""Fakes at the edges of a service's reactions, for `Application.react` in unit tests.

`FakeDb` is the service database as dicts of rows per table. `transaction()` hands out a cursor over
a copy of them, kept when the block ends and dropped when it raises, as a real transaction. The
only SQL it runs is the kernel's inbox claim (infra.handling.claim, issued by Application.react);
a handler that sent any other statement would fail here: its SQL belongs in the read model, and
the read model's surfaces are faked (over the same cursor's tables) next to each test.

`CountingHasher` is argon2 at the password boundary, recording what each check verified against.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import argon2

from contracts import Envelope, Event
from infra.application import Application
from infra.memory import NotKnownYet
from infra.passwords import ARGON2, Passwords


class FakeCursor:
    def __init__(self, tables: dict[str, dict[Any, Any]]) -> None:
        self.tables = tables
        self.rowcount = -1

    def table(self, name: str) -> dict[Any, Any]:
        return self.tables.setdefault(name, {})

    def execute(self, sql: str, params: Any = None) -> None:
        if not sql.startswith("INSERT INTO inbox (consumer, event_id)"):
            raise AssertionError(f"SQL outside the read model reached the database: {sql}")
        inbox = self.table("inbox")
        key = tuple(params)
        self.rowcount = 0 if key in inbox else 1
        inbox[key] = True


class FakeDb:
    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Any]] = {}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[FakeCursor]:
        cur = FakeCursor(copy.deepcopy(self.tables))
        yield cur
        self.tables = cur.tables

    def rows(self, table: str) -> dict[Any, Any]:
        """What is committed in `table`."""
        return self.tables.get(table, {})

    def claims(self) -> list[tuple[str, str]]:
        return sorted(self.rows("inbox"))


class FakeMemory:
    """infra.memory.JsonMemory over a FakeCursor: the document is stored as JSON would keep it."""

    def __init__(self, table: str, key: str) -> None:
        self.table = table
        self.key = key

    def remember(self, cur: FakeCursor, key_value: str, data: Mapping[str, Any]) -> None:
        cur.table(self.table)[key_value] = json.loads(json.dumps(dict(data), ensure_ascii=False))

    def recall(self, cur: FakeCursor, key_value: str) -> dict[str, Any]:
        rows = cur.table(self.table)
        if key_value not in rows:
            raise NotKnownYet(f"{self.table}: nothing remembered for {self.key}={key_value!r} yet")
        return dict(rows[key_value])


def envelope_of(event: Event, source: str, event_id: uuid.UUID | None = None) -> dict[str, Any]:
    """`event` as the relay publishes it (infra.relay.body_of)."""
    env = Envelope(
        event_id=event_id or uuid.uuid4(),
        type=event.type_name(),
        stream=f"{source}-test",
        source=source,
        correlation_id="corr-test",
        data=event.model_dump(mode="json"),
    )
    return env.model_dump(mode="json")


def deliver(app: Application, body: dict[str, Any], deps: Mapping[str, Any]) -> Any:
    """Hand `body` to the one reaction of `app` to its event type, as the generated entrypoint does."""
    reactions = [r for r in app.reactions if r.event_cls.type_name() == body["type"]]
    assert len(reactions) == 1, f"{app.service} has {len(reactions)} reactions to {body['type']}"
    return app.react(reactions[0], body, deps)


class CountingHasher(argon2.PasswordHasher):
    """The real argon2id of infra.passwords.ARGON2, recording the parameters of every hash a
    password was verified against: a login's cost, counted, whoever the account is."""

    def __init__(self) -> None:
        super().__init__(time_cost=ARGON2.time_cost, memory_cost=ARGON2.memory_cost,
                         parallelism=ARGON2.parallelism, hash_len=ARGON2.hash_len, salt_len=ARGON2.salt_len,
                         type=ARGON2.type)
        self.verified: list[argon2.Parameters] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.verified.append(argon2.extract_parameters(hash if isinstance(hash, str) else hash.decode()))
        return super().verify(hash, password)

    def passwords(self) -> Passwords:
        return Passwords(self)
