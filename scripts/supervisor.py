"""Keeps the platform's processes running: restarts one that exits, with back-off, and says so.

The launcher starts one supervisor per run directory (`python -m scripts.supervisor <run_dir>`);
it reads the components from `<run_dir>/platform.json`, starts each in its own session (so a
signal to one process group never reaches another), and restarts a component that exits, after
1, 2, 4 … 30 s; a component that stayed up for a minute starts again from 1 s. What it did is in
`<run_dir>/status.json` (pid, state, restarts, last exit) for `make status` and in
`<run_dir>/logs/supervisor.log`, one line per exit and per restart.

SIGTERM stops everything: each component gets SIGTERM, then SIGKILL after the grace period.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # up this long: the next exit starts the back-off afresh
GRACE = 15.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # the component's own (METRICS_ADDRESS)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START
    restart_at: float | None = None
    last_exit: int | None = None
    last_exit_at: float | None = None
    history: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, run_dir: Path, components: list[dict[str, Any]], cwd: Path) -> None:
        self.run_dir = run_dir
        self.env = dict(os.environ)  # the launcher's process_env (PII_KEY is never written to a file)
        self.cwd = cwd
        self.children = [Child(c["name"], list(c["argv"]), dict(c.get("env") or {})) for c in components]
        self.stopping = False
        self.log = open(run_dir / "logs" / "supervisor.log", "a", buffering=1)  # noqa: SIM115

    def say(self, event: str, **fields: Any) -> None:
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
        self.log.write(json.dumps(line, ensure_ascii=False) + "\n")

    def spawn(self, child: Child) -> None:
        out = open(self.run_dir / "logs" / f"{child.name}.log", "ab")  # noqa: SIM115 - child keeps it
        child.proc = subprocess.Popen(child.argv, cwd=self.cwd, env={**self.env, **child.env}, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        child.started_at = time.monotonic()
        child.restart_at = None
        (self.run_dir / "pids" / f"{child.name}.pid").write_text(str(child.proc.pid))

    def tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None:
                code = child.proc.poll()
                if code is None:
                    continue
                up = now - child.started_at
                if up >= STABLE_AFTER:
                    child.backoff = BACKOFF_START
                child.proc = None
                child.last_exit, child.last_exit_at = code, time.time()
                child.restart_at = now + child.backoff
                self.say("process_exited", name=child.name, code=code, up_s=round(up, 1),
                         restart_in_s=child.backoff)
                child.backoff = min(child.backoff * 2, BACKOFF_MAX)
            elif child.restart_at is not None and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                self.spawn(child)
                self.say("process_restarted", name=child.name, pid=child.proc.pid if child.proc else None,
                         restarts=child.restarts)
        self.write_status()

    def write_status(self) -> None:
        status = {
            "supervisor": os.getpid(),
            "components": {
                c.name: {"pid": c.proc.pid if c.proc else None,
                         "state": "running" if c.proc else ("restarting" if c.restart_at else "stopped"),
                         "restarts": c.restarts, "last_exit": c.last_exit, "last_exit_at": c.last_exit_at,
                         "up_s": round(time.monotonic() - c.started_at, 1) if c.proc else 0.0}
                for c in self.children},
        }
        tmp = self.run_dir / "status.json.tmp"
        tmp.write_text(json.dumps(status, indent=1))
        tmp.replace(self.run_dir / "status.json")

    def run(self) -> None:
        for child in self.children:
            self.spawn(child)
        self.say("supervisor_started", components=[c.name for c in self.children])
        while not self.stopping:
            self.tick()
            time.sleep(0.2)
        self.shutdown()

    def shutdown(self) -> None:
        running = [c.proc for c in self.children if c.proc is not None]
        for proc in running:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(0.1)
        for proc in running:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        for child in self.children:
            child.proc, child.restart_at = None, None
        self.write_status()
        self.say("supervisor_stopped")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    run_dir = Path(args[0])
    spec = json.loads((run_dir / "platform.json").read_text())
    sup = Supervisor(run_dir, spec["components"], Path(spec["cwd"]))

    def on_signal(_signum: int, _frame: Any) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sup.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
