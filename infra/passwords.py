"""The password and username policy of every account, patients' and staff's alike, and the one
way passwords are hashed and checked (`Passwords`).

A password is refused when it is short, made of digits only, of fewer than four different
characters, or among the passwords people choose most (zxcvbn's list of the 30,000 most common,
plus the favourites of Chinese users that list lacks), ignoring case and a trailing year or digits.

Who a login name can be follows from its shape alone: a mainland mobile or an 18-character
resident ID is a patient's (`patient_login`), anything else can only be a staff username, since
those start with a letter (`check_staff_username`). A login therefore checks one kind of account.
"""

from __future__ import annotations

import re
import secrets
from functools import cache

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from contracts import InvalidInput
from infra.blocking import off_hub

MIN_LENGTH = 8
MAX_LENGTH = 128
# Common in China and missing from zxcvbn's (mostly English-language) list.
_CHINESE_FAVOURITES = frozenset({
    "woaini", "woaini1314", "woaini520", "woaini521", "5201314", "1314520", "520520", "a5201314",
    "qq123456", "qq5201314", "aa123456", "a123456", "a1234567", "a12345678", "abc123456", "123456a",
    "123456aa", "123456abc", "123qwe", "1qaz2wsx", "1q2w3e4r", "zxcvbnm", "qwertyuiop", "asdfghjkl",
    "woaiwojia", "iloveyou1314", "wangyang", "zhangwei", "liuyang", "88888888", "66666666", "password1",
})
_USERNAME = re.compile(r"^[a-z][a-z0-9._-]{2,63}$")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")  # as contracts' phone fields
_RESIDENT_ID = re.compile(r"^\d{17}[\dX]$")  # GB 11643's shape; its check digit is booking's
# OWASP's argon2id minimum (19 MiB, t=2, p=1): ~15 ms a hash, run off the eventlet hub.
ARGON2 = Parameters(type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=2, memory_cost=19456,
                    parallelism=1)
_TRAILING_DIGITS = re.compile(r"[\d\W_]+$")


@cache
def _common() -> frozenset[str]:
    from zxcvbn.matching import RANKED_DICTIONARIES  # 30,000 words: loaded once, on first use

    return frozenset(RANKED_DICTIONARIES["passwords"]) | _CHINESE_FAVOURITES


def is_common(password: str) -> bool:
    lowered = password.lower()
    stem = _TRAILING_DIGITS.sub("", lowered)
    common = _common()
    return lowered in common or (len(stem) >= 4 and stem in common and stem != lowered)


def check_password(password: str) -> None:
    """Refuse a weak password with the reason, as the `password` field's error."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidInput(f"密码应为 {MIN_LENGTH}-{MAX_LENGTH} 位 / a password has {MIN_LENGTH} to {MAX_LENGTH} "
                           "characters", field="password", code="weak_password")
    if password.isdigit() or len(set(password)) < 4:
        raise InvalidInput("密码过于简单：请混合字母和数字 / password is too simple: mix letters and digits",
                           field="password", code="weak_password")
    if is_common(password):
        raise InvalidInput("密码过于常见，容易被猜到 / this password is too common and easily guessed",
                           field="password", code="weak_password")


def patient_login(username: str) -> str | None:
    """The mobile or resident ID (its X upper-cased) a patient logs in with, or None when
    `username` has neither shape and so can only be a staff username."""
    name = username.strip().upper()
    return name if _MOBILE.match(name) or _RESIDENT_ID.match(name) else None


def check_staff_username(username: str) -> None:
    """Staff usernames: a letter, then letters, digits, '.', '_' or '-' (3-64 in all). Never a
    mobile or an ID number, which are how patients log in: a login of that shape never looks at
    staff accounts."""
    if patient_login(username) is not None:
        raise InvalidInput("用户名不能是手机号或身份证号（患者用它们登录）/ a staff username cannot be a mobile or "
                           "resident ID number: patients log in with those", field="username", code="bad_username")
    if not _USERNAME.match(username):
        raise InvalidInput("用户名应以小写字母开头，由小写字母、数字和 . _ - 组成（3-64位）/ a username starts with a "
                           "lower-case letter and has 3-64 of a-z 0-9 . _ -", field="username", code="bad_username")


class Passwords:
    """Hashes and checks every password (argon2id, `ARGON2`), off the eventlet hub.

    `verify` costs one argon2 verification whatever the account: one that does not exist, or has
    no password, is checked against a dummy hash of the same parameters (made once per process,
    of a random password), so "no such user" takes as long as "wrong password" and tells nobody
    who is registered."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher.from_parameters(ARGON2)
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return off_hub(self._hasher.hash, password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` is the one `stored` was made of; always False without `stored`."""
        try:
            off_hub(self._hasher.verify, stored or self._dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False
        return bool(stored)

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hash(secrets.token_urlsafe(32))
        return self._dummy


PASSWORDS = Passwords()  # the process's hasher; tests hand handlers one over a counting hasher
