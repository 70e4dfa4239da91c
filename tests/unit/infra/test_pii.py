"""infra.pii: no default key, the published development key refused, old keys decrypt only; and no
config file of the platform carries a key of its own any more."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet, InvalidToken

from infra.pii import DEV_KEY, PiiKeyError, PiiVault
from infra.providers import Vault
from infra.settings import load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def key() -> str:
    return Fernet.generate_key().decode()


@pytest.mark.parametrize("bad", [None, "", "  "])
def test_no_key_is_refused_naming_pii_key_and_how_to_set_it(bad):
    with pytest.raises(PiiKeyError, match="PII_KEY is not set") as refused:
        PiiVault(bad)
    assert "pii.key" in str(refused.value) and "Fernet.generate_key" in str(refused.value)


def test_the_published_development_key_is_refused():
    with pytest.raises(PiiKeyError, match="PII_KEY is the development key"):
        PiiVault(DEV_KEY)


@pytest.mark.parametrize("bad", ["not-base64!", "c2hvcnQ="])
def test_a_malformed_key_is_refused(bad):
    with pytest.raises(PiiKeyError, match="PII_KEY must be urlsafe base64 of 32 bytes"):
        PiiVault(bad)


def test_the_vault_provider_refuses_to_start_without_a_key_or_with_the_dev_key():
    for config in ({}, {"PII_KEY": ""}, {"PII_KEY": DEV_KEY}):
        provider = Vault()
        provider.container = SimpleNamespace(config={"EVENTSTORE_DSN": "x", **config}, service_name="booking")
        with pytest.raises(PiiKeyError, match="PII_KEY"):
            provider.setup()


def test_old_keys_decrypt_but_encryption_and_lookups_use_the_new_key():
    old, new = key(), key()
    before = PiiVault(old)
    token = before.encrypt("13900000001")
    rotated = PiiVault.from_config(new, f" {old} ,")
    assert rotated.decrypt(token) == "13900000001"
    assert not rotated.is_current(token)
    fresh = rotated.encrypt("13900000001")
    assert rotated.is_current(fresh)
    with pytest.raises(InvalidToken):
        before.decrypt(fresh)
    assert rotated.lookup_hash("x") == PiiVault(new).lookup_hash("x") != before.lookup_hash("x")


def test_the_dev_key_is_accepted_as_an_old_key_so_an_installation_can_leave_it():
    legacy = Fernet(DEV_KEY.encode()).encrypt(b"130102198001011234").decode()
    assert PiiVault(key(), [DEV_KEY]).decrypt(legacy) == "130102198001011234"


def test_no_config_file_defaults_pii_key():
    paths = sorted(ROOT.glob("services/*/config.yaml"))
    assert len(paths) == 6
    for path in paths:
        text = path.read_text()
        assert not re.search(r"\$\{PII_KEY:[^}]", text), f"{path} still defaults PII_KEY"
        assert not load_config(path, {}).get("PII_KEY"), path
