"""RabbitMQ nodes of a test's own: one node to stop and start under a service, or a cluster of three.

The shared broker on 5672 is never touched. Each node here is a separate Erlang VM started from the
Debian package's scripts with its own name, ports, data and logs under a temporary directory:

    RABBITMQ_NODENAME=qt1_ab12cd@localhost RABBITMQ_NODE_PORT=<port> RABBITMQ_DIST_PORT=<port+20000>
    RABBITMQ_MNESIA_BASE=<tmp>/mnesia RABBITMQ_LOG_BASE=<tmp>/log RABBITMQ_ENABLED_PLUGINS_FILE=<tmp>/plugins
    RABBITMQ_CONFIG_FILE=<tmp>/rabbitmq.conf RABBITMQ_CONF_ENV_FILE=<tmp>/rabbitmq-env.conf HOME=<tmp>/home
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached
    /usr/lib/rabbitmq/bin/rabbitmqctl -n qt1_ab12cd@localhost await_startup

Why each of them: /etc/rabbitmq/rabbitmq.conf pins the shared broker's listener (5672) and
rabbitmq-env.conf its node name, so a node of ours gets its own files instead; no plugins, so no
second management or Prometheus port collides. The scripts in /usr/lib/rabbitmq/bin are called
directly (the /usr/sbin wrappers `su` to the rabbitmq user and its cookie): with HOME under the
temporary directory every node and every rabbitmqctl call of one `Cluster` share a cookie of
their own, and nothing is written outside the directory. A node is clustered as the docs say:
`stop_app`, `join_cluster <first node>`, `start_app`.

    with Cluster.started(3) as cluster:          # or Cluster.started(1) for one node
        uri = cluster.uri(0)                     # amqp://guest:guest@127.0.0.1:<port>/
        cluster.nodes[0].stop()                  # .kill() for SIGKILL, .start() again

A test calls them from its own `finally` (the context manager does): nodes are stopped and their
directories removed even when the test fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.launcher import _alive  # a zombie counts as gone

SBIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90.0


def available() -> str | None:
    """Why nodes cannot be started here, or None when they can."""
    if not (SBIN / "rabbitmq-server").exists():
        return "the rabbitmq-server package is not installed (no /usr/lib/rabbitmq/bin/rabbitmq-server)"
    return None


def require() -> None:
    reason = available()
    if reason:
        pytest.skip(reason)


def free_port_pair() -> int:
    """A port P such that P (AMQP) and P + 20000 (Erlang distribution) are both free."""
    for _ in range(200):
        port = 20_000 + secrets.randbelow(25_000)
        if _free(port) and _free(port + 20_000):
            return port
    raise RuntimeError("no free port pair for a RabbitMQ node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    name: str            # e.g. "qt1_ab12cd@localhost"
    port: int
    base: Path           # this node's directory (mnesia, logs, config)
    home: Path           # HOME with the cluster's .erlang.cookie

    @property
    def uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20_000),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def prepare(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            # A test's disk is small and shared: never block publishers on the free-space alarm.
            "disk_free_limit.absolute = 1MB\n"
        )
        (self.base / "rabbitmq-env.conf").write_text("")

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SBIN / "rabbitmqctl"), "-n", self.name, *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the Erlang VM and the rabbit app, and wait until AMQP answers."""
        self.prepare()
        subprocess.run([str(SBIN / "rabbitmq-server"), "-detached"], env=self.env(), capture_output=True,
                       text=True, timeout=60, check=True)
        self.await_started(timeout)

    def await_started(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            done = self.ctl("await_startup", "--timeout", str(int(max(deadline - time.monotonic(), 1))),
                            timeout=timeout + 10, check=False)
            if done.returncode == 0 and self.answers():
                return
            last = (done.stdout + done.stderr)[-2000:]
            time.sleep(0.5)
        raise RuntimeError(f"RabbitMQ node {self.name} did not start in {timeout:.0f}s: {last}\n"
                           f"logs in {self.base / 'log'}")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop_app(self) -> None:
        """Stop RabbitMQ on this node but keep the VM (a node leaving the cluster cleanly)."""
        self.ctl("stop_app", timeout=120)

    def start_app(self) -> None:
        self.ctl("start_app", timeout=120)
        self.await_started()

    def stop(self) -> None:
        """Stop the whole node (VM included); a no-op when it is not running."""
        self.ctl("stop", timeout=120, check=False)
        self._wait_gone(30)

    def kill(self) -> None:
        """SIGKILL the VM: a crash, not a shutdown."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait_gone(30)

    def pid(self) -> int | None:
        try:
            return int((self.base / "node.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid()
            if not self.answers() and (pid is None or not _alive(pid)):
                return
            time.sleep(0.2)
        pid = self.pid()
        if pid is not None and _alive(pid):  # stop did not finish: do not leave a VM behind
            os.kill(pid, signal.SIGKILL)

    def join(self, first: Node) -> None:
        self.stop_app()
        self.ctl("join_cluster", first.name, timeout=120)
        self.start_app()


@dataclass
class Cluster:
    base: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls, size: int, prefix: str = "qt") -> Cluster:
        base = Path(tempfile.mkdtemp(prefix="appt-rabbit-"))
        home = base / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        token = uuid.uuid4().hex[:6]
        cluster = cls(base)
        for i in range(size):
            cluster.nodes.append(Node(f"{prefix}{i + 1}_{token}@localhost", free_port_pair(), base / f"n{i + 1}", home))
        return cluster

    @classmethod
    @contextmanager
    def started(cls, size: int = 3, prefix: str = "qt") -> Iterator[Cluster]:
        """`size` nodes, started and (when more than one) clustered; always torn down."""
        require()
        cluster = cls.create(size, prefix)
        try:
            for node in cluster.nodes:
                node.start()
            for node in cluster.nodes[1:]:
                node.join(cluster.nodes[0])
            yield cluster
        finally:
            cluster.destroy()

    def uri(self, index: int = 0) -> str:
        return self.nodes[index].uri

    def failover_uri(self, first: int = 0) -> str:
        """Every node's URI, `first` first, separated by ';': kombu's (and so nameko's) failover list."""
        order = self.nodes[first:] + self.nodes[:first]
        return ";".join(n.uri for n in order)

    def destroy(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 -- kill what stop could not end, then go on
                node.kill()
        shutil.rmtree(self.base, ignore_errors=True)
