"""Servers of a fault test's own, so it can kill and restart them without touching the shared
RabbitMQ and PostgreSQL that every other test (and a running `make run`) uses.

RabbitNode: a RabbitMQ node with its own node name, AMQP and distribution ports and data
directory, started from Debian's rabbitmq-server with environment variables only:

    HOME=<dir of .erlang.cookie>  RABBITMQ_NODENAME=name@localhost  RABBITMQ_NODE_PORT=<amqp port>
    RABBITMQ_DIST_PORT=<port>  RABBITMQ_MNESIA_BASE=<dir>  RABBITMQ_LOG_BASE=<dir>
    RABBITMQ_ENABLED_PLUGINS_FILE=<file holding "[].">  RABBITMQ_CONFIG_FILE=<absent path>
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached
    rabbitmqctl -n name@localhost await_startup

The distribution port must be chosen too: RabbitMQ's default (AMQP port + 20000) is 25672 for the
shared node on 5672, and a second node's default would collide with something just as easily.
`await_startup` fails at once while the new node has not registered with epmd yet, hence the
polling. The scripts in /usr/lib/rabbitmq/bin are called directly: /usr/sbin's wrappers switch to
the rabbitmq user, which could not write our temporary directories (the tests run as root in CI).
Nodes of one cluster share HOME, hence one Erlang cookie.

PgCluster: a PostgreSQL cluster of its own (initdb, pg_ctl from /usr/lib/postgresql/<v>/bin),
run as the postgres user when we are root. fsync is off (commits still write their WAL before
answering; synchronous_commit stays on): the faults are process kills
(`pg_ctl stop -m immediate`), which keep what the kernel has; no test here cuts the power.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=check)


class RabbitNode:
    def __init__(self, name: str, port: int, dist_port: int, base: Path, home: Path | None = None) -> None:
        self.node = f"{name}@localhost"
        self.port, self.dist_port = port, dist_port
        self.base = base / name
        self.home = home or base
        self.pid: int | None = None

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"), "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),  # absent: no /etc/rabbitmq config
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config")}

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args], self.env(), timeout, check)

    def start(self, wait: float = 90) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        _run([str(RABBIT_BIN / "rabbitmq-server"), "-detached"], self.env())
        deadline = time.monotonic() + wait
        while True:
            done = self.ctl("await_startup", "--timeout", "30", check=False, timeout=45)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.node} did not start: {done.stderr[-500:]}")
            time.sleep(0.5)
        pid = self.ctl("eval", "list_to_integer(os:getpid()).").stdout.strip()
        self.pid = int(pid)

    def stop(self) -> None:
        """A clean stop of the whole node (what a restart by systemd does first)."""
        self.ctl("stop", check=False, timeout=120)
        self._wait_gone()

    def kill(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_gone()

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def _wait_gone(self, wait: float = 60) -> None:
        deadline = time.monotonic() + wait
        while self.pid is not None and time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        self.pid = None

    def queues(self) -> dict[str, int]:
        """Every queue of the node's default vhost and its ready + unacknowledged messages."""
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages").stdout
        return {name: int(n) for name, n in (line.split("\t") for line in out.splitlines() if "\t" in line)}

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name), reverse=True)
    return versions[0] / "bin"


class PgCluster:
    def __init__(self, base: Path, port: int) -> None:
        self.base = base / "pg"
        self.data = self.base / "data"
        self.port = port
        self.bin = _pg_bin()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _as_postgres(self, argv: list[str], timeout: float = 120, check: bool = True
                     ) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return _run(argv, timeout=timeout, check=check)

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            self.base.parent.chmod(0o755)  # a mkdtemp directory is 0700: postgres must pass through
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                           "-E", "UTF8", "--no-sync"])

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.base} "
                   "-c max_connections=300 -c fsync=off -c full_page_writes=off")
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                           "-o", options, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def restart(self, mode: str = "immediate", down_for: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
