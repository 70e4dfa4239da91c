"""infra.settings: ${VAR:default} substitution, and every config file of the platform validates."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from infra.settings import Settings, load_config, substitute

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SERVICE_CONFIGS = sorted(ROOT.glob("services/*/config.yaml"))


def test_substitution_takes_the_environment_then_the_default():
    text = "a: ${A:fallback}\nb: ${B:fallback}\nc: ${C:}\nd: ${D:postgresql://u@h:5432}/x"
    assert substitute(text, {"A": "from-env"}) == (
        "a: from-env\nb: fallback\nc: \nd: postgresql://u@h:5432/x"
    )


def test_substitution_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("APPT_SETTINGS_TEST_VAR", "set")
    assert substitute("${APPT_SETTINGS_TEST_VAR:unset}") == "set"
    monkeypatch.delenv("APPT_SETTINGS_TEST_VAR")
    assert substitute("${APPT_SETTINGS_TEST_VAR:unset}") == "unset"


def test_a_missing_variable_without_default_is_an_error_naming_it():
    with pytest.raises(KeyError, match="NEEDED_SECRET"):
        substitute("key: ${NEEDED_SECRET}", {})
    assert substitute("key: ${NEEDED_SECRET}", {"NEEDED_SECRET": "s3"}) == "key: s3"


def test_load_config_parses_after_substitution(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("SERVICE_NAME: demo\nRETRY_ATTEMPTS: ${RETRY_ATTEMPTS:5}\nNAME: ${NAME:预约}\n", encoding="utf-8")
    assert load_config(path, {}) == {"SERVICE_NAME": "demo", "RETRY_ATTEMPTS": 5, "NAME": "预约"}
    assert load_config(path, {"RETRY_ATTEMPTS": "7"})["RETRY_ATTEMPTS"] == 7


def test_load_config_refuses_a_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path, {})


def test_every_service_has_a_config():
    services = {p.parent.name for p in ROOT.glob("services/*/service.py")}
    assert services, "no services found"
    assert services <= {p.parent.name for p in SERVICE_CONFIGS}


@pytest.mark.parametrize("path", SERVICE_CONFIGS, ids=lambda p: p.parent.name)
def test_a_service_config_loads_and_validates_with_defaults(path):
    service = path.parent.name
    settings = Settings.from_config({**load_config(path, {}), "SERVICE_NAME": service})
    assert settings.service_name == service
    assert settings.eventstore_dsn == "postgresql://postgres@127.0.0.1:5432/appt_events"
    assert settings.database_dsn == f"postgresql://postgres@127.0.0.1:5432/appt_{service}"
    assert settings.amqp_uri == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.log_format == "auto"
    assert settings.retry_attempts >= 1 and settings.retry_base_delay_ms >= 1
    assert settings.db_idle_s == 10.0


@pytest.mark.parametrize("path", SERVICE_CONFIGS, ids=lambda p: p.parent.name)
def test_a_service_config_follows_the_environment(path):
    environ = {"PG_URL": "postgresql://u@db:6432", "APPT_DB_PREFIX": "appt_test", "LOG_FORMAT": "json",
               "AMQP_URI": "amqp://u:p@mq:5672/prod", "RETRY_ATTEMPTS": "9", "DB_IDLE_S": "2.5"}
    config = load_config(path, environ)
    settings = Settings.from_config({**config, "SERVICE_NAME": path.parent.name})
    assert settings.eventstore_dsn == "postgresql://u@db:6432/appt_test_events"
    assert settings.database_dsn == f"postgresql://u@db:6432/appt_test_{path.parent.name}"
    assert settings.amqp_uri == "amqp://u:p@mq:5672/prod"
    assert settings.log_format == "json"
    assert settings.db_idle_s == 2.5  # the pools' idle time (infra/db.py) is every service's setting
    if "RETRY_ATTEMPTS" in config:
        assert settings.retry_attempts == 9


def test_the_relay_config_validates():
    settings = Settings.from_config(load_config(ROOT / "infra" / "relay.yaml", {"APPT_DB_PREFIX": "appt_x"}))
    assert settings.service_name == "relay"
    assert settings.eventstore_dsn.endswith("/appt_x_events")
    assert settings.model_extra == {"BATCH_SIZE": 500}
    assert Settings.from_config(load_config(ROOT / "infra" / "relay.yaml", {"DB_IDLE_S": "3"})).db_idle_s == 3.0


@pytest.mark.parametrize(
    ("key", "value"),
    [("RETRY_ATTEMPTS", 0), ("RETRY_ATTEMPTS", "many"), ("RETRY_BASE_DELAY_MS", -1), ("LOG_FORMAT", "xml"),
     ("DB_IDLE_S", 0)],
)
def test_a_bad_value_is_an_error_naming_the_field(key, value):
    config = {**load_config(SERVICE_CONFIGS[0], {}), "SERVICE_NAME": "svc", key: value}
    with pytest.raises(pydantic.ValidationError) as raised:
        Settings.from_config(config)
    assert [e["loc"] for e in raised.value.errors()] == [(key,)]
    assert key in str(raised.value)


def test_a_missing_required_key_is_an_error_naming_it():
    config = load_config(SERVICE_CONFIGS[0], {})  # the service files leave SERVICE_NAME to the runner
    with pytest.raises(pydantic.ValidationError) as raised:
        Settings.from_config(config)
    assert [e["loc"] for e in raised.value.errors()] == [("SERVICE_NAME",)]
