"""The summary `make bench` prints at the end: every row of the performance table, then each
bench's correctness verdict.

    python bench/summary.py --results .run/bench-results.jsonl --exits .run/bench-exits

`--results` is the JSON-lines file the benches appended to through `bench/results.py`'s `record`
(BENCH_RESULTS); `--exits` has one line `<bench> <exit code>` per bench that ran, or `<bench>
skipped` for one whose file is not there (the Makefile writes it). The table lists the rows of
ROWS (the issue's table, in its order) whether measured or not: a row no bench recorded says
`not measured`; a row of ROWS without a target (the connections at peak) says `reported`.
Whether a row is `met` is decided here from the recorded ratio and the target of ROWS (the one
place the targets are fixed), so a bench with a stale target cannot mark itself met. A recorded
row whose measure is not in ROWS is listed apart (a misspelt measure name shows up there instead
of vanishing).

A bench's checks are `ok` when it exited 0; any other exit code is a failure, named. Exit code 1
when a bench failed (or none ran; a skipped one does not count), 0 otherwise: a target NOT MET
is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    bench: str
    measure: str
    unit: str
    target: float | None  # None: reported, no target (DESIGN.md sets none)
    better: str  # "higher" or "lower"


ROWS: tuple[Row, ...] = (
    Row("steady", "steady booking / echo", "ratio", 0.6, "higher"),
    Row("steady", "CPU per steady booking", "ms", 8, "lower"),
    Row("flash_crowd", "flash crowd / echo", "ratio", 3, "higher"),
    Row("flash_crowd", "flash crowd / bare @http", "ratio", 0.6, "higher"),
    Row("eventstore", "store: single appends / eventsourcing", "ratio", 3, "higher"),
    Row("eventstore", "store: single appends / raw INSERT", "ratio", 0.5, "higher"),
    Row("eventstore", "store: 8 concurrent appenders / 8 raw inserters", "ratio", 0.5, "higher"),
    Row("flash_crowd", "patient registration", "/s", 60, "higher"),
    Row("big_store", "booking p99 5M events / 10k events", "ratio", 1.2, "lower"),
    Row("flash_crowd", "RSS gateway after flash crowd", "MB", 200, "lower"),
    Row("flash_crowd", "RSS booking after flash crowd", "MB", 200, "lower"),
    Row("flash_crowd", "RSS largest other process after flash crowd", "MB", 200, "lower"),
    Row("connections", "PostgreSQL connections at rest", "count", 24, "lower"),
    Row("connections", "PostgreSQL connections at peak under load", "count", None, "lower"),
    Row("connections", "PostgreSQL connections at rest after load", "count", 24, "lower"),
    Row("stats_rebuild", "stats rebuild / read", "ratio", 0.5, "higher"),
)


def load_results(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The recorded rows by measure (a measure recorded twice: the last one counts) and the
    lines that could not be read."""
    rows: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    if not path.exists():
        return rows, bad
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[str(row["measure"])] = row
        except (ValueError, KeyError, TypeError):
            bad.append(line[:200])
    return rows, bad


def load_exits(path: Path) -> dict[str, int | None]:
    """`<bench> <exit code>` per line, in the order the benches ran; None for `<bench> skipped`."""
    out: dict[str, int | None] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
        elif len(parts) == 2 and parts[1] == "skipped":
            out[parts[0]] = None
    return out


def is_met(ratio: float, target: float, better: str) -> bool:
    return ratio >= target if better == "higher" else ratio <= target


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _with_unit(x: float, unit: str) -> str:
    if unit == "count":
        return f"{x:,.0f}"
    if unit in ("", "ratio"):
        return _num(x)
    return f"{_num(x)} {unit}" if unit[0].isalpha() else f"{_num(x)}{unit}"


def table(rows: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The markdown table of ROWS, and notes (recorded target or direction differing from ROWS)."""
    lines = ["| measure | value | baseline | ratio | target | |", "|---|---:|---:|---:|---|---|"]
    notes: list[str] = []
    for spec in ROWS:
        target = "—" if spec.target is None else f"{'>=' if spec.better == 'higher' else '<='} {spec.target:g}"
        got = rows.get(spec.measure)
        if got is None:
            lines.append(f"| {spec.measure} | not measured | | | {target} | not measured |")
            continue
        try:
            value, ratio = float(got["value"]), float(got["ratio"])
        except (KeyError, TypeError, ValueError):
            lines.append(f"| {spec.measure} | unreadable row | | | {target} | not measured |")
            continue
        # a ratio row's value and baseline are rates or times: their own unit when the bench said it
        unit = str(got.get("value_unit") or (got.get("unit") if spec.unit == "ratio" else spec.unit) or "")
        if unit == "ratio":
            unit = ""
        base = got.get("baseline")
        base_text = _with_unit(float(base), unit) if isinstance(base, int | float) and base else "—"
        mark = ("reported" if spec.target is None
                else "met" if is_met(ratio, spec.target, spec.better) else "NOT MET")
        process = str(got.get("process") or "")
        which = f" ({process})" if process and process not in spec.measure else ""  # the largest other one
        lines.append(f"| {spec.measure} | {_with_unit(value, unit)}{which} | {base_text} | {_num(ratio)} | {target} | "
                     f"{mark} |")
        if got.get("target") not in (None, spec.target) or got.get("better") not in (None, spec.better):
            table_target = "none" if spec.target is None else f"{spec.target:g}"
            notes.append(f"{spec.measure}: the bench recorded target {got.get('target')} ({got.get('better')}), "
                         f"the table's is {table_target} ({spec.better}); the table's counts")
    return lines, notes


def verdicts(exits: dict[str, int | None]) -> list[str]:
    lines = []
    for bench, code in exits.items():
        what = (f"not run (no bench/{bench}.py yet)" if code is None
                else "checks ok" if code == 0 else f"FAILED (exit code {code})")
        lines.append(f"  {bench:16} {what}")
    return lines


def summary(results: Path, exits_path: Path) -> tuple[list[str], int]:
    """The printed lines and the exit code."""
    rows, bad = load_results(results)
    exits = load_exits(exits_path)
    out = ["", "=== make bench: the performance table (DESIGN.md section 5, issue 15)", ""]
    lines, notes = table(rows)
    out += lines
    known = {spec.measure for spec in ROWS}
    strays = [r for m, r in rows.items() if m not in known]
    if strays:
        out += ["", "rows recorded under a measure the table does not have (misspelt?):"]
        out += [f"  {r.get('bench')}: {r.get('measure')!r} = {r.get('value')} (ratio {r.get('ratio')})"
                for r in strays]
    if bad:
        out += ["", f"{len(bad)} unreadable line(s) in {results}: {bad[:3]}"]
    out += [f"note: {n}" for n in notes]
    out += ["", "correctness (a bench's exit code 0: its own checks ok):"]
    out += verdicts(exits) or ["  no bench ran"]
    failed = [b for b, code in exits.items() if code is not None and code != 0]
    ran = [b for b, code in exits.items() if code is not None]
    if failed:
        out += ["", f"FAILED: {', '.join(failed)} (its own output above says which check)"]
    elif ran:
        out += ["", "every bench that ran: checks ok"]
    return out, 1 if failed or not ran else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path(".run/bench-results.jsonl"))
    parser.add_argument("--exits", type=Path, default=Path(".run/bench-exits"))
    args = parser.parse_args(argv)
    lines, code = summary(args.results, args.exits)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
