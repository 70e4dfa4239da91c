"""The password and username policy of every account, patients' and staff's alike.

A password is refused when it is short, made of digits only, of fewer than four different
characters, or among the passwords people choose most (zxcvbn's list of the 30,000 most common,
plus the favourites of Chinese users that list lacks), ignoring case and a trailing year or digits.
"""

from __future__ import annotations

import re
from functools import cache

from contracts import InvalidInput

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


def check_staff_username(username: str) -> None:
    """Staff usernames: a letter, then letters, digits, '.', '_' or '-' (3-64 in all). Never a
    mobile or an ID number, which are how patients log in."""
    if not _USERNAME.match(username):
        raise InvalidInput("用户名应以小写字母开头，由小写字母、数字和 . _ - 组成（3-64位）/ a username starts with a "
                           "lower-case letter and has 3-64 of a-z 0-9 . _ -", field="username", code="bad_username")
