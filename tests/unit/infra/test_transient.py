"""Which failures are waited out (a peer that is down) and which are poison (infra.handling)."""

from __future__ import annotations

import psycopg2
import pytest

from infra.handling import TRANSIENT_MAX_DELAY_MS, Transient, is_transient, transient_delay_ms

pytestmark = pytest.mark.unit


def _raised_from(outer: type[Exception], inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer("wrapped") from exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize("exc", [
    psycopg2.OperationalError("server closed the connection unexpectedly"),
    psycopg2.InterfaceError("connection already closed"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("timed out"),
    Transient("booking has not projected the patient yet"),
])
def test_connection_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [ValueError("no such session"), KeyError("phone"), RuntimeError("bug")])
def test_poison_is_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_failure_raised_from_a_lost_connection_is_transient_too() -> None:
    assert is_transient(_raised_from(RuntimeError, psycopg2.OperationalError("gone")))
    assert not is_transient(_raised_from(RuntimeError, ValueError("bad data")))


def test_the_delay_doubles_up_to_its_cap() -> None:
    assert [transient_delay_ms(200, n) for n in (1, 2, 3)] == [200, 400, 800]
    assert transient_delay_ms(200, 40) == TRANSIENT_MAX_DELAY_MS


def test_a_periodic_job_skips_ticks_during_an_outage_and_logs_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.handling
    from infra.handling import outage_tolerant

    logged: list[str] = []
    monkeypatch.setattr(infra.handling, "_log", type("Log", (), {
        "warning": lambda self, event, **kw: logged.append(event)})())
    down = {"ticks": 3}
    ran: list[int] = []

    @outage_tolerant
    def tick(n: int) -> int:
        if down["ticks"] > 0:
            down["ticks"] -= 1
            raise psycopg2.OperationalError("could not connect to server")
        ran.append(n)
        return n

    assert [tick(n) for n in range(5)] == [None, None, None, 3, 4]
    assert ran == [3, 4]
    assert logged == ["job_waiting_out_outage", "job_recovered"]


def test_a_periodic_job_still_raises_what_is_not_an_outage() -> None:
    from infra.handling import outage_tolerant

    @outage_tolerant
    def tick() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        tick()


def test_a_predecessor_not_handled_yet_is_waited_for_not_parked():
    from infra.memory import NotKnownYet

    assert is_transient(NotKnownYet("appointments: nothing remembered for appointment_id='a1' yet"))
