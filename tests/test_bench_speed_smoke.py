"""Smoke test of the speed benchmark: a tiny run of each part against real server processes
(the seed comparison needs a checkout of the seed, so here it must say it was skipped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import bench_script

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "speed.py"
MEASURES = [
    "create_vs_running",
    "create_vs_pending",
    "queue_page_vs_pending",
    "metrics_vs_stored",
    "waiting_create_vs_running",
    "queue_page_vs_running",
]


def test_the_smoke_run_measures_every_part_and_writes_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    speed = bench_script(SCRIPT, monkeypatch)

    speed.main(["--smoke", "--out", str(tmp_path)])

    report = json.loads((tmp_path / "speed.json").read_text())
    (passes,) = report["passes"]
    assert passes["pending"] == 100 and passes["steady_ms"] > 0 and passes["churn_ms"] > 0
    assert "skipped" in report["versus_seed"]
    assert [row["measure"] for row in report["scaling"]] == MEASURES
    for row in report["scaling"]:
        assert row["database"] == "SQLite" and row["small"]["size"] < row["large"]["size"]
        assert row["small"]["errors"] == row["large"]["errors"] == 0, row
        assert row["small"]["p50_ms"] > 0 and row["large"]["p50_ms"] > 0 and row["ratio"] > 0
        assert len(row["small"]["round_p50_ms"]) == len(row["large"]["round_p50_ms"]) == 2
    floor = report["floor"]["cpu_ms_per_request"]["this"]
    assert list(floor) == ["healthz", "user_me", "create_refused", "create_starts"]
    # CPU time is read in ticks of 10 ms: only the create costs enough in a smoke run.
    assert floor["create_starts"] > 0, floor
    bare = report["floor"]["cpu_ms_per_request"]["bare"]  # the stack's own floor, beside
    assert list(bare) == ["create_starts"] and bare["create_starts"] > 0, bare
    assert report["floor"]["client_cpu_ms_per_create"] > 0
    assert "## 0. What one request costs" in (tmp_path / "speed.md").read_text()
    profile = report["profile"]
    assert len(profile["top_self_time"]) == 10 and profile["profiled_cpu_ms_per_create"] > 0
    assert any("create_deployment" in row["function"] for row in profile["top_app_cumulative"])
    markdown = (tmp_path / "speed.md").read_text()
    assert "## 2. One client" in markdown and "create_vs_pending" in markdown
    for name in ("speed.png", "speed_profile.txt"):
        assert (tmp_path / name).stat().st_size > 0
