"""MLLP (Minimal Lower Layer Protocol) framing and a blocking client for one HIS endpoint.

A frame on the wire is ``0x0B <HL7 message> 0x1C 0x0D``; nothing may sit between frames. The
sender writes one frame and waits for one frame back (the ACK) before sending the next.

The message is encoded in the character set its MSH-18 declares: UTF-8 by default, GB18030 for a
HIS that wants it (``encoding="gb18030"``; ``hl7.Facility.encoding`` names the codec). Neither
codec ever produces the block bytes 0x0B or 0x1C inside a character (GB18030's multi-byte sequences
use only bytes from 0x30 up), so framing works on bytes whatever the charset. A receiver that serves
several charsets on one port reads raw payloads (:meth:`FrameDecoder.feed_bytes`) and picks the
codec from MSH-18 (``hl7.encoding_of``).

Only ``socket`` and ``time`` are used, so the same code cooperates with eventlet when nameko has
monkey-patched the process, and runs unchanged in the threaded simulator.
"""

from __future__ import annotations

import codecs
import io
import socket
import time
from collections.abc import Iterator
from types import TracebackType

__all__ = [
    "END_BLOCK",
    "MAX_FRAME_BYTES",
    "START_BLOCK",
    "FrameDecoder",
    "MllpClient",
    "MllpError",
    "encode_frame",
    "read_frames",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
# An SIU is about 1 KB; a peer that streams megabytes without an end block is broken, not busy.
MAX_FRAME_BYTES = 1 << 20
_RECV_BYTES = 65536


class MllpError(Exception):
    """The transport failed: no connection, a timeout, or bytes that are not MLLP frames."""


def encode_frame(message: str, encoding: str = "utf-8") -> bytes:
    encoding = _checked_codec(encoding)
    try:
        payload = message.encode(encoding)
    except UnicodeEncodeError as exc:
        raise MllpError(f"message cannot be encoded as {_label(encoding)}: {exc}") from exc
    if START_BLOCK in payload or END_BLOCK[:1] in payload:
        raise MllpError("message contains MLLP block characters (0x0B or 0x1C)")
    return START_BLOCK + payload + END_BLOCK


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get back every message completed so far.

    After an MllpError the stream is out of step and the connection must be closed.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, *, encoding: str = "utf-8") -> None:
        self._buffer = bytearray()
        self._in_frame = False
        self._max = max_frame_bytes
        self.encoding = _checked_codec(encoding)

    @property
    def idle(self) -> bool:
        """True between frames: nothing of a next frame has arrived yet."""
        return not self._in_frame and not self._buffer

    def feed(self, data: bytes) -> list[str]:
        """The messages completed by `data`, decoded with this decoder's encoding."""
        messages: list[str] = []
        for payload in self.feed_bytes(data):
            try:
                messages.append(payload.decode(self.encoding))
            except UnicodeDecodeError as exc:
                raise MllpError(f"frame is not valid {_label(self.encoding)}: {exc}") from exc
        return messages

    def feed_bytes(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed`, but the payloads undecoded: for a receiver that reads MSH-18 first."""
        self._buffer += data
        payloads: list[bytes] = []
        while self._buffer:
            if not self._in_frame:
                if self._buffer[0] != START_BLOCK[0]:
                    raise MllpError(f"expected start block 0x0B, got {self._buffer[0]:#04x}")
                del self._buffer[0]
                self._in_frame = True
            end = self._buffer.find(END_BLOCK[0])
            if end < 0 or end + 1 == len(self._buffer):
                # Incomplete, or the 0x0D of the end block is still in flight.
                if len(self._buffer) > self._max:
                    raise MllpError(f"frame exceeds {self._max} bytes without an end block")
                break
            if self._buffer[end + 1] != END_BLOCK[1]:
                raise MllpError("end block 0x1C not followed by 0x0D")
            payload = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._in_frame = False
            if START_BLOCK in payload:
                raise MllpError("start block 0x0B inside a frame")
            payloads.append(payload)
        return payloads


def read_frames(
    source: bytes | bytearray | socket.socket | io.BufferedIOBase, *, encoding: str = "utf-8"
) -> Iterator[str]:
    """Yield each message from a byte string, a connected socket or a binary file, until EOF.

    Lazy: a server can answer each message before the next one is read. Raises MllpError on bad
    framing, on bytes that are not `encoding`, and when the stream ends inside a frame.
    """
    decoder = FrameDecoder(encoding=encoding)
    for chunk in _chunks(source):
        yield from decoder.feed(chunk)
    if not decoder.idle:
        raise MllpError("stream ended inside a frame")


class MllpClient:
    """One persistent connection to a HIS interface engine; `send` returns the raw ACK text.

    The connection is opened on first use and kept. If a kept connection turns out to have been
    dropped by the peer (engines close idle links), the message is sent once more on a new connection;
    the HIS may then see it twice, which its control-id de-duplication (and our at-least-once
    delivery) already has to handle.

    Not safe for concurrent use: MLLP is one message in flight per connection, so give each worker
    (greenlet) its own client or hand clients out from a pool.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0, *, encoding: str = "utf-8") -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.encoding = _checked_codec(encoding)
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"MllpClient({self.host!r}, {self.port}, timeout={self.timeout}, encoding={self.encoding!r})"

    def send(self, message: str) -> str:
        frame = encode_frame(message, self.encoding)
        reused = self._sock is not None
        try:
            return self._exchange(frame)
        except _ConnectionDropped as exc:
            self.close()
            if not reused:
                raise MllpError(f"{self._where}: connection closed before an ACK") from exc
        try:
            return self._exchange(frame)
        except _ConnectionDropped as exc:
            self.close()
            raise MllpError(
                f"{self._where}: connection closed before an ACK, also after reconnecting"
            ) from exc

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def _where(self) -> str:
        return f"HIS at {self.host}:{self.port}"

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                raise MllpError(f"cannot connect to {self._where}: {exc}") from exc
        return self._sock

    def _exchange(self, frame: bytes) -> str:
        sock = self._connect()
        deadline = time.monotonic() + self.timeout
        try:
            sock.settimeout(self.timeout)
            sock.sendall(frame)
            return self._read_answer(sock, deadline)
        except _ConnectionDropped:
            raise
        except MllpError:
            # A late or partial answer would be read as the reply to the next message: start afresh.
            self.close()
            raise
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ConnectionDropped from exc
        except TimeoutError as exc:
            self.close()
            raise MllpError(f"{self._where}: no ACK within {self.timeout}s") from exc
        except OSError as exc:
            self.close()
            raise MllpError(f"{self._where}: {exc}") from exc

    def _read_answer(self, sock: socket.socket, deadline: float) -> str:
        decoder = FrameDecoder(encoding=self.encoding)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(_RECV_BYTES)
            except ConnectionResetError as exc:
                if decoder.idle:
                    raise _ConnectionDropped from exc
                raise MllpError(f"{self._where}: connection reset inside an ACK frame") from exc
            if not chunk:
                if decoder.idle:
                    raise _ConnectionDropped
                raise MllpError(f"{self._where}: connection closed inside an ACK frame")
            messages = decoder.feed(chunk)
            if messages:
                if len(messages) > 1 or not decoder.idle:
                    raise MllpError(f"{self._where}: more than one frame in answer to one message")
                return messages[0]


class _ConnectionDropped(Exception):
    """The peer closed or reset the connection before any byte of an answer arrived."""


def _checked_codec(encoding: str) -> str:
    # Fail when the client is configured, not on the first message hours later.
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise MllpError(f"unknown character encoding {encoding!r}") from exc


def _label(encoding: str) -> str:
    return codecs.lookup(encoding).name.upper()


def _chunks(source: bytes | bytearray | socket.socket | io.BufferedIOBase) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray):
        yield bytes(source)
        return
    if isinstance(source, socket.socket):
        while chunk := source.recv(_RECV_BYTES):
            yield chunk
        return
    # read1 returns what is available instead of blocking until the buffer is full.
    while chunk := source.read1(_RECV_BYTES):
        yield chunk
