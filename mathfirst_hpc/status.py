"""What ``mathfirst-hpc status RUN_DIR`` shows: per stage its status, iteration, step, checkpoints and latest
metrics; the run's Slurm jobs with their state (through submitit's sacct/squeue watcher when Slurm is there).
Read-only: it reads the manifest, metrics.jsonl and the checkpoints folder.

Plain status runs the quick checkpoint check (``checkpoint.check_files``: sizes and about 1 MiB read per file)
on each stage's final and latest checkpoint: a final checkpoint that fails it is shown as ``damaged``, not
``final``. ``status --verify`` (``verify_run``) hashes every file of every checkpoint against its meta.json and
every shard the manifest records against its sha256; it reads the whole run dir, so it takes as long as reading
that many bytes. Files being rewritten while it runs (a live run's newest shard) can show up as bad.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import STAGES
from .atomic import read_jsonl
from .checkpoint import (FileProblem, check_files, checkpoint_dirs, final_marker_problem, final_name,
                         final_problems, recorded_files)
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
        _add_health(paths, stage, entry)
        stages[stage] = entry
    jobs = manifest.get("jobs", {})
    states = _slurm_states(list(jobs))
    return {"run_dir": str(paths.root), "stages": stages,
            "jobs": {j: {**info, "state": states.get(j, "unknown")} for j, info in jobs.items()},
            "shards": len(manifest.get("shards", {}))}


def _add_health(paths: RunPaths, stage: str, entry: dict[str, Any]) -> None:
    """Quick check of the stage's final and latest checkpoint; a damaged final makes the status ``damaged``."""
    stage_dir = paths.checkpoints(stage)
    final = final_problems(stage_dir)
    problems = list(final)
    latest = entry.get("latest_checkpoint")
    if latest and (paths.root / latest).is_dir() and (paths.root / latest).name != final_name(stage_dir):
        problems += check_files(paths.root / latest)
    if problems:
        entry["damaged_files"] = [p.describe(paths.root) for p in problems]
    if final and entry.get("status") == "final":
        entry["status"] = "damaged"


def format_status(info: dict[str, Any]) -> str:
    lines = [f"run dir: {info['run_dir']}", "",
             f"{'stage':<10} {'status':<9} {'iter':>5} {'step':>6} {'reward':>7} {'acc':>6} {'loss':>7}  latest checkpoint"]
    for stage, entry in info["stages"].items():
        m = entry.get("last_metrics", {})
        fmt = lambda key: f"{m[key]:.3f}" if isinstance(m.get(key), (int, float)) else "-"  # noqa: E731
        lines.append(f"{stage:<10} {entry.get('status', '-'):<9} {entry.get('iteration', 0):>5} "
                     f"{entry.get('step', 0):>6} {fmt('reward_mean'):>7} {fmt('accuracy'):>6} {fmt('loss'):>7}  "
                     f"{entry.get('latest_checkpoint') or '-'}")
    damaged = [(stage, f) for stage, entry in info["stages"].items() for f in entry.get("damaged_files", [])]
    if damaged:
        lines.append("")
        for stage, problem in damaged:
            lines.append(f"damaged ({stage}): {problem}")
        lines.append("a damaged final is not final: `run` redoes the stage from its newest healthy checkpoint; "
                     "`status --verify` hashes every file")
    lines.append("")
    lines.append(f"shards: {info['shards']}")
    if info["jobs"]:
        lines.append(f"{'job':<14} {'kind':<9} {'stage':<9} state")
        for job_id, job in info["jobs"].items():
            lines.append(f"{job_id:<14} {job.get('kind', '-'):<9} {job.get('stage', '-'):<9} {job['state']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# status --verify
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Verification:
    """Result of ``verify_run``: how many files were hashed and which ones are bad."""

    checkpoint_files: int = 0
    shard_files: int = 0
    problems: list[FileProblem] = field(default_factory=list)

    def as_dict(self, root: Path) -> dict[str, Any]:
        return {"checkpoint_files": self.checkpoint_files, "shard_files": self.shard_files,
                "bad": [{"path": str(_rel(p.path, root)), "reason": p.reason} for p in self.problems]}


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def _verify_checkpoints(paths: RunPaths, result: Verification) -> None:
    for stage in STAGES:
        stage_dir = paths.checkpoints(stage)
        for _step, ckpt in checkpoint_dirs(stage_dir):
            result.checkpoint_files += len(recorded_files(ckpt) or {None: ""})  # a bad meta.json counts as one
            result.problems += check_files(ckpt, full=True)
        marker = final_marker_problem(stage_dir)
        if marker is not None:
            result.problems.append(marker)


def _verify_shards(paths: RunPaths, manifest: dict[str, Any], result: Verification) -> None:
    from .shards import sha256_file
    for rel, entry in sorted(manifest.get("shards", {}).items()):
        path = paths.root / rel
        result.shard_files += 1
        want = entry.get("sha256") if isinstance(entry, dict) else None
        try:
            if not want:
                reason = "manifest.json records no sha256 for it"
            elif sha256_file(path) != want:
                reason = "sha256 differs from manifest.json (modified or truncated)"
            else:
                continue
        except FileNotFoundError:
            reason = "missing (recorded in manifest.json)"
        except OSError as exc:
            reason = f"unreadable ({exc.strerror or type(exc).__name__})"
        result.problems.append(FileProblem(path, reason))


def verify_run(run_dir: str | Path) -> Verification:
    """Hash every checkpoint file against its meta.json and every recorded shard against the manifest."""
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    result = Verification()
    _verify_checkpoints(paths, result)
    _verify_shards(paths, Manifest(paths).read(), result)
    return result


def format_verification(result: Verification, root: Path) -> str:
    """One ``bad: PATH: REASON`` line per bad file (paths relative to the run dir), then a summary line."""
    lines = [f"bad: {problem.describe(root)}" for problem in result.problems]
    verdict = f"{len(result.problems)} bad file(s)" if result.problems else "all match their checksums"
    lines.append(f"verified {result.checkpoint_files} checkpoint file(s) and {result.shard_files} shard(s): "
                 f"{verdict}")
    return "\n".join(lines)
