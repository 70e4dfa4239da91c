"""MLLP over real sockets: MllpClient against the HIS simulator running as its own process."""

from __future__ import annotations

import signal
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.his_sync.hl7 import build_siu, parse_ack
from services.his_sync.mllp import FrameDecoder, MllpClient, MllpError, encode_frame, read_frames
from tests.integration.his import StartSimulator, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 3, 1, 0, 15, tzinfo=UTC)




def booking(n: int) -> dict[str, Any]:
    return {
        "appointment_id": f"appt-{n}",
        "code": f"CODE{n}",
        "session_id": "sess-1",
        "hospital_id": "H130100",
        "department_id": "CARD",
        "doctor_id": "doc-19",
        "patient_id": f"pat-{n}",
        "channel": "web",
        "sequence_number": n,
        "date": "2025-03-01",
        "period": "morning",
        "start": "08:30:00",
        "fee": "50.00",
    }


def send_booking(client: MllpClient, n: int) -> tuple[str, str]:
    control_id = f"CTL{n:05d}"
    return control_id, client.send(build_siu("S12", booking(n), control_id, NOW))


# --- client against the simulator --------------------------------------------------------------------


def test_three_bookings_are_acknowledged_and_logged(start_simulator: StartSimulator) -> None:
    simulator = start_simulator()

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        acks = [
            parse_ack(answer, control_id)
            for control_id, answer in (send_booking(client, n) for n in (1, 2, 3))
        ]

    assert [(ack.code, ack.control_id) for ack in acks] == [
        ("AA", "CTL00001"),
        ("AA", "CTL00002"),
        ("AA", "CTL00003"),
    ]
    records = simulator.records()
    assert [r["placer_appointment_id"] for r in records] == ["appt-1", "appt-2", "appt-3"]
    assert [r["patient_id"] for r in records] == ["pat-1", "pat-2", "pat-3"]
    assert {r["message_type"] for r in records} == {"SIU^S12"}
    assert [r["control_id"] for r in records] == ["CTL00001", "CTL00002", "CTL00003"]
    assert all(r["raw"].startswith("MSH|^~\\&|APPT-PLATFORM|") and r["received_at"] for r in records)


def test_every_second_message_is_rejected_with_ae(start_simulator: StartSimulator) -> None:
    simulator = start_simulator("--reject-every", "2")

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        acks = [
            parse_ack(answer, control_id)
            for control_id, answer in (send_booking(client, n) for n in (1, 2, 3))
        ]

    assert [ack.code for ack in acks] == ["AA", "AE", "AA"]
    assert "rejected" in acks[1].text
    assert [r["ack_code"] for r in simulator.records()] == ["AA", "AE", "AA"]


def test_unreadable_message_gets_ar_and_the_log_never_holds_an_id_number_or_phone(
    start_simulator: StartSimulator,
) -> None:
    simulator = start_simulator()
    leaky = (
        "MSH|^~\\&|OTHER||HIS||20250301||SIU^S12^SIU_S12|X1|P|2.5\r"
        "NTE|1||call 13812345678, ID 130102199003071234"
    )

    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        rejected = parse_ack(client.send("not an HL7 message"), "")
        accepted = parse_ack(client.send(leaky), "X1")

    assert rejected.code == "AR" and "MSH" in rejected.text
    assert accepted.code == "AA"
    log = simulator.log.read_text(encoding="utf-8")
    assert "13812345678" not in log and "130102199003071234" not in log
    assert "138****5678" in log and "130102********1234" in log
    assert "13812345678" not in simulator.output.read_text()


def test_client_reconnects_once_when_the_kept_connection_was_dropped(start_simulator: StartSimulator) -> None:
    first = start_simulator()
    with MllpClient("127.0.0.1", first.port, timeout=5) as client:
        send_booking(client, 1)
        first.process.terminate()
        first.process.wait(timeout=5)
        second = start_simulator(port=first.port)

        control_id, answer = send_booking(client, 2)

    assert parse_ack(answer, control_id).code == "AA"
    assert [r["placer_appointment_id"] for r in second.records()] == ["appt-2"]


def test_client_raises_when_nothing_listens() -> None:
    with (
        MllpClient("127.0.0.1", free_port(), timeout=2) as client,
        pytest.raises(MllpError, match="cannot connect"),
    ):
        send_booking(client, 1)


def test_client_raises_on_timeout_when_the_peer_never_answers() -> None:
    # The kernel completes the handshake for a listening socket that never accepts or answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with MllpClient("127.0.0.1", port, timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(MllpError, match="no ACK within 0.3s"):
                send_booking(client, 1)
    assert time.monotonic() - started < 3


def test_client_raises_on_an_answer_that_is_not_mllp() -> None:
    def answer_like_a_web_server(server: socket.socket) -> None:
        peer, _ = server.accept()
        with peer:
            peer.recv(65536)
            peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with socket.create_server(("127.0.0.1", 0)) as server:
        wrong_peer = threading.Thread(target=answer_like_a_web_server, args=(server,))
        wrong_peer.start()
        with MllpClient("127.0.0.1", server.getsockname()[1], timeout=5) as client:
            with pytest.raises(MllpError, match="expected start block 0x0B, got 0x48"):
                send_booking(client, 1)
        wrong_peer.join(timeout=5)


def test_simulator_stops_cleanly_on_sigterm(start_simulator: StartSimulator) -> None:
    simulator = start_simulator()
    with MllpClient("127.0.0.1", simulator.port, timeout=5) as client:
        send_booking(client, 1)
        simulator.process.send_signal(signal.SIGTERM)

        assert simulator.process.wait(timeout=5) == 0
    assert "stopped" in simulator.output.read_text()
    assert len(simulator.records()) == 1


# --- framing --------------------------------------------------------------------------------------------


def test_frames_round_trip_across_arbitrary_chunk_boundaries() -> None:
    messages = ["MSH|^~\\&|A\rPID|1||中文", "MSH|^~\\&|B"]
    wire = b"".join(encode_frame(m) for m in messages)

    decoder = FrameDecoder()
    received = [m for i in range(len(wire)) for m in decoder.feed(wire[i : i + 1])]

    assert received == messages
    assert decoder.idle
    assert list(read_frames(wire)) == messages


def test_read_frames_from_a_socket_file() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(encode_frame("MSH|^~\\&|A") + encode_frame("MSH|^~\\&|B"))
        right.shutdown(socket.SHUT_WR)
        with left.makefile("rb") as stream:
            assert list(read_frames(stream)) == ["MSH|^~\\&|A", "MSH|^~\\&|B"]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"MSH|^~\\&|A\x1c\r", "expected start block"),
        (b"\x0bMSH|^~\\&|A\x1cX", "not followed by 0x0D"),
        (b"\x0bMSH|\x0b|A\x1c\r", "start block 0x0B inside a frame"),
        (b"\x0bMSH|^~\\&|A", "ended inside a frame"),
        (b"\x0b\xff\xfe\x1c\r", "not valid UTF-8"),
    ],
)
def test_bad_framing_raises(wire: bytes, message: str) -> None:
    with pytest.raises(MllpError, match=message):
        list(read_frames(wire))


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(MllpError, match="exceeds 16 bytes"):
        FrameDecoder(max_frame_bytes=16).feed(b"\x0b" + b"x" * 17)


def test_a_message_cannot_smuggle_block_characters() -> None:
    with pytest.raises(MllpError, match="block characters"):
        encode_frame("MSH|^~\\&|A\x1c\rMSH|forged")
