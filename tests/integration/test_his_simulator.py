"""The HIS simulator as its own process: answers chosen at run time (answer file), a slow HIS, several
hospitals on one port with their own charsets, the PII mask of its journal; and its `send` client,
playing a HIS that blocks a doctor's session, against a small platform-side MLLP listener here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from services.his_sync.hl7 import (
    CHARSET_GB18030,
    Facility,
    HL7Error,
    Inbound,
    build_inbound_ack,
    build_siu,
    describe,
    encoding_of,
    parse_ack,
    parse_inbound,
)
from services.his_sync.mllp import FrameDecoder, MllpClient, MllpError, encode_frame
from tests.integration.his import StartSimulator, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 3, 1, 0, 15, tzinfo=UTC)
PATIENT = {
    "name": "王小明",
    "id_number": "130105199001011234",
    "sex": "M",
    "birth_date": "1990-01-01",
    "phone": "13912345678",
}




def booking(n: int, hospital_id: str = "hb3", **extra: Any) -> dict[str, Any]:
    return {
        "appointment_id": f"appt-{n}",
        "code": f"CODE{n}",
        "session_id": "s-1",
        "hospital_id": hospital_id,
        "department_id": f"{hospital_id}-card",
        "doctor_id": "dr-wang",
        "patient_id": f"pat-{n}",
        "sequence_number": n,
        "date": "2025-03-10",
        "start": "08:30:00",
        **extra,
    }


def control(n: int) -> str:
    return f"CTL{n:05d}"


def siu(n: int, trigger: str = "S12", facility: Facility | None = None, **extra: Any) -> str:
    return build_siu(trigger, booking(n, **extra), control(n), NOW, facility=facility)


def ack_code(client: MllpClient, n: int, trigger: str = "S12") -> str:
    return parse_ack(client.send(siu(n, trigger)), control(n)).code


def write_answers(path: Path, answers: dict[str, str]) -> None:
    # Atomically, as the simulator re-reads the file for every message.
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(answers), encoding="utf-8")
    os.replace(scratch, path)


# --- answers chosen at run time ----------------------------------------------------------------------


def test_the_answer_file_makes_the_his_go_bad_and_come_back_without_a_restart(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    answers = tmp_path / "answers.json"
    simulator = start_simulator("--answer-file", str(answers))

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        codes = [ack_code(client, 1)]  # no file yet: AA
        write_answers(answers, {"*": "AE"})
        codes.append(ack_code(client, 2))
        write_answers(answers, {"SIU^S15": "AR", control(4): "AE"})
        codes += [ack_code(client, 3), ack_code(client, 3, "S15"), ack_code(client, 4, "S15")]
        write_answers(answers, {})
        codes.append(ack_code(client, 5))

    assert codes == ["AA", "AE", "AA", "AR", "AE", "AA"]  # a control id rule wins over its message type
    assert [r["ack_code"] for r in simulator.records()] == codes


def test_silent_keeps_the_connection_open_and_close_drops_it(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    answers = tmp_path / "answers.json"
    write_answers(answers, {control(1): "silent", control(3): "close"})
    simulator = start_simulator("--answer-file", str(answers))

    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as raw:
        raw.sendall(encode_frame(siu(1)))
        raw.settimeout(0.5)
        with pytest.raises(TimeoutError):
            raw.recv(65536)  # no answer, and no end of stream either
        raw.settimeout(5)
        raw.sendall(encode_frame(siu(2)))
        [answer] = FrameDecoder().feed(raw.recv(65536))
        assert parse_ack(answer, control(2)).code == "AA"  # the same connection still works

        raw.sendall(encode_frame(siu(3)))
        assert raw.recv(65536) == b""  # dropped without an answer

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        with pytest.raises(MllpError, match="connection closed before an ACK"):
            client.send(siu(3))
        write_answers(answers, {})
        assert ack_code(client, 3) == "AA"
    assert [r["ack_code"] for r in simulator.records()] == ["silent", "AA", "close", "close", "AA"]


def test_delay_ms_makes_a_slow_his(start_simulator: StartSimulator) -> None:
    simulator = start_simulator("--delay-ms", "400")

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        started = time.monotonic()
        assert ack_code(client, 1) == "AA"
        assert time.monotonic() - started >= 0.4
    with MllpClient("127.0.0.1", simulator.port, timeout=0.15) as impatient:
        with pytest.raises(MllpError, match="no ACK within 0.15s"):
            impatient.send(siu(2))


# --- several hospitals on one port ----------------------------------------------------------------------


def test_one_simulator_is_the_his_of_several_hospitals_each_in_its_charset(start_simulator: StartSimulator) -> None:
    simulator = start_simulator("--hospitals", "hb3,hebmu2")
    hebmu2 = Facility(receiving_facility="hebmu2", charset=CHARSET_GB18030)

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as utf8:
        hb3 = parse_ack(utf8.send(siu(1, patient=PATIENT)), control(1))
        other = parse_ack(utf8.send(siu(3, hospital_id="hb4")), control(3))
    with MllpClient("127.0.0.1", simulator.port, timeout=5, encoding=hebmu2.encoding) as gb18030:
        answer = gb18030.send(siu(2, facility=hebmu2, hospital_id="hebmu2", patient=PATIENT, reason="复诊"))

    assert (hb3.code, parse_ack(answer, control(2)).code) == ("AA", "AA")
    assert describe(answer).charset == "GB 18030-2000"  # answered in the charset it was asked in
    assert other.code == "AR" and "'hb4' is not a hospital of this HIS" in other.text
    records = simulator.records()
    assert [(r["receiving_facility"], r["ack_code"]) for r in records] == [
        ("hb3", "AA"), ("hb4", "AR"), ("hebmu2", "AA"),
    ]  # fmt: skip
    assert "复诊" in records[2]["raw"]  # decoded from GB18030, not mangled
    journal = simulator.log.read_text(encoding="utf-8") + simulator.output.read_text(encoding="utf-8")
    for secret in ("130105199001011234", "13912345678", "王小明"):
        assert secret not in journal
    assert "130105********1234" in records[0]["raw"] and "139****5678" in records[0]["raw"]
    assert "|王**^^^^^^L|" in records[0]["raw"]


# --- the send client: a HIS telling the platform about a block ---------------------------------------------


@dataclass
class PlatformListener:
    """The platform's side of an inbound link: reads S23/S24 in their charset, answers with build_inbound_ack."""

    code: Literal["AA", "AE", "AR"] = "AA"
    received: list[Inbound] = field(default_factory=list)
    charsets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                peer, _ = self.server.accept()
            except TimeoutError:
                continue
            with peer:
                decoder = FrameDecoder()
                while chunk := peer.recv(65536):
                    for payload in decoder.feed_bytes(chunk):
                        peer.sendall(self._answer(payload))

    def _answer(self, payload: bytes) -> bytes:
        encoding = encoding_of(payload)
        message = payload.decode(encoding)
        self.charsets.append(encoding)
        now = datetime.now(UTC)
        try:
            inbound = parse_inbound(message)
        except HL7Error as exc:
            ack = build_inbound_ack(describe(message), "AE", now, str(exc), error_field=exc.field)
        else:
            self.received.append(inbound)
            text = "" if self.code == "AA" else "不认识这个号源"
            ack = build_inbound_ack(inbound.info, self.code, now, text)
        return encode_frame(ack, encoding)


@pytest.fixture
def platform() -> Iterator[PlatformListener]:
    listener = PlatformListener()
    yield listener
    listener.close()


def send(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "services.his_sync.simulator", "send", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


def test_send_blocks_a_session_and_reports_the_platforms_aa(platform: PlatformListener) -> None:
    result = send(
        "--to", f"127.0.0.1:{platform.port}", "--facility", "HB3-HIS", "--block", "--doctor", "dr-wang",
        "--session", "s-1", "--reason", "医生出差", "--block-id", "B1", "--control-id", "HISX1",
    )  # fmt: skip

    assert (result.returncode, result.stdout.strip()) == (0, "AA"), result.stderr
    [inbound] = platform.received
    assert (inbound.kind, inbound.doctor_id, inbound.session_id) == ("block", "dr-wang", "s-1")
    assert (inbound.reason, inbound.block_id, inbound.requested_by) == ("医生出差", "B1", "HB3-HIS")
    assert (inbound.info.control_id, inbound.info.sending_facility) == ("HISX1", "HB3-HIS")


def test_send_unblocks_in_gb18030_and_exits_2_when_the_platform_says_ae(platform: PlatformListener) -> None:
    platform.code = "AE"

    result = send(
        "--to", f"127.0.0.1:{platform.port}", "--facility", "HB3-HIS", "--unblock", "--doctor", "dr-wang",
        "--start", "2025-03-10T08:00", "--minutes", "240", "--block-id", "B1", "--charset", "GB 18030-2000",
    )  # fmt: skip

    assert (result.returncode, result.stdout.strip()) == (2, "AE 不认识这个号源"), result.stderr
    [inbound] = platform.received
    assert inbound.kind == "unblock" and inbound.start is not None
    assert inbound.start.isoformat() == "2025-03-10T08:00:00+08:00"
    assert platform.charsets == ["gb18030"]


def test_send_exits_2_when_nothing_answers() -> None:
    result = send("--to", f"127.0.0.1:{free_port()}", "--facility", "HB3-HIS", "--block", "--doctor", "d",
                  "--session", "s-1", "--timeout", "2")  # fmt: skip

    assert result.returncode == 2
    assert "cannot connect" in result.stderr
