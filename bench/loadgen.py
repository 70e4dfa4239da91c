"""A small HTTP/1.1 keep-alive load generator on asyncio (no dependencies), used by the benches.

`run(address, requests, concurrency)` sends each request (method, path, body, headers) once over
`concurrency` persistent connections and returns per-request status, body and latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    status: int
    body: bytes
    latency: float
    error: str | None = None


@dataclass
class Summary:
    count: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int

    def line(self, label: str) -> str:
        return (f"{label:38} {self.count:6} req in {self.seconds:6.2f}s = {self.rate:8.0f} req/s   "
                f"p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  statuses {self.statuses}  "
                f"errors {self.errors}")


Request = tuple[str, str, bytes | None, dict[str, str]]


def summarise(results: list[Result], seconds: float) -> Summary:
    lat = sorted(r.latency for r in results)
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0

    return Summary(len(results), seconds, len(results) / seconds if seconds else 0.0, pct(0.50), pct(0.99),
                   statuses, sum(1 for r in results if r.error))


async def _worker(host: str, port: int, queue: asyncio.Queue[tuple[int, Request]], out: list[Result | None],
                  timeout: float, stop_at: float) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            index, (method, path, body, headers) = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            payload = body or b""
            head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(payload)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            status, data, close = await asyncio.wait_for(_read_response(reader), timeout)
            out[index] = Result(status, data, time.perf_counter() - started)
            if close:
                writer.close()
                reader = writer = None
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
            out[index] = Result(0, b"", time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length = 0
    close = False
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        data = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            data += await reader.readexactly(size)
            await reader.readline()
        return status, data, close
    return status, await reader.readexactly(length), close


async def _run(address: str, requests: list[Request], concurrency: int, timeout: float, seconds: float
               ) -> list[Result | None]:
    host, port = address.rsplit(":", 1)
    queue: asyncio.Queue[tuple[int, Request]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)
    out: list[Result | None] = [None] * len(requests)
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_worker(host, int(port), queue, out, timeout, stop_at) for _ in range(concurrency)))
    return out


def run(address: str, requests: list[Request], concurrency: int = 50, timeout: float = 30.0
        ) -> tuple[list[Result], Summary]:
    started = time.perf_counter()
    out = asyncio.run(_run(address, requests, concurrency, timeout, float("inf")))
    results = [r if r is not None else Result(0, b"", 0.0, "not sent") for r in out]
    return results, summarise(results, time.perf_counter() - started)


def run_for(address: str, requests: list[Request], concurrency: int, timeout: float, seconds: float
            ) -> tuple[list[int], list[Result], Summary]:
    """Like run, but no new request is sent after `seconds`; answers the indexes that were sent."""
    started = time.perf_counter()
    out = asyncio.run(_run(address, requests, concurrency, timeout, seconds))
    elapsed = time.perf_counter() - started
    sent = [i for i, r in enumerate(out) if r is not None]
    results = [r for r in out if r is not None]
    return sent, results, summarise(results, elapsed)


def get(path: str) -> Request:
    return ("GET", path, None, {})


def post_json(path: str, body: Any, headers: dict[str, str] | None = None) -> Request:
    return ("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})


def proved(address: str, people: list[dict[str, Any]], concurrency: int = 50,
           admin: tuple[str, str] = ("admin", "admin-pass-2024")) -> list[dict[str, Any]]:
    """Each registration body with the SMS code the platform sent to its phone, read back from the
    outbox as the platform admin: how a load test proves phones it does not hold. Needs the demo
    staff accounts, the outbox (DEV_PAGES) and a per-client SMS limit lifted for one address."""
    (login,), _ = run(address, [post_json("/api/v1/auth/login", {"username": admin[0], "password": admin[1]})], 1)
    if login.status != 200:
        raise RuntimeError(f"platform admin login: {login.status} {login.body[:200]!r}")
    auth = {"Authorization": f"Bearer {json.loads(login.body)['token']}"}
    sent, _ = run(address, [post_json("/api/v1/verification-codes", {"phone": p["phone"], "purpose": "register"})
                            for p in people], concurrency)
    refused = [r for r in sent if r.status != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} verification codes refused; first: {refused[0].status} "
                           f"{refused[0].error or refused[0].body[:200]!r}")
    read, _ = run(address, [("GET", f"/api/v1/dev/sms?phone={p['phone']}", None, auth) for p in people], concurrency)
    from services.gateway.staff import verification_code_in  # the one reading of the outbox

    out = []
    for person, answer in zip(people, read, strict=True):
        code = verification_code_in(json.loads(answer.body or b"{}"))
        if code is None:
            raise RuntimeError(f"no verification code in the outbox: {answer.status} {answer.body[:200]!r}")
        out.append({**person, "sms_code": code})
    return out
