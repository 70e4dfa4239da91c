"""The demo history in a running platform, as `make run` adds it after the import: every service,
the relay and the consumers take its events while it runs. None of them texts the fake patients or
sends the HIS messages about visits weeks over, booking's live timer lapses none of its bookings,
and the live statistics equal a rebuild from the store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psycopg2
import pytest

from infra.db import drop_database
from scripts.launcher import ROOT
from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e


def dsn_of(platform, database: str) -> str:
    base = os.environ.get("PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
    return f"{base}/{platform.env['APPT_DB_PREFIX']}_{database}"


def rows(platform, database: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dsn_of(platform, database)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def queued_messages(vhost: str) -> int:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to see the consumers' queues drained"
    out = subprocess.run([ctl, "list_queues", "-p", vhost, "-q", "messages"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return sum(int(n) for n in out.split() if n.isdigit())


def test_demo_history_in_a_running_platform_texts_nobody_and_tells_the_his_nothing():
    with running_platform("history", ["demo/hebei-demo.json"]) as platform:
        env = {**platform.process_env(), "PYTHONWARNINGS": "ignore"}
        env.pop("PII_KEY")  # as in `make run`: the tool takes the installation's key from the run dir
        run = subprocess.run([sys.executable, "-m", "scripts.demo_history", "--weeks", "1", "--run-dir",
                              str(platform.run_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "; 0 refused" in run.stdout, run.stdout
        again = subprocess.run([sys.executable, "-m", "scripts.demo_history", "--run-dir", str(platform.run_dir)],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert "already there" in again.stdout and again.returncode == 0

        # Wait until the relay has published everything and every consumer has taken it.
        vhost = platform.env["APPT_DB_PREFIX"]
        deadline = time.monotonic() + 300
        while True:
            [(head,)] = rows(platform, "events", "SELECT position FROM es_head")
            relayed = rows(platform, "events", "SELECT position FROM es_checkpoints WHERE name = 'relay'")
            if relayed and relayed[0][0] >= head and queued_messages(vhost) == 0:
                break
            assert time.monotonic() < deadline, "the relay and the consumers did not catch up in 5 minutes"
            time.sleep(2)
        time.sleep(3)  # a message taken but not yet handled

        [(booked,)] = rows(platform, "booking", "SELECT count(*) FROM appointments WHERE backfill")
        assert booked > 500
        assert rows(platform, "booking", "SELECT status, count(*) FROM appointments WHERE backfill "
                                         "AND status IN ('booked', 'moved') GROUP BY 1") == []
        history_sms = rows(platform, "notification", "SELECT template, count(*) FROM outbox WHERE template NOT IN "
                                                     "('verification_code') GROUP BY 1")
        assert history_sms == []
        assert rows(platform, "his_sync", "SELECT message_type, count(*) FROM his_outbox GROUP BY 1") == []
        # booking's live lapse timer ran meanwhile (every 30 s) and lapsed nothing of the history's
        assert rows(platform, "events", "SELECT count(*) FROM es_events WHERE type = 'AppointmentLapsed' "
                                        "AND meta->>'correlation_id' NOT LIKE 'backfill:%'") == [(0,)]

        try:
            check = subprocess.run([sys.executable, "-m", "services.stats", "rebuild", "--check"], cwd=ROOT,
                                   env=platform.process_env(), capture_output=True, text=True, timeout=300)
        finally:
            drop_database(dsn_of(platform, "stats_rebuild"))
        assert check.returncode == 0 and "identical" in check.stdout, check.stdout + check.stderr
        [(no_show, checked_in)] = rows(platform, "stats", "SELECT sum(no_show), sum(checked_in) FROM stats_bookings")
        assert no_show > 0 and checked_in > 0
