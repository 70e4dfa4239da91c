"""PostgreSQL access shared by every process: a small pool over psycopg2.

Why psycopg2 + psycogreen and not psycopg 3: psycopg 3 in sync mode waits inside C (`wait_c`),
which eventlet cannot switch away from, so one slow query freezes every greenlet of a nameko
service (seen here: four concurrent pg_sleep(1) took 4 s). psycopg2 with
`psycogreen.eventlet.patch_psycopg()` yields to the hub while it waits (the same four took 1 s).
tests/nameko/test_db_green.py keeps that true.

Pools shrink after a burst: one reaper per process closes connections idle for longer than
DB_IDLE_S (10 s), keeping each pool's most recently used one, and trims the heap (infra/heap.py).
tests/integration/test_db_pool.py and tests/nameko/test_db_green.py keep that true.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from infra.heap import trim_heap
from infra.logging import get_logger

psycopg2.extras.register_uuid()
_log = get_logger(__name__)
# Seconds a pooled connection may stay idle before the reaper closes it (DB_IDLE_S, Settings).
DEFAULT_IDLE_S = 10.0
# The reaper ticks every half of the shortest idle time, at most this often apart: a connection
# is closed between idle_s and idle_s + this after its last use.
REAPER_MAX_TICK_S = 5.0
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
    """A bounded pool. `transaction()` commits on success and rolls back on error.

    Connections idle for longer than `idle_s` are closed by the process's reaper (below), all but
    the most recently used one: a burst grows the pool up to `size`, and it shrinks back to one
    connection afterwards (a platform after load held 52 connections where it held 18 at rest).
    A connection checked out is never in the idle stack, so the reaper cannot close one in use."""

    def __init__(self, dsn: str, size: int = 10, autocommit: bool = False,
                 idle_s: float = DEFAULT_IDLE_S) -> None:
        make_green_if_patched()
        self.dsn = dsn
        self.autocommit = autocommit
        self.idle_s = idle_s
        self._size = size
        # Looked up at call time, so green when eventlet has patched threading (nameko services).
        self._lock = threading.Lock()
        # LIFO: the most recently returned connection on top (a warm one is reused first, and the
        # ones at the bottom are those left idle longest); each with the moment it came back.
        self._idle: list[tuple[psycopg2.extensions.connection, float]] = []
        self._slots = threading.BoundedSemaphore(size)
        _reaper.register(self)

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, application_name="appt")
        conn.autocommit = self.autocommit
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        self._slots.acquire()
        try:
            with self._lock:
                conn = self._idle.pop()[0] if self._idle else None
            if conn is None:
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
                    with self._lock:
                        self._idle.append((conn, time.monotonic()))
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

    def idle_count(self) -> int:
        """Connections open and waiting in the pool (not those checked out)."""
        with self._lock:
            return len(self._idle)

    def reap(self, now: float | None = None) -> int:
        """Close the idle connections unused for longer than `idle_s`, keeping the most recently
        used one; answers how many were closed. Called by the reaper; safe at any moment, since
        only connections in the idle stack are candidates and they leave it under the lock."""
        cutoff = (time.monotonic() if now is None else now) - self.idle_s
        with self._lock:
            # the top of the stack (the most recently used) always stays
            older = self._idle[:-1]
            stale = [conn for conn, last in older if last < cutoff]
            if stale:
                self._idle = [(c, last) for c, last in older if last >= cutoff] + self._idle[-1:]
        _close_quietly(stale)
        return len(stale)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        _close_quietly([conn for conn, _ in idle])


def _close_quietly(conns: list[psycopg2.extensions.connection]) -> None:
    # A connection to a server that went away (restart, failover) must not raise into a service.
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()


class _Reaper:
    """One per process, whatever the number of pools: every tick it lets each live pool close
    its stale idle connections, then hands freed heap back to the system (infra/heap.py).

    A greenthread when eventlet has patched threading (the nameko services: a native thread
    there would take the pools' green locks from outside the hub), an OS daemon thread otherwise
    (the tests, the tools). Started with the first pool; a fork's child starts its own."""

    MIN_TICK_S = 0.05

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[Database] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._started_in: int | None = None  # the pid whose reaper runs
        self.mode = ""  # "green" or "thread", once started

    def register(self, db: Database) -> None:
        with self._lock:
            self._pools.add(db)
            if self._started_in == os.getpid():
                return
            self._started_in = os.getpid()
        self.mode = "green" if _green() else "thread"
        if self.mode == "green":
            import eventlet

            eventlet.spawn_n(self._run, _green_sleep)
        else:
            threading.Thread(target=self._run, args=(time.sleep,), name="db-pool-reaper", daemon=True).start()

    def tick(self) -> int:
        """Reap every pool once; answers the connections closed."""
        with self._lock:
            pools = list(self._pools)
        closed = 0
        for db in pools:
            try:
                closed += db.reap()
            except Exception:  # noqa: BLE001 - one pool's trouble must not stop the others' reaping
                _log.exception("db_pool_reap_failed", dsn=_redacted(db.dsn))
        trim_heap()
        return closed

    def _interval(self) -> float:
        with self._lock:
            shortest = min((db.idle_s for db in self._pools), default=REAPER_MAX_TICK_S * 2)
        return min(REAPER_MAX_TICK_S, max(self.MIN_TICK_S, shortest / 2))

    def _run(self, sleep: Callable[[float], None]) -> None:
        pid = os.getpid()
        while self._started_in == pid:
            sleep(self._interval())
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the reaper runs as long as the process
                _log.exception("db_pool_reaper_tick_failed")


def _green() -> bool:
    try:
        import eventlet.patcher
    except ImportError:
        return False
    return bool(eventlet.patcher.is_monkey_patched("thread"))


def _green_sleep(seconds: float) -> None:
    import eventlet

    eventlet.sleep(seconds)


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=parts.hostname or "")) if parts.password else dsn


_reaper = _Reaper()


_shared: dict[tuple[str, bool], Database] = {}
_shared_lock = threading.Lock()


def shared_database(dsn: str, size: int, autocommit: bool = False,
                    idle_s: float = DEFAULT_IDLE_S) -> Database:
    """One pool per database and mode in a process, whoever asks for it: the providers of a
    service (store, its own tables, projections) share connections instead of each holding a
    pool, which kept several services with a handful of replicas under max_connections = 100.
    The first caller's size and idle time count (the providers of one process read the same
    settings)."""
    with _shared_lock:
        key = (dsn, autocommit)
        if key not in _shared:
            _shared[key] = Database(dsn, size=size, autocommit=autocommit, idle_s=idle_s)
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
