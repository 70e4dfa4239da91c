"""The installation's at-rest key: the launcher creates it once per run directory (mode 600) and
reuses it, every process it starts gets it as PII_KEY, and a real service process refuses to start
with the published development key or with none."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid

import pytest
from cryptography.fernet import Fernet

from infra.db import drop_database
from infra.pii import DEV_KEY
from scripts.launcher import ROOT, Platform, installation_key

pytestmark = pytest.mark.integration

PG_URL = os.environ.get("PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")


def test_the_launcher_creates_a_private_key_once_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PII_KEY", raising=False)
    run_dir = tmp_path / "run"
    env = Platform(run_dir=run_dir).process_env()
    path = run_dir / "pii.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    Fernet(key.encode())  # a real Fernet key
    assert env["PII_KEY"] == key != DEV_KEY
    # a later start of the same installation, and a second platform object, reuse it
    assert Platform(run_dir=run_dir).process_env()["PII_KEY"] == key
    assert installation_key(run_dir) == key
    # another installation gets another key
    assert installation_key(tmp_path / "other") != key


def test_a_key_from_the_environment_wins_and_no_file_is_made(tmp_path, monkeypatch):
    mine = Fernet.generate_key().decode()
    monkeypatch.setenv("PII_KEY", mine)
    assert Platform(run_dir=tmp_path).process_env()["PII_KEY"] == mine
    assert not (tmp_path / "pii.key").exists()
    monkeypatch.delenv("PII_KEY")
    assert Platform(run_dir=tmp_path, env={"PII_KEY": mine}).process_env()["PII_KEY"] == mine


def test_a_loose_key_file_is_made_private_again(tmp_path):
    path = tmp_path / "pii.key"
    path.write_text(Fernet.generate_key().decode())
    path.chmod(0o644)
    installation_key(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("pii_key, says", [(DEV_KEY, "PII_KEY is the development key"),
                                           ("", "PII_KEY is not set")])
def test_the_booking_service_refuses_to_start_with_the_dev_key_or_none(pii_key, says):
    prefix = f"appt_test_pii_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PII_KEY": pii_key, "APPT_DB_PREFIX": prefix, "PG_URL": PG_URL,
           "AMQP_URI": "amqp://guest:guest@127.0.0.1:9/",  # it must stop before it needs the broker
           "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run([sys.executable, "-m", "nameko", "run", "--config", "services/booking/config.yaml",
                               "services.booking.service"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        for name in ("events", "booking"):
            drop_database(f"{PG_URL}/{prefix}_{name}")
    assert done.returncode != 0
    assert says in done.stderr and "Fernet.generate_key" in done.stderr, done.stderr[-2000:]
