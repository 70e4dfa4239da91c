"""A consumer's memory of things it has seen, one JSON document per key, in its own database.

Later events often carry only what changed (a cancellation names the appointment, not the doctor
or the time), so a consumer that needs the whole picture remembers the document the first event
carried and recalls it for the later ones. Events of one stream can arrive out of order (retries
run on their own clock): a recall that finds nothing raises `NotKnownYet`, a LookupError, and the
reliable handler retries that delivery, by then usually after the first event went through.

Every call takes the caller's cursor: the memory changes in the same transaction as the rest of
the reaction (and its inbox claim), or not at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from infra.handling import Transient

__all__ = ["Cursor", "JsonMemory", "NotKnownYet"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Cursor(Protocol):
    """The part of a DB-API cursor the memory uses."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...


class NotKnownYet(Transient, LookupError):
    """Nothing is remembered under this key (yet): retry after the event that brings it.

    Transient: the event that brings it is in the store before this one (a cancellation follows
    its booking) and is handled once its own dependency answers, however long that takes; parked
    after the retry budget, a cancellation's SMS was lost when booking's replicas were restarting
    (tests/faults: `tell_cancelled` parked while `confirm_booking` waited for booking)."""


class JsonMemory:
    """`table (<key> text PRIMARY KEY, data jsonb)`: remember overwrites, recall reads or raises."""

    def __init__(self, table: str, key: str) -> None:
        for name in (table, key):
            # Both are spliced into SQL: only plain lower-case identifiers, never input.
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")
        self.table = table
        self.key = key

    def __repr__(self) -> str:
        return f"JsonMemory({self.table!r}, {self.key!r})"

    @property
    def schema(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n"
            f"    {self.key} text PRIMARY KEY,\n"
            f"    data jsonb NOT NULL\n"
            f");\n"
        )

    def remember(self, cur: Cursor, key_value: str, data: Mapping[str, Any]) -> None:
        """Keep `data` as what is known of `key_value`, replacing what was known before."""
        cur.execute(
            f"INSERT INTO {self.table} ({self.key}, data) VALUES (%s, %s) "
            f"ON CONFLICT ({self.key}) DO UPDATE SET data = EXCLUDED.data",
            (key_value, json.dumps(dict(data), ensure_ascii=False)),
        )

    def recall(self, cur: Cursor, key_value: str) -> dict[str, Any]:
        """What was last remembered of `key_value`; NotKnownYet when nothing was."""
        cur.execute(f"SELECT data FROM {self.table} WHERE {self.key} = %s", (key_value,))
        row = cur.fetchone()
        if row is None:
            raise NotKnownYet(
                f"{self.table}: nothing remembered for {self.key}={key_value!r} yet "
                f"(the event that brings it has not been handled; retry after it)"
            )
        return dict(row[0])
