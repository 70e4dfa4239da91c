"""Notification: SMS verification codes that prove who holds a mobile number.

The gateway asks for a code (`SendVerificationCode`) and checks what the caller typed
(`CheckVerificationCode`) before it registers a patient or resets a password.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Contract

VerificationPurpose = Literal["register", "reset_password"]
Locale = Literal["zh", "en"]


class SendVerificationCode(Contract):
    """6 digits, valid 5 minutes; at most one SMS a minute and 10 a day per number (429 beyond)."""

    phone: str = Field(pattern=r"^1[3-9]\d{9}$")
    purpose: VerificationPurpose
    locale: Locale = "zh"


class CheckVerificationCode(Contract):
    """Right: the code stays good until it expires. Wrong: counted; after 5 wrong tries the code is
    dead and a new one must be asked for."""

    phone: str = Field(pattern=r"^1[3-9]\d{9}$")
    purpose: VerificationPurpose
    code: str = Field(pattern=r"^\d{6}$")


class VerificationSent(Contract):
    expires_in: int  # seconds
    resend_after: int  # seconds until another SMS may be asked for
