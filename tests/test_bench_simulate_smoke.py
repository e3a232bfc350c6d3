"""Smoke test of the scheduling-quality benchmark: a tiny trace, every output, numbers that
follow from the policies and the trace."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "simulate.py"
TOLERANCE = 1e-6


def load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import bench/simulate.py as a module, without leaving it in sys.modules."""
    spec = importlib.util.spec_from_file_location("bench_simulate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_run_reports_every_policy_within_the_lp_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate = load_script(monkeypatch)

    assert simulate.main(["--smoke", "--out", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "simulate.json").read_text())
    config = report["config"]
    trace = simulate.generate_trace(config["seed"], config["days"], config["gpus"], config["load"])
    assert report["trace"]["jobs"] == len(trace.jobs)
    # No job can complete before its submission plus its run time.
    earliest_makespan = max(job.submitted_at + job.duration for job in trace.jobs)
    assert set(report["policies"]) == set(simulate.POLICIES)
    bound = report["lp_bound"]
    assert bound["status"] == "Optimal"
    assert 0.0 < bound["window_gpu_utilization"] <= 1.0 + TOLERANCE
    gpu_window_seconds = report["trace"]["cluster"]["gpu"] * report["trace"]["window_seconds"]
    for name, policy in simulate.POLICIES.items():
        metrics = report["policies"][name]
        for resource, value in metrics["utilization"].items():
            assert 0.0 <= value <= 1.0, (name, resource, value)
        useful = metrics["window_useful_gpu_seconds"] / gpu_window_seconds
        assert useful <= bound["window_gpu_utilization"] + TOLERANCE, name
        assert 0.0 < metrics["share_of_lp_bound"] <= 1.0 + TOLERANCE, name
        assert metrics["makespan_seconds"] >= earliest_makespan, name
        if not policy.preemption:
            assert metrics["preemptions"] == 0, name
            assert metrics["gpu_seconds_lost_to_preemption"] == 0, name
        if not policy.priority_order:
            # The metric sees inversions where priority is ignored, so a 0 below means something.
            assert metrics["priority_inversions"] > 0, name
    assert report["policies"][simulate.DEFAULT_POLICY_NAME]["priority_inversions"] == 0
    for output in ("simulate.md", "utilization.png", "wait_cdf.png"):
        assert (tmp_path / output).stat().st_size > 0
