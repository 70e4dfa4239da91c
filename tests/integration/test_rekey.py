"""`python -m services.booking.rekey` on real PostgreSQL: after a rotation the old key decrypts
nothing, login by phone and by ID works with the new key, a second registration of an ID is refused
with the stored patient_id; an interrupted run is finished by running it again."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from contracts import Conflict, RegisterPatient
from infra.db import Database, apply_schema, ensure_database
from infra.passwords import PASSWORDS
from infra.pii import PiiVault
from scripts.launcher import ROOT
from services.booking import handlers, readmodel
from services.booking.handlers import APP
from services.booking.rekey import rekey
from tests.conftest import with_check_digit

pytestmark = pytest.mark.integration

PATIENTS = 7


def resident_id(n: int) -> str:
    body = f"130102{1960 + n % 40:04d}0{1 + n % 9}1{n % 10}{n % 1000:03d}"[:17]
    return with_check_digit(body)


def phone(n: int) -> str:
    return f"139{n:08d}"


class Booking:
    def __init__(self, dsn: str, store: Any, vault: PiiVault) -> None:
        self.db = Database(dsn, size=2)
        self.store = store
        self.readmodel = readmodel.BookingReadModel(self.db)
        self.vault = vault

    def handle(self, cmd: Any) -> Any:
        return APP.handle(cmd, {"store": self.store, "readmodel": self.readmodel, "vault": self.vault,
                                "settings": SimpleNamespace(phone_max_patients=3), "passwords": PASSWORDS})

    def register(self, n: int, key: str, tel: str | None = None) -> Any:
        return self.handle(RegisterPatient(name=f"患者{n}", id_number=resident_id(n), phone=tel or phone(n),
                                           password=f"rekey-pass-{n:04d}", idempotency_key=key))

    def login(self, username: str, password: str) -> str:
        found = handlers.authenticate_patient(self.readmodel, self.vault, PASSWORDS, username, password)
        return str(found["patient_id"])

    def rows(self) -> list[tuple[str, ...]]:
        return [tuple(r) for r in self.db.fetchall(
            "SELECT patient_id, name_enc, id_enc, phone_enc, id_hash, phone_hash FROM patients ORDER BY 1")]


@pytest.fixture
def booking_dsn(fresh_dsn) -> str:
    dsn = fresh_dsn("booking")
    ensure_database(dsn)
    db = Database(dsn, size=1)
    apply_schema(db, readmodel.SCHEMA)
    db.close()
    return str(dsn)


def run_rekey(booking_dsn: str, events_dsn: str, new: str, old: str, tmp_path: Any) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "booking.yaml"
    config.write_text(f"EVENTSTORE_DSN: {events_dsn}\nDATABASE_DSN: {booking_dsn}\n"
                      "PII_KEY: ${PII_KEY:}\nPII_OLD_KEYS: ${PII_OLD_KEYS:}\n")
    env = {**os.environ, "PII_KEY": new, "PII_OLD_KEYS": old, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "services.booking.rekey", "--config", str(config), "--batch", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_rotation_moves_every_patient_to_the_new_key_and_keeps_their_ids(booking_dsn, store, tmp_path):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = Booking(booking_dsn, store, PiiVault(old_key))
    ids = {n: before.register(n, f"reg-{n:04d}")["patient_id"] for n in range(1, PATIENTS + 1)}
    rows_before = before.rows()

    # booking still connected: the command refuses and changes nothing
    busy = run_rekey(booking_dsn, store.dsn, new_key, old_key, tmp_path)
    assert busy.returncode == 3 and "stop booking" in busy.stderr
    assert before.rows() == rows_before
    before.db.close()

    done = run_rekey(booking_dsn, store.dsn, new_key, old_key, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"rekey: 3/{PATIENTS} patients" in done.stdout and f"{PATIENTS} re-encrypted" in done.stdout

    after = Booking(booking_dsn, store, PiiVault(new_key))  # the old key no longer configured at all
    rows = after.rows()
    assert [r[0] for r in rows] == sorted(ids.values())
    old = PiiVault(old_key)
    for row in rows:
        for token in row[1:4]:
            with pytest.raises(InvalidToken):
                old.decrypt(token)
    assert {r[4] for r in rows}.isdisjoint({r[4] for r in rows_before})  # lookup hashes recomputed
    for n, pid in ids.items():
        assert after.login(phone(n), f"rekey-pass-{n:04d}") == pid
        assert after.login(resident_id(n), f"rekey-pass-{n:04d}") == pid

    with pytest.raises(Conflict) as refused:
        after.register(1, "reg-other-0001", tel="13700000099")
    assert refused.value.code == "already_registered" and "139****0001" in refused.value.message
    assert [e.type for e in store.read_stream(f"patient-{ids[1]}")] == ["PatientRegistered",
                                                                        "PatientRegistrationRefused"]
    assert after.register(1, "reg-0001")["patient_id"] == ids[1]  # the owner's own repeat
    after.db.close()

    again = run_rekey(booking_dsn, store.dsn, new_key, old_key, tmp_path)
    assert again.returncode == 0 and f"{PATIENTS} already under the new key" in again.stdout


def test_an_interrupted_rotation_is_finished_by_running_it_again(booking_dsn, store):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    booking = Booking(booking_dsn, store, PiiVault(old_key))
    for n in range(1, PATIENTS + 1):
        booking.register(n, f"reg-{n:04d}")
    vault = PiiVault(new_key, [old_key])

    def interrupt(_: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rekey(booking.readmodel, vault, batch=3, progress=interrupt)  # stops after its first batch
    current = [all(vault.is_current(t) for t in r[1:4]) for r in booking.rows()]
    assert current == [True] * 3 + [False] * (PATIENTS - 3)  # whole rows, whole batches
    report = rekey(booking.readmodel, vault, batch=3, progress=lambda _: None)
    assert (report.rekeyed, report.current) == (PATIENTS - 3, 3)
    booking.vault = PiiVault(new_key)
    assert booking.login(phone(PATIENTS), f"rekey-pass-{PATIENTS:04d}")
    booking.db.close()
