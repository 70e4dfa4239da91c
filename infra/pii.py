"""Patient data at rest: Fernet encryption for ID and phone numbers, a keyed hash to look them up.

The key comes from configuration (PII_KEY, urlsafe base64 of 32 bytes) and nowhere else: there is
no default. `make run` and every platform the launcher starts get a random key created once per
run directory (`.run/pii.key`, scripts/launcher.py); production sets PII_KEY from its secret
store. The development key this repository once shipped as a default is public, so it is refused
as a current key: anything encrypted with it, and every patient_id derived from its lookup hash,
could be computed by anyone.

Rotation: PII_OLD_KEYS (comma-separated) still decrypts what older keys encrypted; encryption and
lookup hashes always use PII_KEY. `python -m services.booking.rekey` moves booking's patients to
the new key (services/booking/README.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Published in this repository's history as the old config default: refused as PII_KEY, accepted
# in PII_OLD_KEYS so that an installation that ran on it can be rekeyed away from it.
DEV_KEY = "ZGV2LW9ubHktcGlpLWtleS1ub3QtZm9yLXByb2R1Y3Q="
HOW_TO_SET = ("`make run` (scripts.launcher) creates one in .run/pii.key; elsewhere create one with "
              "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
              "and set PII_KEY from your secret store")


class PiiKeyError(ValueError):
    """PII_KEY is missing, malformed or the published development key: the service must not start."""


class PiiVault:
    def __init__(self, key: str | None, old_keys: Iterable[str] = ()) -> None:
        key = (key or "").strip()
        if not key:
            raise PiiKeyError(f"PII_KEY is not set: patient data needs an at-rest key of this installation; "
                              f"{HOW_TO_SET}")
        if key == DEV_KEY:
            raise PiiKeyError(f"PII_KEY is the development key published in this repository: anyone could "
                              f"decrypt with it; {HOW_TO_SET} (rotate existing data with "
                              f"`python -m services.booking.rekey`, the old key in PII_OLD_KEYS)")
        self._current = Fernet(_checked(key, "PII_KEY").encode())
        olds = [Fernet(_checked(k, "PII_OLD_KEYS").encode()) for k in old_keys if k.strip() and k.strip() != key]
        self._fernet = MultiFernet([self._current, *olds])
        self._mac_key = hashlib.sha256(b"lookup:" + base64.urlsafe_b64decode(key.encode())).digest()

    @classmethod
    def from_config(cls, key: str | None, old_keys: str | None) -> PiiVault:
        """From PII_KEY and PII_OLD_KEYS as configuration holds them (the old ones comma-separated)."""
        return cls(key, [k.strip() for k in (old_keys or "").split(",") if k.strip()])

    def encrypt(self, value: str) -> str:
        return self._current.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        """With PII_KEY or any of PII_OLD_KEYS."""
        return self._fernet.decrypt(token.encode()).decode()

    def is_current(self, token: str) -> bool:
        """Whether `token` was encrypted with PII_KEY itself (not an old key): rekey skips it."""
        try:
            self._current.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def lookup_hash(self, value: str) -> str:
        """Deterministic, keyed: finds a patient by ID or phone without storing either in clear."""
        return hmac.new(self._mac_key, value.upper().encode(), hashlib.sha256).hexdigest()


def _checked(key: str, name: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(key.strip().encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise PiiKeyError(f"{name} must be urlsafe base64 of 32 bytes; {HOW_TO_SET}")
    return key.strip()
