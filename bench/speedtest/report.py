"""speed.json, speed.md (a table per part, medians over rounds and ratios) and speed.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    profile = result.get("profile") or {}
    if "pstats_text" in profile:
        (out / "speed_profile.txt").write_text(profile.pop("pstats_text"))
    (out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "speed.md").write_text("\n".join(_markdown(result)) + "\n")
    _plot(out, result)


def _range(spread: dict[str, float], digits: int = 1) -> str:
    return f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}–{spread['max']:.{digits}f})"


def _markdown(result: dict[str, Any]) -> list[str]:
    machine = result.get("machine", {})
    lines = [
        "# Speed",
        "",
        f"Commit `{result.get('commit', '?')}`, {result.get('generated_at', '?')}, "
        f"{machine.get('cores', '?')} cores; load average {machine.get('load_before', '?')} "
        f"before, {machine.get('load_after', '?')} after. Medians over rounds, (min–max) of "
        "the per-round values. *Others' CPU* is the share of the machine's CPU time busy "
        "with processes other than the benchmark and its servers during the rounds.",
        "",
    ]
    if result.get("notes"):
        lines += ["## What the numbers say", "", *[f"- {note}" for note in result["notes"]], ""]
    lines += _floor(result.get("floor"))
    lines += _versus(result.get("versus_seed"))
    if result.get("versus_seed_sustained"):
        lines += _versus(result["versus_seed_sustained"])
    lines += _scaling(result.get("scaling"))
    lines += _load(result.get("load"))
    lines += _profile(result.get("profile"))
    lines += _passes(result.get("passes"))
    return lines


def _versus(part: dict[str, Any] | None) -> list[str]:
    mode = (part or {}).get("mode", "")
    lines = [f"## 1. Hypervisor vs the original seed (creates that start, SQLite) — {mode}", ""]
    if not part or "by_clients" not in part:
        return lines + [f"Not run: {(part or {}).get('skipped', 'not asked for')}.", ""]
    lines += [
        f"{part['rounds']} alternating rounds of up to {part['creates_per_round']} creates "
        f"and {part['round_seconds_limit']:g} s per service and concurrency, after a warm-up "
        "round each; target: Hypervisor ≥ 5× the seed's creates/s.",
        "",
        "| clients | Hypervisor creates/s | seed creates/s | ratio (per round) | ratio of "
        "medians | ≥ 5×? | Hypervisor p50 / p99 ms | seed p50 / p99 ms | server CPU ms per "
        "create, Hypervisor / seed | others' CPU |",
        "|---:|---:|---:|---:|---:|:--:|---:|---:|---:|---:|",
    ]
    for row in part["by_clients"]:
        hv, seed = row["hypervisor"], row["seed"]
        lines.append(
            f"| {row['clients']} | {_range(hv['creates_per_second'])} "
            f"| {_range(seed['creates_per_second'])} | {_range(row['ratio_per_round'], 2)} "
            f"| {row['ratio_of_medians']:.2f} | {'yes' if row['meets_target'] else 'no'} "
            f"| {hv['p50_ms']['median']:.0f} / {hv['p99_ms']['median']:.0f} "
            f"| {seed['p50_ms']['median']:.0f} / {seed['p99_ms']['median']:.0f} "
            f"| {hv['server_cpu_ms_per_create']['median']:.1f} / "
            f"{seed['server_cpu_ms_per_create']['median']:.1f} "
            f"| {100 * row['other_cpu_share']['median']:.0f}% |"
        )
    errors = [
        f"{r['clients']} clients: Hypervisor {r['hypervisor']['errors']} errors, seed "
        f"{r['seed']['errors']} errors and {r['seed']['not_started']} creates left queued; "
        f"rounds longer than a simulated run: Hypervisor "
        f"{r['hypervisor'].get('rounds_longer_than_a_run', '?')}, seed "
        f"{r['seed'].get('rounds_longer_than_a_run', '?')}"
        for r in part["by_clients"]
    ]
    return lines + ["", "Failures: " + "; ".join(errors) + ".", ""]


def _scaling(rows: list[dict[str, Any]] | None) -> list[str]:
    lines = ["## 2. One client: cost against the size of the data (Hypervisor)", ""]
    if not rows:
        return lines + ["Not run.", ""]
    lines += [
        "Each pair of worlds: two servers, each on a database of its own, measured in "
        "alternating rounds. p50 is the median over rounds of each round's p50; the ratio is "
        "large / small (per-round ratios in brackets); target ≤ 1.5×. Server CPU: the "
        "server's CPU time per request (creates include their cancel), less sensitive to the "
        "machine's load than latency.",
        "",
        "| database | request | small | large | p50 small / large ms | ratio (per round) "
        "| ≤ 1.5×? | earlier runs' ratios | server CPU ms small / large "
        "| its cancel: p50 small / large ms, ratio |",
        "|---|---|---|---|---:|---:|:--:|---:|---:|---:|",
    ]
    for row in rows:
        small, large = row["small"], row["large"]
        previous = ", ".join(f"{r:.2f}" for r in row.get("earlier_ratios", [])) or "–"
        cancel = "–"
        if small.get("cancel_p50_ms") and large.get("cancel_p50_ms"):
            cancel = (
                f"{small['cancel_p50_ms']:.1f} / {large['cancel_p50_ms']:.1f}, "
                f"{row['cancel_ratio']:.2f}"
            )
        lines.append(
            f"| {row['database']} | {row['measure']} | {small['label']} | {large['label']} "
            f"| {small['p50_ms']:.1f} / {large['p50_ms']:.1f} "
            f"| {row['ratio']:.2f} ({row['ratio_per_round']['min']:.2f}–"
            f"{row['ratio_per_round']['max']:.2f}) "
            f"| {'yes' if row['within_target'] else 'no'} | {previous} "
            f"| {small['server_cpu_ms']:.1f} / {large['server_cpu_ms']:.1f} | {cancel} |"
        )
    return lines + [""]


def _floor(part: dict[str, Any] | None) -> list[str]:
    if not part:
        return []
    costs = part["cpu_ms_per_request"]
    names = list(costs)
    compared = f" (`compared`: {part['compared_dir']})" if part.get("compared_dir") else ""
    lines = [
        "## 0. What one request costs the server (one client, SQLite)",
        "",
        f"Server CPU ms per request, median of {part['rounds']} alternating rounds of "
        f"{part['requests_per_round']} requests per step{compared}.",
        "",
        "| request | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for step in costs[names[0]]:
        cells = [f"{costs[n][step]:.2f}" if step in costs[n] else "—" for n in names]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    if "bare" in costs:
        lines += [
            "",
            "`bare`: the least a create costs in this stack (`bench/speedtest/bare.py`: FastAPI, "
            "Pydantic, one ORM INSERT and commit; no token, lock, scheduling or events).",
        ]
    if "seed" in costs:
        budget = costs["seed"]["create_starts"] / 5
        lines.append(
            f"5x the seed in one process leaves a create {budget:.2f} ms; "
            f"`bare` alone takes {costs['bare']['create_starts']:.2f} ms."
        )
    if "client_cpu_ms_per_create" in part:
        lines.append(f"The client spends {part['client_cpu_ms_per_create']:.2f} ms per create.")
    return lines + [""]


def _load(part: dict[str, Any] | None) -> list[str]:
    lines = ["## 3. Load harness on PostgreSQL", ""]
    if not part or "throughput_rps" not in part:
        return lines + [f"Not run: {(part or {}).get('skipped', 'not asked for')}.", ""]
    return lines + [
        f"`{part['command']}`; its report: `{part['report']}`.",
        "",
        "| requests | throughput | p50 / p99 | create p50 / p99 | 5xx | invariant violations "
        "| clean |",
        "|---:|---:|---:|---:|---:|---:|:--:|",
        f"| {part['requests']} | {part['throughput_rps']:.1f} req/s "
        f"| {part['p50_ms']:.0f} / {part['p99_ms']:.0f} ms "
        f"| {part['create_p50_ms']:.0f} / {part['create_p99_ms']:.0f} ms "
        f"| {part['server_errors_5xx']} | {part['violation_count']} "
        f"| {'yes' if part['ok'] else 'no'} |",
        "",
    ]


def _profile(part: dict[str, Any] | None) -> list[str]:
    lines = ["## Where a create's time goes (cProfile, in-process TestClient, SQLite)", ""]
    if not part or "top_self_time" not in part:
        return lines + ["Not run.", ""]
    lines += [
        f"{part['creates']} creates that start; {part['unprofiled_ms_per_create']:.1f} ms wall "
        f"each unprofiled, {part['profiled_cpu_ms_per_create']:.1f} ms CPU each under the "
        "profiler (its overhead inflates small calls: read shares). Waits are left out.",
        "",
        "| self time, top 10 | package | calls per create | self ms | share |",
        "|---|---|---:|---:|---:|",
    ]
    for row in part["top_self_time"]:
        lines.append(
            f"| `{row['function']}` | {row['package']} | {row['calls_per_create']:g} "
            f"| {row['self_ms_per_create']:.2f} | {100 * row['share_of_self_time']:.1f}% |"
        )
    lines += [
        "",
        "| app functions, cumulative | calls per create | ms | share |",
        "|---|---:|---:|---:|",
    ]
    for row in part["top_app_cumulative"]:
        lines.append(
            f"| `{row['function']}` | {row['calls_per_create']:g} "
            f"| {row['cumulative_ms_per_create']:.2f} | {100 * row['share_of_cpu']:.0f}% |"
        )
    shares = ", ".join(
        f"{name} {100 * share:.0f}%" for name, share in part["self_time_by_package"].items()
    )
    return lines + ["", f"Self time by package: {shares}.", ""]


def _passes(rows: list[dict[str, Any]] | None) -> list[str]:
    lines = ["## `scheduler.run_pass` alone (1,000 running)", ""]
    if not rows:
        return lines + ["Not run.", ""]
    lines += [
        "| pending | steady pass (ms) | churn pass (ms) | preemptions in churn |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['pending']} | {r['steady_ms']:.1f} | {r['churn_ms']:.1f} "
        f"| {r['preempted_in_churn']} |"
        for r in rows
    ]
    return lines + [""]


def _plot(out: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [key for key in ("versus_seed", "versus_seed_sustained") if result.get(key)]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(6 * (len(panels) + 1), 4.5))
    axes = list(axes) if len(panels) else [axes]
    for axis, key in zip(axes, panels, strict=False):
        _versus_panel(axis, result[key])
    right = axes[-1]
    scaling = result.get("scaling") or []
    labels = [f"{r['database']}\n{r['measure'].replace('_vs_', ' vs ')}" for r in scaling]
    ratios = [r["ratio"] for r in scaling]
    low = [r["ratio"] - r["ratio_per_round"]["min"] for r in scaling]
    high = [r["ratio_per_round"]["max"] - r["ratio"] for r in scaling]
    right.bar(range(len(scaling)), ratios, yerr=[low, high], capsize=3, color="tab:green")
    right.axhline(1.5, color="red", linestyle="--", label="target 1.5×")
    right.axhline(1.0, color="gray", linewidth=0.8)
    right.set_xticks(range(len(scaling)), labels, rotation=60, ha="right", fontsize=7)
    right.set_ylabel("p50 large / small (whiskers: rounds)")
    right.set_title("2. One client: cost vs size of the data")
    right.legend()
    figure.tight_layout()
    figure.savefig(out / "speed.png", dpi=100)
    plt.close(figure)


def _versus_panel(axis: Any, versus: dict[str, Any]) -> None:
    rows = versus.get("by_clients", [])
    for offset, (name, color) in enumerate((("hypervisor", "tab:blue"), ("seed", "tab:orange"))):
        for position, row in enumerate(rows):
            values = [r[name]["per_second"] for r in row["rounds"]]
            x = position + (offset - 0.5) * 0.35
            axis.bar(x, row[name]["creates_per_second"]["median"], 0.33, color=color,
                     label=name if position == 0 else None)  # fmt: skip
            axis.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    axis.set_xticks(range(len(rows)), [f"{r['clients']} clients" for r in rows])
    axis.set_ylabel("creates/s (bars: median; dots: rounds)")
    axis.set_title(f"1. vs seed, SQLite: {versus.get('mode', '')}", fontsize=10)
    if rows:
        axis.legend()
