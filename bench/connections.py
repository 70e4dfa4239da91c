"""PostgreSQL connections held by a whole platform at rest (DESIGN.md section 5: <= 24).

Starts a platform of its own as `make run` does (scripts.launcher.Platform, its default replicas,
scratch databases and vhost: bench/flash_crowd.py's BenchPlatform), waits until it is quiet, then
counts the rows of `pg_stat_activity` on its databases, per database and per process (a backend's
client port is matched to the platform process that owns the socket), and records the total.

    .venv/bin/python bench/connections.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench.flash_crowd import PG_URL, BenchPlatform  # noqa: E402
from bench.results import record  # noqa: E402

TARGET = 24


def _owners(pids: dict[str, int]) -> dict[int, str]:
    """Local TCP port -> platform process name, from /proc/<pid>/fd sockets and /proc/net/tcp."""
    inodes: dict[str, str] = {}
    for name, pid in pids.items():
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    target = str(fd.readlink())
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = name
        except OSError:
            continue
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, inode = cols[1], cols[9]
            if inode in inodes:
                ports[int(local.rsplit(":", 1)[1], 16)] = inodes[inode]
    return ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds at rest before counting")
    args = parser.parse_args()
    with BenchPlatform("conn") as bp:
        bp.wait_quiet()
        time.sleep(args.settle)
        conn = psycopg2.connect(f"{PG_URL}/postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname, client_port, state FROM pg_stat_activity WHERE datname LIKE %s",
                            (bp.prefix + "\\_%",))
                rows = cur.fetchall()
        finally:
            conn.close()
        owners = _owners(bp.platform.pids())
        by_db = Counter(str(r[0]).removeprefix(bp.prefix + "_") for r in rows)
        by_process = Counter(owners.get(int(r[1] or 0), "(not a platform process)") for r in rows)
        print(f"PostgreSQL connections of a platform at rest ({bp.prefix}_*): {len(rows)}")
        print("  by database: " + ", ".join(f"{k} {v}" for k, v in sorted(by_db.items())))
        print("  by process:  " + ", ".join(f"{k} {v}" for k, v in sorted(by_process.items())))
        row = record("connections", "PostgreSQL connections at rest", float(len(rows)), None, TARGET,
                     unit="count", better="lower")
        print(f"  target <= {TARGET}: {'met' if row['met'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
