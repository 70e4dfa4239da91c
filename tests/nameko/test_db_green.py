"""The database driver must not block the eventlet hub (CONVENTIONS.md, Pitfalls).

psycopg 3 in sync mode waits in C and serialised four concurrent `pg_sleep(1)` of one nameko
service to 4 s. infra.db uses psycopg2 with psycogreen's wait callback, which yields to the hub
while a query runs. Here four RPC calls run `SELECT pg_sleep(1)` concurrently in a real nameko
service through infra.db.Database; they must overlap.
"""

from __future__ import annotations

import time
from typing import Any

import pika
import psycopg2.extensions
import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from infra.db import make_green_if_patched
from infra.providers import ServiceDatabase

pytestmark = pytest.mark.integration

CALLS = 4


def sleeper_service(name: str) -> type:
    class Sleeper:
        db = ServiceDatabase()

        @rpc
        def nap(self) -> float:
            t0 = time.monotonic()
            self.db.fetchone("SELECT pg_sleep(1)")
            return time.monotonic() - t0

    Sleeper.name = name  # type: ignore[attr-defined]
    return Sleeper


def concurrent_naps(config: dict[str, Any], service: str) -> tuple[float, list[float]]:
    cluster = ClusterRpcProxy(config, timeout=60)
    try:
        with cluster as proxy:
            t0 = time.monotonic()
            replies = [proxy[service].nap.call_async() for _ in range(CALLS)]
            durations = [r.result() for r in replies]
            return time.monotonic() - t0, durations
    finally:
        # The proxy's reply queue would only expire after nameko's 5 min x-expires: delete it now.
        conn = pika.BlockingConnection(pika.URLParameters(config["AMQP_URI"]))
        try:
            conn.channel().queue_delete(queue=cluster._reply_listener.queue.name)
        finally:
            conn.close()


def test_the_driver_is_green_in_a_patched_process():
    assert make_green_if_patched() is True
    assert psycopg2.extensions.get_wait_callback() is not None


def test_slow_queries_in_a_nameko_service_run_concurrently(container_factory, rabbit_config, unique_name):
    name = unique_name("sleeper")
    container = container_factory(sleeper_service(name), rabbit_config)
    container.start()

    elapsed, durations = concurrent_naps(rabbit_config, name)

    assert all(d >= 0.99 for d in durations), durations  # each call really slept
    # The one timed assertion of the suite, and deliberately so: it is a correctness test of the
    # driver integration. Overlapping sleeps take ~1 s; a driver that blocks the hub takes >= 4 s
    # (see the control below), so 2.5 s leaves a wide margin for a loaded machine.
    assert elapsed < 2.5, f"{CALLS} concurrent pg_sleep(1) took {elapsed:.2f} s: the driver blocks the hub"


def test_control_without_the_green_wait_callback_the_same_calls_serialise(
    container_factory, rabbit_config, unique_name
):
    """Shows that the timing above can fail: with psycopg2's wait callback removed, a query blocks
    the whole hub and the four calls take at least 4 s."""
    name = unique_name("blocking_sleeper")
    container = container_factory(sleeper_service(name), rabbit_config)
    container.start()
    saved = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        elapsed, _ = concurrent_naps(rabbit_config, name)
    finally:
        psycopg2.extensions.set_wait_callback(saved)
    assert elapsed >= CALLS * 0.99, f"expected serialised calls, took {elapsed:.2f} s"


def test_password_hashing_does_not_block_the_hub():
    """argon2 runs off the eventlet hub (infra.blocking.off_hub): a ticker greenlet keeps ticking
    while passwords are hashed; hashing on the hub itself stalls it for a whole hash (the control)."""
    import eventlet
    from argon2 import PasswordHasher

    from infra.blocking import off_hub

    hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)  # slow on purpose: ~50+ ms

    def worst_gap(hash_call) -> float:
        gaps: list[float] = []
        running = [True]

        def ticker() -> None:
            last = time.monotonic()
            while running[0]:
                eventlet.sleep(0.001)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = eventlet.spawn(ticker)
        eventlet.sleep(0.01)
        started = time.monotonic()
        pool = [eventlet.spawn(hash_call, "correct horse battery") for _ in range(3)]
        for g in pool:
            g.wait()
        took = time.monotonic() - started
        running[0] = False
        tick.wait()
        assert took > 0.03, "the hashes were too fast to show anything"
        return max(gaps)

    off = worst_gap(lambda pw: off_hub(hasher.hash, pw))
    on = worst_gap(hasher.hash)
    assert on > 0.03, f"control: hashing on the hub should stall the ticker (worst gap {on:.3f} s)"
    assert off < on / 2, f"off the hub the ticker stalled {off:.3f} s (on the hub {on:.3f} s)"


def test_the_pool_reaper_is_a_greenthread_here_and_shrinks_a_pool_grown_by_greenlets(fresh_dsn):
    """In a patched process (a nameko service) the pools' reaper runs on the hub, not in an OS
    thread that would take the pools' green locks from outside it; it still closes what stays idle."""
    import eventlet

    from infra.db import Database, _reaper, ensure_database

    dsn = fresh_dsn("reaped")
    ensure_database(dsn)
    db = Database(dsn, size=4, idle_s=0.3)
    try:
        pids = eventlet.GreenPool(4).imap(lambda _: db.fetchone("SELECT pg_backend_pid(), pg_sleep(0.2)")[0],
                                          range(4))
        grown = set(pids)
        assert len(grown) == 4 and db.idle_count() == 4  # they overlapped: four connections

        deadline = time.monotonic() + 10
        while db.idle_count() > 1 and time.monotonic() < deadline:
            eventlet.sleep(0.05)
        assert db.idle_count() == 1
        assert _reaper.mode == "green"
        assert db.fetchone("SELECT 1") == (1,)
    finally:
        db.close()
