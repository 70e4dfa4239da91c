"""The test SMSC (tests/tools/smppd/server.js) as a subprocess, for tests and benches.

    server = SmppServer(tmp_path, system_id="hospital", password="secret").start()
    ...                    # server.port; server.kill(); server.restart() (same port)
    server.submits()       # every accepted submit_sm, from every run of the server, in order
    server.stop()

Each run writes its own JSON-lines log (`submits-<n>.jsonl`) and output file in `directory`, so a
killed run's lines stay readable next to the restarted one's. Nothing here needs pytest;
`require_node()` is for tests (it fails when node is absent: `make test` installs it).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

SERVER_DIR = Path(__file__).resolve().parent / "smppd"
SERVER = SERVER_DIR / "server.js"


class NodeMissing(RuntimeError):
    pass


def node() -> str:
    """The node binary, after checking the server's modules are installed."""
    found = shutil.which("node")
    if found is None:
        raise NodeMissing("node not found: `make setup-test` (scripts/setup.sh --test-tools) installs it")
    if not (SERVER_DIR / "node_modules" / "smpp").is_dir():
        raise RuntimeError(f"{SERVER_DIR}/node_modules is missing: run `make setup-test` "
                           "(or `npm ci` in tests/tools/smppd)")
    return found


def require_node() -> str:
    import pytest

    try:
        return node()
    except NodeMissing as missing:
        # node is a test tool `make test` installs (scripts/setup.sh --test-tools): missing is a fault.
        pytest.fail(str(missing))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmppServer:
    def __init__(self, directory: Path, *, system_id: str = "hospital", password: str = "secret",
                 port: int | None = None, options: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.system_id = system_id
        self.password = password
        self.port = port or free_port()
        self.options = options
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    def __enter__(self) -> SmppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def logs(self) -> list[Path]:
        return [self.directory / f"submits-{self.port}-{n}.jsonl" for n in range(1, self.runs + 1)]

    def start(self, timeout: float = 10.0) -> SmppServer:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the SMPP server is running already")
        self.runs += 1
        output_path = self.directory / f"smppd-{self.port}-{self.runs}.out"
        self._close_output()
        self._output = output_path.open("wb")
        command = [node(), str(SERVER), "--port", str(self.port), "--system-id", self.system_id,
                   "--password", self.password, "--log", str(self.logs[-1]), *self.options]
        # Output goes to a file, not a pipe nobody reads: a full pipe would block the server.
        self.process = subprocess.Popen(command, cwd=SERVER_DIR, stdout=self._output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the SMPP server exited at start:\n{output_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the SMPP server did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: a crash, without a goodbye to the connected clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self, timeout: float = 10.0) -> SmppServer:
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_output()

    def submits(self) -> list[dict[str, Any]]:
        """Every submit_sm the server accepted (answered with a message_id), over all its runs."""
        records: list[dict[str, Any]] = []
        for log in self.logs:
            if log.exists():
                records += [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
        return records

    def output(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.directory.glob(f"smppd-{self.port}-*.out"))
        )

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None
