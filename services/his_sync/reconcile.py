"""对账 for the operator: a hospital day's HL7 messages, what the platform sent and what the HIS
acknowledged, with every difference; exits 1 when there are differences.

    python -m services.his_sync.reconcile --hospital hebmu2 --date 2026-12-01 [--csv FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from infra.db import Database
from infra.settings import load_config
from services.his_sync import handlers, readmodel
from services.his_sync.service import HOSPITAL_TZ

CONFIG = Path(__file__).with_name("config.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospital", required=True)
    parser.add_argument("--date", type=date.fromisoformat, default=datetime.now(HOSPITAL_TZ).date())
    parser.add_argument("--csv", type=Path, help="also write the report as CSV (UTF-8 with BOM) to this file")
    args = parser.parse_args(argv)
    db = Database(str(load_config(CONFIG)["DATABASE_DSN"]), size=1)
    try:
        report = handlers.reconciliation(args.hospital, args.date, db, readmodel.HIS_OUTBOX, HOSPITAL_TZ)
    finally:
        db.close()
    print(f"对账 reconciliation {report['hospital_id']} {report['date']}")
    print(f"{'message':10} {'sent':>6} {'acked':>6} {'refused':>8} {'waiting':>8} {'skipped':>8}")
    for k in report["kinds"]:
        print(f"{k['message_type']:10} {k['sent']:6} {k['acked']:6} {k['refused']:8} {k['waiting']:8} "
              f"{k['skipped']:8}  {k['label_zh']} {k['label_en']}")
    for d in report["differences"]:
        print(f"  ≠ {d['appointment_id']} {d['message_type']} {d['status']} ({d['attempts']} attempts) {d['reason']}")
    print("平衡 balanced" if report["balanced"] else f"{len(report['differences'])} 条差异 differences")
    if args.csv:
        args.csv.write_text(handlers.reconciliation_csv(report), encoding="utf-8")
        print(f"CSV: {args.csv}")
    return 0 if report["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
