"""docker-compose.yml stays in step with `make run` (no Docker engine runs here: `config` only)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from scripts.launcher import ROOT, SERVICES, Platform

pytestmark = pytest.mark.integration


def _compose() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    # scripts/setup.sh (run by `make test`) installs it: a skip here would hide a broken install step.
    pytest.fail("no docker compose client (scripts/setup.sh installs Debian's docker-compose)")


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_and_matches_the_launcher() -> None:
    done = _config({"PII_KEY": "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0="})
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    launched = {c.name: c.argv for c in Platform().components()}
    for name in SERVICES:
        assert name in services, f"{name} runs under make run but has no compose service"
        command = services[name]["command"]
        assert command[-1] == launched[name][-1], f"{name}: compose runs {command[-1]}"
        assert f"services/{name}/config.yaml" in command
        assert "healthcheck" in services[name], f"{name} has no health check"
        check = services[name]["healthcheck"]["test"]
        assert check[1:6] == ["python", "-m", "infra.health", "check", "--service"] and check[6] == name, \
            f"{name}: the health check must ask the service's own facts (infra.health), not whether pid 1 exists"
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["environment"]["METRICS_ADDRESS"] == "0.0.0.0:9100"
        assert services[name]["deploy"]["replicas"] >= 1
    assert services["relay"]["command"][-3:] == launched["relay"][-3:]
    assert services["relay"]["healthcheck"]["test"][-3:] == ["--service", "relay", "--quiet"]
    for infra in ("rabbitmq", "postgres"):
        assert "healthcheck" in services[infra]


def test_compose_refuses_to_start_without_a_pii_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PII_KEY"}
    done = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "PII_KEY" in done.stderr
