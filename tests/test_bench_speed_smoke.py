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

    speed.main(["--smoke", "--out", str(tmp_path)])

    report = json.loads((tmp_path / "speed.json").read_text())
    assert [row["pending"] for row in report["passes"]] == [100]
    assert report["passes"][0]["steady_ms"] > 0 and report["passes"][0]["churn_ms"] > 0
    (sqlite,) = report["live"]
    assert [row["pending"] for row in sqlite["latency"]] == [10, 50]
    assert all(row["errors"] == 0 and row["create_p50_ms"] > 0 for row in sqlite["latency"])
    assert sqlite["memory"]["peak_rss_mb"] > 0
    assert (tmp_path / "speed.md").exists() and (tmp_path / "latency_vs_depth.png").exists()
