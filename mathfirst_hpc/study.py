"""The paper's ablation in miniature: the curriculum against "no math RL", over several seeds.

    mathfirst-hpc study --dir runs/study --seeds 0,1,2          # tiny preset, ~10 min per seed on 2 cores

Two arms per seed, each in its own run dir:

- ``curriculum/seed_S``: sft -> math_rl -> joint_rl, as ``mathfirst-hpc run``;
- ``ablation/seed_S``: joint_rl straight from the *same* SFT checkpoint (``--init-from``), with
  ``steps = math_rl.steps + joint_rl.steps`` so that both arms spend the same RL iterations and rollouts (every
  iteration draws ``rollout.prompts_per_batch`` prompts x ``rollout.n_per_prompt`` samples in both arms).

Each run dir gets its held-out table (``eval/heldout.py``; the held-out sets depend on the seed only, so both arms
of a seed answer the same problems). ``study.json`` / ``study.md`` hold per arm and domain the mean ± sample std
over seeds of the final model's accuracy, and the per-seed values; ``study.png`` plots them.

Resumable: every stage and every held-out table is resumable or cached, so rerunning the command continues.
Nothing here tunes on the held-out sets: they are only read after training, once per final checkpoint.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from .atomic import write_json, write_text
from .errors import ConfigError

Progress = Callable[[str], None]
ARMS = ("curriculum", "ablation")


def arm_dir(study_dir: Path, arm: str, seed: int) -> Path:
    return Path(study_dir) / arm / f"seed_{seed}"


def _rl_steps(run_dir: Path, stage: str) -> int:
    from .config import load_resolved
    from .paths import RunPaths

    return load_resolved(RunPaths(run_dir).stage_config(stage)).steps


def run_arms(study_dir: Path, seed: int, preset: str, overrides: Sequence[str], progress: bool,
             log: Progress) -> dict[str, dict[str, dict[str, float]]]:
    """Both arms of one seed; returns arm -> held-out table."""
    from .checkpoint import final_checkpoint
    from .eval.heldout import evaluate_heldout
    from .paths import RunPaths
    from .run import run_curriculum

    seeded = [*overrides, f"seed={seed}"]
    cur = arm_dir(study_dir, "curriculum", seed)
    log(f"study: seed {seed}, curriculum (sft -> math_rl -> joint_rl) in {cur}")
    results = run_curriculum(cur, ["sft", "math_rl", "joint_rl"], preset, seeded, progress=progress)
    if any(r != "final" for r in results.values()):
        raise ConfigError(f"study stopped: curriculum seed {seed} ended {results}", hint="rerun to resume")
    tables = {"curriculum": evaluate_heldout(cur, progress=log)}
    sft_final = final_checkpoint(RunPaths(cur).checkpoints("sft"))
    total = _rl_steps(cur, "math_rl") + _rl_steps(cur, "joint_rl")
    abl = arm_dir(study_dir, "ablation", seed)
    log(f"study: seed {seed}, ablation (joint_rl for {total} iterations from the same sft) in {abl}")
    results = run_curriculum(abl, ["joint_rl"], preset,
                             [*seeded, f"joint_rl:steps={total}",
                              f"joint_rl:model.tokenizer_path={RunPaths(cur).tokenizer_dir}"],
                             init_from=str(sft_final), progress=progress)
    if results.get("joint_rl") != "final":
        raise ConfigError(f"study stopped: ablation seed {seed} ended {results}", hint="rerun to resume")
    tables["ablation"] = {**evaluate_heldout(abl, progress=log), "sft": tables["curriculum"]["sft"]}
    return tables


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(per_seed: dict[int, dict[str, dict[str, dict[str, float]]]]) -> dict[str, Any]:
    """arm -> domain -> {mean, std, values} of the final stage (joint_rl), plus the shared sft row."""
    out: dict[str, Any] = {"seeds": sorted(per_seed), "arms": {}}
    for arm in ARMS:
        for stage in ("sft", "joint_rl"):
            label = arm if stage == "joint_rl" else "sft"
            domains = sorted({d for tables in per_seed.values() for d in tables[arm].get(stage, {})})
            rows = {}
            for domain in domains:
                values = [tables[arm][stage][domain] for tables in per_seed.values()]
                mean, std = mean_std(values)
                rows[domain] = {"mean": mean, "std": std, "values": values}
            non_math = [d for d in domains if d != "math"]
            if non_math:
                values = [statistics.fmean(tables[arm][stage][d] for d in non_math) for tables in per_seed.values()]
                mean, std = mean_std(values)
                rows["non-math mean"] = {"mean": mean, "std": std, "values": values}
            out["arms"][label] = rows
    return out


def study_markdown(summary: dict[str, Any]) -> str:
    labels = ["sft", *ARMS]
    domains = list(summary["arms"]["curriculum"])
    lines = [f"Held-out accuracy (%), mean ± std over seeds {summary['seeds']}; sft is shared by both arms.",
             "", "| domain | " + " | ".join(labels) + " | curriculum - ablation |", "|---|" + "---:|" * (len(labels) + 1)]
    for domain in domains:
        cells = []
        for label in labels:
            row = summary["arms"][label].get(domain)
            cells.append(f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}" if row else "-")
        cur, abl = summary["arms"]["curriculum"][domain], summary["arms"]["ablation"].get(domain)
        diff = [100 * (c - a) for c, a in zip(cur["values"], abl["values"])] if abl else []
        cells.append(f"{statistics.fmean(diff):+.1f} ({', '.join(f'{d:+.1f}' for d in diff)})" if diff else "-")
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(summary: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(summary["arms"]["curriculum"])
    labels = ["sft", *ARMS]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(1.3 * len(domains) + 2, 3.6))
    for k, label in enumerate(labels):
        rows = summary["arms"][label]
        xs = [i + (k - 1) * width for i in range(len(domains))]
        ax.bar(xs, [100 * rows.get(d, {"mean": 0})["mean"] for d in domains], width,
               yerr=[100 * rows.get(d, {"std": 0})["std"] for d in domains], label=label, capsize=3)
    ax.set_xticks(range(len(domains)), domains, rotation=20)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"curriculum vs no math RL, seeds {summary['seeds']}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def run_study(study_dir: Path | str, seeds: Sequence[int] = (0, 1, 2), preset: str = "tiny",
              overrides: Sequence[str] = (), progress: bool = True, log: Progress = print) -> dict[str, Any]:
    """Both arms for every seed, then the aggregate table and plot (``study.{json,md,png}``)."""
    if not seeds:
        raise ConfigError("study needs at least one seed", hint="--seeds 0,1,2")
    study_dir = Path(study_dir)
    per_seed = {seed: run_arms(study_dir, seed, preset, overrides, progress, log) for seed in seeds}
    summary = aggregate(per_seed)
    summary["per_seed"] = {str(s): t for s, t in per_seed.items()}
    write_json(study_dir / "study.json", summary)
    write_text(study_dir / "study.md", study_markdown(summary) + "\n")
    plot_study(summary, study_dir / "study.png")
    return summary


def read_study(study_dir: Path | str) -> dict[str, Any]:
    path = Path(study_dir) / "study.json"
    if not path.exists():
        raise ConfigError(f"{study_dir}: no study.json", hint="run: mathfirst-hpc study --dir DIR")
    return json.loads(path.read_text())
