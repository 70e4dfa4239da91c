"""Booking's security findings on the in-memory store with fakes: a refused registration tells the
owner, a login costs one argon2 verification whoever it is, a password reset needs the registered
phone, a repeat is answered only to whoever may act on the appointment, a clerk finds only patients
of their hospital, and a key rotation keeps every patient_id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import argon2
import pytest
from cryptography.fernet import Fernet, InvalidToken

from contracts import (
    Actor,
    BookAppointment,
    CancelAppointment,
    CheckInAppointment,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RegisterPatient,
    ResetPatientPassword,
)
from infra.passwords import ARGON2
from infra.pii import PiiVault
from services.booking import handlers
from services.booking.rekey import CannotDecrypt, rekey
from tests.unit.booking.test_handlers import NOW, Platform, resident_id
from tests.unit.fakes import CountingHasher

pytestmark = pytest.mark.unit

CLERK_A = Actor(kind="clerk", id="clerk-a", hospital_id="hosp-a")
CLERK_B = Actor(kind="clerk", id="clerk-b", hospital_id="hosp-b")


@pytest.fixture
def p() -> Platform:
    return Platform()


def register(p: Platform, n: int, key: str, phone: str | None = None, password: str | None = None) -> Any:
    return p.handle(RegisterPatient(name=f"患者{n}", id_number=resident_id(n), phone=phone or f"139{n:08d}",
                                    password=password, idempotency_key=key))


def login(p: Platform, username: str, password: str) -> str | None:
    try:
        return str(handlers.authenticate_patient(p.readmodel, p.vault, p.passwords, username, password)["patient_id"])
    except NotFound:
        return None


# --- 3. a refused registration tells the owner ------------------------------------------------

def test_a_second_registration_of_an_id_is_refused_and_the_owner_is_told_once(p):
    owner = register(p, 1, "reg-owner-1")["patient_id"]
    with pytest.raises(Conflict) as refused:
        register(p, 1, "reg-other-1", phone="13700000099")
    err = refused.value
    assert (err.code, err.field) == ("already_registered", "id_number")
    assert "139****0001" in err.message  # the owner's phone, masked, to recover with
    assert err.message.index("找回密码") < err.message.index("reset the password")  # Chinese first
    assert "窗口" in err.message and "hospital window" in err.message
    stream = list(p.memory.read_stream(f"patient-{owner}"))
    assert [e.type for e in stream] == ["PatientRegistered", "PatientRegistrationRefused"]
    assert stream[1].data == {"patient_id": owner, "attempt_phone_masked": "137****0099"}
    head = p.memory.head()
    with pytest.raises(Conflict):  # a retry of the refused command: refused again, nothing new
        register(p, 1, "reg-other-1", phone="13700000099")
    assert p.memory.head() == head
    with pytest.raises(Conflict):  # another attempt is another notice
        register(p, 1, "reg-other-2", phone="13700000098")
    assert p.types(f"patient-{owner}").count("PatientRegistrationRefused") == 2


def test_a_repeat_of_the_owners_own_command_is_not_a_refusal(p):
    first = register(p, 1, "reg-owner-1")
    again = register(p, 1, "reg-owner-1")
    assert (again["patient_id"], again["created"]) == (first["patient_id"], False)
    assert p.types(f"patient-{first['patient_id']}") == ["PatientRegistered"]


def test_a_reused_key_for_another_id_is_no_repeat(p):
    register(p, 1, "reg-shared-1")
    other = register(p, 2, "reg-other-2")["patient_id"]
    with pytest.raises(Conflict):  # the key of patient 1's registration does not make this a repeat
        register(p, 2, "reg-shared-1")
    assert p.types(f"patient-{other}") == ["PatientRegistered", "PatientRegistrationRefused"]


# --- 4. password reset ------------------------------------------------------------------------

def reset(p: Platform, n: int, phone: str, password: str, key: str = "reset-0001") -> Any:
    return p.handle(ResetPatientPassword(id_number=resident_id(n), phone=phone, password=password,
                                         idempotency_key=key))


def test_a_reset_with_the_registered_phone_replaces_the_password_once(p):
    pid = register(p, 1, "reg-owner-1", password="old-secret-1")["patient_id"]
    answer = reset(p, 1, "13900000001", "new-secret-2")
    assert answer == {"patient_id": pid, "phone_masked": "139****0001"}
    assert login(p, "13900000001", "new-secret-2") == pid
    assert login(p, resident_id(1), "new-secret-2") == pid
    assert login(p, "13900000001", "old-secret-1") is None
    head = p.memory.head()
    assert reset(p, 1, "13900000001", "new-secret-2") == answer
    assert p.memory.head() == head
    assert p.types(f"patient-{pid}") == ["PatientRegistered", "PatientPasswordReplaced"]


def test_a_wrong_phone_and_an_unknown_id_get_the_same_answer(p):
    register(p, 1, "reg-owner-1", password="old-secret-1")
    answers = []
    for n, phone in ((1, "13900000002"), (7, "13900000007")):
        with pytest.raises(NotFound) as refused:
            reset(p, n, phone, "new-secret-2")
        answers.append((refused.value.code, refused.value.field, refused.value.message))
    assert answers[0] == answers[1] and answers[0][:2] == ("no_such_account", "id_number")
    assert login(p, "13900000001", "old-secret-1") is not None
    assert p.memory.head() == 1  # nothing but the registration stored


def test_the_password_policy_applies_to_a_reset(p):
    register(p, 1, "reg-owner-1", password="old-secret-1")
    with pytest.raises(InvalidInput):
        reset(p, 1, "13900000001", "12345678")


# --- login: one argon2 verification, whoever it is ---------------------------------------------

def refusal(p: Platform, username: str, password: str) -> tuple[str, str | None, str]:
    with pytest.raises(NotFound) as refused:
        handlers.authenticate_patient(p.readmodel, p.vault, p.passwords, username, password)
    return refused.value.code, refused.value.field, refused.value.message


def test_an_unknown_patient_costs_one_verification_as_a_wrong_password_does(p):
    """No timing tells who is registered: every refusal verifies exactly one argon2 hash of the
    production parameters (a dummy one when nobody matches) and answers the same words."""
    hasher = CountingHasher()
    p.passwords = hasher.passwords()
    x_id = next(resident_id(n) for n in range(1, 100) if resident_id(n).endswith("X"))
    p.handle(RegisterPatient(name="患者一", id_number=resident_id(1), phone="13900000001", password="right-secret-1",
                             idempotency_key="reg-login-1"))
    p.handle(RegisterPatient(name="患者X", id_number=x_id, phone="13900000004", password="right-secret-4",
                             idempotency_key="reg-login-4"))
    p.handle(RegisterPatient(name="来电者", id_number=resident_id(2), phone="13900000002",  # the hotline's: no password
                             idempotency_key="reg-login-2"))
    stored = p.readmodel.patients
    assert [argon2.extract_parameters(r["password_hash"]) for r in stored.values() if r["password_hash"]] == \
        [ARGON2, ARGON2]
    refusals = []
    for username, password in (
            ("13900000001", "wrong-secret"),  # wrong password, by phone
            (resident_id(1), "wrong-secret"),  # wrong password, by ID
            (x_id.lower(), "wrong-secret"),  # by ID with a lower-case x
            ("13900000009", "right-secret-1"),  # no such phone
            (resident_id(9), "right-secret-1"),  # no such ID
            (resident_id(2), "right-secret-1"),  # registered without a password
            ("13900000002", "right-secret-1"),  # that patient's phone
            ("hebmu2-admin", "right-secret-1")):  # neither a phone nor an ID
        hasher.verified.clear()
        refusals.append(refusal(p, username, password))
        assert hasher.verified == [ARGON2], username
    assert set(refusals) == {("bad_credentials", "username", "用户名或密码错误 / wrong username or password")}
    for username, password in (("13900000001", "right-secret-1"), (x_id.lower(), "right-secret-4")):
        hasher.verified.clear()
        assert login(p, username, password) is not None
        assert hasher.verified == [ARGON2]


def test_a_wrong_current_password_costs_one_verification_with_a_password_or_without(p):
    hasher = CountingHasher()
    p.passwords = hasher.passwords()
    pid = register(p, 1, "reg-owner-1", password="old-secret-1")["patient_id"]
    hotline = register(p, 2, "reg-owner-2")["patient_id"]  # no password to change
    for patient_id in (pid, hotline):
        hasher.verified.clear()
        with pytest.raises(Forbidden) as refused:
            handlers.change_patient_password(p.store, p.readmodel, p.passwords, patient_id, "not-it-1", "new-secret-2")
        assert refused.value.code == "wrong_password" and hasher.verified == [ARGON2]


# --- 5. a repeat is answered only within the actor's scope ------------------------------------

def test_another_patient_replaying_a_cancel_learns_nothing(p):
    p.session("s1", phone=1)
    a, b = p.patient(1), p.patient(2)
    booked = p.handle(BookAppointment(
        session_id="s1", patient_id=a, channel="phone", idempotency_key="book-a-0001",
        actor=Actor(kind="operator", id="op-1")))
    key = f"cancel:{booked.appointment_id}"  # the gateway's default key, the same for every caller
    done = p.handle(CancelAppointment(appointment_id=booked.appointment_id, idempotency_key=key,
                                      actor=Actor(kind="patient", id=a)))
    assert done["refund_due"] == "50.00"
    with pytest.raises(NotFound) as refused:
        p.handle(CancelAppointment(appointment_id=booked.appointment_id, idempotency_key=key,
                                   actor=Actor(kind="patient", id=b)))
    with pytest.raises(NotFound) as unknown:
        p.handle(CancelAppointment(appointment_id="no-such-appointment", idempotency_key=key,
                                   actor=Actor(kind="patient", id=b)))
    assert refused.value.message == unknown.value.message
    with pytest.raises(Forbidden):  # a clerk may not cancel, repeat or not
        p.handle(CancelAppointment(appointment_id=booked.appointment_id, idempotency_key=key, actor=CLERK_A))
    # the owner's own repeat still gets the first answer
    assert p.handle(CancelAppointment(appointment_id=booked.appointment_id, idempotency_key=key,
                                      actor=Actor(kind="patient", id=a))) == done


def test_another_hospitals_clerk_replaying_a_check_in_learns_nothing(p):
    p.session("today", day=NOW.date(), lapse=timedelta(hours=3))
    a = p.patient(1)
    code = p.book(a, "today", "book-a-0001").code
    cmd = CheckInAppointment(code=code, id_number=resident_id(1), idempotency_key="checkin-0001", actor=CLERK_A)
    done = p.handle(cmd)
    assert done["status"] == "checked_in"
    with pytest.raises(NotFound):
        p.handle(cmd.model_copy(update={"actor": CLERK_B}))
    with pytest.raises(Forbidden):
        p.handle(cmd.model_copy(update={"actor": Actor(kind="operator", id="op-1")}))
    assert p.handle(cmd) == done


def test_a_patient_books_only_for_themselves_repeats_included(p):
    p.session("s1")
    a, b = p.patient(1), p.patient(2)
    p.book(a, "s1", "book-a-0001")
    with pytest.raises(Forbidden):
        p.handle(BookAppointment(session_id="s1", patient_id=a,
                                                         idempotency_key="book-a-0001",
                                                         actor=Actor(kind="patient", id=b)))


# --- 6. a clerk's lookup stays in their hospital ----------------------------------------------

def find(p: Platform, n: int, actor: Actor | None) -> Any:
    return handlers.find_patient(p.readmodel, p.vault, resident_id(n), actor)


def test_a_clerk_finds_only_patients_with_a_booking_at_their_hospital(p):
    p.session("s1")  # at hosp-a
    a, b = p.patient(1), p.patient(2)
    p.book(a, "s1", "book-a-0001")
    assert find(p, 1, CLERK_A)["patient_id"] == a
    assert find(p, 1, Actor(kind="hospital_admin", id="adm-a", hospital_id="hosp-a"))["patient_id"] == a
    messages = set()
    for n, actor in ((2, CLERK_A), (1, CLERK_B), (9, CLERK_A)):  # no booking here; another hospital; unknown
        with pytest.raises(NotFound) as refused:
            find(p, n, actor)
        messages.add((refused.value.code, refused.value.message))
    assert len(messages) == 1
    for actor in (Actor(kind="operator", id="op-1"), Actor(kind="platform_admin", id="root"), None):
        assert find(p, 2, actor)["patient_id"] == b  # the hotline searches the province
    with pytest.raises(Forbidden):
        find(p, 1, Actor(kind="patient", id=b))


# --- 2. a key rotation keeps patient ids ------------------------------------------------------

def test_after_a_rekey_registration_keeps_the_stored_patient_id(p):
    pid = register(p, 1, "reg-owner-1", password="old-secret-1")["patient_id"]
    old = p.vault
    new_key = Fernet.generate_key().decode()
    p.vault = PiiVault(new_key, [p.key])
    progress: list[str] = []
    report = rekey(p.readmodel, p.vault, batch=1, progress=progress.append)
    assert (report.rekeyed, report.current) == (1, 0) and progress
    assert rekey(p.readmodel, p.vault).current == 1  # a second run recognises the rows
    row = p.readmodel.patients[pid]
    with pytest.raises(InvalidToken):
        old.decrypt(row["id_enc"])
    p.vault = PiiVault(new_key)  # the old key gone altogether
    assert login(p, "13900000001", "old-secret-1") == pid
    with pytest.raises(Conflict):
        register(p, 1, "reg-other-1", phone="13700000099")
    assert p.types(f"patient-{pid}") == ["PatientRegistered", "PatientRegistrationRefused"]
    assert register(p, 1, "reg-owner-1")["patient_id"] == pid  # the owner's repeat, too


def test_a_row_under_no_given_key_stops_the_rekey_and_writes_nothing_of_its_batch(p):
    register(p, 1, "reg-owner-1")
    before = dict(next(iter(p.readmodel.patients.values())))
    with pytest.raises(CannotDecrypt, match="PII_OLD_KEYS"):
        rekey(p.readmodel, PiiVault(Fernet.generate_key().decode()))
    assert next(iter(p.readmodel.patients.values())) == before



# --- the patient's language and the HIS's real-name fields ---------------------------------------

def test_the_patients_language_reaches_the_sms_and_the_real_name_fields_only_his_sync(p):
    english = p.handle(RegisterPatient(name="Li Lei", id_number=resident_id(7), phone="13900000007",
                                       locale="en", idempotency_key="reg-en-7"))["patient_id"]
    chinese = register(p, 8, "reg-zh-8")["patient_id"]
    assert handlers.patient_contact(p.readmodel, p.vault, english)["locale"] == "en"
    assert handlers.patient_contact(p.readmodel, p.vault, chinese)["locale"] == "zh"
    identity = handlers.patient_for_his(p.readmodel, p.vault, chinese)
    assert identity == {"name": "患者8", "id_number": resident_id(8), "phone": "13900000008",
                        "sex": identity["sex"], "birth_date": identity["birth_date"]}
    assert identity["sex"] in ("M", "F") and identity["birth_date"] == resident_id(8)[6:10] + "-" + \
        resident_id(8)[10:12] + "-" + resident_id(8)[12:14]
    with pytest.raises(NotFound):
        handlers.patient_for_his(p.readmodel, p.vault, "nobody")
