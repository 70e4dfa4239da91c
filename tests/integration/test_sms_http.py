"""The carrier HTTP API adapter over real sockets: HttpProvider against a small HTTPS carrier stub.

The stub (http.server in a thread, TLS with a certificate for 127.0.0.1 from a CA made here) checks
every request the way services.notification.providers.http says a carrier does: the key id, the
timestamp within 300 s, a fresh nonce, the HMAC over the body; a bad one gets 401. It dedupes sends
by client_ref, keeps what it took, and serves receipts for them two to a page behind a cursor.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notification.providers import Outgoing, Receipt, SendFailed, Unavailable, make_provider
from services.notification.providers import http as sms_http
from services.notification.providers.http import HttpProvider

pytestmark = pytest.mark.integration

KEY_ID = "hebei-appointments"
SECRET = "s3cret-不要外传"
SENDER = "河北医大四院"
PHONE = "13800138000"
UNDELIVERABLE = "13900009999"   # the stub's receipt for this number says UNDELIV
TEXT = "【河北医大四院】您的验证码是482913，5分钟内有效，请勿告诉他人。"
LONG_TEXT = TEXT + "您预约的心内科王医生门诊将于明日上午8:30开始，请携带身份证提前30分钟到门诊楼二层取号😀"
DONE_AT = "2025-03-01T08:15:00+08:00"


# -- certificates -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path         # signed the server's certificate
    other_ca: Path   # did not
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key, ca_cert = _ca("test carrier CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = Pki(tmp_path / "ca.pem", tmp_path / "other-ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    paths.ca.write_bytes(_pem(ca_cert))
    paths.other_ca.write_bytes(_pem(other_cert))
    paths.cert.write_bytes(_pem(cert))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


# -- the carrier stub -------------------------------------------------------------------------

@dataclass
class Carrier:
    url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    posts: list[dict[str, Any]] = field(default_factory=list)      # every signed POST, raw body and headers
    messages: list[dict[str, Any]] = field(default_factory=list)   # what it took, one per client_ref
    by_ref: dict[str, str] = field(default_factory=dict)
    receipts: list[dict[str, str]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    refused: int = 0                                # requests answered 401
    script: list[int] = field(default_factory=list)  # statuses to answer the next POSTs with, first
    drop_next: bool = False                          # take the next message, then hang up unanswered
    receipt_status: int = 200
    polls: int = 0


def _signature_ok(headers: Any, body: bytes, nonces: set[str]) -> bool:
    timestamp, nonce, given = headers.get("X-Timestamp", ""), headers.get("X-Nonce", ""), headers.get("X-Signature", "")
    if headers.get("X-Key-Id") != KEY_ID or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    if not re.fullmatch(r"[0-9a-f]{16,64}", nonce) or nonce in nonces:
        return False
    expected = hmac.new(SECRET.encode(), f"{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        return False
    nonces.add(nonce)
    return True


def _handler(carrier: Carrier) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

        def answer(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def signed(self, body: bytes) -> bool:
            with carrier.lock:
                ok = _signature_ok(self.headers, body, carrier.nonces)
                carrier.refused += 0 if ok else 1
            if not ok:
                self.answer(401, {"error": "SIGNATURE_INVALID", "message": "signature or key refused"})
            return ok

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if urlsplit(self.path).path != "/v1/sms":
                return self.answer(404, {"error": "NOT_FOUND"})
            if not self.signed(body):
                return None
            data = json.loads(body.decode("utf-8"))
            with carrier.lock:
                carrier.posts.append({"body": body, "headers": dict(self.headers), "data": data})
                scripted = carrier.script.pop(0) if carrier.script else None
            if scripted is not None:
                return self.answer(scripted, {"error": "SCRIPTED", "message": f"scripted {scripted}"})
            if not re.fullmatch(r"1[3-9]\d{9}", data["to"]):
                return self.answer(400, {"error": "INVALID_NUMBER", "message": f"{data['to']} is not a mobile number"})
            if "代开发票" in data["text"]:
                return self.answer(422, {"error": "CONTENT_REFUSED",
                                         "message": f"content refused for {data['to']}: {data['text']}"})
            with carrier.lock:
                message_id = carrier.by_ref.get(data["client_ref"])
                if message_id is None:
                    message_id = f"cm-{len(carrier.messages) + 1:06d}"
                    carrier.by_ref[data["client_ref"]] = message_id
                    carrier.messages.append({**data, "message_id": message_id})
                    status = "UNDELIV" if data["to"] == UNDELIVERABLE else "DELIVRD"
                    carrier.receipts.append({"message_id": message_id, "status": status, "done_at": DONE_AT})
                drop, carrier.drop_next = carrier.drop_next, False
            if drop:
                self.close_connection = True   # the message is taken, the answer is lost
                return None
            text = data["text"]
            return self.answer(200, {"message_id": message_id, "parts": 1 if len(text) <= 70 else -(-len(text) // 67)})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/v1/sms/receipts":
                return self.answer(404, {"error": "NOT_FOUND"})
            if not self.signed(b""):
                return None
            with carrier.lock:
                carrier.polls += 1
                if carrier.receipt_status != 200:
                    return self.answer(carrier.receipt_status, {"error": "DOWN"})
                after = int(parse_qs(url.query).get("after", ["0"])[0])
                page = carrier.receipts[after:after + 2]
                cursor = after + len(page)
            return self.answer(200, {"receipts": page, "cursor": str(cursor)})

    return Handler


@pytest.fixture
def carrier(pki: Pki) -> Iterator[Carrier]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Carrier("")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state = Carrier(f"https://127.0.0.1:{server.server_address[1]}/v1/sms")
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


MakeProvider = Callable[..., HttpProvider]


@pytest.fixture
def provider(pki: Pki, carrier: Carrier) -> Iterator[MakeProvider]:
    made: list[HttpProvider] = []

    def make(**overrides: str) -> HttpProvider:
        # Strings, as the YAML substitution hands them over.
        config = {"SMS_PROVIDER": "http", "SMS_HTTP_URL": carrier.url, "SMS_HTTP_KEY_ID": KEY_ID,
                  "SMS_HTTP_SECRET": SECRET, "SMS_HTTP_SENDER": SENDER, "SMS_HTTP_CA": str(pki.ca),
                  "SMS_HTTP_TIMEOUT_S": "2", "SMS_HTTP_RECEIPTS_S": "0", **overrides}
        made_one = make_provider(config)
        assert isinstance(made_one, HttpProvider)
        made.append(made_one)
        return made_one

    yield make
    for one in made:
        one.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- sending ----------------------------------------------------------------------------------

def test_chinese_text_arrives_whole_and_signed(provider: MakeProvider, carrier: Carrier) -> None:
    sms = provider()
    short = sms.send(Outgoing("m-1", PHONE, TEXT))
    long = sms.send(Outgoing("m-2", PHONE, LONG_TEXT))

    assert short.provider_ids == ("cm-000001",) and long.provider_ids == ("cm-000002",)
    assert carrier.refused == 0   # every signature checked out
    assert [(m["to"], m["text"], m["sender"], m["client_ref"]) for m in carrier.messages] == [
        (PHONE, TEXT, SENDER, "m-1"), (PHONE, LONG_TEXT, SENDER, "m-2")]
    post = carrier.posts[1]
    assert LONG_TEXT.encode("utf-8") in post["body"]   # plain UTF-8, the emoji too, no \u escapes
    assert post["headers"]["Content-Type"].startswith("application/json")
    assert abs(int(post["headers"]["X-Timestamp"]) - time.time()) < 5
    assert carrier.posts[0]["headers"]["X-Nonce"] != post["headers"]["X-Nonce"]


def test_a_retry_after_a_lost_answer_is_one_message_at_the_carrier(provider: MakeProvider, carrier: Carrier) -> None:
    sms = provider()
    carrier.drop_next = True
    with pytest.raises(SendFailed) as lost:
        sms.send(Outgoing("m-7", PHONE, TEXT))
    assert not lost.value.permanent and not isinstance(lost.value, Unavailable)  # it may have been taken

    again = sms.send(Outgoing("m-7", PHONE, TEXT))
    once_more = sms.send(Outgoing("m-7", PHONE, TEXT))

    assert len(carrier.posts) == 3 and len(carrier.messages) == 1
    assert again.provider_ids == once_more.provider_ids == (carrier.messages[0]["message_id"],)


def test_carrier_errors_are_retried_refused_messages_are_parked(provider: MakeProvider, carrier: Carrier) -> None:
    sms = provider()
    carrier.script = [503, 429]
    for _ in range(2):
        with pytest.raises(SendFailed) as busy:
            sms.send(Outgoing("m-3", PHONE, TEXT))
        assert not busy.value.permanent and not isinstance(busy.value, Unavailable)
    assert "429" in busy.value.reason

    bad_number = "12000138000"
    with pytest.raises(SendFailed) as invalid:
        sms.send(Outgoing("m-4", bad_number, TEXT))
    refused_text = "【河北医大四院】代开发票，联系13912345678"
    with pytest.raises(SendFailed) as content:
        sms.send(Outgoing("m-5", PHONE, refused_text))

    assert invalid.value.permanent and "INVALID_NUMBER" in invalid.value.reason
    assert content.value.permanent and "CONTENT_REFUSED" in content.value.reason
    for reason in (invalid.value.reason, content.value.reason):
        assert bad_number not in reason and PHONE not in reason
        assert refused_text not in reason and "代开发票，联系" not in reason and "13912345678" not in reason
    assert carrier.messages == []


def test_a_wrong_secret_is_a_credentials_problem_not_the_messages(provider: MakeProvider, carrier: Carrier) -> None:
    sms = provider(SMS_HTTP_SECRET="not-the-secret")
    with pytest.raises(SendFailed) as refused:
        sms.send(Outgoing("m-6", PHONE, TEXT))
    assert not refused.value.permanent and not isinstance(refused.value, Unavailable)
    assert "credentials" in refused.value.reason and "401" in refused.value.reason
    assert carrier.refused == 1 and carrier.messages == []
    assert sms.ready()   # the carrier is there: it is the configuration


def test_connection_refused_is_unavailable_and_not_ready_for_a_while(
        provider: MakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sms_http, "READY_HOLD_S", 0.3)
    sms = provider(SMS_HTTP_URL=f"https://127.0.0.1:{free_port()}/v1/sms")
    assert sms.ready()
    with pytest.raises(Unavailable) as down:
        sms.send(Outgoing("m-8", PHONE, TEXT))
    assert not down.value.permanent and "refused" in down.value.reason
    assert not sms.ready()
    wait_for(sms.ready, timeout=2)


def test_a_certificate_from_another_ca_is_refused(provider: MakeProvider, carrier: Carrier, pki: Pki) -> None:
    sms = provider(SMS_HTTP_CA=str(pki.other_ca))
    with pytest.raises(SendFailed) as untrusted:
        sms.send(Outgoing("m-9", PHONE, TEXT))
    assert not untrusted.value.permanent and "certificate" in untrusted.value.reason
    assert carrier.posts == [] and carrier.messages == []


def test_configuration_from_strings_and_plain_http_only_to_this_host(pki: Pki) -> None:
    base = {"SMS_HTTP_KEY_ID": KEY_ID, "SMS_HTTP_SECRET": SECRET, "SMS_HTTP_SENDER": SENDER}
    with pytest.raises(ValueError, match="https"):
        HttpProvider.from_config({**base, "SMS_HTTP_URL": "http://sms.example.cn/v1/sms"})
    local = HttpProvider.from_config({**base, "SMS_HTTP_URL": "http://127.0.0.1:9/v1/sms/",
                                      "SMS_HTTP_TIMEOUT_S": "2.5", "SMS_HTTP_RECEIPTS_S": "0"})
    assert (local.url, local.timeout_s, local.receipts_s) == ("http://127.0.0.1:9/v1/sms", 2.5, 0.0)
    defaults = HttpProvider.from_config({**base, "SMS_HTTP_URL": "https://sms.example.cn/v1/sms"})
    assert (defaults.timeout_s, defaults.receipts_s) == (10.0, 30.0)
    with pytest.raises(ValueError, match="SMS_HTTP_CA"):
        HttpProvider.from_config({**base, "SMS_HTTP_URL": "https://sms.example.cn/v1/sms",
                                  "SMS_HTTP_CA": str(pki.ca.with_name("missing.pem"))})


# -- receipts ---------------------------------------------------------------------------------

def test_the_receipt_poll_hands_each_receipt_over_once(provider: MakeProvider, carrier: Carrier) -> None:
    sms = provider(SMS_HTTP_RECEIPTS_S="0.05")
    ids = [sms.send(Outgoing(f"r-{n}", phone, TEXT)).provider_ids[0]
           for n, phone in enumerate([PHONE, UNDELIVERABLE, PHONE])]
    got: list[Receipt] = []

    def on_receipt(receipt: Receipt) -> None:
        got.append(receipt)
        if len(got) == 1:
            raise RuntimeError("the handler's own trouble")   # logged, and the poll goes on

    sms.start(on_receipt)
    wait_for(lambda: len(got) >= 3)
    polls = carrier.polls
    wait_for(lambda: carrier.polls >= polls + 3)

    at = datetime.fromisoformat(DONE_AT)
    assert got == [Receipt(ids[0], True, "DELIVRD", at), Receipt(ids[1], False, "UNDELIV", at),
                   Receipt(ids[2], True, "DELIVRD", at)]
    assert carrier.refused == 0   # the GETs were signed too


def test_a_receipt_poll_outage_is_logged_once(provider: MakeProvider, carrier: Carrier) -> None:
    carrier.receipt_status = 503
    sms = provider(SMS_HTTP_RECEIPTS_S="0.02")
    sms.send(Outgoing("r-1", PHONE, TEXT))
    got: list[Receipt] = []
    with structlog.testing.capture_logs() as logs:
        sms.start(got.append)
        wait_for(lambda: carrier.polls >= 5)
        carrier.receipt_status = 200
        wait_for(lambda: len(got) == 1)
        sms.stop()

    events = [entry["event"] for entry in logs if entry["event"].startswith("sms_http_receipts")]
    assert events == ["sms_http_receipts_failing", "sms_http_receipts_recovered"]
    assert "503" in logs[0]["reason"]
    assert PHONE not in repr(logs) and TEXT not in repr(logs)
