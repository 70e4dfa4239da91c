"""Patient data at rest: Fernet encryption for ID and phone numbers, a keyed hash to look them up.

The key comes from configuration (PII_KEY, urlsafe base64 of 32 bytes). The default in the
config files is for development only; production sets PII_KEY from a secret store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet

DEV_KEY = "ZGV2LW9ubHktcGlpLWtleS1ub3QtZm9yLXByb2R1Y3Q="


class PiiVault:
    def __init__(self, key: str) -> None:
        raw = base64.urlsafe_b64decode(key.encode())
        if len(raw) != 32:
            raise ValueError("PII_KEY must be urlsafe base64 of 32 bytes")
        self._fernet = Fernet(key.encode())
        self._mac_key = hashlib.sha256(b"lookup:" + raw).digest()

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()

    def lookup_hash(self, value: str) -> str:
        """Deterministic, keyed: finds a patient by ID or phone without storing either in clear."""
        return hmac.new(self._mac_key, value.upper().encode(), hashlib.sha256).hexdigest()
