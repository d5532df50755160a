"""The bodies of the jobs one RL iteration is split into on Slurm ("phases" mode), built from ``run.py``'s phase
functions so that colocated and phases runs share the loop's code and its results:

    rollout_task      one array element: load the policy of ``policy_step``, generate its prompt slice with
                      ``run.rollout_shard`` -> ``iter_K/shard_BBSSS.h5`` (a complete shard is kept)
    learner_iteration one learner job (nodes x tasks, torch.distributed): load the latest checkpoint, run the DAPO
                      mini-batches of ``iter_K/kept.h5`` with ``run.learner_update``, save a checkpoint with the HF
                      export the next rollout array loads, log the iteration's metrics
    sft_stage         stage 1 as one learner job (``run.run_stage``), stopping and saving on preemption

The driver (``driver.py``) plans generation batches, scores shards, applies dynamic sampling and writes
``iter_K/driver.json`` (data cursor before/after the iteration, policy step, rollout metrics) plus
``iter_K/kept.h5`` before it submits the learner. The learner checkpoint stores the same fields as a colocated
run's (``iteration``, ``mini_batch``, ``step``, ``iteration_start_step``, ``data_at_iteration_start``), so either
mode can resume the other's run dir.

Preemption: the learner polls the stop check (signals, time left; all ranks agree) at every micro-batch boundary;
it then writes an emergency checkpoint (the mini-batch, and the gradients accumulated so far in the interrupted
optimizer step) and leaves through ``preemption.exit_for_requeue``; the requeued job resumes at that micro-batch,
so no optimizer step or data item is repeated or skipped.
Every rank calls ``run.save_rl_checkpoint`` (rank 0 finalises; a sharded backend writes one file per rank).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RlStage, load_resolved
from ..manifest import Manifest
from ..paths import RunPaths
from ..learner.base import PartialStep
from ..registry import EngineOptions, WeightsSource, build_engine
from ..rollout.base import RolloutEngine
from ..run import (StageContext, build_backend, initial_weights, learner_update, load_latest, log_metrics,
                   make_context, rollout_shard, run_stage, save_rl_checkpoint)
from ..shards import read_shard
from . import preemption
from .distributed import detect

UPDATE_KEYS = ("loss", "clip_frac_low", "clip_frac_high", "clip_frac_dual", "entropy", "grad_norm", "lr",
               "train_tokens_per_s", "ratio_mean")


def stage_context(run_dir: str | Path, stage: str) -> StageContext:
    paths = RunPaths(run_dir)
    cfg = load_resolved(paths.stage_config(stage))
    return make_context(paths, cfg, progress=False)


def stage_init_hf(paths: RunPaths, stage: str) -> Path | None:
    """The HF weights the stage started from, as the driver recorded them in the manifest (None = fresh model)."""
    init = Manifest(paths).stage(stage).get("init_from")
    return Path(init) if init else None


# ---- rollout -----------------------------------------------------------------------------------------------------

def _policy_weights(ctx: StageContext, policy_step: int) -> WeightsSource:
    """The weights of ``policy_step``: its checkpoint's HF export, the stage's initial weights at step 0."""
    if policy_step > 0:
        return WeightsSource(folder=ctx.paths.hf_export(ctx.stage, policy_step))
    return initial_weights(ctx, stage_init_hf(ctx.paths, ctx.stage))  # the learner's start, same seed


def _engine(ctx: StageContext, policy_step: int) -> RolloutEngine:
    cfg = ctx.cfg
    return build_engine(cfg.rollout, ctx.tokenizer, _policy_weights(ctx, policy_step),
                        EngineOptions(dtype=cfg.model.dtype, seed=cfg.seed))


def rollout_task(run_dir: str, stage: str, iteration: int, gen_batch: int, shard_index: int,
                 policy_step: int) -> dict[str, Any]:
    """One rollout array element. Returns the shard path and where its time went."""
    start = time.perf_counter()
    ctx = stage_context(run_dir, stage)
    with ctx.timed("load_s"):
        engine = _engine(ctx, policy_step)
    with ctx.timed("rollout_s"):
        path = rollout_shard(ctx, engine, iteration, gen_batch, shard_index, policy_step)
    engine.close()
    timings = dict(ctx.timings)
    timings["task_s"] = time.perf_counter() - start
    return {"shard": str(path), "timings": timings}


# ---- learner -----------------------------------------------------------------------------------------------------

def read_plan(paths: RunPaths, stage: str, iteration: int) -> dict[str, Any]:
    return json.loads(paths.iteration_plan(stage, iteration).read_text())


def update_metrics(updates: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in UPDATE_KEYS:
        values = [u[key] for u in updates if key in u]
        if values:
            out[key] = float(np.mean(values))
    return out


def _partial_for_rank(partial: PartialStep | None, rank: int) -> PartialStep | None:
    """Rank 0 saved the partial gradients summed over ranks; the other ranks resume that step from zero."""
    if partial is None or rank == 0:
        return partial
    import torch

    return PartialStep(partial.micro_done, {n: torch.zeros_like(g) for n, g in partial.grads.items()},
                       dict(partial.metrics))


def learner_iteration(run_dir: str, stage: str, iteration: int) -> dict[str, Any]:
    """The DAPO update of one iteration, resumable at any micro-batch. Call inside ``init_distributed``."""
    start = time.perf_counter()
    paths = RunPaths(run_dir)
    cfg: RlStage = load_resolved(paths.stage_config(stage))  # type: ignore[assignment]
    # should_stop=None: SIGTERM/SIGUSR1 or too little allocation time left, agreed by every rank
    ctx = make_context(paths, cfg, should_stop=None, progress=False)
    ctx.rank = detect().rank  # type: ignore[attr-defined]  # log_metrics writes on rank 0 only
    with ctx.timed("load_s"):
        backend = build_backend(ctx, stage_init_hf(paths, stage), total_steps=cfg.steps * cfg.dapo.mini_batches)
        state = load_latest(ctx, backend) or {}
    if state.get("iteration", 0) > iteration:  # finished before a requeue: nothing to redo
        return {"iteration": iteration, "skipped": True}
    plan = read_plan(paths, stage, iteration)
    step = state.get("step", 0)
    with ctx.timed("shard_io_s"):
        kept = read_shard(paths.kept_batch(stage, iteration)) if plan["kept_groups"] else None
    # A signal that came while loading is acted on at the first micro-batch boundary (late, never lost).
    stopped = False

    def emergency(mini_batch: int, partial: PartialStep | None = None) -> None:
        nonlocal stopped
        save_rl_checkpoint(ctx, backend, iteration, mini_batch, step, plan["policy_step"],
                           plan["data_at_iteration_start"], partial=partial)
        stopped = True

    def after_step(done: int) -> bool:
        nonlocal step
        step += 1
        if ctx.rank == 0:  # type: ignore[attr-defined]
            print(f"[learner] {stage} iteration {iteration}: optimizer step {step} done", file=sys.stderr,
                  flush=True)
        if ctx.should_stop():
            emergency(done)
        return stopped

    with ctx.timed("train_s"):
        # After a requeue mid-iteration the metrics cover the mini-batches run since (learner_update reports them
        # only when it returns).
        partial = _partial_for_rank(state.get("partial"), ctx.rank)  # type: ignore[attr-defined]
        updates = learner_update(ctx, backend, kept, state.get("mini_batch", 0), after_step, partial=partial,
                                 on_interrupt=emergency) if kept is not None else []
    if stopped:
        preemption.exit_for_requeue()
    final = iteration + 1 == cfg.steps
    with ctx.timed("save_s"):
        save_rl_checkpoint(ctx, backend, iteration + 1, 0, step, step, plan["data_after"], final=final)
    log_metrics(ctx, {"iteration": iteration + 1, "step": step, **plan["metrics"], **update_metrics(updates)})
    timings = dict(ctx.timings)
    timings["task_s"] = time.perf_counter() - start
    return {"iteration": iteration, "step": step, "final": final, "timings": timings}


def sft_stage(run_dir: str, stage: str, init_from: str | None) -> str:
    """Stage 1 in one learner job; 'final', or leaves for requeue after saving when told to stop."""
    paths = RunPaths(run_dir)
    cfg = load_resolved(paths.stage_config(stage))
    # should_stop=None: run.py's stop check (signals, time left vs measured save time), agreed by every rank
    result = run_stage(paths, cfg, init_from, should_stop=None, progress=False)  # type: ignore[arg-type]
    if result != "final":
        preemption.exit_for_requeue()
    return result
