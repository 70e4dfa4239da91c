"""bench/summary.py: the table `make bench` ends with, from a JSON-lines file the benches wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import results, summary


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    rows, exits = tmp_path / "results.jsonl", tmp_path / "exits"
    monkeypatch.setenv("BENCH_RESULTS", str(rows))
    rows.write_text("")
    return rows, exits


def line_of(lines: list[str], measure: str) -> str:
    (line,) = [ln for ln in lines if ln.startswith(f"| {measure} |")]
    return line


def test_rows_are_met_or_not_in_the_direction_of_the_table(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("steady", "steady booking / echo", 60, 100, 0.6, "ratio", value_unit="req/s")   # 0.6: met
    results.record("steady", "CPU per steady booking", 8.5, None, 8, "ms", better="lower")          # not met
    results.record("flash_crowd", "RSS gateway after flash crowd", 150, None, 200, "MB", better="lower")
    exits.write_text("steady 0\nflash_crowd 0\n")

    lines, code = summary.summary(rows, exits)

    assert line_of(lines, "steady booking / echo").endswith("| 0.60 | >= 0.6 | met |")
    assert "60.0 req/s | 100 req/s" in line_of(lines, "steady booking / echo")
    assert line_of(lines, "CPU per steady booking").endswith("| <= 8 | NOT MET |")
    assert line_of(lines, "RSS gateway after flash crowd").endswith("| met |")
    assert code == 0


def test_every_row_of_the_table_is_listed_in_order_and_a_missing_one_says_not_measured(
        files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("stats_rebuild", "stats rebuild / read", 30, 100, 0.5, "ratio")
    exits.write_text("stats_rebuild 0\n")

    lines, _ = summary.summary(rows, exits)

    listed = [ln.split(" | ")[0][2:] for ln in lines if ln.startswith("| ") and not ln.startswith("| measure")]
    assert listed == [spec.measure for spec in summary.ROWS]
    assert line_of(lines, "stats rebuild / read").endswith("| NOT MET |")
    assert line_of(lines, "booking p99 5M events / 10k events").endswith("| not measured |")
    assert line_of(lines, "PostgreSQL connections at rest").endswith("| not measured |")
    assert line_of(lines, "PostgreSQL connections at rest after load").endswith("| <= 24 | not measured |")


def test_the_table_target_counts_not_the_one_a_bench_recorded(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("flash_crowd", "flash crowd / echo", 200, 100, 1.5, "ratio")  # 2.0: met against a stale 1.5
    exits.write_text("flash_crowd 0\n")

    lines, _ = summary.summary(rows, exits)

    assert line_of(lines, "flash crowd / echo").endswith("| >= 3 | NOT MET |")
    assert any(ln.startswith("note: flash crowd / echo") for ln in lines)


def test_a_failing_bench_is_named_and_fails_the_summary(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("steady", "steady booking / echo", 70, 100, 0.6, "ratio")
    exits.write_text("eventstore 0\nsteady 1\nbig_store skipped\nsms 0\n")

    lines, code = summary.summary(rows, exits)

    assert code == 1
    assert any("steady" in ln and "FAILED (exit code 1)" in ln for ln in lines)
    assert any("eventstore" in ln and "checks ok" in ln for ln in lines)
    assert any("big_store" in ln and "not run (no bench/big_store.py yet)" in ln for ln in lines)
    assert "FAILED: steady (its own output above says which check)" in lines


def test_no_bench_run_fails_and_a_stray_measure_is_shown_not_dropped(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("steady", "steady bookings / echo", 70, 100, 0.6, "ratio")  # misspelt
    rows.write_text(rows.read_text() + "not json\n")

    lines, code = summary.summary(rows, exits)

    assert code == 1
    assert "  no bench ran" in lines
    assert line_of(lines, "steady booking / echo").endswith("| not measured |")
    assert any("'steady bookings / echo'" in ln for ln in lines)
    assert any("1 unreadable line(s)" in ln for ln in lines)


def test_the_last_row_of_a_measure_recorded_twice_counts(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("steady", "steady booking / echo", 10, 100, 0.6, "ratio")
    results.record("steady", "steady booking / echo", 80, 100, 0.6, "ratio")
    exits.write_text("steady 0\n")

    lines, _ = summary.summary(rows, exits)

    assert line_of(lines, "steady booking / echo").endswith("| 0.80 | >= 0.6 | met |")


def test_skipped_benches_alone_are_no_run_and_the_largest_process_is_named(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("flash_crowd", "RSS largest other process after flash crowd", 86.4, None, 200, "MB",
                   better="lower", process="his_sync")
    results.record("flash_crowd", "RSS gateway after flash crowd", 110, None, 200, "MB", better="lower",
                   process="gateway")
    exits.write_text("big_store skipped\nconnections skipped\n")

    lines, code = summary.summary(rows, exits)

    assert code == 1  # nothing ran
    assert "| 86.4 MB (his_sync) |" in line_of(lines, "RSS largest other process after flash crowd")
    assert "| 110 MB |" in line_of(lines, "RSS gateway after flash crowd")  # its name is in the measure already


def test_connections_at_rest_after_load_are_judged_and_the_peak_is_only_reported(files: tuple[Path, Path]) -> None:
    rows, exits = files
    results.record("connections", "PostgreSQL connections at rest", 18, None, 24, "count", better="lower")
    peak = results.record("connections", "PostgreSQL connections at peak under load", 51, None, None, "count",
                          better="lower")
    results.record("connections", "PostgreSQL connections at rest after load", 25, None, 24, "count", better="lower")
    exits.write_text("connections 0\n")

    lines, code = summary.summary(rows, exits)

    assert peak["met"] is None
    assert line_of(lines, "PostgreSQL connections at rest").endswith("| 18 | — | 18.0 | <= 24 | met |")
    assert line_of(lines, "PostgreSQL connections at peak under load") == (
        "| PostgreSQL connections at peak under load | 51 | — | 51.0 | — | reported |")
    assert line_of(lines, "PostgreSQL connections at rest after load").endswith("| 25 | — | 25.0 | <= 24 | NOT MET |")
    assert not any(ln.startswith("note:") for ln in lines)
    assert code == 0
