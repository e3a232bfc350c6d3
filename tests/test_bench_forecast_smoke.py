"""Smoke test of the forecast-accuracy benchmark: a seconds-long replay on a real server,
every scenario reported, every estimate matched with a later start, scenario 1 in its bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import bench_script

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "forecast.py"


def test_the_smoke_run_matches_every_estimate_with_a_later_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = bench_script(SCRIPT, monkeypatch)

    bench.main(["--smoke", "--out", str(tmp_path)])

    report = json.loads((tmp_path / "forecast.json").read_text())
    scenarios = report["scenarios"]
    assert list(scenarios) == ["declared-burst", "declared-arrivals", "history"]
    for name, scenario in scenarios.items():
        rows = scenario["estimates"]
        assert rows, name
        assert scenario["summary"]["unmatched"] == 0, name
        for row in rows:
            assert row["actual_start"] is not None, (name, row)
            assert row["lead_seconds"] >= 0, (name, row)
            assert row["actual_start"] >= row["seen"], (name, row)
            assert row["error_seconds"] == pytest.approx(
                row["actual_start"] - row["estimated_start"], abs=0.002
            )
        # Every estimate of a current forecast in one lead bucket; the start of a run a
        # preemption had just ended is never one of them.
        counted = [row for row in rows if row["current"] and not row["previous_start"]]
        assert not [row for row in rows if row["previous_start"] and row["current"]], name
        assert scenario["summary"]["all"]["estimates"] == len(counted) > 0, name
        by_lead = scenario["summary"]["by_lead"].values()
        assert sum(bucket["estimates"] for bucket in by_lead) == len(counted), name
    expected = {"declared-burst": "declared", "declared-arrivals": "declared", "history": "history"}
    for name, basis in expected.items():
        assert {row["basis"] for row in scenarios[name]["estimates"]} == {basis}, name
    assert scenarios["history"]["history_runs_reported"] >= 3  # the runs history rests on

    bound = scenarios["declared-burst"]["bound"]
    first = [row for row in scenarios["declared-burst"]["estimates"] if row["first_forecast"]]
    assert bound["estimates"] == len(first) > 0
    for row in first:
        assert abs(row["error_seconds"]) <= row["bound_seconds"], row
    assert bound["within_bound"] == bound["estimates"]

    markdown = (tmp_path / "forecast.md").read_text()
    assert "## 1. Declared durations" in markdown
    assert (tmp_path / "forecast_error_vs_lead.png").stat().st_size > 0
