"""Staff accounts from the command line: the first platform admin, and the demo accounts.

    python -m services.gateway.staff create --username admin --role platform_admin --password ...
    python -m services.gateway.staff demo --gateway 127.0.0.1:8000   # every role's demo account
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from typing import Any

from infra.db import Database, apply_schema, ensure_database
from infra.settings import load_config
from services.gateway import readmodel
from services.gateway.limits import GatewaySettings

DEMO: tuple[tuple[str, str, str, str | None, str, str | None], ...] = (
    ("admin", "admin-pass-2024", "platform_admin", None, "平台管理员", None),
    ("hebmu2-admin", "admin-pass-2024", "hospital_admin", "hebmu2", "河北医大二院管理员", None),
    ("hebmu2-clerk", "clerk-pass-2024", "clerk", "hebmu2", "预约窗口 王敏", None),
    ("hebmu2-zhang", "doctor-pass-2024", "doctor", "hebmu2", "张建国 主任医师", "hebmu2-zhang"),
    ("hbph-admin", "admin-pass-2024", "hospital_admin", "hbph", "省人民医院管理员", None),
    ("op-12580", "op-pass-2024", "operator", None, "12580 话务员 刘洋", None),
    ("analyst", "analyst-pass-2024", "analyst", None, "卫生厅统计员", None),
)


DEMO_PATIENT = {"name": "李明", "id_number": "11010519491231002X", "phone": "13800138000",
                "password": "patient-pass-2024"}


class ApiClient:
    """The public API as a script uses it: JSON in and out, a bearer token once logged in."""

    def __init__(self, gateway: str, token: str | None = None) -> None:
        self.base = gateway if gateway.startswith("http") else f"http://{gateway}"
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"}
                                                          if self.token else {})}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def login(self, username: str, password: str) -> ApiClient:
        status, answer = self.call("POST", "/api/v1/auth/login", {"username": username, "password": password})
        if status != 200:
            raise RuntimeError(f"login as {username}: {status} {answer}")
        return ApiClient(self.base, answer["token"])

    def sms_code(self, phone: str, purpose: str = "register", operator: ApiClient | None = None) -> str:
        """Ask for a verification code to `phone` and read it from the outbox, as the platform admin
        (`operator`, a logged-in client) may: how a demo or a test proves a phone it does not hold."""
        status, answer = self.call("POST", "/api/v1/verification-codes", {"phone": phone, "purpose": purpose})
        if status != 202:
            raise RuntimeError(f"verification code for {phone[:3]}****{phone[-4:]}: {status} {answer}")
        return (operator or self).read_code(phone)

    def read_code(self, phone: str) -> str:
        """The newest verification code sent to `phone`, from the outbox (this client is the platform admin)."""
        status, outbox = self.call("GET", f"/api/v1/dev/sms?phone={phone}")
        code = verification_code_in(outbox)
        if code is None:
            raise RuntimeError(f"no verification code in the outbox: {status} {outbox}")
        return code

    def register(self, person: dict[str, Any], operator: ApiClient) -> tuple[int, Any]:
        """Register a patient with a code read from the outbox by `operator` (the platform admin)."""
        code = self.sms_code(person["phone"], "register", operator)
        return self.call("POST", "/api/v1/patients", {**person, "sms_code": code})


def verification_code_in(outbox: Any) -> str | None:
    """The newest verification code in an answer of GET /api/v1/dev/sms (newest message first)."""
    for message in (outbox or {}).get("messages", []):
        if message.get("template") == "verification_code":
            return str(re.findall(r"\d{6}", message["text"])[0])
    return None


def register_demo_patient(gateway: str) -> str:
    """Patients belong to booking: the demo patient registers through the public API like anyone,
    its phone proved by a code the demo platform admin reads from the outbox."""
    client = ApiClient(gateway)
    try:
        if client.call("POST", "/api/v1/auth/login", {"username": DEMO_PATIENT["phone"],
                                                      "password": DEMO_PATIENT["password"]})[0] == 200:
            return "already registered"
        admin = client.login(*DEMO[0][:2])
        status, answer = client.register(DEMO_PATIENT, admin)
    except (RuntimeError, urllib.error.URLError, OSError) as exc:
        return f"not registered ({exc})"
    if status in (200, 201):
        return "registered"
    return "already registered" if status == 409 else f"not registered ({status} {answer})"


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
        for username, password, role, hospital, name, doctor_id in DEMO:
            readmodel.create_staff(db, username, password, role, hospital, name, exist_ok=True, doctor_id=doctor_id)
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
