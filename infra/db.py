"""PostgreSQL access shared by every process: a small pool over psycopg2.

Why psycopg2 + psycogreen and not psycopg 3: psycopg 3 in sync mode waits inside C (`wait_c`),
which eventlet cannot switch away from, so one slow query freezes every greenlet of a nameko
service (seen here: four concurrent pg_sleep(1) took 4 s). psycopg2 with
`psycogreen.eventlet.patch_psycopg()` yields to the hub while it waits (the same four took 1 s).
tests/integration/test_db_green.py keeps that true.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

psycopg2.extras.register_uuid()
_green_lock = threading.Lock()
_green_done = False


def make_green_if_patched() -> bool:
    """Install psycogreen's wait callback when eventlet has patched the socket module."""
    global _green_done
    with _green_lock:
        if _green_done:
            return True
        try:
            import eventlet.patcher
        except ImportError:
            return False
        if not eventlet.patcher.is_monkey_patched("socket"):
            return False
        from psycogreen.eventlet import patch_psycopg

        patch_psycopg()
        _green_done = True
        return True


class Database:
    """A bounded pool. `transaction()` commits on success and rolls back on error."""

    def __init__(self, dsn: str, size: int = 10, autocommit: bool = False) -> None:
        make_green_if_patched()
        self.dsn = dsn
        self.autocommit = autocommit
        self._size = size
        self._idle: queue.LifoQueue[psycopg2.extensions.connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, application_name="appt")
        conn.autocommit = self.autocommit
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                if conn.autocommit != self.autocommit:
                    conn.autocommit = self.autocommit  # back from a `_statement`; a client-side flag, no round trip
                yield conn
            finally:
                # A connection goes back to the pool whenever it is open and idle, also after an
                # error the caller rolled back (a version conflict must not cost a reconnect).
                reusable = False
                with contextlib.suppress(Exception):
                    reusable = (not conn.closed and conn.get_transaction_status()
                                == psycopg2.extensions.TRANSACTION_STATUS_IDLE)
                if reusable:
                    self._idle.put(conn)
                else:
                    broken = bool(conn.closed)
                    with contextlib.suppress(Exception):
                        conn.close()
                    if broken:
                        # The server went away (a restart, a failover): every idle connection
                        # is as dead as this one, so drop them all instead of failing once each.
                        self.close()
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction."""
        with self.connection() as conn:
            try:
                with conn.cursor() as cur:
                    yield cur
                if not self.autocommit:
                    conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise

    @contextlib.contextmanager
    def _statement(self) -> Iterator[Any]:
        """A cursor for one statement, in autocommit mode whatever the pool's mode.

        Why: psycopg2 outside autocommit sends BEGIN before the first statement and COMMIT after,
        each a round trip of its own, so a one-statement read cost three round trips (and, under
        eventlet, three waits in the hub) instead of one. One statement is its own transaction in
        PostgreSQL either way, so nothing changes for the caller: it is atomic, sees one snapshot,
        and an error leaves nothing behind (issue 15: 14 transactions per steady booking, most of
        them one statement)."""
        with self.connection() as conn:
            if not conn.autocommit:
                conn.autocommit = True
            with conn.cursor() as cur:
                yield cur

    def fetchall(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._statement() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def fetchone(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        with self._statement() as cur:
            cur.execute(sql, params)
            row: tuple[Any, ...] | None = cur.fetchone()
            return row

    def execute(self, sql: str, params: Any = None) -> None:
        with self._statement() as cur:
            cur.execute(sql, params)

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()


_shared: dict[tuple[str, bool], Database] = {}
_shared_lock = threading.Lock()


def shared_database(dsn: str, size: int, autocommit: bool = False) -> Database:
    """One pool per database and mode in a process, whoever asks for it: the providers of a
    service (store, its own tables, projections) share connections instead of each holding a
    pool, which kept several services with a handful of replicas under max_connections = 100."""
    with _shared_lock:
        key = (dsn, autocommit)
        if key not in _shared:
            _shared[key] = Database(dsn, size=size, autocommit=autocommit)
        return _shared[key]


def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it is missing (safe against concurrent callers)."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return
            with contextlib.suppress(psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def apply_schema(db: Database, ddl: str, lock_key: int = 7_000_001) -> None:
    """Run idempotent DDL under an advisory lock so that replicas (and several providers of one
    process) starting together do not race: concurrent CREATE OR REPLACE FUNCTION fails with
    "tuple concurrently updated". Its own connection, so the lock spans a real transaction even
    when the pool is in autocommit mode."""
    conn = psycopg2.connect(db.dsn, application_name="appt-schema")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            cur.execute(ddl)
    finally:
        conn.close()


def drop_database(dsn: str) -> None:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
