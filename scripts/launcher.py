"""Start and stop the whole platform as separate processes (used by `make run` and the e2e tests).

    python -m scripts.launcher start   # every service, the relay and the HIS simulator
    python -m scripts.launcher stop
    python -m scripts.launcher status

Each service is a plain `nameko run --config services/<name>/config.yaml services.<name>.service`;
run several replicas of one with `--replicas booking=3`. Logs and pid files live in RUN_DIR (.run).
A supervisor (scripts/supervisor.py) starts them and restarts one that exits, with back-off;
`status` shows each process's state and restarts, and exits 1 when one is not running.

Before any service starts, `python -m infra.queues migrate` brings the broker's queues to what the
services declare (durable quorum queues): a broker that still has the classic queues of an
earlier version has them converted, messages kept, instead of every service failing with 406.

Patient data at rest is encrypted with the installation's own key: the first start creates a
random one in `<run_dir>/pii.key` (mode 600) and every later start reuses it; each process gets it
as PII_KEY unless PII_KEY is set in the environment already (a secret store's key wins). Losing
the file loses the patients' data, so `make clean` keeps it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("schedule", "booking", "notification", "his_sync", "stats", "gateway")


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the platform's (METRICS_ADDRESS)


# glibc's malloc and argon2: each hash allocates 19 MiB, which glibc keeps in the arena of the
# thread that ran it (after the first free it raises its mmap threshold to that size). With an
# arena per tpool thread booking held 577 MB after the flash crowd's 5,000 registrations
# (bench/flash_crowd.py's RSS rows). Two arenas, and at most as many hashes at once as cores
# (infra/blocking.py), keep it to a few hashes' worth. (A fixed mmap threshold gave the memory
# back too but cost a third more CPU per hash: every hash faulted in 19 MiB of fresh pages.)
# Dockerfile sets the same. What stays free inside the arenas after a burst goes back to the
# system with malloc_trim, once per tick of the database pools' reaper (infra/heap.py).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2"}


@dataclass
class Platform:
    run_dir: Path = ROOT / ".run"
    env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    gateway_address: str = "127.0.0.1:8000"
    his_port: int = 2575          # the HIS simulator (the demo hospitals' HIS)
    his_listen_port: int = 2576   # his_sync's MLLP listener: what a hospital's HIS sends to
    his_http_port: int = 2577     # his_sync's HTTP: FHIR bundles and visit totals from a HIS
    supervise: bool = True        # restart a process that exits (scripts/supervisor.py)
    # /metrics of each process: the relay on metrics_port, then each service (and replica) on the
    # next ports, in the order of components(); 0: a free port each (parallel test platforms);
    # None (the default here; `make run` uses METRICS_PORT, 9100): no metrics served.
    metrics_port: int | None = None
    _metrics: dict[str, str] = field(default_factory=dict, repr=False)

    def components(self) -> list[Component]:
        py = sys.executable
        comps = [
            Component("his-simulator", [py, "-m", "services.his_sync.simulator", "--host", "127.0.0.1",
                                        "--port", str(self.his_port), "--log",
                                        str(self.run_dir / "his-received.jsonl")]),
            Component("relay", [py, "-m", "infra.relay", "--config", "infra/relay.yaml"],
                      self._metrics_env("relay")),
        ]
        for svc in SERVICES:
            for i in range(self.replicas.get(svc, 1)):
                suffix = f"-{i + 1}" if self.replicas.get(svc, 1) > 1 else ""
                comps.append(Component(f"{svc}{suffix}", [py, "-m", "nameko", "run", "--config",
                                                          f"services/{svc}/config.yaml",
                                                          f"services.{svc}.service"],
                                       self._metrics_env(f"{svc}{suffix}")))
        return comps

    def metrics_addresses(self) -> dict[str, str]:
        """Where each process serves /metrics (empty when metrics are off)."""
        self.components()
        return dict(self._metrics)

    def _metrics_env(self, name: str) -> dict[str, str]:
        if self.metrics_port is None:
            return {}
        if name not in self._metrics:
            port = free_port() if self.metrics_port == 0 else self.metrics_port + len(self._metrics)
            self._metrics[name] = f"127.0.0.1:{port}"
        return {"METRICS_ADDRESS": self._metrics[name]}

    def process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        if not env.get("PII_KEY"):
            env["PII_KEY"] = installation_key(self.run_dir)
        env.setdefault("LOG_FORMAT", "json")
        env["GATEWAY_ADDRESS"] = self.gateway_address
        env["HIS_PORT"] = str(self.his_port)
        env.setdefault("HIS_HOST", "127.0.0.1")  # new hospitals connect to the simulator (development)
        env["HIS_LISTEN_PORT"] = str(self.his_listen_port)
        env["HIS_HTTP_ADDRESS"] = f"127.0.0.1:{self.his_http_port}"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(MALLOC_ENV)
        return env

    def start(self, wait: float = 90.0) -> None:
        """Start every component under a supervisor (scripts/supervisor.py) that restarts a
        process that exits; with `supervise=False` (tests that want a death to stay a death) the
        components are started directly and nothing restarts them."""
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "pids").mkdir(parents=True, exist_ok=True)
        env = self.process_env()
        self.migrate_queues(env)
        if self.supervise:
            spec = {"cwd": str(ROOT), "components": [{"name": c.name, "argv": c.argv, "env": c.env}
                                                     for c in self.components()]}
            (self.run_dir / "platform.json").write_text(json.dumps(spec, indent=1))
            (self.run_dir / "status.json").unlink(missing_ok=True)
            log = open(self.run_dir / "logs" / "supervisor.out", "ab")  # noqa: SIM115 - child keeps it
            proc = subprocess.Popen([sys.executable, "-m", "scripts.supervisor", str(self.run_dir)], cwd=ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            (self.run_dir / "supervisor.pid").write_text(str(proc.pid))
        else:
            for comp in self.components():
                log = open(self.run_dir / "logs" / f"{comp.name}.log", "ab")  # noqa: SIM115 - child keeps it
                proc = subprocess.Popen(comp.argv, cwd=ROOT, env={**env, **comp.env}, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                (self.run_dir / "pids" / f"{comp.name}.pid").write_text(str(proc.pid))
        self.wait_healthy(wait)

    def migrate_queues(self, env: dict[str, str]) -> None:
        """Convert queues an earlier version declared as classic (infra/queues.py); the services
        are not running yet, as the migration requires."""
        done = subprocess.run([sys.executable, "-m", "infra.queues", "migrate"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        with open(self.run_dir / "logs" / "queues.log", "a") as log:
            log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"queue migration failed: {(done.stdout + done.stderr)[-2000:]}")

    def status(self) -> dict[str, dict[str, object]]:
        """Each component: pid, running or not, and (when supervised) its restarts and last exit."""
        supervised: dict[str, dict[str, object]] = {}
        try:
            supervised = json.loads((self.run_dir / "status.json").read_text())["components"]
        except (OSError, ValueError, KeyError):
            pass
        out: dict[str, dict[str, object]] = {}
        for name in sorted(set(self.pids()) | set(supervised)):
            info = dict(supervised.get(name, {}))
            pid = self.pids().get(name)
            info["pid"] = pid
            if pid is None or not _alive(pid):
                info["state"] = "restarting" if info.get("state") == "restarting" and self.supervisor_alive() \
                    else "dead"
            else:
                info["state"] = "running"
            out[name] = info
        return out

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.run_dir / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None

    def supervisor_alive(self) -> bool:
        pid = self.supervisor_pid()
        return pid is not None and _alive(pid)

    def wait_healthy(self, wait: float, settle: float = 20.0) -> dict[str, object]:
        """Until /healthz says ok. A platform whose every service answers but stays degraded for
        `settle` seconds (dead letters or a HIS backlog left from before a restart) is up as well:
        its reasons are printed, since an operator must look at them, not kept from starting."""
        deadline = time.monotonic() + wait
        last: object = None
        answering_since: float | None = None
        while time.monotonic() < deadline:
            if self.supervise:
                if not self.supervisor_alive():
                    raise RuntimeError(f"the supervisor exited; see {self.run_dir / 'logs' / 'supervisor.out'}")
                failing = [n for n, s in self.status().items() if int(str(s.get("restarts") or 0)) >= 2]
                if failing:
                    raise RuntimeError(f"process(es) keep exiting during start: {failing}; "
                                       f"see {self.run_dir / 'logs'}")
            else:
                dead = [n for n, pid in self.pids().items() if not _alive(pid)]
                if dead:
                    raise RuntimeError(f"process(es) exited during start: {dead}; see {self.run_dir / 'logs'}")
            try:
                health = _get_health(self.gateway_address)
                if health.get("status") == "ok":
                    return health
                last = {"status": health.get("status"), "services": health.get("services"),
                        "reasons": health.get("reasons")}
                services = health.get("services")
                if isinstance(services, dict) and services and all(v != "down" for v in services.values()):
                    answering_since = answering_since or time.monotonic()
                    if time.monotonic() - answering_since >= settle:
                        print(f"platform up but degraded: {health.get('reasons')}", file=sys.stderr)
                        return health
                else:
                    answering_since = None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = exc
            time.sleep(0.5)
        raise RuntimeError(f"platform not healthy after {wait:.0f}s: {last}")

    def pids(self) -> dict[str, int]:
        out = {}
        for f in sorted((self.run_dir / "pids").glob("*.pid")):
            try:
                out[f.stem] = int(f.read_text())
            except ValueError:
                continue
        return out

    def stop(self, grace: float = 15.0) -> None:
        """The supervisor first (it stops its components and does not restart them), then any
        process still alive by its pid file (a supervisor killed hard leaves its children)."""
        sup = self.supervisor_pid()
        if sup is not None and _alive(sup):
            os.kill(sup, signal.SIGTERM)
            deadline = time.monotonic() + grace + 5
            while time.monotonic() < deadline and _alive(sup):
                time.sleep(0.2)
            if _alive(sup):
                os.kill(sup, signal.SIGKILL)
        pids = self.pids()
        for pid in pids.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
            time.sleep(0.2)
        for pid in pids.values():
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        for f in (self.run_dir / "pids").glob("*.pid"):
            f.unlink()
        (self.run_dir / "supervisor.pid").unlink(missing_ok=True)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        _signal_group(self.pids()[name], sig)


def _get_health(address: str) -> dict[str, object]:
    """/healthz's answer, also when it is a 503 (degraded: the body says why)."""
    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=5) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        answer = json.load(exc)
    return answer if isinstance(answer, dict) else {}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installation_key(run_dir: Path) -> str:
    """The PII key of this run directory: created once (random, mode 600), then reused."""
    path = run_dir / "pii.key"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # an earlier start (or a concurrent one) made it
    else:
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    key = path.read_text().strip()
    if not key:  # a concurrent first start has created the file but not written it yet
        time.sleep(0.2)
        key = path.read_text().strip()
    try:
        Fernet(key.encode())
    except ValueError:
        raise RuntimeError(f"{path} does not hold a Fernet key: restore it from a backup (the patients' "
                           "data is encrypted with it) or set PII_KEY") from None
    return key


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--replicas", nargs="*", default=[], help="service=N, e.g. booking=3")
    parser.add_argument("--address", default=os.environ.get("GATEWAY_ADDRESS", "127.0.0.1:8000"))
    args = parser.parse_args(argv)
    replicas = {k: int(v) for k, v in (r.split("=", 1) for r in args.replicas)}
    platform = Platform(replicas=replicas, gateway_address=args.address,
                        metrics_port=int(os.environ.get("METRICS_PORT") or 9100))
    if args.action == "start":
        if platform.supervisor_alive() or any(_alive(p) for p in platform.pids().values()):
            print("already running; `make stop` first", file=sys.stderr)
            return 1
        platform.start()
        print(f"started {len(platform.pids())} processes; logs in {platform.run_dir / 'logs'}")
        print("metrics: " + ", ".join(f"{n} http://{a}/metrics" for n, a in platform.metrics_addresses().items()))
        print(f"HIS: his_sync takes MLLP on 127.0.0.1:{platform.his_listen_port} and HTTP (FHIR, visit totals) on "
              f"127.0.0.1:{platform.his_http_port}; the HIS simulator listens on 127.0.0.1:{platform.his_port}")
    elif args.action == "stop":
        platform.stop()
        print("stopped")
    else:
        status = platform.status()
        print(f"supervisor       {platform.supervisor_pid() or '-':>8} "
              f"{'running' if platform.supervisor_alive() else 'not running (nothing restarts a process that exits)'}")
        for name, info in status.items():
            last = f"  last exit {info['last_exit']}" if info.get("last_exit") is not None else ""
            print(f"{name:16} {info.get('pid') or '-':>8} {info['state']:10} restarts {info.get('restarts', 0)}{last}")
        if any(info["state"] != "running" for info in status.values()):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
