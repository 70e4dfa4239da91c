"""The HIS simulator as a process for the integration tests (test_mllp, test_his_simulator): the
`start_simulator` fixture starts one per call on a free port and stops them all after the test."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Simulator:
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    output: Path

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]


class StartSimulator(Protocol):
    def __call__(self, *extra: str, port: int | None = None) -> Simulator: ...


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[StartSimulator]:
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(*extra: str, port: int | None = None) -> Simulator:
        port = port or free_port()
        simulator, output = launch(port, tmp_path / f"his-{port}-{len(started)}.jsonl",
                                   tmp_path / f"simulator-{port}-{len(started)}.out", *extra)
        started.append((simulator.process, output))
        return simulator

    yield start
    for process, output in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output.close()


def launch(port: int, log: Path, output_path: Path, *extra: str) -> tuple[Simulator, IO[bytes]]:
    """One simulator process on `port`, journal in `log`, listening when this returns; the caller
    closes the output file after the process has ended."""
    output = output_path.open("ab")
    command = [sys.executable, "-m", "services.his_sync.simulator", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log", str(log), *extra]
    # Output goes to a file, not a pipe nobody reads: a full pipe would block the simulator.
    process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    simulator = Simulator(port, log, process, output_path)
    wait_until_listening(simulator)
    return simulator, output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(simulator: Simulator, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if simulator.process.poll() is not None:
            pytest.fail(f"simulator exited early:\n{simulator.output.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", simulator.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"simulator did not listen on port {simulator.port} within {timeout}s")
