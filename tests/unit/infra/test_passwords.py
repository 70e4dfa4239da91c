"""infra.passwords: a missing or empty hash is never a match and costs what a wrong password costs;
which login names are a patient's."""

from __future__ import annotations

import pytest

from infra.passwords import ARGON2, patient_login
from tests.unit.fakes import CountingHasher

pytestmark = pytest.mark.unit


def test_no_stored_hash_is_never_a_match_and_costs_one_verification_of_the_same_parameters():
    hasher = CountingHasher()
    passwords = hasher.passwords()
    stored = passwords.hash("right-secret-2024")
    outcomes = [passwords.verify(stored, "right-secret-2024"), passwords.verify(stored, "wrong-secret-2024"),
                passwords.verify(None, "right-secret-2024"), passwords.verify("", "right-secret-2024"),
                passwords.verify(None, "")]
    assert outcomes == [True, False, False, False, False]
    assert hasher.verified == [ARGON2] * 5


@pytest.mark.parametrize("username, login", [
    ("13800138000", "13800138000"), (" 13800138000 ", "13800138000"), ("11010519491231002x", "11010519491231002X"),
    ("110105194912310021", "110105194912310021"),
    ("12800138000", None), ("1380013800", None), ("138001380001", None), ("1101051949123100XX", None),
    ("hebmu2-clerk", None), ("12580", None), ("", None)])
def test_only_a_mobile_or_a_resident_id_is_a_patients_login(username, login):
    assert patient_login(username) == login
