"""A stand-in for hospital HIS interface engines: accepts MLLP, records each message, answers an ACK;
and, as a client, plays a HIS sending a schedule block to the platform.

Server (the default)::

    python -m services.his_sync.simulator --host 127.0.0.1 --port 2575 --log var/his.jsonl \\
        [--reject-every N] [--hospitals hb3,hebmu2] [--answer-file answers.json] [--delay-ms N]

Each received message appends one JSON line to ``--log`` (flushed at once, so a test or an operator
can read it while the simulator runs)::

    {"received_at": "...Z", "message_type": "SIU^S12", "control_id": "...", "placer_appointment_id": "...",
     "patient_id": "...", "receiving_facility": "hb3", "ack_code": "AA", "raw": "MSH|^~\\&|..."}

(``placer_appointment_id`` is SCH-1 of an SIU, PV1-19 of an ADT; ``receiving_facility`` is MSH-6)
and prints one readable line to stdout. How it answers, first rule that applies:

1. a message that cannot be read at all (no MSH, a charset it does not know) gets ``AR``;
2. ``--hospitals hb3,hebmu2``: one simulator is the HIS of several hospitals on one port, told
   apart by MSH-6 as one interface engine serving several sites does; a message for another
   facility gets ``AR``. Without it, every facility is accepted;
3. ``--answer-file PATH``: a JSON object, re-read for every message, so a test can make the HIS go
   bad and come back without restarting it. Keys are a control id, a message type (``SIU^S12``) or
   ``"*"``, looked up in that order; values ``"AA"``, ``"AE"``, ``"AR"``, ``"silent"`` (no answer,
   the connection stays open and the next message is answered again) or ``"close"`` (drop the
   connection without an answer). A missing file means no rules; an unreadable one is reported on
   stdout and ignored. Write it atomically (to a temporary file, then rename);
4. ``--reject-every N`` (or ``HIS_SIM_REJECT_EVERY=N``): every Nth message gets ``AE``;
5. otherwise ``AA``.

``ack_code`` in the journal is the answer given, ``silent`` or ``close`` included. ``--delay-ms N``
waits N ms before each answer (a slow HIS). The ACK is ``MSH`` + ``MSA`` (+ ``ERR`` when negative),
encoded in the charset the message declares in MSH-18 (UTF-8 or GB18030), which is also echoed.

The log never holds a resident ID number, a phone number or a patient's name: every logged string
is passed through the project's PII mask, and the name components of PID-5 are masked too (``王**``).
SIGTERM and SIGINT stop it cleanly (exit status 0).

Client, a HIS telling the platform that a doctor cannot hold a session (SIU^S23) or that the block is
withdrawn (SIU^S24)::

    python -m services.his_sync.simulator send --to HOST:PORT --facility HB3-HIS --block|--unblock \\
        --doctor dr-wang [--session s-1] [--start 2025-03-10T08:00 [--minutes 240]] [--reason 医生出差] \\
        [--block-id B1] [--requested-by NAME] [--control-id X] [--charset "GB 18030-2000"] [--timeout S]

It prints the ACK's MSA-1 and text and exits 0 on ``AA``, 2 otherwise (``AE``, ``AR``, no valid ACK).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

from infra.logging import mask_text
from services.his_sync.hl7 import (
    CHARSET_UTF8,
    CHINA_TZ,
    Facility,
    HL7Error,
    MessageInfo,
    build_ack,
    build_siu_block,
    describe,
    encoding_of,
    parse_ack,
)
from services.his_sync.mllp import FrameDecoder, MllpClient, MllpError, encode_frame

__all__ = ["ANSWERS", "Journal", "Reply", "main"]

ANSWERS = ("AA", "AE", "AR", "silent", "close")
_RECV_BYTES = 65536
_SEGMENT_SPLIT = re.compile(r"(\r\n|\r|\n)")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["send"]:
        return _send(_parse_send_args(arguments[1:]))
    args = _parse_args(arguments)
    journal = Journal(
        Path(args.log),
        reject_every=args.reject_every,
        hospitals=args.hospitals,
        answer_file=Path(args.answer_file) if args.answer_file else None,
    )
    server = _Server((args.host, args.port), journal, delay=args.delay_ms / 1000)
    host, port = server.socket.getsockname()[:2]

    def stop(signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    hospitals = f", hospitals {','.join(args.hospitals)}" if args.hospitals else ""
    print(f"HIS simulator listening on {host}:{port}, log {args.log}{hospitals}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        journal.close()
    print("HIS simulator stopped", flush=True)
    return 0


@dataclass(frozen=True)
class Reply:
    """What to do with one received frame: send `frame` (None: nothing), then maybe close."""

    frame: bytes | None
    close: bool = False


class Journal:
    """Decides the answer to each message and records it; shared by all connection threads."""

    def __init__(
        self,
        log_path: Path,
        reject_every: int = 0,
        *,
        hospitals: Sequence[str] = (),
        answer_file: Path | None = None,
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self._reject_every = reject_every
        self._hospitals = tuple(hospitals)
        self._answer_file = answer_file
        self._received = 0
        self._lock = threading.Lock()

    def receive(self, payload: bytes) -> Reply:
        """Record one message (a frame's payload, undecoded) and return the answer."""
        now = datetime.now(UTC)
        with self._lock:
            self._received += 1
            number = self._received
        encoding, message, info, answer, text = "utf-8", "", MessageInfo(), "AR", ""
        try:
            encoding = encoding_of(payload)
            message = payload.decode(encoding)
            info = describe(message)
            answer, text = self._decide(info, number)
        except HL7Error as exc:
            message = message or payload.decode(encoding, errors="replace")
            text = str(exc)
        except UnicodeDecodeError as exc:
            message, text = payload.decode(encoding, errors="replace"), f"message is not valid {encoding}: {exc}"
        self._record(now, info, answer, message)
        if answer == "silent":
            return Reply(None)
        if answer == "close":
            return Reply(None, close=True)
        ack = build_ack(info, answer, uuid.uuid4().hex[:20], now, text)
        return Reply(encode_frame(ack, encoding))

    def close(self) -> None:
        with self._lock:
            self._log.close()

    def _decide(self, info: MessageInfo, number: int) -> tuple[str, str]:
        if self._hospitals and info.receiving_facility not in self._hospitals:
            return "AR", (
                f"MSH-6 {info.receiving_facility!r} is not a hospital of this HIS ({', '.join(self._hospitals)})"
            )
        rules = self._rules()
        for key in (info.control_id, info.message_type, "*"):
            if key and key in rules:
                return rules[key], f"answered {rules[key]} by the simulator's answer file ({key})"
        if self._reject_every and number % self._reject_every == 0:
            return "AE", f"rejected by the simulator (--reject-every {self._reject_every})"
        return "AA", ""

    def _rules(self) -> dict[str, str]:
        if self._answer_file is None:
            return {}
        try:
            rules = json.loads(self._answer_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            print(f"ignoring answer file {self._answer_file}: {exc}", flush=True)
            return {}
        valid = {name.lower(): name for name in ANSWERS}
        if not isinstance(rules, dict) or not all(
            isinstance(v, str) and v.lower() in valid for v in rules.values()
        ):
            print(f"ignoring answer file {self._answer_file}: values must be one of {', '.join(ANSWERS)}", flush=True)
            return {}
        return {str(key): valid[value.lower()] for key, value in rules.items()}

    def _record(self, now: datetime, info: MessageInfo, answer: str, message: str) -> None:
        record = {
            "received_at": now.isoformat().replace("+00:00", "Z"),
            "message_type": info.message_type,
            "control_id": info.control_id,
            "placer_appointment_id": info.appointment_id,
            "patient_id": info.patient_id,
            "receiving_facility": info.receiving_facility,
            "ack_code": answer,
            "raw": _mask_names(message),
        }
        record = {key: mask_text(value) for key, value in record.items()}
        with self._lock:
            if not self._log.closed:
                self._log.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._log.flush()
        print(
            f"{record['received_at']} {record['message_type'] or '?'} control={record['control_id']} "
            f"facility={record['receiving_facility']} appointment={record['placer_appointment_id']} "
            f"patient={record['patient_id']} -> {answer}",
            flush=True,
        )


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        host, port = self.client_address[:2]
        peer = f"{host}:{port}"
        decoder = FrameDecoder()
        try:
            while chunk := self.request.recv(_RECV_BYTES):
                for payload in decoder.feed_bytes(chunk):
                    reply = self.server.journal.receive(payload)
                    if self.server.delay:
                        time.sleep(self.server.delay)
                    if reply.close:
                        print(f"closing connection from {peer} without an answer (answer file)", flush=True)
                        return
                    if reply.frame is not None:
                        self.request.sendall(reply.frame)
            if not decoder.idle:
                print(f"connection from {peer} ended inside a frame", flush=True)
        except MllpError as exc:
            print(f"closing connection from {peer}: {exc}", flush=True)
        except OSError as exc:
            print(f"connection from {peer} lost: {exc}", flush=True)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # restart on the same port at once, as tests and operators do
    daemon_threads = True  # open client connections must not keep a stopped simulator alive

    def __init__(self, address: tuple[str, int], journal: Journal, *, delay: float = 0.0) -> None:
        self.journal = journal
        self.delay = delay
        super().__init__(address, _Handler)


def _mask_names(message: str) -> str:
    """Mask the name components (XPN.1-6) of PID-5: the PII mask knows numbers, not names."""
    parts = _SEGMENT_SPLIT.split(message)
    for i, segment in enumerate(parts):
        if segment.startswith("PID") and len(segment) > 3:
            fields = segment.split(segment[3])
            if len(fields) > 5:
                fields[5] = "~".join(
                    "^".join(_mask_name(c) if n < 6 else c for n, c in enumerate(name.split("^")))
                    for name in fields[5].split("~")
                )
                parts[i] = segment[3].join(fields)
    return "".join(parts)


def _mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1)


def _send(args: argparse.Namespace) -> int:
    kind: Literal["block", "unblock"] = "block" if args.block else "unblock"
    control_id = args.control_id or uuid.uuid4().hex[:20]
    try:
        facility = Facility(receiving_facility=args.facility, charset=args.charset)
        message = build_siu_block(
            kind,
            control_id,
            datetime.now(UTC),
            facility=facility,
            doctor_id=args.doctor,
            session_id=args.session,
            start=args.start,
            duration_minutes=args.minutes,
            reason=args.reason,
            block_id=args.block_id,
            requested_by=args.requested_by,
        )
    except HL7Error as exc:
        print(f"cannot build the {kind} message: {exc}", file=sys.stderr)
        return 2
    host, port = args.to
    try:
        with MllpClient(host, port, timeout=args.timeout, encoding=facility.encoding) as client:
            ack = parse_ack(client.send(message), control_id)
    except (MllpError, HL7Error) as exc:
        print(f"no valid ACK for {control_id}: {exc}", file=sys.stderr)
        return 2
    print(f"{ack.code} {ack.text}".rstrip(), flush=True)
    return 0 if ack.accepted else 2


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.his_sync.simulator",
        description="HIS simulator: accepts HL7 v2 over MLLP, logs each message, answers ACKs. "
        "'python -m services.his_sync.simulator send --help': act as a HIS sending a schedule block.",
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
    parser.add_argument(
        "--hospitals",
        type=_codes,
        default=(),
        metavar="CODE,CODE",
        help="act as the HIS of these facilities (MSH-6); others get AR. Default: accept any",
    )
    parser.add_argument(
        "--answer-file",
        metavar="PATH",
        help='JSON {control id | message type | "*": AA|AE|AR|silent|close}, re-read for every message',
    )
    parser.add_argument("--delay-ms", type=int, default=0, metavar="N", help="wait N ms before each answer")
    args = parser.parse_args(argv)
    if args.reject_every < 0:
        parser.error("--reject-every must be 0 or positive")
    if args.delay_ms < 0:
        parser.error("--delay-ms must be 0 or positive")
    return args


def _parse_send_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.his_sync.simulator send",
        description="Act as a HIS: send SIU^S23 (block) or S24 (unblock) to the platform, print its ACK. "
        "Exit status 0 on AA, 2 otherwise.",
    )
    parser.add_argument("--to", required=True, type=_address, metavar="HOST:PORT")
    parser.add_argument("--facility", required=True, help="the hospital's code in its HIS (MSH-4)")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--block", action="store_true", help="SIU^S23: the doctor cannot hold the session")
    kind.add_argument("--unblock", action="store_true", help="SIU^S24: the block is withdrawn")
    parser.add_argument("--doctor", required=True, help="the doctor, in the platform's ids (AIP-3)")
    parser.add_argument("--session", default="", help="the platform's session id (SCH-5)")
    parser.add_argument("--start", type=_local_time, help="start of the blocked slot, ISO (China time if naive)")
    parser.add_argument("--minutes", type=int, help="length of the blocked slot")
    parser.add_argument("--reason", default="", help="free text (SCH-6.2)")
    parser.add_argument("--block-id", default="", help="the HIS's id for the block (SCH-2)")
    parser.add_argument("--requested-by", default="", help="who asked for it (SCH-20); default the facility")
    parser.add_argument("--control-id", default="", help="MSH-10; default a random one")
    parser.add_argument("--charset", default=CHARSET_UTF8, help=f"MSH-18, table 0211 (default {CHARSET_UTF8!r})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ACK")
    args = parser.parse_args(argv)
    if not args.session and args.start is None:
        parser.error("give --session or --start (or both)")
    return args


def _codes(value: str) -> tuple[str, ...]:
    codes = tuple(code.strip() for code in value.split(",") if code.strip())
    if not codes:
        raise argparse.ArgumentTypeError("expected one or more facility codes separated by commas")
    return codes


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _local_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an ISO date and time, got {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_TZ)


if __name__ == "__main__":
    sys.exit(main())
