"""Smoke test of the forecast-cost benchmark: a seconds-long run of the pure forecast and
of previews through the app, every field reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import bench_script

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "forecast_cost.py"


def test_the_smoke_run_times_the_forecast_and_previews_that_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = bench_script(SCRIPT, monkeypatch)

    code = bench.main(
        ["--running", "30", "--pending", "60", "--rounds", "1", "--out", str(tmp_path)]
    )

    assert code == 0
    report = json.loads((tmp_path / "forecast_cost.json").read_text())
    (pure,) = report["results"]
    assert pure["settled"] + pure["unknown"] == pure["running"] + pure["pending"]
    (preview,) = report["preview"]["results"]
    assert set(preview["candidates"]) == {"back", "middle"}
    for name, one in preview["candidates"].items():
        assert one["would_start"] is False, name
        assert one["queue_position"] is not None, name
        assert one["estimate_basis"] in {"declared", "history", "unknown"}, name
        assert (one["start_hours_ahead"] is None) == (one["estimate_basis"] == "unknown"), name
        assert 0 < one["simulate_seconds"] and 0 < one["request_seconds"], name
    # The back of the queue is the last to start.
    assert preview["candidates"]["back"]["queue_position"] == preview["pending"] + 1
