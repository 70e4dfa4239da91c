"""The PostgreSQL event store.

Gap-free global order, the mechanism: every append updates the single row of `es_head` to hand
out its positions. That row lock is held until the appending transaction commits, so positions
are handed out in commit order and a reader that has read up to position p can never later
meet a committed event below p (`bigserial` alone would let a slow transaction commit a lower
number after a reader passed it). The cost is that appends are serialised at the head; each is
a single round trip (the `es_append` function in autocommit mode) so the lock is held for one
statement plus the commit. Group commit: appends that arrive in one process while another is in
flight are combined by the next leader into one es_append call (at most GROUP_MAX requests),
which checks and stores each request in order and answers each on its own (stored, repeat,
partial duplicate, conflict), so they share one head lock and one commit.
tests/integration/test_eventstore.py proves it with concurrent
writers, some holding their transaction open, and a reader that must see every event once,
in order.
"""

from __future__ import annotations

import json
import os
import select
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from contracts.envelope import Envelope
from infra.db import DEFAULT_IDLE_S, Database, apply_schema, ensure_database, shared_database
from infra.eventstore.base import (
    COLUMNS,
    AppendResult,
    PartialDuplicate,
    WrongExpectedVersion,
    meta_of,
    ordered_events,
    row_to_envelope,
)

SCHEMA = (Path(__file__).with_name("schema.sql")).read_text(encoding="utf-8")
NOTIFY_CHANNEL = "es_appended"
_COLUMNS = COLUMNS
GROUP_MAX = 64  # requests per es_append call


class _Request:
    """One caller's append waiting in a group: its outcome, and the event that wakes it."""

    __slots__ = ("appends", "ordered", "result", "error", "done", "lead")

    def __init__(self, appends: Mapping[str, tuple[int | None, Sequence[Envelope]]],
                 ordered: list[Envelope]) -> None:
        self.appends = appends
        self.ordered = ordered
        self.result: AppendResult | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False  # woken to lead the next group, not with an outcome


class PostgresEventStore:
    """The EventStore protocol on PostgreSQL (see the module docstring for the gap-free order)."""

    def __init__(self, dsn: str, pool_size: int = 10, shared: bool = False,
                 idle_s: float = DEFAULT_IDLE_S) -> None:
        self.dsn = dsn
        self.db = shared_database(dsn, pool_size, autocommit=True, idle_s=idle_s) if shared else Database(
            dsn, size=pool_size, autocommit=True, idle_s=idle_s)
        self._group_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._leading = False

    def setup(self) -> None:
        ensure_database(self.dsn)
        apply_schema(self.db, SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- writing --------------------------------------------------------------------------

    def append(self, appends: Mapping[str, tuple[int | None, Sequence[Envelope]]]) -> AppendResult:
        """Append atomically to one or more streams, each with its expected version
        (0 = the stream must not exist yet, None = any). Raises WrongExpectedVersion.

        Group commit: appends that arrive while another is in flight wait in `_pending`; the
        next leader sends up to GROUP_MAX of them in one es_append call (one commit), and each
        gets its own outcome. threading.Lock/Event are green under eventlet's monkey patching."""
        request = _Request(appends, ordered_events(appends))
        with self._group_lock:
            self._pending.append(request)
            lead = not self._leading
            if lead:
                self._leading = True
        if not lead:
            request.done.wait()
            if request.lead:
                lead = True
        if lead:
            self._lead()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self) -> None:
        with self._group_lock:
            batch = self._pending[:GROUP_MAX]
            del self._pending[:GROUP_MAX]
        try:
            self._run_group(batch)
        finally:
            with self._group_lock:
                if self._pending:
                    successor = self._pending[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leading = False
            for req in batch:
                if req.result is None and req.error is None:
                    req.error = RuntimeError("append not run")
                req.done.set()

    def _run_group(self, batch: list[_Request]) -> None:
        sql, params = append_statement(*(req.appends for req in batch))
        try:
            with self.db.transaction() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
        except psycopg2.Error as exc:
            if len(batch) > 1:
                # Refused as a whole: each alone, so one bad request never fails its neighbours.
                for req in batch:
                    self._run_group([req])
                return
            req = batch[0]
            error = _translate(exc, req.appends)
            if isinstance(error, WrongExpectedVersion | PartialDuplicate):
                repeat = self._already_stored(req.ordered)
                if repeat is not None:
                    req.result = repeat
                    return
            req.error = error
            req.error.__cause__ = exc
            return
        by_request: dict[int, list[tuple[Any, ...]]] = {}
        for r in rows:
            by_request.setdefault(r[5], []).append(r)
        for i, req in enumerate(batch, start=1):
            try:
                req.result = self._outcome(req, by_request.get(i, []))
            except Exception as exc:  # noqa: BLE001 - handed to the caller of this request
                req.error = exc

    def _outcome(self, req: _Request, rows: list[tuple[Any, ...]]) -> AppendResult:
        status = rows[0][6] if rows else "missing"
        if status == "conflict":
            stream = rows[0][1]
            raise WrongExpectedVersion(stream, req.appends[stream][0], int(rows[0][7]))
        if status == "partial":
            raise PartialDuplicate(f"{rows[0][7]} of {len(req.ordered)} events are already stored")
        if status == "duplicate":
            # The events as first stored, not the caller's new copies (their data may differ).
            stored_before = self._already_stored(req.ordered)
            if stored_before is not None:
                return stored_before
            raise PartialDuplicate("the stored events vanished")  # cannot happen: append-only
        if status != "ok":
            raise RuntimeError(f"es_append answered nothing for a request ({status})")
        placed = {r[0]: (r[2], r[3]) for r in rows}
        stored = [ev.model_copy(update={"version": placed[ev.event_id][0], "position": placed[ev.event_id][1]})
                  for ev in req.ordered]
        stored.sort(key=lambda e: e.position or 0)
        return AppendResult(events=stored, duplicate=False)

    def _already_stored(self, events: Sequence[Envelope]) -> AppendResult | None:
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS} FROM es_events WHERE event_id = ANY (%s) ORDER BY position",
            ([e.event_id for e in events],),
        )
        if len(rows) != len(events):
            return None
        return AppendResult(events=[row_to_envelope(r) for r in rows], duplicate=True)

    def append_to(self, stream: str, expected: int | None, *events: Envelope) -> AppendResult:
        return self.append({stream: (expected, list(events))})

    # --- reading --------------------------------------------------------------------------

    def read_stream(self, stream: str, from_version: int = 1) -> list[Envelope]:
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS} FROM es_events WHERE stream = %s AND version >= %s ORDER BY version",
            (stream, from_version),
        )
        return [row_to_envelope(r) for r in rows]

    def read_streams(self, streams: Sequence[str], from_versions: Mapping[str, int] | None = None
                     ) -> dict[str, list[Envelope]]:
        """Several streams in one query (one snapshot): what a decision reads. Each from version 1,
        or from `from_versions[stream]` (a cache that holds a stream's head reads only its tail)."""
        out: dict[str, list[Envelope]] = {s: [] for s in streams}
        if not out:
            return out
        if from_versions:
            names = list(out)
            rows = self.db.fetchall(
                f"SELECT {_COLUMNS} FROM unnest(%s::text[], %s::int[]) AS f(s, v) "
                f"JOIN es_events ON stream = f.s AND version >= f.v ORDER BY stream, version",
                (names, [max(int(from_versions.get(n, 1)), 1) for n in names]),
            )
        else:
            rows = self.db.fetchall(
                f"SELECT {_COLUMNS} FROM es_events WHERE stream = ANY (%s) ORDER BY stream, version",
                (list(out),),
            )
        for r in rows:
            out[r[1]].append(row_to_envelope(r))
        return out

    def stream_version(self, stream: str) -> int:
        row = self.db.fetchone(
            "SELECT version FROM es_events WHERE stream = %s ORDER BY version DESC LIMIT 1", (stream,)
        )
        return int(row[0]) if row else 0

    def read_all(self, from_position: int = 0, limit: int = 1000) -> list[Envelope]:
        """Events with position > from_position, in global order."""
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS} FROM es_events WHERE position > %s ORDER BY position LIMIT %s",
            (from_position, limit),
        )
        return [row_to_envelope(r) for r in rows]

    def read_all_raw(self, from_position: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Rows without building envelopes: for bulk replay where pydantic would dominate."""
        return self.db.fetchall(
            f"SELECT {_COLUMNS} FROM es_events WHERE position > %s ORDER BY position LIMIT %s",
            (from_position, limit),
        )

    def read_filtered_raw(self, from_position: int, types: Sequence[str], limit: int = 1000
                          ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of the given types after `from_position`, and how far that read reached: the head
        as one snapshot saw it (all of it when fewer than `limit` rows matched). One statement,
        one snapshot: every event up to that head is committed and was considered."""
        # The head comes from the same statement (one snapshot) even when nothing matches: read
        # separately, it could pass an event committed between the two reads.
        rows = self.db.fetchall(
            f"WITH head AS (SELECT position AS upto FROM es_head WHERE id = 1) "
            f"SELECT head.upto, e.* FROM head LEFT JOIN LATERAL ("
            f"SELECT {_COLUMNS} FROM es_events WHERE position > %s AND position <= head.upto "
            f"AND type = ANY (%s) ORDER BY position LIMIT %s) e ON true",
            (from_position, list(types), limit),
        )
        head = int(rows[0][0])
        matched = [r[1:] for r in rows if r[1] is not None]
        upto = int(matched[-1][0]) if len(matched) == limit else head
        return matched, upto

    def get_event(self, event_id: uuid.UUID) -> Envelope | None:
        row = self.db.fetchone(f"SELECT {_COLUMNS} FROM es_events WHERE event_id = %s", (event_id,))
        return row_to_envelope(row) if row else None

    def get_events(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Envelope]:
        """Those of `event_ids` that are stored, in one query (a batch's repeats)."""
        if not event_ids:
            return {}
        rows = self.db.fetchall(f"SELECT {_COLUMNS} FROM es_events WHERE event_id = ANY (%s)", (list(event_ids),))
        return {env.event_id: env for env in map(row_to_envelope, rows)}

    def head(self) -> int:
        row = self.db.fetchone("SELECT position FROM es_head WHERE id = 1")
        return int(row[0]) if row else 0

    def listen(self) -> PostgresListener:
        """A fresh wake-up source for one run of a subscription (LISTEN es_appended)."""
        return PostgresListener(self.dsn)

    # --- checkpoints of readers that live beside the store ---------------------------------

    def checkpoint(self, name: str) -> int:
        row = self.db.fetchone("SELECT position FROM es_checkpoints WHERE name = %s", (name,))
        return int(row[0]) if row else 0

    def save_checkpoint(self, name: str, position: int) -> None:
        self.db.execute(
            "INSERT INTO es_checkpoints (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = GREATEST(es_checkpoints.position, EXCLUDED.position), "
            "updated_at = now()",
            (name, position),
        )


_APPEND_SQL = (
    "SELECT o_event_id, o_stream, o_version, o_position, o_duplicate, o_request, o_status, o_actual "
    "FROM es_append(%s::integer[], %s::integer[], %s::integer[], %s::integer[], "
    "%s::text[], %s::integer[], %s::text[], %s::uuid[], %s::text[], %s::integer[], %s::text[], "
    "%s::jsonb[], %s::jsonb[], %s::timestamptz[])"
)


def append_statement(
    *requests: Mapping[str, tuple[int | None, Sequence[Envelope]]],
) -> tuple[str, tuple[Any, ...]]:
    """The es_append call for one or more append requests: (sql, params). Its rows are
    (event_id, stream, version, position, duplicate, request number from 1, status, actual).
    Tests use it to run exactly the store's statement inside a transaction of their own."""
    stream_lo: list[int] = []
    stream_hi: list[int] = []
    event_lo: list[int] = []
    event_hi: list[int] = []
    streams: list[str] = []
    expected_versions: list[int | None] = []
    ordered: list[Envelope] = []
    for appends in requests:
        events = ordered_events(appends)
        stream_lo.append(len(streams) + 1)
        for stream, (expected, evs) in appends.items():
            if evs:
                streams.append(stream)
                expected_versions.append(expected)
        stream_hi.append(len(streams))
        event_lo.append(len(ordered) + 1)
        ordered.extend(events)
        event_hi.append(len(ordered))
    params = (
        stream_lo, stream_hi, event_lo, event_hi, streams, expected_versions,
        [e.stream for e in ordered], [e.event_id for e in ordered], [e.type for e in ordered],
        [e.schema_version for e in ordered], [e.source for e in ordered],
        [json.dumps(e.data, ensure_ascii=False) for e in ordered],
        [json.dumps(meta_of(e), ensure_ascii=False) for e in ordered],
        [e.occurred_at for e in ordered],
    )
    return _APPEND_SQL, params


def _translate(exc: psycopg2.Error, appends: Mapping[str, Any]) -> Exception:
    code = getattr(exc, "pgcode", None)
    if code == "ES001":
        diag = exc.diag
        msg = diag.message_primary or ""
        stream = next((s for s in appends if f"stream {s} " in msg), "?")
        actual = int(diag.message_detail or 0)
        expected = appends.get(stream, (None,))[0]
        return WrongExpectedVersion(stream, expected, actual)
    if code == "ES002":
        return PartialDuplicate(exc.diag.message_primary or "partial duplicate")
    if isinstance(exc, psycopg2.errors.UniqueViolation):
        # Two appenders raced with the same new event id, or the same new stream: both are a
        # conflict the caller resolves by reading again.
        constraint = getattr(exc.diag, "constraint_name", "") or ""
        if "event_id" in constraint:
            return PartialDuplicate("an event with this id was stored concurrently")
        stream = next(iter(appends))
        return WrongExpectedVersion(stream, appends[stream][0], -1)
    return exc


class PostgresListener:
    """LISTEN es_appended on a connection of its own, plus a pipe that wake() writes to.

    One per run of a subscription, never reused: a closed pipe's descriptor numbers are handed to
    new sockets by the kernel, and a reused object would then read someone else's socket (seen
    as eventlet's "Second simultaneous read on fileno N" after a PostgreSQL restart).
    """

    def __init__(self, dsn: str) -> None:
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        try:
            # LISTEN before the first read: an append committed in between still wakes us.
            self._conn: psycopg2.extensions.connection = psycopg2.connect(
                dsn, application_name="appt-subscription")
            self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            self._close_pipe()
            raise

    def wait(self, timeout: float) -> None:
        if self._closed:
            return
        conn = self._conn
        if conn.notifies:
            conn.notifies.clear()
            return
        ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], timeout)
        if conn.fileno() in ready:
            conn.poll()
            conn.notifies.clear()

    def wake(self) -> None:
        if not self._closed:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - closing a connection a restart already broke
            pass
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
