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
        gateway_log = (p.run_dir / "logs" / "gateway.log").read_text(encoding="utf-8")
        assert "gateway_unhandled" not in gateway_log, "an exception escaped a handler"
