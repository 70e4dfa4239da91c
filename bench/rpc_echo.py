"""Baseline rates of the stack itself: a nameko @http answering at once, and one making a single
RPC to an echo service through the same RabbitMQ. Other gateway benches are ratios to the second.

    python bench/rpc_echo.py [--n 4000] [--concurrency 50]

Run by hand it uses a scratch vhost of its own on the broker (`appt_bench_echo_<tag>`, deleted at
the end), so it never meets the queues of a platform that `make run` keeps up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Summary, get, run  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_vhost(vhost: str) -> None:
    """A scratch vhost on the shared broker, guest allowed everything in it (rabbitmqctl)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl not found: cannot create a scratch vhost")
    subprocess.run([ctl, "add_vhost", vhost], capture_output=True, check=False, timeout=60)
    subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   capture_output=True, check=True, timeout=60)


def delete_vhost(vhost: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, check=False, timeout=60)


@contextlib.contextmanager
def scratch_vhost(amqp_base: str, label: str) -> Iterator[str]:
    """The AMQP URI of a new vhost `appt_bench_<label>_<tag>`, deleted on the way out."""
    vhost = f"appt_bench_{label}_{uuid.uuid4().hex[:6]}"
    add_vhost(vhost)
    try:
        yield amqp_base.rstrip("/") + "/" + vhost
    finally:
        delete_vhost(vhost)


class EchoProcesses:
    """The echo service and its HTTP front, as two real nameko processes."""

    def __init__(self, amqp_uri: str) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        self.amqp_uri = amqp_uri
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cfg: Path | None = None

    def __enter__(self) -> EchoProcesses:
        fd, name = tempfile.mkstemp(suffix=".yaml")
        os.close(fd)
        self.cfg = cfg = Path(name)
        cfg.write_text(f"AMQP_URI: {self.amqp_uri}\nWEB_SERVER_ADDRESS: {self.address}\nmax_workers: 100\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
        for cls in ("EchoService", "EchoGateway"):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "nameko", "run", "--config", str(cfg), f"bench.echo_service:{cls}"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, s = run(self.address, [get("/echo")], 1, timeout=5)
            if s.statuses.get(200):
                return self
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError("echo services did not start")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.cfg is not None:
            self.cfg.unlink(missing_ok=True)


def measure(amqp_uri: str, n: int, concurrency: int) -> dict[str, Summary]:
    with EchoProcesses(amqp_uri) as echo:
        run(echo.address, [get("/echo")] * 200, concurrency)  # warm up connections and workers
        _, plain = run(echo.address, [get("/plain")] * n, concurrency)
        _, rpc = run(echo.address, [get("/echo")] * n, concurrency)
    return {"http_only": plain, "http_rpc_echo": rpc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
                        help="the broker; a scratch vhost is made on it")
    args = parser.parse_args()
    with scratch_vhost(args.amqp, "echo") as amqp:
        results = measure(amqp, args.n, args.concurrency)
    print("nameko baseline (same broker, loopback, this machine, this run, a scratch vhost):")
    for label, s in results.items():
        print("  " + s.line(label))
    ratio = results["http_rpc_echo"].rate / results["http_only"].rate
    print(f"  one RPC round trip costs: http+rpc / http-only = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
