"""Shared fixtures. Tests use their own databases (prefix appt_test) on the real local server."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

os.environ.setdefault("APPT_DB_PREFIX", "appt_test")

import pytest  # noqa: E402

from infra.db import drop_database  # noqa: E402
from infra.settings import pg_dsn  # noqa: E402

AMQP_URI = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
def fresh_dsn():
    """A DSN of a database that does not exist yet; dropped afterwards."""
    created: list[str] = []

    def make(name: str = "scratch") -> str:
        dsn = pg_dsn(f"{name}_{uuid.uuid4().hex[:8]}")
        created.append(dsn)
        return dsn

    yield make
    for dsn in created:
        drop_database(dsn)


@pytest.fixture
def store(fresh_dsn):
    from infra.eventstore import PostgresEventStore

    s = PostgresEventStore(fresh_dsn("events"))
    s.setup()
    yield s
    s.close()


@pytest.fixture
def amqp_uri() -> str:
    return AMQP_URI


def ensure_vhost(name: str) -> str:
    """A RabbitMQ vhost of the tests' own, so that a running `make run` never steals their messages."""
    import shutil
    import subprocess

    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl not found: cannot create a test vhost on the local broker")
    subprocess.run([ctl, "add_vhost", name], capture_output=True, check=False, timeout=60)
    subprocess.run([ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   capture_output=True, check=True, timeout=60)
    return AMQP_URI.rstrip("/") + "/" + name


def delete_vhost(name: str) -> None:
    import shutil
    import subprocess

    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "delete_vhost", name], capture_output=True, check=False, timeout=60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def with_check_digit(body: str) -> str:
    """The 17 digits of a resident ID with its GB 11643 check character: test patients' IDs."""
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


def until(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.3) -> Any:
    """Poll `check` until it answers something truthy (returned), or fail saying what was awaited
    and what was seen last: the one wait of the unpatched runs (e2e, browser)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
