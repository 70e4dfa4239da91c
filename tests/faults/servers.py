"""A PostgreSQL cluster of a fault test's own, so it can kill and restart it without touching the
shared PostgreSQL that every other test (and a running `make run`) uses.

RabbitMQ nodes of a test's own are in tests/faults/cluster.py (`Cluster.started(1)` for one).

PgCluster: a PostgreSQL cluster of its own (initdb, pg_ctl from /usr/lib/postgresql/<v>/bin),
run as the postgres user when we are root. fsync is off (commits still write their WAL before
answering; synchronous_commit stays on): the faults are process kills
(`pg_ctl stop -m immediate`), which keep what the kernel has; no test here cuts the power.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=check)


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
