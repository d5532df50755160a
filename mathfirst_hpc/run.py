"""The curriculum: sft -> math_rl -> joint_rl, each stage resumable from the run dir alone.

``run_curriculum`` runs stages colocated in this process (``mathfirst-hpc run``); ``submit`` runs the same
stages as Slurm job graphs (``launch/``). Which code does what:

    stage.py    run-dir setup, the stage context, building the learner and engine (``registry.py``), checkpoints
    loop.py     the RL loop, written once: plan -> rollout -> score -> dynamic sampling -> update -> checkpoint,
                with in-process runners here and Slurm runners in ``launch/phases.py``
    run.py      this file: the stage graph, stage 1 (SFT), and the colocated RL stage (both runners in-process)

Exact resume: a checkpoint holds model, optimizer, scheduler, data cursor, RNG, optimizer step and the position in
the stage (``records.RlState`` for RL: iteration, mini-batch, half-done optimizer step); see ``loop.py``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

from . import STAGES
from .config import RlStage, SftStage, StageConfig
from .learner.base import MicroStepInterrupt, TokenBatch
from .learner.dapo import global_counts
from .learner.sft import collate_packed, collate_padded, make_sft_loss, tokenize_example
from .loop import InProcessLearner, InProcessRollouts, IterationBatch, reward_router, run_rl_loop
from .loop import collect_iteration as _collect_iteration
from .manifest import Manifest
from .paths import RunPaths
from .rollout.base import RolloutEngine
from .stage import (PREVIOUS_STAGE, StageContext, StopCheck, build_backend, ensure_tokenizer, load_latest,
                    log_metrics, make_context, make_engine, make_mixer, never, resolve_stage_config,
                    save_stage_checkpoint, stage_init, stage_start, train_step)

log = logging.getLogger("mathfirst_hpc")
__all__ = ["PREVIOUS_STAGE", "StageContext", "collect_iteration", "ensure_tokenizer", "make_context",
           "overrides_for", "parse_stage_list", "resolve_stage_config", "run_curriculum", "run_rl", "run_sft",
           "run_stage", "stage_init"]


# ---------------------------------------------------------------------------------------------------------------
# stage 1: SFT
# ---------------------------------------------------------------------------------------------------------------

def run_sft(ctx: StageContext, init_hf: Path | None = None) -> str:
    """Cold-start SFT. Returns 'final' or 'preempted'."""
    cfg: SftStage = ctx.cfg  # type: ignore[assignment]
    backend = build_backend(ctx, init_hf, total_steps=cfg.steps)
    mixer = make_mixer(cfg)
    state = load_latest(ctx, backend)
    step, partial = 0, None
    if state is not None:
        mixer.load_state_dict(state["data"])
        step, partial = state["step"], state.get("partial")
    ctx.manifest.set_stage(ctx.stage, status="running")
    accumulation = cfg.sft.batch_size // cfg.sft.micro_batch_size
    bar = tqdm(total=cfg.steps, initial=step, desc="sft", disable=not ctx.progress, unit="step")
    while step < cfg.steps:
        if ctx.should_stop():
            save_stage_checkpoint(ctx, backend, {"data": mixer.state_dict(), "step": step}, step)
            return "preempted"
        data_before = mixer.state_dict()
        problems = mixer.next_batch(cfg.sft.batch_size)
        examples = [tokenize_example(ctx.tokenizer, p, cfg.sft.max_seq_len) for p in problems if p.solution]
        micro = _sft_micro_batches(ctx, examples, accumulation)
        start = time.perf_counter()
        tokens, _ = global_counts(micro, group=backend.dp_group)
        try:
            metrics = train_step(ctx, backend, micro, make_sft_loss(tokens), partial)
        except MicroStepInterrupt as exc:  # emergency checkpoint inside the step; the batch is redrawn on resume
            save_stage_checkpoint(ctx, backend, {"data": data_before, "step": step, "partial": exc.partial}, step)
            return "preempted"
        partial = None
        step += 1
        elapsed = time.perf_counter() - start
        log_metrics(ctx, {"step": step, "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                          "lr": metrics["lr"], "entropy": metrics.get("entropy"),
                          "train_tokens_per_s": sum(int(m.attention_mask.sum()) if m.attention_mask.dim() == 2
                                                    else int((m.position_ids >= 0).sum()) for m in micro) / elapsed})
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        final = step == cfg.steps
        if final or step % cfg.checkpoint.every_steps == 0:
            save_stage_checkpoint(ctx, backend, {"data": mixer.state_dict(), "step": step}, step, final=final)
    bar.close()
    if not ctx.manifest.is_final(ctx.stage):  # resumed exactly at the end
        save_stage_checkpoint(ctx, backend, {"data": mixer.state_dict(), "step": step}, step, final=True)
    return "final"


def _sft_micro_batches(ctx: StageContext, examples: list, accumulation: int) -> list[TokenBatch]:
    cfg: SftStage = ctx.cfg  # type: ignore[assignment]
    pad = ctx.tokenizer.pad_token_id
    size = math.ceil(len(examples) / accumulation)
    chunks = [examples[i:i + size] for i in range(0, len(examples), size)]
    if cfg.sft.packing:
        return [collate_packed(c, pad, cfg.sft.max_seq_len) for c in chunks if c]
    return [collate_padded(c, pad) for c in chunks if c]


# ---------------------------------------------------------------------------------------------------------------
# stages 2 and 3: DAPO, colocated
# ---------------------------------------------------------------------------------------------------------------

def run_rl(ctx: StageContext, init_hf: Path | None) -> str:
    """math_rl / joint_rl in this process: the RL loop with both runners in-process. 'final' or 'preempted'."""
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    backend = build_backend(ctx, init_hf, total_steps=cfg.steps * cfg.dapo.mini_batches)
    engine, shares_weights = make_engine(ctx, backend)
    learner = InProcessLearner(ctx, backend)  # resumes from the latest checkpoint
    try:
        with reward_router(ctx) as router:  # with several ranks each scores its own shards (InProcessRollouts)
            rollouts = InProcessRollouts(ctx, engine, backend, shares_weights, router)
            return run_rl_loop(ctx, rollouts, learner, router)
    finally:
        engine.close()
        learner.close()


def collect_iteration(ctx: StageContext, engine: RolloutEngine, router, mixer, iteration: int,
                      policy_step: int) -> IterationBatch:
    """``loop.collect_iteration`` with ``engine`` generating in this process (and no weight sync)."""
    return _collect_iteration(ctx, InProcessRollouts(ctx, engine), router, mixer, iteration, policy_step)


# ---------------------------------------------------------------------------------------------------------------
# the curriculum
# ---------------------------------------------------------------------------------------------------------------

def run_stage(paths: RunPaths, cfg: StageConfig, init_from: str | None = None,
              should_stop: StopCheck | None = never,
              progress: bool = True) -> str:
    manifest = Manifest(paths)
    if manifest.is_final(cfg.stage):
        log.info("stage %s is already final in %s", cfg.stage, paths.root)
        return "final"
    init_hf = stage_start(paths, cfg, init_from)  # None: model.path or the preset's seeded init
    manifest.set_stage(cfg.stage, init_from=str(init_hf) if init_hf else None)
    ctx = make_context(paths, cfg, should_stop, progress)
    return run_sft(ctx, init_hf) if cfg.stage == "sft" else run_rl(ctx, init_hf)


def run_curriculum(run_dir: str | Path, stages: list[str], preset: str = "tiny", overrides: list[str] | None = None,
                   init_from: str | None = None, should_stop: StopCheck | None = never,
                   progress: bool = True) -> dict:
    """Run ``stages`` in order in this process; stage N+1 starts from stage N's final checkpoint."""
    paths = RunPaths(run_dir).make()
    cfgs = {stage: resolve_stage_config(paths, stage, preset, overrides_for(stage, overrides or []))
            for stage in stages}
    results = {}
    for i, stage in enumerate(stages):
        results[stage] = run_stage(paths, cfgs[stage], init_from if i == 0 else None, should_stop, progress)
        if results[stage] != "final":
            break
    return results


def overrides_for(stage: str, overrides: list[str]) -> list[str]:
    """The overrides that apply to ``stage``: ``math_rl:key=v`` only to that stage; a plain ``key=v`` to every
    stage whose config has the top-level key (``sft.batch_size`` skips the RL stages). A key that no stage
    accepts still reaches every stage, so that it fails with "unknown key"."""
    import dataclasses
    from .config import STAGE_CLASSES, canonical_stage
    out = []
    for text in overrides:
        head, sep, rest = text.partition(":")
        if sep and "=" not in head:
            if canonical_stage(head) == stage:
                out.append(rest)
            continue
        top = text.split("=", 1)[0].split(".")[0].strip()
        if any(top in {f.name for f in dataclasses.fields(c)} for c in STAGE_CLASSES.values()):
            if top in {f.name for f in dataclasses.fields(STAGE_CLASSES[stage])}:
                out.append(text)
        else:
            out.append(text)
    return out


def parse_stage_list(text: str) -> list[str]:
    from .config import canonical_stage
    stages = [canonical_stage(part) for part in text.split(",") if part.strip()]
    return sorted(set(stages), key=STAGES.index)
