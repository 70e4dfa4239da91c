"""Rotate the PII key of booking's patients: every row re-encrypted with the new key, its lookup
hashes recomputed, in batches. Booking must be stopped (services/booking/README.md).

    PII_KEY=<new key> PII_OLD_KEYS=<old key>[,<older>] python -m services.booking.rekey

Reads with PII_KEY or any of PII_OLD_KEYS, writes with PII_KEY. Each batch is one transaction, so
an interrupted run leaves every row wholly under one key; run it again and rows already under
the new key are recognised and skipped. patient_id never changes: events reference it, and
registration takes it from the stored row.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.fernet import InvalidToken

from infra.pii import PiiKeyError, PiiVault

FIELDS = ("name_enc", "id_enc", "phone_enc")


class Patients(Protocol):
    """What the rotation reads and writes (readmodel.BookingReadModel)."""

    def count_patients(self) -> int: ...
    def patients_after(self, after: str, limit: int) -> list[dict[str, Any]]: ...
    def rekey_patients(self, rows: list[dict[str, Any]]) -> int: ...


class CannotDecrypt(RuntimeError):
    """A row under none of the keys given: nothing of its batch was written."""


@dataclass
class Report:
    total: int = 0
    rekeyed: int = 0
    current: int = 0  # already under the new key (an earlier, perhaps interrupted, run)


def rekey(patients: Patients, vault: PiiVault, batch: int = 500,
          progress: Callable[[str], None] = print) -> Report:
    report = Report(total=patients.count_patients())
    after = ""
    while rows := patients.patients_after(after, batch):
        changed = []
        for row in rows:
            if all(vault.is_current(row[f]) for f in FIELDS):
                report.current += 1
                continue
            try:
                name, id_number, phone = (vault.decrypt(row[f]) for f in FIELDS)
            except InvalidToken:
                raise CannotDecrypt(f"patient {row['patient_id']}: not encrypted with PII_KEY nor any of "
                                    "PII_OLD_KEYS; add the key it was written with to PII_OLD_KEYS and run "
                                    "again (rows done so far stay done)") from None
            changed.append({
                "patient_id": row["patient_id"], "old_id_enc": row["id_enc"],
                "name_enc": vault.encrypt(name), "id_enc": vault.encrypt(id_number),
                "phone_enc": vault.encrypt(phone),
                "id_hash": vault.lookup_hash(id_number), "phone_hash": vault.lookup_hash(phone),
            })
        report.rekeyed += patients.rekey_patients(changed) if changed else 0
        after = rows[-1]["patient_id"]
        progress(f"rekey: {report.rekeyed + report.current}/{report.total} patients "
                 f"({report.rekeyed} re-encrypted, {report.current} already under the new key)")
    return report


def main(argv: list[str] | None = None) -> int:
    from infra.db import Database
    from infra.settings import Settings, load_config
    from services.booking.readmodel import BookingReadModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="services/booking/config.yaml")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--force", action="store_true",
                        help="run although other sessions are connected to booking's database")
    args = parser.parse_args(argv)
    cfg = Settings.from_config(load_config(args.config), "booking")
    try:
        vault = PiiVault.from_config(cfg.pii_key, cfg.pii_old_keys)
    except PiiKeyError as exc:
        print(f"rekey: {exc}", file=sys.stderr)
        return 2
    db = Database(str(cfg.database_dsn), size=1)
    try:
        patients = BookingReadModel(db)
        if (others := patients.other_sessions()) and not args.force:
            print(f"rekey: {others} other session(s) are connected to booking's database: stop booking "
                  "first (or pass --force if they are not booking)", file=sys.stderr)
            return 3
        try:
            report = rekey(patients, vault, args.batch)
        except CannotDecrypt as exc:
            print(f"rekey: {exc}", file=sys.stderr)
            return 1
    finally:
        db.close()
    print(f"rekey: done, {report.rekeyed} re-encrypted, {report.current} already under the new key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
