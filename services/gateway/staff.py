"""Staff accounts from the command line: the first platform admin, and the demo accounts.

    python -m services.gateway.staff create --username admin --role platform_admin --password ...
    python -m services.gateway.staff demo --gateway 127.0.0.1:8000   # every role's demo account
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from infra.db import Database, apply_schema, ensure_database
from infra.settings import load_config
from services.gateway import readmodel
from services.gateway.limits import GatewaySettings

DEMO = (
    ("admin", "admin-pass-2024", "platform_admin", None, "平台管理员"),
    ("hebmu2-admin", "admin-pass-2024", "hospital_admin", "hebmu2", "河北医大二院管理员"),
    ("hebmu2-clerk", "clerk-pass-2024", "clerk", "hebmu2", "预约窗口 王敏"),
    ("hbph-admin", "admin-pass-2024", "hospital_admin", "hbph", "省人民医院管理员"),
    ("op-12580", "op-pass-2024", "operator", None, "12580 话务员 刘洋"),
    ("analyst", "analyst-pass-2024", "analyst", None, "卫生厅统计员"),
)


DEMO_PATIENT = {"name": "李明", "id_number": "11010519491231002X", "phone": "13800138000",
                "password": "patient-pass-2024"}


def register_demo_patient(gateway: str) -> str:
    """Patients belong to booking: the demo patient registers through the public API like anyone."""
    request = urllib.request.Request(f"http://{gateway}/api/v1/patients", data=json.dumps(DEMO_PATIENT).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return "registered" if answer.status == 201 else "already registered"
    except urllib.error.HTTPError as exc:
        return "already registered" if exc.code == 409 else f"not registered ({exc})"
    except (urllib.error.URLError, OSError) as exc:
        return f"not registered ({exc})"


def database(config: str) -> Database:
    cfg = GatewaySettings.model_validate({"SERVICE_NAME": "gateway", **load_config(config)})
    assert cfg.database_dsn
    ensure_database(cfg.database_dsn)
    db = Database(cfg.database_dsn, size=1)
    apply_schema(db, readmodel.SCHEMA)
    return db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "demo"])
    parser.add_argument("--config", default="services/gateway/config.yaml")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--role")
    parser.add_argument("--hospital")
    parser.add_argument("--name", default="")
    parser.add_argument("--gateway", help="also register the demo patient through this gateway address")
    args = parser.parse_args(argv)
    db = database(args.config)
    if args.action == "demo":
        for username, password, role, hospital, name in DEMO:
            readmodel.create_staff(db, username, password, role, hospital, name, exist_ok=True)
            print(f"  {role:15} {username:14} / {password:18} {hospital or ''}")
        if args.gateway:
            state = register_demo_patient(args.gateway)
            print(f"  {'patient':15} {DEMO_PATIENT['phone']:14} / {DEMO_PATIENT['password']:18} ({state})")
        return 0
    if not (args.username and args.password and args.role):
        parser.error("create needs --username, --password and --role")
    made = readmodel.create_staff(db, args.username, args.password, args.role, args.hospital, args.name)
    print(f"created {made['role']} {made['username']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
