"""The SMPP adapter against a real SMSC process (tests/tools/smppd: node, npm `smpp`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from services.notification.providers import Accepted, Outgoing, Receipt, SendFailed, Unavailable
from services.notification.providers.smpp import SmppProvider
from tests.tools.smppd import SmppServer, require_node

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PHONE = "13812345678"
SOURCE = "106900001234"
# 200 Chinese characters: three UCS2 parts of 67, 67 and 66 characters.
LONG_TEXT = ("【河北预约】您已成功预约河北医科大学第四医院心内科王医生门诊，就诊序号十二号，"
             "请携带身份证于就诊当日上午八点前到门诊大厅自助机取号。") * 4
LONG_TEXT = LONG_TEXT[:200]


class Receipts:
    """The on_receipt callback: collects receipts, lets a test wait for some."""

    def __init__(self) -> None:
        self.received: list[Receipt] = []
        self._changed = threading.Condition()

    def __call__(self, receipt: Receipt) -> None:
        with self._changed:
            self.received.append(receipt)
            self._changed.notify_all()

    def wait_for(self, provider_ids: set[str], timeout: float = 10.0) -> dict[str, Receipt]:
        with self._changed:
            self._changed.wait_for(lambda: provider_ids <= {r.provider_id for r in self.received}, timeout)
            return {r.provider_id: r for r in self.received if r.provider_id in provider_ids}


StartServer = Callable[..., SmppServer]
StartProvider = Callable[..., tuple[SmppProvider, Receipts]]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    require_node()
    started: list[SmppServer] = []

    def start(*options: str, password: str = "secret") -> SmppServer:
        server = SmppServer(tmp_path, password=password, options=options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_provider() -> Iterator[StartProvider]:
    started: list[SmppProvider] = []

    def start(server: SmppServer, *, wait: bool = True, on_receipt: Any = None,
              **settings: Any) -> tuple[SmppProvider, Receipts]:
        provider = SmppProvider.from_config(config(server, **settings))
        receipts = Receipts()
        provider.start(on_receipt or receipts)
        started.append(provider)
        if wait:
            wait_until(provider.ready, 10, "the provider did not bind")
        return provider, receipts

    yield start
    for provider in started:
        provider.stop()


def config(server: SmppServer, **settings: Any) -> dict[str, Any]:
    """As the YAML settings would hand them over: strings."""
    values = {
        "SMPP_HOST": "127.0.0.1",
        "SMPP_PORT": server.port,
        "SMPP_SYSTEM_ID": "hospital",
        "SMPP_PASSWORD": "secret",
        "SMPP_SOURCE_ADDR": SOURCE,
        "SMPP_TIMEOUT_S": 3,
        "SMPP_RECONNECT_MAX_S": 1,
        "SMPP_RATE": 1000,
    }
    values.update({f"SMPP_{key.upper()}": value for key, value in settings.items()})
    return {key: str(value) for key, value in values.items()}


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{message} within {timeout}s")
        time.sleep(0.02)


def split_udh(record: dict[str, Any]) -> tuple[tuple[int, int, int] | None, bytes]:
    """(reference, total, sequence) of a concatenation UDH, and the part's own bytes."""
    raw = bytes.fromhex(record["short_message"])
    if not record["esm_class"] & 0x40:
        return None, raw
    header, payload = raw[1 : 1 + raw[0]], raw[1 + raw[0] :]
    assert header[:2] == b"\x00\x03", f"not an 8-bit concatenation UDH: {header.hex()}"
    return (header[2], header[3], header[4]), payload


def text_of(record: dict[str, Any]) -> str:
    assert record["data_coding"] == 0x08
    return split_udh(record)[1].decode("utf-16-be")


def events(captured: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in captured if entry["event"] == name]


# --- sending, splitting, receipts ---------------------------------------------------------------


def test_long_chinese_text_arrives_whole_in_ucs2_parts_and_every_part_is_receipted(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    server = start_server()
    provider, receipts = start_provider(server)

    accepted = provider.send(Outgoing("msg-long", PHONE, LONG_TEXT))

    records = server.submits()
    assert [r["message_id"] for r in records] == list(accepted.provider_ids)
    assert len(records) == 3
    headers = [split_udh(r)[0] for r in records]
    assert all(h is not None for h in headers)
    assert len({h[0] for h in headers if h}) == 1, "one reference for all parts"
    assert [(h[1], h[2]) for h in headers if h] == [(3, 1), (3, 2), (3, 3)]
    assert b"".join(split_udh(r)[1] for r in records).decode("utf-16-be") == LONG_TEXT
    assert {(r["data_coding"], r["esm_class"], r["registered_delivery"]) for r in records} == {(0x08, 0x40, 1)}
    assert {(r["source"], r["source_ton"], r["source_npi"]) for r in records} == {(SOURCE, 0, 0)}
    assert {(r["destination"], r["dest_ton"], r["dest_npi"]) for r in records} == {(PHONE, 2, 1)}

    got = receipts.wait_for(set(accepted.provider_ids))
    assert set(got) == set(accepted.provider_ids)
    assert all(r.delivered and r.status == "DELIVRD" for r in got.values())
    assert all(abs(time.time() - r.at.timestamp()) < 120 for r in got.values()), "done date read as UTC+8"


def test_a_short_text_is_one_part_without_udh(start_server: StartServer, start_provider: StartProvider) -> None:
    server = start_server()
    provider, receipts = start_provider(server)

    accepted = provider.send(Outgoing("msg-short", PHONE, "验证码 123456，5分钟内有效。"))

    [record] = server.submits()
    assert accepted.provider_ids == (record["message_id"],)
    assert record["esm_class"] == 0 and text_of(record) == "验证码 123456，5分钟内有效。"
    assert receipts.wait_for(set(accepted.provider_ids))[record["message_id"]].delivered


def test_a_receipt_without_tlvs_is_read_from_its_text(start_server: StartServer, start_provider: StartProvider) -> None:
    server = start_server("--receipt-text-only", "1")
    provider, receipts = start_provider(server)

    accepted = provider.send(Outgoing("msg-1", PHONE, "复诊提醒"))

    [receipt] = receipts.wait_for(set(accepted.provider_ids)).values()
    assert receipt.provider_id == accepted.provider_ids[0]
    assert receipt.delivered and receipt.status == "DELIVRD"


def test_wrong_password_is_refused_and_retried_quietly(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    server = start_server(password="right-pw")
    with structlog.testing.capture_logs() as captured:
        provider, _ = start_provider(server, wait=False, reconnect_max_s=0.3)
        wait_until(lambda: server.output().count("bind refused: 0x0e") >= 3, 10, "three refused binds")

        assert not provider.ready()
        with pytest.raises(Unavailable):
            provider.send(Outgoing("msg-1", PHONE, "测试"))
    [cannot] = events(captured, "smpp cannot bind")  # one line for the outage, not one per retry
    assert "0x0e" in cannot["reason"]
    assert server.submits() == []


def test_throttled_answers_are_temporary_failures(start_server: StartServer, start_provider: StartProvider) -> None:
    server = start_server("--throttle-first", "2")
    provider, _ = start_provider(server)

    for _ in range(2):
        with pytest.raises(SendFailed) as throttled:
            provider.send(Outgoing("msg-1", PHONE, "复诊提醒"))
        assert not throttled.value.permanent and not isinstance(throttled.value, Unavailable)
        assert "0x58" in throttled.value.reason
    accepted = provider.send(Outgoing("msg-1", PHONE, "复诊提醒"))

    assert [r["message_id"] for r in server.submits()] == list(accepted.provider_ids)


def test_invalid_destinations_are_permanent_failures(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    server = start_server("--refuse-destination", "13900000000")
    provider, _ = start_provider(server)

    with pytest.raises(SendFailed) as refused:
        provider.send(Outgoing("msg-1", "13900000000", "复诊提醒"))
    with pytest.raises(SendFailed) as malformed:
        provider.send(Outgoing("msg-2", "0311-8888", "复诊提醒"))

    assert refused.value.permanent and "0x0b" in refused.value.reason
    assert malformed.value.permanent
    assert server.submits() == [], "neither was accepted; the malformed one never left"


def test_throughput_is_capped_per_bind_across_callers(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    server = start_server()
    rate, n = 20, 22
    provider, _ = start_provider(server, rate=rate)
    burst = provider.bucket.burst

    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda k=k: [provider.send(Outgoing(f"m{k}-{i}", PHONE, "提醒"))
                                             for i in range(n // 2)])
        for k in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    assert len(server.submits()) == n
    assert elapsed >= 0.9 * (n - burst) / rate, f"{n} parts at {rate}/s took only {elapsed:.2f}s"


# --- the connection: keep-alive, loss, reconnect --------------------------------------------------


def test_smsc_killed_and_restarted_mid_run_loses_no_message(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    """60 messages from 4 sending threads, each send in the dispatcher's retry loop (again on a
    non-permanent failure or Unavailable). The SMSC is killed (SIGKILL) and started again on the
    same port mid-run. Nothing is lost: every message ends accepted and is in the server's logs.
    Doubles are possible only for a submit that the SMSC took but whose answer died with it, so at
    most one per send in flight at the kill."""
    server = start_server()
    accepted: dict[int, Accepted] = {}
    in_flight = 0
    count_lock = threading.Lock()

    with structlog.testing.capture_logs() as captured:
        provider, _ = start_provider(server, rate=40, enquire_s=1, timeout_s=2, reconnect_max_s=0.5)

        def send_all(numbers: range) -> None:
            nonlocal in_flight
            for i in numbers:
                message = Outgoing(f"msg-{i}", PHONE, f"第{i:02d}条：明日上午复诊")
                while i not in accepted:
                    with count_lock:
                        in_flight += 1
                    try:
                        accepted[i] = provider.send(message)
                    except SendFailed as failed:
                        assert not failed.permanent, failed.reason
                        time.sleep(0.05)
                    finally:
                        with count_lock:
                            in_flight -= 1

        senders = [threading.Thread(target=send_all, args=(range(k, 60, 4),)) for k in range(4)]
        for sender in senders:
            sender.start()
        wait_until(lambda: len(accepted) >= 15, 10, "15 messages accepted")
        with count_lock:  # nobody enters or leaves a send while the server dies
            in_flight_at_kill = in_flight
            server.kill()
        wait_until(lambda: not provider.ready(), 5, "the provider noticing the loss")
        time.sleep(0.5)
        server.start()
        wait_until(provider.ready, 10, "the provider binding again by itself")
        for sender in senders:
            sender.join(timeout=60)
    assert not any(sender.is_alive() for sender in senders)

    records = server.submits()
    by_text = Counter(text_of(r) for r in records)
    ids_by_text: dict[str, set[str]] = {}
    for record in records:
        ids_by_text.setdefault(text_of(record), set()).add(record["message_id"])
    assert sorted(accepted) == list(range(60))
    for i, answer in accepted.items():
        text = f"第{i:02d}条：明日上午复诊"
        assert by_text[text] >= 1, f"message {i} is not in the server's logs"
        assert set(answer.provider_ids) <= ids_by_text[text]
    doubles = sum(count - 1 for count in by_text.values())
    assert len(by_text) == 60
    assert doubles <= in_flight_at_kill, f"{doubles} doubles, {in_flight_at_kill} sends in flight at the kill"
    assert len(events(captured, "smpp connection lost")) == 1
    assert len(events(captured, "smpp bound again")) == 1
    assert PHONE not in repr(captured) and "复诊" not in repr(captured)


def test_a_silent_smsc_is_noticed_by_enquire_link_and_left(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    server = start_server()
    with structlog.testing.capture_logs() as captured:
        provider, _ = start_provider(server, enquire_s=0.3, timeout_s=0.5, reconnect_max_s=0.5)
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # the socket stays open; nothing answers
        try:
            wait_until(lambda: not provider.ready(), 5, "the provider noticing the silence")
            time.sleep(1.5)  # several reconnect attempts, each of whose binds goes unanswered
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_until(provider.ready, 10, "the provider binding again")

    [lost] = events(captured, "smpp connection lost")
    assert "enquire_link unanswered" in lost["reason"]
    assert len(events(captured, "smpp bound again")) == 1
    assert provider.send(Outgoing("msg-1", PHONE, "测试")).provider_ids


def test_a_failing_receipt_callback_does_not_stop_the_reader(
    start_server: StartServer, start_provider: StartProvider,
) -> None:
    server = start_server()
    receipts = Receipts()

    def on_receipt(receipt: Receipt) -> None:
        if not receipts.received:
            receipts(receipt)
            raise RuntimeError(f"database down while recording for {PHONE}")
        receipts(receipt)

    with structlog.testing.capture_logs() as captured:
        provider, _ = start_provider(server, on_receipt=on_receipt)
        first = provider.send(Outgoing("msg-1", PHONE, "第一条"))
        receipts.wait_for(set(first.provider_ids))
        second = provider.send(Outgoing("msg-2", PHONE, "第二条"))
        got = receipts.wait_for(set(second.provider_ids))

    assert got[second.provider_ids[0]].delivered
    [failed] = events(captured, "smpp receipt handler failed")
    assert failed["provider_id"] == first.provider_ids[0] and failed["error"] == "RuntimeError"
    assert PHONE not in repr(captured)


def test_stop_unbinds_and_ends_the_reader(start_server: StartServer, start_provider: StartProvider) -> None:
    server = start_server()
    provider, _ = start_provider(server)
    provider.send(Outgoing("msg-1", PHONE, "测试"))

    started = time.monotonic()
    provider.stop()

    assert time.monotonic() - started < 3
    assert not provider.ready()
    assert "smpp-reader" not in {thread.name for thread in threading.enumerate()}
    with pytest.raises(Unavailable):
        provider.send(Outgoing("msg-2", PHONE, "测试"))


# --- under eventlet, as the nameko service runs it -------------------------------------------------

EVENTLET_SCRIPT = r"""
import eventlet
eventlet.monkey_patch()
import json, sys, time
from services.notification.providers import Outgoing
from services.notification.providers.smpp import SmppProvider

port = sys.argv[1]
receipts = []
provider = SmppProvider.from_config({
    "SMPP_HOST": "127.0.0.1", "SMPP_PORT": port, "SMPP_SYSTEM_ID": "hospital", "SMPP_PASSWORD": "secret",
    "SMPP_SOURCE_ADDR": "106900001234", "SMPP_RATE": "100", "SMPP_ENQUIRE_S": "0.2", "SMPP_TIMEOUT_S": "3",
})
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        eventlet.sleep(0.01)
eventlet.spawn(ticker)
provider.start(receipts.append)
deadline = time.monotonic() + 10
while not provider.ready() and time.monotonic() < deadline:
    eventlet.sleep(0.01)
started = time.monotonic()
pool = eventlet.GreenPool(10)
accepted = list(pool.imap(lambda i: provider.send(Outgoing(f"m{i}", "13812345678", f"第{i}条 提醒")), range(30)))
sent_s = time.monotonic() - started
ids = {pid for a in accepted for pid in a.provider_ids}
while not ids <= {r.provider_id for r in receipts} and time.monotonic() < deadline + 10:
    eventlet.sleep(0.01)
during = [t for t in ticks if t >= started]
gaps = [b - a for a, b in zip(during, during[1:])]
provider.stop()
delivered = sorted(r.provider_id for r in receipts if r.delivered)
print(json.dumps({"sent_s": sent_s, "ids": sorted(ids), "receipted": delivered, "max_gap_s": max(gaps)}))
"""


def test_under_eventlet_monkey_patching_sends_and_gets_receipts(start_server: StartServer) -> None:
    server = start_server()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", EVENTLET_SCRIPT, str(server.port)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert len(result["ids"]) == 30 and result["receipted"] == result["ids"]
    assert len(server.submits()) == 30
    assert result["sent_s"] >= 0.9 * (30 - 10) / 100, "the cap holds under eventlet too"
    # The hub kept running other greenlets while the reader waited on the socket and senders slept.
    assert result["max_gap_s"] < 0.5, f"the hub was blocked for {result['max_gap_s']:.2f}s"
