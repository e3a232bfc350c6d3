"""Smoke test of the speed benchmark: a tiny run against a real server process."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "speed.py"


def test_the_smoke_run_times_passes_and_a_live_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    speed = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, speed)
    spec.loader.exec_module(speed)

    measured = speed.main(["--smoke", "--out", str(tmp_path)])

    # Timings differ run by run; what is fixed is the shape of the run, that every request
    # was answered, and that the written report says what was measured.
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report == measured
    (passes,) = report["passes"]
    assert (passes["running"], passes["pending"]) == (1000, 100)
    assert passes["preempted_in_churn"] > 0  # else "churn" would time a steady queue again
    (sqlite,) = report["live"]
    assert [row["pending"] for row in sqlite["latency"]] == [10, 50]
    for row in sqlite["latency"]:
        assert row["errors"] == 0
        assert row["create_p50_ms"] <= row["create_p99_ms"]
        assert row["cancel_p50_ms"] <= row["cancel_p99_ms"]
    assert sqlite["memory"]["stored"] == 200
    assert sqlite["memory"]["peak_rss_mb"] >= max(row["rss_mb"] for row in sqlite["latency"])
    table = (tmp_path / "speed.md").read_text().splitlines()
    assert (
        f"| 1000 | 100 | {passes['steady_ms']:.1f} | {passes['churn_ms']:.1f} "
        f"| {passes['preempted_in_churn']} |"
    ) in table
    for row in sqlite["latency"]:
        create = f"{row['create_p50_ms']:.1f} / {row['create_p99_ms']:.1f}"
        cancel = f"{row['cancel_p50_ms']:.1f} / {row['cancel_p99_ms']:.1f}"
        assert any(
            line.startswith(f"| SQLite | {row['pending']} | {create} | {cancel} |")
            for line in table
        )
    assert (tmp_path / "latency_vs_depth.png").stat().st_size > 0
