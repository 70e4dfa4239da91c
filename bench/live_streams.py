"""Live streams: the gateway holding thousands of open event streams (GET /api/v1/live) while it
answers ordinary requests, and one booking's notice reaching every stream.

    python bench/live_streams.py [--streams 2000] [--requests 4000] [--concurrency 50] [--rounds 3] [--keep-logs]

Starts its own platform (BenchPlatform of bench/flash_crowd.py), imports one open session, then in
one asyncio run, `--rounds` times: GET /api/v1/hospitals `--requests` times over `--concurrency`
keep-alive connections with no stream open (baseline), then `--streams` SSE streams opened on the
session's department (raw sockets) and the same load again with them open, then the streams
closed. In the last round, before closing, one booking, and the arrival of its notice on every
stream is timed. Prints each round, the ratio of the median rates with / without streams, the
fan-out times and the gateway's RSS.
No targets are asserted; exit code 1 only when a stream was refused, or did not get the notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.flash_crowd import BenchPlatform, local_today, pct  # noqa: E402
from bench.loadgen import Request, Result, Summary, _run, get, post_json, summarise  # noqa: E402

SESSION = "bench-live-d3-am"
DEPARTMENT = "bench-live-d1"


def live_data(day: str) -> dict[str, object]:
    return {
        "hospitals": [{"hospital_id": "bench-live", "name": "实时压测医院", "level": "三级甲等"}],
        "departments": [{"department_id": DEPARTMENT, "hospital_id": "bench-live", "name": "心血管内科"}],
        "doctors": [{"doctor_id": "bench-live-doc1", "hospital_id": "bench-live", "department_id": DEPARTMENT,
                     "name": "实时医生", "title": "主任医师", "clinic_type": "expert"}],
        "sessions": [{"session_id": SESSION, "doctor_id": "bench-live-doc1", "date": day, "period": "morning",
                      "start": "08:00", "end": "11:30", "capacity": 50,
                      "quota": {"web": 50, "phone": 0, "window": 0}, "fee": "50.00"}],
    }


@dataclass
class SseStream:
    """One open stream; `seen` maps an event type to when its first frame arrived."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    seen: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        buffer = b""
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            buffer += data
            while b"\n\n" in buffer:
                frame, _, buffer = buffer.partition(b"\n\n")
                for line in frame.split(b"\n"):
                    if line.startswith(b"event: "):
                        self.seen.setdefault(line[7:].decode(), time.perf_counter())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.close()


async def open_stream(host: str, port: int) -> SseStream | str:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /api/v1/live?department={DEPARTMENT} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}: {exc}"
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        writer.close()
        return f"HTTP {status}"
    stream = SseStream(reader, writer)
    stream.task = asyncio.create_task(stream.follow())
    return stream


async def load(address: str, requests: list[Request], concurrency: int) -> Summary:
    started = time.perf_counter()
    out = await _run(address, requests, concurrency, 30.0, float("inf"))
    results = [r if r is not None else Result(0, b"", 0.0, "not sent") for r in out]
    return summarise(results, time.perf_counter() - started)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def open_streams(host: str, port: int, n: int) -> tuple[list[SseStream], list[str], float]:
    t = time.perf_counter()
    streams: list[SseStream] = []
    refused: list[str] = []
    for start in range(0, n, 200):  # 200 at a time: a burst of connects, not a SYN flood
        opened = await asyncio.gather(*(open_stream(host, port) for _ in range(start, min(n, start + 200))))
        streams += [s for s in opened if isinstance(s, SseStream)]
        refused += [s for s in opened if isinstance(s, str)]
    return streams, refused, time.perf_counter() - t


async def close_streams(streams: list[SseStream], heartbeat_s: float) -> None:
    for s in streams:
        s.close()
    # the gateway sees a closed stream when its next heartbeat fails to write: wait for that, so
    # that the next "without" round really has no stream open
    await asyncio.sleep(heartbeat_s + 1.0)


async def change(address: str, request: Request, streams: list[SseStream], kind: str
                 ) -> tuple[Result | None, float, list[float]]:
    """Send one change; its answer, how long it took (ms) and when its notice reached each stream
    (seconds after sending)."""
    sent = time.perf_counter()
    (answer,) = await _run(address, [request], 1, 30.0, float("inf"))
    answer_ms = (time.perf_counter() - sent) * 1000
    deadline = sent + 30.0
    while time.perf_counter() < deadline and not all(kind in s.seen for s in streams):
        await asyncio.sleep(0.005)
    return answer, answer_ms, [s.seen[kind] - sent for s in streams if kind in s.seen]


async def measure(bp: BenchPlatform, args: argparse.Namespace, token: str) -> int:
    address = bp.address
    host, port = address.rsplit(":", 1)
    gateway = bp.platform.pids()["gateway"]
    reqs = [get("/api/v1/hospitals")] * args.requests
    await load(address, reqs[:500], args.concurrency)  # warm-up: connections, caches, workers
    rss_before = rss_mib(gateway)
    rounds: list[tuple[Summary, Summary]] = []
    refused: list[str] = []
    arrivals: list[float] = []
    answer: Result | None = None
    cancel_answer: Result | None = None
    cancel_arrivals: list[float] = []
    streams: list[SseStream] = []
    open_s = rss_open = rss_after = answer_ms = cancel_ms = 0.0
    # Rounds alternate without / with, so that the shared machine's drift hits both alike.
    for round_no in range(args.rounds):
        bp.wait_quiet()
        without = await load(address, reqs, args.concurrency)
        streams, refused_now, open_s = await open_streams(host, int(port), args.streams)
        refused += refused_now
        await asyncio.sleep(1.0)
        rss_open = max(rss_open, rss_mib(gateway))
        bp.wait_quiet()
        with_streams = await load(address, reqs, args.concurrency)
        rounds.append((without, with_streams))
        if round_no == args.rounds - 1:
            auth = {"Authorization": f"Bearer {token}"}
            booking = post_json("/api/v1/appointments", {"session_id": SESSION},
                                {**auth, "Idempotency-Key": f"live-{bp.tag}"})
            answer, answer_ms, arrivals = await change(address, booking, streams, "AppointmentBooked")
            if answer is not None and answer.status == 201:
                # the first event after a quiet spell may wait for the relay's reconnect: the cancel
                # right after shows the steady path
                cancel = post_json(f"/api/v1/appointments/{json.loads(answer.body)['appointment_id']}/cancel", {},
                                   auth)
                cancel_answer, cancel_ms, cancel_arrivals = await change(address, cancel, streams,
                                                                         "AppointmentCancelled")
            rss_after = rss_mib(gateway)
        await close_streams(streams, args.heartbeat)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print()
    print("| round | GET /api/v1/hospitals | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(rounds, 1):
        for label, s in (("no stream open", a), (f"{args.streams} streams open", b)):
            print(f"| {i} | {label} | {s.count} | {s.rate:.0f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.errors} |")
    rate_a, rate_b = median([a.rate for a, _ in rounds]), median([b.rate for _, b in rounds])
    p99_a, p99_b = median([a.p99_ms for a, _ in rounds]), median([b.p99_ms for _, b in rounds])
    per_round = ", ".join(f"{b.rate / a.rate:.2f}" for a, b in rounds if a.rate)
    print()
    print(f"median rate with streams / without = {rate_b:.0f} / {rate_a:.0f} = {rate_b / rate_a:.2f} "
          f"(per round {per_round}); median p99 with / without = {p99_b / p99_a:.2f}")
    print(f"opened {len(streams)} of {args.streams} streams in {open_s:.1f} s (last round)"
          + (f"; refused {len(refused)}: {sorted(set(refused))[:3]}" if refused else ""))
    booked_ok = answer is not None and answer.status == 201 and cancel_answer is not None \
        and cancel_answer.status == 200
    for what, got, ms, times in (("booking", answer, answer_ms, arrivals),
                                 ("cancel right after", cancel_answer, cancel_ms, cancel_arrivals)):
        print(f"one {what} (answered {got.status if got else '-'} in {ms:.0f} ms): its notice reached "
              f"{len(times)} of {len(streams)} streams; from sending it: p50 {pct(times, 0.5):.0f} ms, "
              f"p99 {pct(times, 0.99):.0f} ms, last {max(times, default=0) * 1000:.0f} ms")
    print(f"gateway RSS: {rss_before:.0f} MiB before, {rss_open:.0f} MiB with {args.streams} streams "
          f"({(rss_open - rss_before) * 1024 / max(1, args.streams):.0f} KiB a stream), {rss_after:.0f} MiB after "
          "the fan-out")
    print("platform logs (warnings / errors):")
    print("\n".join(bp.log_report()))
    ok = not refused and booked_ok and len(arrivals) == len(cancel_arrivals) == len(streams) == args.streams
    print(f"result: {'complete' if ok else 'INCOMPLETE'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="without / with rounds, alternating")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="the gateway's LIVE_HEARTBEAT_S")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    day = (local_today() + timedelta(days=3)).isoformat()
    print(f"live streams: {args.streams} SSE streams on one department; GET /api/v1/hospitals x {args.requests} "
          f"at concurrency {args.concurrency} without and with them; one booking's notice to every stream")
    with BenchPlatform("live", keep_logs=args.keep_logs) as bp:
        print(f"platform: gateway {bp.address}, databases {bp.prefix}_*, vhost {bp.vhost}")
        bp.import_data(live_data(day))
        bp.wait_sessions_open({DEPARTMENT: {day}}, {SESSION: 50})
        patients, _ = bp.register_patients(1, 1)
        token = bp.tokens[patients[0]]
        code = asyncio.run(measure(bp, args, token))
        print(json.dumps({"phases": bp.timings}, default=lambda x: round(x, 1)))
    return code


if __name__ == "__main__":
    sys.exit(main())
