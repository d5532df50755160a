"""What ``mathfirst-hpc status RUN_DIR`` shows: per stage its status, iteration, step, checkpoints and latest
metrics; the run's Slurm jobs with their state (through submitit's sacct/squeue watcher when Slurm is there).
Read-only: it reads the manifest, metrics.jsonl and the checkpoints folder.

Plain status runs the quick checkpoint check (``checkpoint.check_files``: sizes and about 1 MiB read per file)
on each stage's final and latest checkpoint: a final checkpoint that fails it is shown as ``damaged``, not
``final``. ``status --verify`` (``verify_run``) hashes every file of every checkpoint against its meta.json and
every shard the manifest records against its sha256; it reads the whole run dir, so it takes as long as reading
that many bytes. Files being rewritten while it runs (a live run's newest shard) can show up as bad.

Live progress (``progress`` in each stage, from metrics.jsonl and the stage's resolved config): iteration (RL) or
step (SFT) out of the total, the latest reward and accuracy per domain, kept-group fraction, the fraction of
responses whose verifier failed (``error``) or found no answer (``unparseable``), seconds per iteration over the
last ``ETA_WINDOW`` lines and an ETA from it. ``jobs_by_state`` counts the Slurm jobs per state.
``status --watch`` (``watch``) redraws that on one screen every ``--interval`` seconds until Ctrl-C.
The ETA assumes the remaining iterations take as long as the recent ones (and ignores queue waits to come).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

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
        entry["progress"] = stage_progress(paths, stage, entry, [m for m in metrics if m.get("stage") == stage])
        _add_health(paths, stage, entry)
        stages[stage] = entry
    jobs = manifest.get("jobs", {})
    states = _slurm_states(list(jobs))
    jobs_info = {j: {**info, "state": states.get(j, "unknown")} for j, info in jobs.items()}
    return {"run_dir": str(paths.root), "stages": stages, "jobs": jobs_info,
            "jobs_by_state": dict(sorted(Counter(j["state"] for j in jobs_info.values()).items())),
            "shards": len(manifest.get("shards", {})), "time_unix": time.time()}


ETA_WINDOW = 5
"""Metric lines (iterations or SFT steps) whose spacing in time gives the recent seconds per iteration."""


def _stage_total(paths: RunPaths, stage: str) -> tuple[int | None, dict[str, Any]]:
    """The stage's total iterations/steps and its rollout settings, from its resolved config (None: none yet)."""
    from .config import load_resolved
    from .errors import MathfirstError
    if not paths.stage_config(stage).exists():
        return None, {}
    try:
        cfg = load_resolved(paths.stage_config(stage))
    except MathfirstError:
        return None, {}
    rollout = getattr(cfg, "rollout", None)
    if rollout is None:  # SFT
        return cfg.steps, {}
    return cfg.steps, {"responses_per_gen_batch": rollout.prompts_per_batch * rollout.n_per_prompt}


def stage_progress(paths: RunPaths, stage: str, entry: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a stage stands from its metric lines: done/total, per-domain reward and accuracy, kept and error
    fractions of the latest iteration, recent seconds per iteration and the ETA (None where unknown)."""
    total, rollout = _stage_total(paths, stage)
    last = rows[-1] if rows else {}
    done = int(last.get("iteration", last.get("step", 0))) if last else int(entry.get("iteration") or
                                                                            entry.get("step") or 0)
    if entry.get("status") == "final" and total is not None:
        done = total
    domains = sorted({k.split("/", 1)[1] for k in last if k.startswith(("reward_mean/", "accuracy/"))})
    responses = rollout.get("responses_per_gen_batch", 0) * int(last.get("gen_batches") or 0)
    fraction = (lambda key: last[key] / responses if responses and key in last else None)  # noqa: E731
    times = [float(r["time_unix"]) for r in rows[-(ETA_WINDOW + 1):] if "time_unix" in r]
    per_iter = (times[-1] - times[0]) / (len(times) - 1) if len(times) >= 2 else None
    remaining = max(total - done, 0) if total is not None else None
    return {"done": done, "total": total, "unit": "step" if stage == "sft" else "iteration",
            "per_domain": {d: {"reward": last.get(f"reward_mean/{d}"), "accuracy": last.get(f"accuracy/{d}")}
                           for d in domains},
            "reward": last.get("reward_mean"), "accuracy": last.get("accuracy"), "loss": last.get("loss"),
            "kept_group_fraction": last.get("kept_group_fraction"),
            "error_fraction": fraction("verifier_errors"), "unparseable_fraction": fraction("unparseable"),
            "seconds_per_iteration": per_iter,
            "eta_s": per_iter * remaining if per_iter is not None and remaining is not None else None,
            "last_update_unix": last.get("time_unix")}


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
# status --watch
# ---------------------------------------------------------------------------------------------------------------

CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _num(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def format_live(info: dict[str, Any], interval_s: float | None = None) -> str:
    """One screen: per stage progress, ETA, reward/accuracy, kept and error fractions; per-domain rewards of the
    running (else latest) RL stage; Slurm jobs by state."""
    stamp = time.strftime("%H:%M:%S", time.localtime(info.get("time_unix", time.time())))
    every = f", every {interval_s:g} s; Ctrl-C to quit" if interval_s else ""
    lines = [f"{info['run_dir']}  ({stamp}{every})", "",
             f"{'stage':<9} {'status':<9} {'progress':>15} {'s/iter':>7} {'ETA':>7} {'reward':>7} {'acc':>6} "
             f"{'kept':>5} {'err':>5} {'unpars':>6}"]
    for stage, entry in info["stages"].items():
        p = entry.get("progress", {})
        progress = f"{p.get('done', 0)}/{p.get('total') if p.get('total') is not None else '?'} {p.get('unit', '')}"
        eta = _duration(p.get("eta_s")) if entry.get("status") not in ("final", "pending") else "-"
        lines.append(f"{stage:<9} {entry.get('status', '-'):<9} {progress:>15} "
                     f"{_num(p.get('seconds_per_iteration'), '.1f'):>7} {eta:>7} {_num(p.get('reward')):>7} "
                     f"{_num(p.get('accuracy')):>6} {_num(p.get('kept_group_fraction'), '.2f'):>5} "
                     f"{_num(p.get('error_fraction'), '.2f'):>5} {_num(p.get('unparseable_fraction'), '.2f'):>6}")
    for stage, entry in info["stages"].items():
        domains = entry.get("progress", {}).get("per_domain", {})
        if domains:
            lines += ["", f"{stage}, latest iteration:  " + "   ".join(
                f"{d} {_num(v['reward'], '.2f')}/{_num(v['accuracy'], '.2f')}" for d, v in domains.items())
                + "   (reward/accuracy)"]
    by_state = info.get("jobs_by_state", {})
    lines += ["", "Slurm jobs: " + (", ".join(f"{state} {n}" for state, n in by_state.items()) or "none")]
    damaged = sum(len(entry.get("damaged_files", [])) for entry in info["stages"].values())
    if damaged:
        lines.append(f"{damaged} damaged checkpoint file(s): run `mathfirst-hpc status RUN_DIR` for the list")
    return "\n".join(lines)


def watch(run_dir: str | Path, interval_s: float = 5.0, count: int | None = None, out: TextIO | None = None) -> int:
    """Redraw ``format_live`` every ``interval_s`` until Ctrl-C (or ``count`` redraws, for tests). Returns the
    number of redraws."""
    out = out if out is not None else sys.stdout
    drawn = 0
    try:
        while count is None or drawn < count:
            if drawn:
                time.sleep(interval_s)
            screen = format_live(collect_status(run_dir), interval_s)
            out.write((CLEAR_SCREEN if out.isatty() else "") + screen + "\n")
            out.flush()
            drawn += 1
    except KeyboardInterrupt:
        out.write("\n")
    return drawn


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
