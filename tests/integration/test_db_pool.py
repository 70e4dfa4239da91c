"""infra/db.py's pool against the real PostgreSQL: it grows under concurrent use, the process's
reaper closes what stays idle longer than the pool's idle time (all but the most recently used
connection), never a connection checked out, and the pool works on afterwards.

Connections are told apart by their backend pid and counted in pg_stat_activity, so a
connection the pool forgot but never closed would still be counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from infra.db import Database, _reaper, ensure_database

pytestmark = pytest.mark.integration

IDLE_S = 0.4  # the setting, small: the reaper ticks every IDLE_S / 2


@pytest.fixture
def pool(fresh_dsn: Callable[[str], str]) -> Iterator[Database]:
    dsn = fresh_dsn("pool")
    ensure_database(dsn)
    db = Database(dsn, size=6, idle_s=IDLE_S)
    yield db
    db.close()


def backend_pid(db: Database) -> int:
    row = db.fetchone("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


def live(db: Database, pids: set[int]) -> set[int]:
    """Which of these backends still exist (asked on a connection of its own, not the pool's)."""
    conn = psycopg2.connect(db.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),))
            return {int(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


def grow(db: Database, n: int) -> set[int]:
    """n threads each hold a connection at the same moment: the pool opens n of them."""
    pids: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def work() -> None:
        with db.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            with lock:
                pids.add(int(cur.fetchone()[0]))
            barrier.wait(timeout=10)  # nobody gives back a connection before all hold one

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    return pids


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_pool_grown_under_concurrent_use_shrinks_to_one_connection_when_idle(pool: Database) -> None:
    pids = grow(pool, 5)
    assert len(pids) == 5
    assert live(pool, pids) == pids and pool.idle_count() == 5

    assert wait_for(lambda: len(live(pool, pids)) == 1), live(pool, pids)
    assert pool.idle_count() == 1
    (kept,) = live(pool, pids)
    # the one kept is the one the next caller gets, and it still answers
    assert backend_pid(pool) == kept
    assert _reaper.mode == "thread"  # no eventlet patching in this process: an OS thread reaps


def test_the_connection_kept_is_the_most_recently_used_one(pool: Database) -> None:
    pids = grow(pool, 3)
    last = backend_pid(pool)  # the top of the stack, used again after the others went idle

    assert wait_for(lambda: live(pool, pids) == {last}), live(pool, pids)


def test_a_connection_in_use_is_not_closed(pool: Database) -> None:
    pids = grow(pool, 4)
    with pool.connection() as held:
        held_pid = held.get_backend_pid()
        # held far longer than the idle time, doing nothing, while the reaper closes the others
        assert wait_for(lambda: pool.idle_count() == 1)
        time.sleep(IDLE_S * 3)
        assert not held.closed
        with held.cursor() as cur:
            cur.execute("SELECT 41 + 1")
            assert cur.fetchone() == (42,)
        held.commit()
        assert held_pid in live(pool, pids)
    assert len(live(pool, pids)) == 2  # the one held, back in the pool, and the one kept
    assert wait_for(lambda: len(live(pool, pids)) == 1)


def test_the_pool_works_after_reaping_and_grows_again(pool: Database) -> None:
    first = grow(pool, 4)
    assert wait_for(lambda: len(live(pool, first)) == 1)

    again = grow(pool, 4)
    assert len(again) == 4
    assert len(again - first) == 3  # three opened anew, the kept one reused
    pool.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    pool.execute("INSERT INTO t VALUES (1), (2)")
    assert pool.fetchone("SELECT count(*) FROM t") == (2,)
    assert wait_for(lambda: len(live(pool, first | again)) == 1)


def test_an_idle_connection_whose_server_side_ended_is_reaped_without_a_fault(pool: Database) -> None:
    pids = grow(pool, 3)
    # the server ends every one of them while they sit idle (as a PostgreSQL restart does)
    conn = psycopg2.connect(pool.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),))
    finally:
        conn.close()
    assert wait_for(lambda: pool.idle_count() == 1)
    assert pool.reap(time.monotonic() + 60) == 0  # the last one stays, even when stale
    # the kept one is dead too: the first caller meets the error, and the pool recovers after it
    with pytest.raises(psycopg2.OperationalError):
        pool.fetchone("SELECT 1")
    assert pool.fetchone("SELECT 1") == (1,)

