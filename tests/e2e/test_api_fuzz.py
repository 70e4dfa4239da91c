"""schemathesis fuzzes the running gateway against its own OpenAPI document: no 500s, and every
answer matches the document (status codes, content types, JSON schemas)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import running_platform

pytestmark = pytest.mark.e2e
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
JSON = {"Content-Type": "application/json"}
# What an outside tester got through before (the security issue), fed by hand after schemathesis:
# each must be a refusal with the JSON error shape, never a 5xx (the last ones are no refusal:
# a mangled X-Forwarded-For is ignored).
HOSTILE: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("POST", "/api/v1/auth/login", b"[" * 30_000 + b"]" * 30_000, JSON),
    ("POST", "/api/v1/patients", b'{"name": "' + b"[" * 5000 + b'"}', JSON),
    ("POST", "/api/v1/patients", r'{"name": "李\u0000明", "id_number": "11010519491231002X", "phone": "13800138000", '
                                 '"sms_code": "123456", "password": "good-pass-77"}'.encode(), JSON),
    ("POST", "/api/v1/auth/login", b'{"username": "' + b"u" * 200_000 + b'", "password": "x"}', JSON),
    ("POST", "/api/v1/auth/login", b'{"username": "admin", "password": "x"}', {"Content-Type": "text/plain"}),
    ("POST", "/api/v1/auth/login", b'{"username": "admin", "password": "x"}', {**JSON, "Origin": "https://evil.example"}),
    ("POST", "/api/v1/auth/login", rb'{"username": "a\u001b[2J", "password": "x"}', JSON),
    ("POST", "/api/v1/verification-codes", rb'{"phone": "1380013800\u0000"}', JSON),
    ("GET", "/api/v1/departments/hebmu2-xnk/schedule?from=9999-12-31", None, {}),
    ("GET", "/api/v1/departments/hebmu2-xnk/schedule?from=0001-01-01&to=9999-12-31", None, {}),
    ("GET", "/api/v1/hospitals/%00/doctors", None, {}),
    ("GET", "/api/v1/me", None, {"Authorization": "Bearer " + "t" * 6000}),
]
HARMLESS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/api/v1/hospitals", None, {"X-Forwarded-For": "not-an-ip, , ::::"}),
    ("GET", "/api/v1/hospitals", None, {"X-Forwarded-For": ", ".join(["10.0.0.1"] * 500)}),
]


def test_the_openapi_document_holds_under_fuzzing():
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.fail("schemathesis is not installed: it is a locked dev dependency (make setup installs it)")
    with running_platform("fuzz", ["demo/walking-skeleton.json"],
                          env={"RATE_PER_CLIENT": "100000", "RATE_BURST_CLIENT": "100000",
                               "RATE_PER_PATIENT": "100000", "RATE_BURST_PATIENT": "100000"}) as p:
        base = f"http://{p.gateway_address}"
        login = {"username": "hebmu2-admin", "password": "admin-pass-2024"}
        token = requests.post(f"{base}/api/v1/auth/login", json=login, timeout=30).json()["token"]
        done = subprocess.run(
            [cli, "run", f"{base}/api/v1/openapi.json", "--checks", CHECKS, "--max-examples", "15",
             "-H", f"Authorization: Bearer {token}", "--no-color"],
            capture_output=True, text=True, timeout=900,
        )
        print(done.stdout[-4000:])
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert " passed" in done.stdout
        for method, path, body, headers in HOSTILE:
            answer = requests.request(method, base + path, data=body, headers=headers, timeout=60)
            assert 400 <= answer.status_code < 500, (method, path[:60], answer.status_code, answer.text[:300])
            assert answer.json()["error"]["code"], (method, path[:60], answer.text[:300])
        for method, path, body, headers in HARMLESS:
            answer = requests.request(method, base + path, data=body, headers=headers, timeout=60)
            assert answer.status_code == 200, (method, path[:60], answer.status_code, answer.text[:300])
        gateway_log = (p.run_dir / "logs" / "gateway.log").read_text(encoding="utf-8")
        assert "gateway_unhandled" not in gateway_log, "an exception escaped a handler"
