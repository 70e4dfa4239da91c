"""infra.db.Database on the real PostgreSQL: a one-statement call (fetchone / fetchall / execute)
is its own transaction, sent alone (no BEGIN and COMMIT round trips around it), and the pool's
transactions still are transactions after one."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from infra.db import Database, ensure_database

pytestmark = pytest.mark.integration


@pytest.fixture
def db(fresh_dsn) -> Iterator[Database]:
    dsn = fresh_dsn("dbstatements")
    ensure_database(dsn)
    pool = Database(dsn, size=1)  # one connection: every call below reuses it
    pool.execute("CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY)")
    yield pool
    pool.close()


def test_a_single_statement_starts_its_own_transaction(db):
    # now() is the start of the transaction, statement_timestamp() that of the statement: equal
    # only when the statement itself began the transaction, not a BEGIN sent before it.
    for _ in range(5):
        assert db.fetchone("SELECT now() = statement_timestamp()") == (True,)
        assert db.fetchall("SELECT now() = statement_timestamp()") == [(True,)]


def test_a_transaction_after_single_statements_is_still_one_transaction(db):
    db.fetchone("SELECT 1")
    with db.transaction() as cur:
        cur.execute("SELECT txid_current()")
        first = cur.fetchone()[0]
        cur.execute("INSERT INTO t VALUES (1)")
        cur.execute("SELECT txid_current()")
        assert cur.fetchone()[0] == first
    with pytest.raises(psycopg2.errors.UniqueViolation), db.transaction() as cur:
        cur.execute("INSERT INTO t VALUES (2)")
        cur.execute("INSERT INTO t VALUES (1)")  # fails: the row 2 must go with it
    assert db.fetchall("SELECT k FROM t ORDER BY k") == [(1,)]


def test_a_failed_single_statement_leaves_the_connection_usable(db):
    with pytest.raises(psycopg2.errors.UniqueViolation):
        db.execute("INSERT INTO t VALUES (7), (7)")
    assert db.fetchall("SELECT k FROM t") == []  # nothing of the failed statement
    with db.connection() as conn:
        assert conn.autocommit is False  # handed out in the pool's mode, not the statement's
