"""Matplotlib PNGs of a run, built only from what is on disk.

- from ``RUN_DIR/metrics.jsonl``: reward per domain over training, response length (mean and max, tokens),
  kept-group fraction (dynamic sampling), overlong fraction, SFT loss. RL iterations of ``math_rl`` and
  ``joint_rl`` share one x axis (iterations counted across stages) with the stage boundaries drawn in;
- from the evaluation (``comparison.json``): benchmark pass@1 per stage, grouped bars;
- from the skills analysis (``skills/frequencies_pattern.json``): skill frequencies per stage, grouped bars.

Each ``plot_*`` function returns the PNG path it wrote, or None when there was nothing to draw (a run without
RL has no reward curve). Usage::

    written = write_plots(RunPaths(run_dir), out_dir)

Uses the non-interactive Agg backend (no display needed on a cluster node).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path, read_jsonl  # noqa: E402
from .skills import SKILL_TITLES, SKILLS  # noqa: E402

RL_STAGES = ("math_rl", "joint_rl")
STAGE_TITLES = {"sft": "Stage 1: SFT", "math_rl": "Stage 2: math RL", "joint_rl": "Stage 3: joint RL"}
DPI = 120


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def rl_series(metrics: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, int, int]]]:
    """RL records in curriculum order with a global ``x`` (iterations across stages), and the stage spans."""
    records, spans, offset = [], [], 0
    for stage in RL_STAGES:
        rows = sorted((r for r in metrics if r.get("stage") == stage and "iteration" in r),
                      key=lambda r: (r["iteration"], r.get("time_unix", 0)))
        # a resumed stage may have logged an iteration twice: keep the last record of each
        by_iteration = {r["iteration"]: r for r in rows}
        if not by_iteration:
            continue
        start = offset
        for iteration in sorted(by_iteration):
            records.append({**by_iteration[iteration], "x": offset + iteration})
        offset += max(by_iteration)
        spans.append((stage, start, offset))
    return records, spans


def _stage_bands(ax: Any, spans: Sequence[tuple[str, int, int]]) -> None:
    for k, (stage, start, end) in enumerate(spans):
        if k % 2 == 1:
            ax.axvspan(start + 0.5, end + 0.5, color="0.93", zorder=0)
        if k > 0:
            ax.axvline(start + 0.5, color="0.5", linestyle="--", linewidth=1)
        ax.text((start + end) / 2 + 0.5, 1.0, STAGE_TITLES.get(stage, stage), transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9, color="0.3")


def _line_plot(records: Sequence[dict[str, Any]], spans: Sequence[tuple[str, int, int]], keys: Sequence[str],
               labels: Sequence[str], ylabel: str, title: str, path: Path, ylim: tuple[float, float] | None = None
               ) -> Path | None:
    if not any(k in r for r in records for k in keys):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (key, label) in enumerate(zip(keys, labels)):
        # one segment per stage, same colour: a line across a stage boundary would suggest continuity
        for stage, _start, _end in spans:
            points = [(r["x"], r[key]) for r in records if r.get("stage") == stage and r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(records) <= 40 else None, markersize=3, linewidth=1.5,
                        color=colors[k % len(colors)], label=label)
                label = "_nolegend_"
    _stage_bands(ax, spans)
    ax.set_xlabel("RL iteration (counted across stages)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, pad=18)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path)


def plot_reward_per_domain(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    records, spans = rl_series(metrics)
    domains = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith("reward_mean/")})
    keys = [f"reward_mean/{d}" for d in domains]
    return _line_plot(records, spans, keys, domains, "mean reward of sampled responses",
                      "Reward per domain over training", path)


def plot_response_length(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    records, spans = rl_series(metrics)
    return _line_plot(records, spans, ["response_len_mean", "response_len_max"], ["mean", "max"],
                      "response length (tokens)", "Response length over training", path)


def plot_kept_groups(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    records, spans = rl_series(metrics)
    return _line_plot(records, spans, ["kept_group_fraction"], ["groups kept / groups generated"],
                      "fraction of prompt groups kept", "Dynamic sampling: kept-group fraction", path, (0, 1.05))


def plot_overlong(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    records, spans = rl_series(metrics)
    return _line_plot(records, spans, ["overlong_frac"], ["responses at the length limit"],
                      "fraction of responses", "Overlong (truncated) responses over training", path, (0, 1.05))


def plot_sft_loss(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    rows = sorted((r for r in metrics if r.get("stage") == "sft" and r.get("loss") is not None),
                  key=lambda r: r.get("step", 0))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot([r.get("step", i) for i, r in enumerate(rows)], [r["loss"] for r in rows], linewidth=1.5,
            label="cross-entropy on assistant tokens")
    ax.set_xlabel("SFT optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Stage 1: SFT loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path)


def _grouped_bars(categories: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str, title: str,
                  path: Path) -> Path:
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) + 2), 4.5))
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(categories))]
        heights = [0.0 if v is None else 100 * v for v in values]
        bars = ax.bar(xs, heights, width, label=label)
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if v is None else f"{100 * v:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(categories)))
    tilt = len(categories) > 3
    ax.set_xticklabels(categories, rotation=25 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="checkpoint", fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_unparseable_per_domain(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    records, spans = rl_series(metrics)
    domains = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith("unparseable_frac/")})
    if not domains:
        return None
    return _line_plot(records, spans, [f"unparseable_frac/{d}" for d in domains], domains,
                      "fraction of sampled responses", "Unparseable answers per domain over training", path, (0, 1.05))


def plot_heldout_per_stage(table: dict[str, Any], path: Path) -> Path | None:
    """Held-out accuracy: one group of bars per domain, one bar per stage."""
    stages = [s for s in ("base", "sft", "math_rl", "joint_rl") if s in (table or {})]
    if not stages:
        return None
    domains = sorted({d for s in stages for d in table[s]})
    return _grouped_bars(domains, {s: [table[s].get(d) for d in domains] for s in stages},
                         "held-out accuracy (%)", "Held-out accuracy per domain and stage", path)


def plot_benchmarks_per_stage(comparison: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in comparison.get("rows", []) if r.get("kind") == "benchmark"]
    labels = comparison.get("checkpoints", [])
    if not rows or not labels:
        return None
    return _grouped_bars([r["row"] for r in rows], {label: [r.get(label) for r in rows] for label in labels},
                         f"{comparison.get('metric', 'pass@1')} (%)", "Benchmark scores per stage", path)


def plot_skills_per_stage(frequencies: Sequence[dict[str, Any]], path: Path, classifier: str = "pattern"
                          ) -> Path | None:
    rows = [r for r in frequencies if r.get("domain") == "all"]
    if not rows:
        return None
    return _grouped_bars([SKILL_TITLES[s] for s in SKILLS], {r["checkpoint"]: [r.get(s) for s in SKILLS] for r in rows},
                         "responses showing the skill (%)",
                         f"Reasoning skills per stage ({classifier} classifier, all domains)", path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_plots(metrics_path: Path, eval_dir: Path, out_dir: Path) -> list[Path]:
    """Every plot there is data for, as out_dir/<name>.png; returns the paths written."""
    metrics = read_jsonl(metrics_path)
    written = [
        plot_reward_per_domain(metrics, out_dir / "reward_per_domain.png"),
        plot_response_length(metrics, out_dir / "response_length.png"),
        plot_kept_groups(metrics, out_dir / "kept_group_fraction.png"),
        plot_overlong(metrics, out_dir / "overlong_fraction.png"),
        plot_sft_loss(metrics, out_dir / "sft_loss.png"),
        plot_unparseable_per_domain(metrics, out_dir / "unparseable_per_domain.png"),
        plot_heldout_per_stage(_read_json(eval_dir / "heldout.json"), out_dir / "heldout_per_stage.png"),
    ]
    comparison = _read_json(eval_dir / "comparison.json")
    if comparison:
        written.append(plot_benchmarks_per_stage(comparison, out_dir / "benchmarks_per_stage.png"))
    for classifier in ("pattern", "judge"):
        frequencies = _read_json(eval_dir / "skills" / f"frequencies_{classifier}.json")
        if frequencies:
            written.append(plot_skills_per_stage(frequencies, out_dir / f"skills_per_stage_{classifier}.png",
                                                 classifier))
    return [p for p in written if p is not None]
