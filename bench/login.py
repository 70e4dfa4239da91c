"""Login timing: does a refused login tell, by its time, whether the account exists?

    python bench/login.py [--attempts N]

In process, no server: booking's `authenticate_patient` over a read model of two patients (one
with a password, one the hotline registered without one) and the gateway's `auth.log_in` over two
staff accounts (one enabled, one disabled), with the services' own hasher (infra.passwords:
argon2id at the production parameters, off no hub here). Each kind of attempt runs N times
(default 100), the kinds interleaved so that the machine's drift touches them alike; the median
of each kind is compared with its baseline in the same run, a wrong password:

- patients: an unknown mobile, an unknown resident ID, the hotline's patient (no password) and a
  right password, each ÷ a wrong password by mobile; target ≈ 1 (0.9-1.1) for every refusal;
- staff: an unknown username, a disabled account with its right password, each ÷ a wrong staff
  password; target ≈ 1; and a patient's mobile through the gateway's `log_in` (booking's check
  called in process, no RPC), ÷ the same through booking alone: the gateway adds no argon2 work.

Checks (exit code 1 when one fails): every attempt verifies exactly one argon2 hash, and a
patient's login verifies none on the gateway's side. A ratio out of its band is a finding, printed
as NOT MET, not a failure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet  # noqa: E402

from contracts import NotFound  # noqa: E402
from infra.passwords import Passwords  # noqa: E402
from infra.pii import PiiVault  # noqa: E402
from services.booking import handlers  # noqa: E402
from services.gateway.auth import StaffCredentials, log_in  # noqa: E402

PHONE, ID_NUMBER = "13900000001", "11010519491231002X"
HOTLINE_ID, HOTLINE_PHONE = "110105194912310021", "13900000002"
PASSWORD = "right-secret-2024"
BAND = (0.9, 1.1)


class CountingPasswords(Passwords):
    """The services' hasher, counting the argon2 verifications of the current attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    def verify(self, stored: str | None, password: str) -> bool:
        self.verified += 1
        return super().verify(stored, password)


class Patients:
    """What `authenticate_patient` reads, as booking's read model answers it: an ID finds its
    patient, a mobile only patients who log in with a password."""

    def __init__(self, vault: PiiVault, passwords: Passwords) -> None:
        self.rows = [(vault.lookup_hash(ID_NUMBER), vault.lookup_hash(PHONE),
                      ("p-1", passwords.hash(PASSWORD), "110105********002X", vault.encrypt("李明"))),
                     (vault.lookup_hash(HOTLINE_ID), vault.lookup_hash(HOTLINE_PHONE),
                      ("p-2", None, "110105********0021", vault.encrypt("王芳")))]

    def login_candidates(self, lookup_hash: str) -> list[tuple[str, str | None, str, str]]:
        return [row for id_hash, phone_hash, row in self.rows
                if lookup_hash == id_hash or (lookup_hash == phone_hash and row[1])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=100)
    args = parser.parse_args()
    booking_side, gateway_side = CountingPasswords(), CountingPasswords()
    vault = PiiVault(Fernet.generate_key().decode())
    patients = Patients(vault, booking_side)
    staff = {name: StaffCredentials(name, gateway_side.hash(PASSWORD), "clerk", "hebmu2", name, None,
                                    disabled=name == "gone-clerk") for name in ("hebmu2-clerk", "gone-clerk")}

    def patient(username: str, password: str) -> dict[str, Any] | None:
        try:
            return handlers.authenticate_patient(patients, vault, booking_side, username, password)
        except NotFound:
            return None

    def gateway(username: str, password: str) -> object:
        return log_in(username, password, staff.get, patient, gateway_side)

    kinds: dict[str, Callable[[], object]] = {
        "patient: wrong password (mobile)": lambda: patient(PHONE, "wrong-secret-2024"),
        "patient: unknown mobile": lambda: patient("13900000009", PASSWORD),
        "patient: unknown resident ID": lambda: patient("110105194912310048", PASSWORD),
        "patient: hotline's, no password": lambda: patient(HOTLINE_ID, PASSWORD),
        "patient: right password": lambda: patient(PHONE, PASSWORD),
        "staff: wrong password": lambda: gateway("hebmu2-clerk", "wrong-secret-2024"),
        "staff: unknown username": lambda: gateway("nobody-at-this-hospital", PASSWORD),
        "staff: disabled (its right password)": lambda: gateway("gone-clerk", PASSWORD),
        "gateway log_in: patient's mobile": lambda: gateway(PHONE, "wrong-secret-2024"),
    }
    times: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    for warm_up in kinds.values():  # once each first: the dummy hashes are made on first use
        warm_up()
    for _ in range(args.attempts):
        for kind, attempt in kinds.items():
            booking_side.verified = gateway_side.verified = 0
            started = time.perf_counter()
            attempt()
            times[kind].append(time.perf_counter() - started)
            if booking_side.verified + gateway_side.verified != 1:
                failures.append(f"{kind}: {booking_side.verified + gateway_side.verified} verifications")
            if kind.startswith("patient") or kind.startswith("gateway"):
                if gateway_side.verified:
                    failures.append(f"{kind}: {gateway_side.verified} staff verifications for a patient")
    median = {kind: statistics.median(t) * 1000 for kind, t in times.items()}
    baselines = {"patient": "patient: wrong password (mobile)", "staff": "staff: wrong password",
                 "gateway": "patient: wrong password (mobile)"}
    print(f"{args.attempts} attempts of each kind, median ms; ratio to the wrong password of the same side")
    print(f"{'attempt':40} {'median ms':>10} {'ratio':>7}  target")
    for kind, ms in median.items():
        base = baselines[kind.split(":")[0].split()[0]]
        ratio = ms / median[base]
        verdict = "baseline" if kind == base else "(a success)" if kind == "patient: right password" else (
            "met" if BAND[0] <= ratio <= BAND[1] else "NOT MET")
        print(f"{kind:40} {ms:10.2f} {ratio:7.3f}  {verdict}")
    unique = sorted(set(failures))
    for failure in unique:
        print(f"CHECK FAILED: {failure}")
    print("checks ok: one argon2 verification per attempt, none on the gateway for a patient" if not unique
          else f"{len(unique)} check(s) failed")
    return 1 if unique else 0


if __name__ == "__main__":
    sys.exit(main())
