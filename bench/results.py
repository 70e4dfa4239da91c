"""One line per measured row, for the summary `make bench` prints at the end (bench/summary.py).

Every bench calls `record(...)` for each row of the performance table it measures. When the
environment names a file in `BENCH_RESULTS`, the row is appended to it as one JSON object:

    {"bench", "measure", "value", "baseline", "ratio", "target", "met", "unit", "better"}

`better` is "higher" (ratio >= target is met) or "lower" (ratio or value <= target is met).
A row with target None is reported without a target (`met` is null).
Without `BENCH_RESULTS` nothing is written: a bench run by hand prints its own table as before.
"""

from __future__ import annotations

import json
import os
from typing import Any


def record(bench: str, measure: str, value: float, baseline: float | None, target: float | None,
           unit: str = "", better: str = "higher", ratio: float | None = None,
           **extra: Any) -> dict[str, Any]:
    """Record one row. `ratio` defaults to value / baseline (or value itself without baseline).

    The row's `met` compares the ratio with `target` in the direction `better` says.
    """
    if ratio is None:
        ratio = value / baseline if baseline else value
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    met = None if target is None else ratio >= target if better == "higher" else ratio <= target
    row: dict[str, Any] = {"bench": bench, "measure": measure, "value": value, "baseline": baseline,
                           "ratio": ratio, "target": target, "met": met if met is None else bool(met), "unit": unit,
                           "better": better, **extra}
    path = os.environ.get("BENCH_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return row
