"""Sampling profiles of a bench platform's processes (py-spy), for choosing what to make cheaper.

    with Profiler(bp.platform.pids(), Path("/tmp/prof")):
        ...the timed part...
    python bench/profile.py /tmp/prof [--top 25]     # what each process spent its samples on

py-spy (PyPI, `pip install py-spy`; a bench tool, not a dependency of the platform) attaches to
each process with ptrace and writes collapsed stacks (`--format raw`: one line per distinct stack,
`frame;frame;... count`). `--idle` is off, so a greenthread waiting in the hub is not counted:
the samples are where the CPU went. `--nonblocking` keeps the sampled process running while it is
read (a little less exact, much cheaper for it).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 97  # samples a second: not a divisor of a timer's period


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy record on every process of `pids` (name -> pid) while the block runs."""

    def __init__(self, pids: dict[str, int], out_dir: Path) -> None:
        self.pids = pids
        self.out_dir = out_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        tool = py_spy()
        if tool is None:
            print("profile: py-spy not found (pip install py-spy); not profiling")
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"{name}.txt"
            self.procs.append(subprocess.Popen(
                [tool, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--nonblocking",
                 "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.procs:
            print(f"profiles in {self.out_dir} (python bench/profile.py {self.out_dir})")


def _frame(f: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)': lines differ within one function."""
    name, _, where = f.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def summarize(path: Path, top: int) -> list[str]:
    """Self and inclusive sample counts of the busiest functions of one collapsed-stack file."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"== {path.stem}: {total} samples"]
    if not total:
        return out
    out.append("  self%  function")
    out += [f"  {100 * c / total:5.1f}  {f}" for f, c in own.most_common(top)]
    out.append("  incl%  function")
    out += [f"  {100 * c / total:5.1f}  {f}" for f, c in incl.most_common(top)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    files = sorted(args.dir.glob("*.txt"))
    if not files:
        print(f"no profiles in {args.dir}")
        return 1
    for f in files:
        print("\n".join(summarize(f, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
