"""A stand-in for a hospital HIS interface engine: accepts MLLP, records each message, answers an ACK.

    python -m services.his_sync.simulator --host 127.0.0.1 --port 2575 --log var/his.jsonl \
        [--reject-every N]

Each received message appends one JSON line to ``--log`` (flushed at once, so a test or an operator
can read it while the simulator runs)::

    {"received_at": "...Z", "message_type": "SIU^S12", "control_id": "...", "placer_appointment_id": "...",
     "patient_id": "...", "ack_code": "AA", "raw": "MSH|^~\\&|..."}

(``placer_appointment_id`` is SCH-1 of an SIU, PV1-19 of an ADT) and prints one readable line to
stdout. The answer is ``MSH`` + ``MSA|AA|<control id>``; with
``--reject-every N`` (or ``HIS_SIM_REJECT_EVERY=N``) every Nth message gets ``AE`` instead, so
failure handling can be exercised. A message that cannot be read at all gets ``AR``.

The platform never sends resident ID numbers or phone numbers; every logged string is still passed
through the project's PII mask so that a mistake upstream cannot put one in this log.
SIGTERM and SIGINT stop it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from infra.logging import mask_text
from services.his_sync.hl7 import HL7Error, MessageInfo, build_ack, describe
from services.his_sync.mllp import MllpError, encode_frame, read_frames

__all__ = ["Journal", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    journal = Journal(Path(args.log), reject_every=args.reject_every)
    server = _Server((args.host, args.port), journal)
    host, port = server.socket.getsockname()[:2]

    def stop(signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"HIS simulator listening on {host}:{port}, log {args.log}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        journal.close()
    print("HIS simulator stopped", flush=True)
    return 0


class Journal:
    """Decides the ACK for each message and records it; shared by all connection threads."""

    def __init__(self, log_path: Path, reject_every: int = 0) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self._reject_every = reject_every
        self._received = 0
        self._lock = threading.Lock()

    def receive(self, message: str) -> str:
        """Record one message and return the ACK to send back."""
        now = datetime.now(UTC)
        with self._lock:
            self._received += 1
            number = self._received
        text = ""
        try:
            info = describe(message)
            code = "AA"
            if self._reject_every and number % self._reject_every == 0:
                code, text = "AE", f"rejected by the simulator (--reject-every {self._reject_every})"
        except HL7Error as exc:
            info, code, text = MessageInfo(), "AR", str(exc)
        record = {
            "received_at": now.isoformat().replace("+00:00", "Z"),
            "message_type": info.message_type,
            "control_id": info.control_id,
            "placer_appointment_id": info.appointment_id,
            "patient_id": info.patient_id,
            "ack_code": code,
            "raw": message,
        }
        record = {key: mask_text(value) for key, value in record.items()}
        with self._lock:
            if not self._log.closed:
                self._log.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._log.flush()
        print(
            f"{record['received_at']} {record['message_type'] or '?'} control={record['control_id']} "
            f"appointment={record['placer_appointment_id']} patient={record['patient_id']} -> {code}",
            flush=True,
        )
        return build_ack(info, code, uuid.uuid4().hex[:20], now, text)

    def close(self) -> None:
        with self._lock:
            self._log.close()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        host, port = self.client_address[:2]
        peer = f"{host}:{port}"
        try:
            for message in read_frames(self.request):
                self.request.sendall(encode_frame(self.server.journal.receive(message)))
        except MllpError as exc:
            print(f"closing connection from {peer}: {exc}", flush=True)
        except OSError as exc:
            print(f"connection from {peer} lost: {exc}", flush=True)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # restart on the same port at once, as tests and operators do
    daemon_threads = True  # open client connections must not keep a stopped simulator alive

    def __init__(self, address: tuple[str, int], journal: Journal) -> None:
        self.journal = journal
        super().__init__(address, _Handler)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.his_sync.simulator",
        description="HIS simulator: accepts HL7 v2 over MLLP, logs each message, answers ACKs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2575, help="0 picks a free port (printed at start)")
    parser.add_argument("--log", required=True, help="JSON-lines file, appended to")
    parser.add_argument(
        "--reject-every",
        type=int,
        default=int(os.environ.get("HIS_SIM_REJECT_EVERY", "0")),
        metavar="N",
        help="answer AE to every Nth message (0: never); default from HIS_SIM_REJECT_EVERY",
    )
    args = parser.parse_args(argv)
    if args.reject_every < 0:
        parser.error("--reject-every must be 0 or positive")
    return args


if __name__ == "__main__":
    sys.exit(main())
