"""Staff accounts from the command line: the first platform admin, and the demo accounts.

    python -m services.gateway.staff create --username admin --role platform_admin --password ...
    python -m services.gateway.staff demo        # the demo account of every role (make run)
"""

from __future__ import annotations

import argparse
import sys

from infra.db import Database, apply_schema, ensure_database
from infra.settings import load_config
from services.gateway import accounts
from services.gateway.limits import GatewaySettings

DEMO = (
    ("admin", "admin-pass-2024", "platform_admin", None, "平台管理员"),
    ("hebmu2-admin", "admin-pass-2024", "hospital_admin", "hebmu2", "河北医大二院管理员"),
    ("hebmu2-clerk", "clerk-pass-2024", "clerk", "hebmu2", "预约窗口 王敏"),
    ("hbph-admin", "admin-pass-2024", "hospital_admin", "hbph", "省人民医院管理员"),
    ("op-12580", "op-pass-2024", "operator", None, "12580 话务员 刘洋"),
    ("analyst", "analyst-pass-2024", "analyst", None, "卫生厅统计员"),
)


def database(config: str) -> Database:
    cfg = GatewaySettings.model_validate({"SERVICE_NAME": "gateway", **load_config(config)})
    assert cfg.database_dsn
    ensure_database(cfg.database_dsn)
    db = Database(cfg.database_dsn, size=1)
    apply_schema(db, accounts.SCHEMA)
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
    args = parser.parse_args(argv)
    db = database(args.config)
    if args.action == "demo":
        for username, password, role, hospital, name in DEMO:
            accounts.create_staff(db, username, password, role, hospital, name, exist_ok=True)
            print(f"  {role:15} {username:14} / {password:18} {hospital or ''}")
        return 0
    if not (args.username and args.password and args.role):
        parser.error("create needs --username, --password and --role")
    made = accounts.create_staff(db, args.username, args.password, args.role, args.hospital, args.name)
    print(f"created {made['role']} {made['username']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
