"""What ``mathfirst-hpc status RUN_DIR`` shows: per stage its status, iteration, step, checkpoints and latest
metrics; the run's Slurm jobs with their state (through submitit's sacct/squeue watcher when Slurm is there).
Read-only: it reads the manifest, metrics.jsonl and the checkpoints folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import STAGES
from .atomic import read_jsonl
from .errors import RunDirError
from .manifest import Manifest
from .paths import RunPaths


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Job states from Slurm (sacct), or 'unknown' where Slurm is not reachable."""
    if not job_ids:
        return {}
    try:
        from .launch.slurm_state import job_states
        return job_states(job_ids)
    except Exception:  # noqa: BLE001 - status must work without Slurm
        return {j: "unknown" for j in job_ids}


def collect_status(run_dir: str | Path) -> dict[str, Any]:
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    manifest = Manifest(paths).read()
    metrics = read_jsonl(paths.metrics)
    stages = {}
    for stage in STAGES:
        entry = dict(manifest["stages"].get(stage, {}))
        last = next((m for m in reversed(metrics) if m.get("stage") == stage), None)
        if last is not None:
            entry["last_metrics"] = {k: v for k, v in last.items()
                                     if k in ("reward_mean", "accuracy", "loss", "kept_group_fraction",
                                              "response_len_mean", "step", "iteration")}
        entry["configured"] = paths.stage_config(stage).exists()
        stages[stage] = entry
    jobs = manifest.get("jobs", {})
    states = _slurm_states(list(jobs))
    return {"run_dir": str(paths.root), "stages": stages,
            "jobs": {j: {**info, "state": states.get(j, "unknown")} for j, info in jobs.items()},
            "shards": len(manifest.get("shards", {}))}


def format_status(info: dict[str, Any]) -> str:
    lines = [f"run dir: {info['run_dir']}", "",
             f"{'stage':<10} {'status':<9} {'iter':>5} {'step':>6} {'reward':>7} {'acc':>6} {'loss':>7}  latest checkpoint"]
    for stage, entry in info["stages"].items():
        m = entry.get("last_metrics", {})
        fmt = lambda key: f"{m[key]:.3f}" if isinstance(m.get(key), (int, float)) else "-"  # noqa: E731
        lines.append(f"{stage:<10} {entry.get('status', '-'):<9} {entry.get('iteration', 0):>5} "
                     f"{entry.get('step', 0):>6} {fmt('reward_mean'):>7} {fmt('accuracy'):>6} {fmt('loss'):>7}  "
                     f"{entry.get('latest_checkpoint') or '-'}")
    lines.append("")
    lines.append(f"shards: {info['shards']}")
    if info["jobs"]:
        lines.append(f"{'job':<14} {'kind':<9} {'stage':<9} state")
        for job_id, job in info["jobs"].items():
            lines.append(f"{job_id:<14} {job.get('kind', '-'):<9} {job.get('stage', '-'):<9} {job['state']}")
    return "\n".join(lines)
