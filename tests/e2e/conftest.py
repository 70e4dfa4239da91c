"""A whole platform of the test's own: its own databases (APPT_DB_PREFIX) and RabbitMQ vhost,
every service as its own process, started by the launcher `make run` uses."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from infra.db import drop_database
from infra.settings import pg_dsn
from scripts.launcher import ROOT, Platform
from tests.conftest import delete_vhost, ensure_vhost, free_port

DATABASES = ("events", "schedule", "booking", "notification", "his_sync", "stats", "gateway")


@contextmanager
def running_platform(label: str, demo: list[str], env: dict[str, str] | None = None,
                     replicas: dict[str, int] | None = None) -> Iterator[Platform]:
    tag = uuid.uuid4().hex[:6]
    prefix = vhost = f"appt_test_{label}_{tag}"
    amqp = ensure_vhost(vhost)
    platform = Platform(
        run_dir=ROOT / ".run" / f"e2e-{label}-{tag}",  # kept on failure: logs survive
        env={"APPT_DB_PREFIX": prefix, "AMQP_URI": amqp, **(env or {})},
        replicas=replicas or {}, gateway_address=f"127.0.0.1:{free_port()}", his_port=free_port(),
        his_listen_port=free_port(), his_http_port=free_port(), metrics_port=0,
    )
    try:
        platform.start(wait=120)
        for path in demo:
            subprocess.run([sys.executable, "-m", "services.schedule.importer", path], cwd=ROOT,
                           env=platform.process_env(), check=True, timeout=120)
        subprocess.run([sys.executable, "-m", "services.gateway.staff", "demo"], cwd=ROOT,
                       env=platform.process_env(), check=True, timeout=120)
        yield platform
    finally:
        platform.stop()
        saved = os.environ.get("APPT_DB_PREFIX", "")
        os.environ["APPT_DB_PREFIX"] = prefix
        try:
            for name in DATABASES:
                drop_database(pg_dsn(name))
        finally:
            os.environ["APPT_DB_PREFIX"] = saved
        delete_vhost(vhost)
