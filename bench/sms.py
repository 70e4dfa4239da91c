"""SMS over SMPP: messages per second through SmppProvider as a ratio to the test SMSC's own
accept rate, measured in the same run against the same server process.

    python bench/sms.py [--n 3000] [--threads 8] [--rounds 2] [--cap 200] [--cap-seconds 5]

The server is tests/tools/smppd (node, npm `smpp`: it writes a JSON line per accepted submit and
sends a receipt 50 ms later). The baseline is a bare smpplib client on one bind that keeps
`--threads` submit_sm outstanding (a window, as an SMSC client does) and answers the receipts
itself: the server's rate at the same number of submits in flight as the provider's threads give
it. Contenders, each on its own bind, `--rounds` interleaved rounds of `--n` messages:

- baseline: the bare windowed client;
- provider, uncapped: SmppProvider with SMPP_RATE far above the server's rate, `--threads`
  threads calling `send` (what the adapter costs: locks, the reader thread, a wait per submit);
- provider, capped: SMPP_RATE=`--cap`, `--threads` threads, `--cap * --cap-seconds` messages
  (once): its rate against the cap (about 1.0, a little above from the burst) and the baseline.

Every message is a distinct one-part Chinese text. Timed: from the first submit until the last
answer (receipts are awaited afterwards, untimed). Checks: each message in the server's log
exactly once, the ids the provider returned are the server's, and every receipt came back
delivered. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import smpplib.client  # noqa: E402
import smpplib.consts as smpp_consts  # noqa: E402
import smpplib.gsm  # noqa: E402
import smpplib.smpp  # noqa: E402
import structlog  # noqa: E402

from services.notification.providers import Outgoing, Receipt  # noqa: E402
from services.notification.providers.smpp import SmppProvider  # noqa: E402
from tests.tools.smppd import SmppServer  # noqa: E402

PHONE = "13812345678"
SOURCE = "106900001234"
RECEIPT_WAIT_S = 30


@dataclass
class Run:
    label: str
    tag: str
    count: int
    seconds: float = 0.0
    provider_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)  # text -> ids
    receipts: dict[str, bool] = field(default_factory=dict)  # id -> delivered
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def text(tag: str, i: int) -> str:
    return f"【河北预约】{tag}第{i}条：明日上午复诊"


def baseline(server: SmppServer, tag: str, n: int, window: int) -> Run:
    """A bare smpplib client: `window` submits outstanding, one bind, receipts answered inline."""
    run = Run("baseline: bare smpplib, windowed", tag, n)
    client = smpplib.client.Client("127.0.0.1", server.port, timeout=10, allow_unknown_opt_params=True)
    client.connect()
    client.bind_transceiver(system_id=server.system_id, password=server.password)
    texts: dict[int, str] = {}

    def answer(pdu: Any, command: str) -> None:
        response = smpplib.smpp.make_pdu(command, client=client)
        response.sequence = pdu.sequence
        client.send_pdu(response)

    def read_one() -> None:
        pdu = client.read_pdu()
        if pdu.command == "submit_sm_resp":
            if pdu.status == 0:
                run.provider_ids[texts.pop(pdu.sequence)] = (pdu.message_id.decode(),)
            else:
                run.failures += 1
                texts.pop(pdu.sequence, None)
        elif pdu.command == "deliver_sm":
            run.receipts[pdu.receipted_message_id.decode()] = b"stat:DELIVRD" in pdu.short_message
            answer(pdu, "deliver_sm_resp")
        elif pdu.command == "enquire_link":
            answer(pdu, "enquire_link_resp")

    sent = 0
    started = time.perf_counter()
    while sent < n or texts:
        while sent < n and len(texts) < window:
            parts, coding, esm_class = smpplib.gsm.make_parts(text(tag, sent), smpp_consts.SMPP_ENCODING_ISO10646)
            pdu = client.send_message(
                source_addr_ton=0, source_addr_npi=0, source_addr=SOURCE, dest_addr_ton=2, dest_addr_npi=1,
                destination_addr=PHONE, short_message=parts[0], data_coding=coding, esm_class=esm_class,
                registered_delivery=1)
            texts[pdu.sequence] = text(tag, sent)
            sent += 1
        read_one()
    run.seconds = time.perf_counter() - started
    client.timeout = 1.0
    client._socket.settimeout(1.0)
    deadline = time.monotonic() + RECEIPT_WAIT_S
    while len(run.receipts) < n and time.monotonic() < deadline:
        try:
            read_one()
        except TimeoutError:
            continue
    client.unbind()
    client.disconnect()
    return run


def through_provider(server: SmppServer, label: str, tag: str, n: int, threads: int, rate: float) -> Run:
    run = Run(label, tag, n)
    receipts: dict[str, bool] = {}
    lock = threading.Lock()

    def on_receipt(receipt: Receipt) -> None:
        with lock:
            receipts[receipt.provider_id] = receipt.delivered

    provider = SmppProvider.from_config({
        "SMPP_HOST": "127.0.0.1", "SMPP_PORT": str(server.port), "SMPP_SYSTEM_ID": server.system_id,
        "SMPP_PASSWORD": server.password, "SMPP_SOURCE_ADDR": SOURCE, "SMPP_RATE": str(rate),
    })
    provider.start(on_receipt)
    deadline = time.monotonic() + 10
    while not provider.ready():
        if time.monotonic() > deadline:
            raise RuntimeError("the provider did not bind")
        time.sleep(0.01)

    def send_share(k: int) -> None:
        for i in range(k, n, threads):
            body = text(tag, i)
            try:
                accepted = provider.send(Outgoing(f"{tag}-{i}", PHONE, body))
            except Exception:  # noqa: BLE001 - counted and reported as a failed check
                with lock:
                    run.failures += 1
                continue
            with lock:
                run.provider_ids[body] = accepted.provider_ids

    workers = [threading.Thread(target=send_share, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    run.seconds = time.perf_counter() - started
    wanted = {pid for ids in run.provider_ids.values() for pid in ids}
    deadline = time.monotonic() + RECEIPT_WAIT_S
    while time.monotonic() < deadline:
        with lock:
            if wanted <= receipts.keys():
                break
        time.sleep(0.05)
    provider.stop()
    run.receipts = receipts
    return run


def check(run: Run, logged: dict[str, list[str]]) -> list[tuple[str, str, str, bool]]:
    """(check, got, expected, ok) rows for one run, from the server's log of accepted submits."""
    mine = {t: ids for t, ids in logged.items() if t.startswith(f"【河北预约】{run.tag}第")}
    counts = Counter(len(ids) for ids in mine.values())
    once = counts.get(1, 0)
    wanted = {pid for ids in run.provider_ids.values() for pid in ids}
    ids_match = all(list(ids) == mine.get(t, []) for t, ids in run.provider_ids.items())
    delivered = sum(1 for pid in wanted if run.receipts.get(pid))
    return [
        (f"{run.label} [{run.tag}]: sends answered accepted", str(len(run.provider_ids)), str(run.count),
         len(run.provider_ids) == run.count and run.failures == 0),
        ("  in the server's log exactly once", f"{once} (doubles {sum(c for k, c in counts.items() if k > 1)})",
         str(run.count), once == run.count == len(mine)),
        ("  provider ids = the server's message ids", "yes" if ids_match else "no", "yes", ids_match),
        ("  receipts received, delivered", str(delivered), str(len(wanted)), delivered == len(wanted) == run.count),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="messages per round and contender")
    parser.add_argument("--threads", type=int, default=8, help="sending threads (and the baseline's window)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cap", type=float, default=200.0, help="SMPP_RATE of the capped run")
    parser.add_argument("--cap-seconds", type=float, default=5.0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    uncapped_rate = 1_000_000.0
    print(f"SMS over SMPP: {args.rounds} rounds x {args.n} messages per contender, {args.threads} threads "
          f"(baseline window {args.threads}); capped run {int(args.cap * args.cap_seconds)} messages at "
          f"SMPP_RATE={args.cap:g}; server tests/tools/smppd (node), loopback, this machine, this run")
    with tempfile.TemporaryDirectory(prefix="bench-sms-") as scratch, SmppServer(Path(scratch)) as server:
        baseline(server, "warm", 200, args.threads)
        through_provider(server, "warm-up", "warmp", 200, args.threads, uncapped_rate)
        runs: list[Run] = []
        for r in range(args.rounds):
            contenders = [
                lambda r=r: baseline(server, f"b{r}", args.n, args.threads),
                lambda r=r: through_provider(server, "provider, uncapped", f"p{r}", args.n, args.threads,
                                             uncapped_rate),
            ]
            for contender in contenders if r % 2 == 0 else reversed(contenders):
                runs.append(contender())
        capped = through_provider(server, f"provider, capped at {args.cap:g}/s", "c", int(args.cap * args.cap_seconds),
                                  args.threads, args.cap)
        runs.append(capped)
        logged: dict[str, list[str]] = {}
        for record in server.submits():
            body = bytes.fromhex(record["short_message"]).decode("utf-16-be")
            logged.setdefault(body, []).append(record["message_id"])

    def total(prefix: str) -> tuple[int, float]:
        chosen = [run for run in runs if run.tag.startswith(prefix)]
        return sum(run.count for run in chosen), sum(run.seconds for run in chosen)

    base_count, base_seconds = total("b")
    prov_count, prov_seconds = total("p")
    base_rate = base_count / base_seconds
    prov_rate = prov_count / prov_seconds
    print()
    print("| run | messages | seconds | msg/s | / baseline | / cap |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| baseline: bare smpplib, window {args.threads} | {base_count} | {base_seconds:.2f} | {base_rate:.0f} | "
          "1.00 | |")
    print(f"| provider, uncapped, {args.threads} threads | {prov_count} | {prov_seconds:.2f} | {prov_rate:.0f} | "
          f"{prov_rate / base_rate:.2f} | |")
    print(f"| provider, SMPP_RATE={args.cap:g}, {args.threads} threads | {capped.count} | {capped.seconds:.2f} | "
          f"{capped.rate:.0f} | {capped.rate / base_rate:.2f} | {capped.rate / args.cap:.2f} |")
    per_round = [
        f"{p.rate / b.rate:.2f}"
        for b, p in zip([x for x in runs if x.tag.startswith("b")], [x for x in runs if x.tag.startswith("p")],
                        strict=True)
    ]
    print(f"uncapped / baseline per round: {', '.join(per_round)} (the machine's noise)")

    print()
    print("| check | got | expected | |")
    print("|---|---:|---:|---|")
    correct = True
    for run in runs:
        for name, got, expected, ok in check(run, logged):
            correct = correct and ok
            print(f"| {name} | {got} | {expected} | {'ok' if ok else 'NOT OK'} |")
    print(f"result: {'correct' if correct else 'INCORRECT'}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
