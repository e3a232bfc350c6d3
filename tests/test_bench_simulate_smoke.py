"""Smoke test of the scheduling-quality benchmark: a tiny trace, every output, sane numbers,
and the replay's checkpoint arithmetic on traces small enough to work out by hand."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import bench_script
from scheduler import Cluster, Resources

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "simulate.py"
TOLERANCE = 1e-6
NEVER_PREEMPT = ("fifo", "priority-no-preemption")
DEFAULT = "hypervisor-default"
BEFORE = "spec-before-checkpoints"
# What a policy does, without the timings of the machine that ran it.
OUTCOME_KEYS = (
    "share_of_lp_bound",
    "gpu_seconds_lost_to_preemption",
    "preemptions",
    "mean_completion_seconds",
    "wait_seconds",
    "priority_inversions",
)


def load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import bench/simulate.py as a module, without leaving it in sys.modules."""
    module = bench_script(SCRIPT, monkeypatch)
    return module


@pytest.fixture
def simulate(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_script(monkeypatch)


def outcome(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in OUTCOME_KEYS}


def test_the_smoke_run_reports_every_scenario_and_policy_within_the_lp_bound(
    simulate: ModuleType, tmp_path: Path
) -> None:
    assert simulate.main(["--smoke", "--out", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "simulate.json").read_text())
    scenarios = report["scenarios"]
    assert list(scenarios) == ["none", "half", "all"]
    config = report["config"]
    trace = simulate.generate_trace(config["seed"], config["days"], config["gpus"], config["load"])
    # No job can complete before its submission plus its run time.
    earliest_makespan = max(job.submitted_at + job.duration for job in trace.jobs)
    bound = report["lp_bound"]
    assert bound["status"] == "Optimal"
    assert 0.0 < bound["window_gpu_utilization"] <= 1.0 + TOLERANCE
    gpu_window_seconds = report["trace"]["cluster"]["gpu"] * report["trace"]["window_seconds"]
    for scenario_name, scenario in scenarios.items():
        assert set(scenario["policies"]) == set(simulate.POLICIES)
        for name, metrics in scenario["policies"].items():
            where = (scenario_name, name)
            for value in metrics["utilization"].values():
                assert 0.0 <= value <= 1.0, where
            useful = metrics["window_useful_gpu_seconds"]
            assert useful / gpu_window_seconds <= bound["window_gpu_utilization"] + TOLERANCE
            assert useful <= metrics["window_allocated_gpu_seconds"] + TOLERANCE, where
            assert 0.0 < metrics["share_of_lp_bound"] <= 1.0 + TOLERANCE, where
            assert metrics["makespan_seconds"] >= earliest_makespan - TOLERANCE, where

    by_scenario = {name: scenario["policies"] for name, scenario in scenarios.items()}
    for name in NEVER_PREEMPT:
        for policies in by_scenario.values():
            assert policies[name]["preemptions"] == 0
            assert policies[name]["gpu_seconds_lost_to_preemption"] == 0.0
    # The old default ignores checkpoints: the scenarios cannot tell it apart.
    assert outcome(by_scenario["none"][BEFORE]) == outcome(by_scenario["half"][BEFORE])
    assert outcome(by_scenario["none"][BEFORE]) == outcome(by_scenario["all"][BEFORE])
    assert by_scenario["all"][BEFORE]["checkpoints"] == 0
    # The default honours them.
    assert by_scenario["none"][DEFAULT]["checkpoints"] == 0
    assert by_scenario["all"][DEFAULT]["checkpoints"] > 0
    for policies in by_scenario.values():
        assert policies[DEFAULT]["priority_inversions"] == 0
    assert (
        by_scenario["all"][DEFAULT]["gpu_seconds_lost_to_preemption"]
        <= by_scenario["none"][DEFAULT]["gpu_seconds_lost_to_preemption"]
    )
    assert (
        by_scenario["all"][DEFAULT]["share_of_lp_bound"]
        >= by_scenario["none"][DEFAULT]["share_of_lp_bound"]
    )

    # The other seeds' checks: their own bound, every scenario, the main policies.
    assert list(report["other_seeds"]) == ["2", "3"]
    for other in report["other_seeds"].values():
        assert set(other["targets"]) == set(report["targets"])
        for scenario in other["scenarios"].values():
            for metrics in scenario["policies"].values():
                assert metrics["window_useful_gpu_seconds"] <= (
                    other["lp_bound_gpu_seconds"] * (1 + TOLERANCE)
                )

    targets = report["targets"]
    assert targets["none_lost_beats_before"]["value"] == pytest.approx(
        by_scenario["none"][DEFAULT]["gpu_seconds_lost_to_preemption"]
    )
    assert targets["none_lost_beats_before"]["target"] == pytest.approx(
        by_scenario["none"][BEFORE]["gpu_seconds_lost_to_preemption"]
    )
    assert targets["all_share_of_lp_bound"]["met"] == (
        by_scenario["all"][DEFAULT]["share_of_lp_bound"] >= 0.97
    )
    markdown = (tmp_path / "simulate.md").read_text()
    for target in targets.values():
        assert isinstance(target["met"], bool)
    assert markdown.count("**met**") + markdown.count("**missed**") == len(targets)
    for output in ("simulate.md", "utilization.png", "wait_cdf.png", "lost_work.png"):
        assert (tmp_path / output).stat().st_size > 0


def test_the_scenarios_nest_and_only_long_jobs_checkpoint(simulate: ModuleType) -> None:
    trace = simulate.generate_trace(1, 0.5, 16, 0.9)
    plans = simulate.checkpoint_intervals(trace, 1)
    long_jobs = {job.id for job in trace.jobs if job.duration > 1800}

    assert plans["none"] == {}
    assert set(plans["all"]) == long_jobs
    assert plans["half"].items() <= plans["all"].items()
    assert 0 < len(plans["half"]) < len(plans["all"])
    for interval in plans["all"].values():
        assert 600 <= interval <= 3600 and interval % 60 == 0


@pytest.mark.parametrize("name", [DEFAULT, BEFORE, "waste-check"])
def test_every_job_keeps_exactly_its_duration_of_useful_work(
    simulate: ModuleType, name: str
) -> None:
    trace = simulate.generate_trace(1, 0.5, 16, 0.9)
    plans = simulate.checkpoint_intervals(trace, 1)

    result = simulate.replay(trace, simulate.POLICIES[name], plans["all"])

    kept: dict[int, float] = defaultdict(float)
    lost = 0.0
    for span in result.spans:
        assert span.start <= span.saved_until <= span.end
        kept[span.job_id] += span.saved_until - span.start
        lost += (span.end - span.saved_until) * span.request.gpu
    for job in trace.jobs:
        assert kept[job.id] == pytest.approx(job.duration, abs=TOLERANCE), job.id
    assert lost == pytest.approx(result.lost_gpu_seconds)
    assert result.preemptions == sum(1 for span in result.spans if not span.completed)


def tiny_trace(simulate: ModuleType, *jobs: tuple[int, float, int, int, int]) -> Any:
    """A 4-GPU cluster and jobs given as (id, submitted at, priority, gpus, duration)."""
    return simulate.Trace(
        cluster=Cluster(total=Resources(cpu=64, ram=512, gpu=4)),
        jobs=[
            simulate.TraceJob(job_id, at, priority, Resources(cpu=gpus, ram=gpus, gpu=gpus), run)
            for job_id, at, priority, gpus, run in jobs
        ],
        window=7200.0,
    )


def test_a_preempted_job_restarts_from_its_latest_checkpoint(simulate: ModuleType) -> None:
    # A checkpoints every 600 s; at 1000 the urgent B preempts it, 400 s after its checkpoint.
    trace = tiny_trace(simulate, (1, 0.0, 0, 4, 3600), (2, 1000.0, 900, 4, 100))

    result = simulate.replay(trace, simulate.POLICIES[DEFAULT], {1: 600.0})

    assert result.completed_at[2] == 1100.0
    assert result.completed_at[1] == pytest.approx(1100.0 + 3600 - 600)
    assert result.preemptions == 1
    assert result.lost_gpu_seconds == pytest.approx(400.0 * 4)
    assert result.checkpoints == 1 + 4  # 600; then 1700, 2300, 2900, 3500 after the restart
    assert result.waited[1] == pytest.approx(100.0)


def test_the_old_default_restarts_a_preempted_job_from_zero(simulate: ModuleType) -> None:
    trace = tiny_trace(simulate, (1, 0.0, 0, 4, 3600), (2, 1000.0, 900, 4, 100))

    result = simulate.replay(trace, simulate.POLICIES[BEFORE], {1: 600.0})

    assert result.completed_at[1] == 1100.0 + 3600
    assert result.lost_gpu_seconds == pytest.approx(1000.0 * 4)
    assert result.checkpoints == 0


@pytest.mark.parametrize(
    ("name", "priority", "preemptions", "ends"),
    [
        # 2,900 s of A's work would be thrown away to save B 100 s: B waits for A's end.
        ("waste-check", 100, 0, {1: 3000.0, 2: 3100.0, 3: 3200.0}),
        # The default preempts A at once: A restarts from zero when B ends.
        (DEFAULT, 100, 1, {1: 6000.0, 2: 3000.0, 3: 3100.0}),
        # Urgent work always preempts, waste or not.
        ("waste-check", 900, 1, {1: 6000.0, 2: 3000.0, 3: 3100.0}),
    ],
)
def test_the_waste_check_waits_for_known_ends_rather_than_discard_work(
    simulate: ModuleType, name: str, priority: int, preemptions: int, ends: dict[int, float]
) -> None:
    # A (3 GPUs) runs 0..3000; B (4 GPUs) arrives at 2900; C (1 GPU) at 2950 would fit the
    # free GPU, but the waste check holds that GPU for B.
    trace = tiny_trace(
        simulate, (1, 0.0, 0, 3, 3000), (2, 2900.0, priority, 4, 100), (3, 2950.0, 0, 1, 100)
    )

    result = simulate.replay(trace, simulate.POLICIES[name], {})

    assert result.preemptions == preemptions
    for job_id, end in ends.items():
        assert math.isclose(result.completed_at[job_id], end), (job_id, result.completed_at)
    assert result.inversions == 0
