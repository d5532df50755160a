"""The curriculum: sft -> math_rl -> joint_rl, each stage resumable from the run dir alone.

``run_curriculum`` runs stages colocated in this process (``mathfirst-hpc run``). The RL iteration is split into
phase functions that the Slurm driver (``launch/``) also calls as separate jobs, so both modes share this code:

    plan_generation_batch   the driver draws prompts with the data mixer -> iter_K/gen_BB_problems.json
    rollout_shard           a rollout task generates G responses for its slice -> shard_BB_SSS.h5 (atomic)
    score_shard             rewards (+ overlong penalty) are written into the shard
    collect_iteration       the three above, over generation batches, with dynamic sampling
    learner_update          DAPO mini-batch steps on the kept groups

Exact resume: a checkpoint holds model, optimizer, scheduler, data cursor, RNG, optimizer step and the position in
the iteration (iteration, mini-batch). The data cursor at the start of the iteration is kept too, so an
interrupted iteration re-draws the same prompts; generation is seeded per (seed, stage, iteration, generation
batch, shard), so a shard regenerated after a crash is identical to the lost one, and a complete one is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from . import STAGES
from . import checkpoint as ckpt
from .atomic import append_jsonl, atomic_dir, read_jsonl, write_json, write_text
from .config import RlStage, SftStage, StageConfig, dump_yaml, load_resolved, load_stage_config, to_dict
from .data.base import Problem
from .errors import RunDirError
from .learner.base import MicroStepInterrupt, PartialStep, TokenBatch
from .learner.dapo import (DynamicSamplingState, global_counts, group_advantages, informative_groups,
                           make_dapo_loss, overlong_penalty)
from .learner.sft import collate_packed, collate_padded, make_sft_loss, tokenize_example
from .learner.base import LearnerBackend
from .manifest import Manifest
from .models import build_model, eos_ids, load_tokenizer, prompt_ids, train_tokenizer
from .paths import RunPaths
from .registry import IN_MEMORY_ENGINES, EngineOptions, WeightsSource, build_engine, build_learner
from .rollout.base import RolloutEngine, SamplingParams
from .shards import Ragged, ShardData, empty_rewards, read_shard, update_rewards, write_shard

log = logging.getLogger("mathfirst_hpc")
PREVIOUS_STAGE = {"sft": None, "math_rl": "sft", "joint_rl": "math_rl"}
StopCheck = Callable[[], bool]


def _never() -> bool:
    return False


# ---------------------------------------------------------------------------------------------------------------
# run dir setup: resolved configs, tokenizer, stage hand-off
# ---------------------------------------------------------------------------------------------------------------

def resolve_stage_config(paths: RunPaths, stage: str, preset: str = "tiny", overrides: list[str] | None = None,
                         config_path: str | None = None) -> StageConfig:
    """The stage's config: the one saved in the run dir (resume), else resolved now and saved."""
    saved = paths.stage_config(stage)
    if saved.exists():
        cfg = load_resolved(saved)
        if overrides or config_path:
            fresh = load_stage_config(stage, preset, overrides, config_path, check_files=False)
            if to_dict(fresh) != to_dict(cfg):
                raise RunDirError(f"{paths.root} already holds a different resolved config for stage {stage}",
                                  hint=f"resume without overrides, or use a new run dir (saved: {saved})")
        return cfg
    cfg = load_stage_config(stage, preset, overrides, config_path, check_files=True)
    paths.make()
    write_text(saved, dump_yaml(cfg))
    return cfg


def ensure_tokenizer(paths: RunPaths, cfg: StageConfig):
    """The run's tokenizer: trained once on the run's corpus (presets) or copied from the model folder."""
    if (paths.tokenizer_dir / "tokenizer.json").exists():
        return load_tokenizer(paths.tokenizer_dir)
    source = cfg.model.tokenizer_path or (cfg.model.path if cfg.model.preset is None else None)
    if source is not None:
        tokenizer = load_tokenizer(source)
    else:
        from .data.synthetic import corpus_texts
        tokenizer = train_tokenizer(corpus_texts(n=3000, seed=cfg.seed), vocab_size=cfg.model.vocab_size)
    with atomic_dir(paths.tokenizer_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return load_tokenizer(paths.tokenizer_dir)


def stage_init(paths: RunPaths, stage: str, init_from: str | None) -> Path | None:
    """HF weights a stage starts from: --init-from, else the previous stage's final checkpoint (None = base)."""
    if init_from is not None:
        path = Path(init_from)
        hf = path / "hf" if (path / "hf" / "config.json").exists() else path
        if not (hf / "config.json").exists():
            raise RunDirError(f"--init-from {init_from}: no HF weights (config.json) there or in its hf/ folder")
        return hf
    previous = PREVIOUS_STAGE[stage]
    if previous is None:
        return None
    final = ckpt.final_checkpoint(paths.checkpoints(previous))
    if final is None or not Manifest(paths).is_final(previous):
        raise RunDirError(f"stage {stage} needs a final {previous} checkpoint in {paths.root}",
                          hint=f"run stage {previous} first, or pass --init-from CKPT")
    return final / "hf"


def _seed_for(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


@dataclass
class StageContext:
    paths: RunPaths
    cfg: StageConfig
    tokenizer: Any
    manifest: Manifest
    should_stop: StopCheck = _never
    progress: bool = True
    rank: int = 0
    """Global rank of this process; only rank 0 logs metrics and shows progress."""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        return self.cfg.stage

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[part] = self.timings.get(part, 0.0) + time.perf_counter() - start


def make_context(paths: RunPaths, cfg: StageConfig, should_stop: StopCheck | None = _never,
                 progress: bool = True) -> StageContext:
    """``should_stop=None``: stop on SIGTERM/SIGUSR1 or when the Slurm allocation's time left is below the
    measured checkpoint save time plus ``slurm.save_margin_s`` (every rank agrees)."""
    ctx = StageContext(paths, cfg, ensure_tokenizer(paths, cfg), Manifest(paths), should_stop or _never, progress)
    if should_stop is None:
        from .launch import preemption
        ctx.should_stop = lambda: preemption.should_stop(ctx.timings.get("last_save_s", 0.0),
                                                         cfg.slurm.save_margin_s, collective=True)
    return ctx


def initial_weights(ctx: StageContext, init_hf: Path | None) -> WeightsSource:
    """Where the stage's learner starts: ``init_hf``, else the configured model folder, else a fresh seeded
    preset model (every rank builds the same one)."""
    model_cfg = ctx.cfg.model
    if init_hf is not None:
        return WeightsSource(folder=init_hf)
    if model_cfg.path is not None and model_cfg.preset is None:
        return WeightsSource(folder=Path(model_cfg.path))
    return WeightsSource(model=build_model(model_cfg, ctx.tokenizer, seed=ctx.cfg.seed))


def build_backend(ctx: StageContext, init_hf: Path | None, total_steps: int) -> LearnerBackend:
    """The learner backend chosen by ``parallel.backend`` (``registry.LEARNER_BACKENDS``)."""
    backend = build_learner(ctx.cfg, initial_weights(ctx, init_hf), total_steps)
    ctx.rank = backend.rank
    ctx.progress = ctx.progress and ctx.rank == 0
    return backend


def make_engine(ctx: StageContext, backend: LearnerBackend) -> tuple[RolloutEngine, bool]:
    """The colocated rollout engine chosen by ``rollout.backend`` (``registry.ROLLOUT_ENGINES``), and whether it
    generates with the learner's own model object (then no weight sync is needed). Otherwise it starts from an HF
    export of the learner's current weights and is synced in place before each iteration."""
    cfg = ctx.cfg
    options = EngineOptions(dtype=cfg.model.dtype, seed=cfg.seed, colocated=True)
    shared = backend.shared_model()
    if shared is not None and cfg.rollout.backend in IN_MEMORY_ENGINES:
        return build_engine(cfg.rollout, ctx.tokenizer, WeightsSource(model=shared), options), True
    folder = ctx.paths.engine_weights(ctx.stage)
    if backend.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
    _barrier()
    backend.export_hf(folder)  # a collective for sharded backends
    if backend.rank == 0:
        ctx.tokenizer.save_pretrained(str(folder))
    _barrier()
    return build_engine(cfg.rollout, ctx.tokenizer, WeightsSource(folder=folder), options), False


@contextlib.contextmanager
def _engine_asleep(engine: RolloutEngine) -> Iterator[None]:
    engine.sleep()
    try:
        yield
    finally:
        engine.wake_up()


def sync_weights(engine: RolloutEngine, backend: LearnerBackend, shares_weights: bool) -> float:
    """Push the learner's weights into a rollout engine that does not share them; returns seconds taken."""
    if shares_weights:
        return 0.0
    start = time.perf_counter()
    engine.update_weights(backend.hf_state_dict())
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------

def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_stage_checkpoint(ctx: StageContext, backend, state: dict[str, Any], step: int, final: bool = False) -> Path:
    """Every rank calls this. Sharded backends (Megatron) write one state file per rank; rank 0 writes the
    tokenizer, finalises (meta.json last, rename), prunes and updates the manifest."""
    target = ctx.paths.checkpoint(ctx.stage, step)
    rank = backend.rank
    start = time.perf_counter()
    if rank == 0:
        shutil.rmtree(ckpt.staging_dir(target), ignore_errors=True)
    _barrier()
    full_state = {"backend": backend.state_dict(), "rng": ckpt.capture_rng(), **state}
    if backend.sharded or rank == 0:
        ckpt.write_rank_state(target, full_state, rank=rank if backend.sharded else 0)
    if ctx.cfg.checkpoint.export_hf or final:
        backend.export_hf(ckpt.staging_dir(target) / "hf")  # a collective for sharded backends
    _barrier()
    rel = str(target.relative_to(ctx.paths.root))
    if rank == 0:
        if (ckpt.staging_dir(target) / "hf").exists():
            ctx.tokenizer.save_pretrained(str(ckpt.staging_dir(target) / "hf"))
        meta = {"stage": ctx.stage, "step": step, "final": final,
                "world_size": backend.world_size,
                **{k: v for k, v in state.items() if isinstance(v, (int, float, str, bool))}}
        ckpt.finalize_checkpoint(target, meta)
        if final:
            ckpt.mark_final(ctx.paths.checkpoints(ctx.stage), target)
        ckpt.prune(ctx.paths.checkpoints(ctx.stage), ctx.cfg.checkpoint.keep_last)
        fields = {"latest_checkpoint": rel, "step": step, "iteration": state.get("iteration", 0)}
        if final:
            fields.update(status="final", final_checkpoint=rel)
        ctx.manifest.set_stage(ctx.stage, **fields)
    _barrier()
    ctx.timings["last_save_s"] = time.perf_counter() - start
    return target


def load_latest(ctx: StageContext, backend) -> dict[str, Any] | None:
    latest = ckpt.latest_checkpoint(ctx.paths.checkpoints(ctx.stage))
    if latest is None:
        _truncate_metrics(ctx, step=0)
        return None
    _barrier()  # rank 0 may still be finalising a checkpoint another rank is about to look for
    state = ckpt.load_rank_state(latest, rank=backend.rank if backend.sharded else 0)
    backend.load_state_dict(state["backend"])
    ckpt.restore_rng(state["rng"])
    _truncate_metrics(ctx, step=state["step"])
    log.info("resumed %s from %s", ctx.stage, latest)
    return state


def _truncate_metrics(ctx: StageContext, step: int) -> None:
    """Drop this stage's metric lines past the resumed step: the redone steps log them again, once."""
    rows = read_jsonl(ctx.paths.metrics)
    keep = [r for r in rows if r.get("stage") != ctx.stage or r.get("step", 0) <= step]
    if len(keep) != len(rows):
        write_text(ctx.paths.metrics, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def log_metrics(ctx: StageContext, record: dict[str, Any]) -> None:
    if ctx.rank == 0:
        append_jsonl(ctx.paths.metrics, {"stage": ctx.stage, "time_unix": time.time(), **record})


# ---------------------------------------------------------------------------------------------------------------
# stage 1: SFT
# ---------------------------------------------------------------------------------------------------------------

def _make_mixer(cfg: StageConfig):
    from .data.mix import DomainMixer
    return DomainMixer(cfg.data, seed=cfg.seed)


def run_sft(ctx: StageContext, init_hf: Path | None = None) -> str:
    """Cold-start SFT. Returns 'final' or 'preempted'."""
    cfg: SftStage = ctx.cfg  # type: ignore[assignment]
    backend = build_backend(ctx, init_hf, total_steps=cfg.steps)
    mixer = _make_mixer(cfg)
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


def train_step(ctx: StageContext, backend: LearnerBackend, micro: list[TokenBatch], loss_fn,
               partial: PartialStep | None = None) -> dict[str, float]:
    """backend.train_step, interruptible between micro-batches where the backend supports it."""
    interrupt = ctx.should_stop if backend.supports_partial_steps else None
    return backend.train_step(micro, loss_fn, interrupt=interrupt, partial=partial)


def _sft_micro_batches(ctx: StageContext, examples: list, accumulation: int) -> list[TokenBatch]:
    cfg: SftStage = ctx.cfg  # type: ignore[assignment]
    pad = ctx.tokenizer.pad_token_id
    size = math.ceil(len(examples) / accumulation)
    chunks = [examples[i:i + size] for i in range(0, len(examples), size)]
    if cfg.sft.packing:
        return [collate_packed(c, pad, cfg.sft.max_seq_len) for c in chunks if c]
    return [collate_padded(c, pad) for c in chunks if c]


# ---------------------------------------------------------------------------------------------------------------
# stages 2 and 3: DAPO
# ---------------------------------------------------------------------------------------------------------------

def _plan_path(ctx: StageContext, iteration: int, gen_batch: int) -> Path:
    return ctx.paths.iteration_dir(ctx.stage, iteration) / f"gen_{gen_batch:02d}_problems.json"


def shard_path(ctx: StageContext, iteration: int, gen_batch: int, shard_index: int) -> Path:
    return ctx.paths.shard(ctx.stage, iteration, gen_batch * 1000 + shard_index)


def plan_generation_batch(ctx: StageContext, mixer, iteration: int, gen_batch: int) -> list[Problem]:
    """Draw this generation batch's prompts (advances the cursor) and record them for the rollout tasks."""
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    problems = mixer.next_batch(cfg.rollout.prompts_per_batch)
    path = _plan_path(ctx, iteration, gen_batch)
    if not path.exists():
        write_json(path, [p.__dict__ for p in problems])
    return problems


def read_plan(ctx: StageContext, iteration: int, gen_batch: int) -> list[Problem]:
    return [Problem(**row) for row in json.loads(_plan_path(ctx, iteration, gen_batch).read_text())]


def shard_slice(n_prompts: int, num_shards: int, shard_index: int) -> range:
    per = math.ceil(n_prompts / num_shards)
    return range(shard_index * per, min(n_prompts, (shard_index + 1) * per))


def rollout_shard(ctx: StageContext, engine, iteration: int, gen_batch: int, shard_index: int,
                  policy_step: int) -> Path:
    """Generate this shard's prompt slice and write it atomically; a complete shard of the same policy is kept."""
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    path = shard_path(ctx, iteration, gen_batch, shard_index)
    entry = ctx.manifest.shard_entry(path) if path.exists() else None
    if entry is not None and entry.get("policy_step") == policy_step:
        return path
    problems = read_plan(ctx, iteration, gen_batch)
    index = list(shard_slice(len(problems), cfg.rollout.num_shards, shard_index))
    chosen = [problems[i] for i in index]
    prompts = [prompt_ids(ctx.tokenizer, p.prompt, cfg.rollout.max_prompt_len) for p in chosen]
    seed = _seed_for(cfg.seed, ctx.stage, iteration, gen_batch, shard_index)
    sampling = SamplingParams(n=cfg.rollout.n_per_prompt, temperature=cfg.rollout.temperature,
                              top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_response_len, seed=seed)
    start = time.perf_counter()
    groups = engine.generate(prompts, sampling) if prompts else []
    ctx.timings["generate_s"] = ctx.timings.get("generate_s", 0.0) + time.perf_counter() - start
    data = _samples_to_shard(ctx, chosen, [gen_batch * cfg.rollout.prompts_per_batch + i for i in index], groups)
    sha = write_shard(path, data, stage=ctx.stage, iteration=iteration, gen_batch=gen_batch,
                      shard_index=shard_index, policy_step=policy_step, seed=seed, scored=False,
                      policy_checkpoint=str(ctx.manifest.stage(ctx.stage).get("latest_checkpoint") or "init"))
    ctx.manifest.record_shard(path, sha256=sha, samples=len(data), scored=False, policy_step=policy_step)
    return path


def _samples_to_shard(ctx: StageContext, problems: list[Problem], group_ids: list[int], groups) -> ShardData:
    rows = [(p, gid, s) for p, gid, samples in zip(problems, group_ids, groups) for s in samples]
    n_per = ctx.cfg.rollout.n_per_prompt  # type: ignore[attr-defined]
    data = ShardData(
        sample_id=np.array([gid * n_per + k % n_per for k, (_, gid, _) in enumerate(rows)], dtype=np.int64),
        group_id=np.array([gid for _, gid, _ in rows], dtype=np.int64),
        prompt_uid=[p.uid for p, _, _ in rows], domain=[p.domain for p, _, _ in rows],
        data_source=[p.data_source for p, _, _ in rows],
        prompt_tokens=Ragged.from_list([s.prompt_token_ids for _, _, s in rows], np.int32),
        response_tokens=Ragged.from_list([s.token_ids for _, _, s in rows], np.int32),
        logprobs=Ragged.from_list([s.logprobs for _, _, s in rows], np.float32),
        finish_reason=[s.finish_reason for _, _, s in rows], **empty_rewards(len(rows)))
    return data


def score_shard(ctx: StageContext, router, path: Path) -> ShardData:
    """Score every sample with the domain verifiers and write reward = score + overlong penalty into the shard.
    Returns the scored shard (read once: an already scored shard is just read back)."""
    entry = ctx.manifest.shard_entry(path) or {}
    data = read_shard(path, entry.get("sha256"))
    if entry.get("scored"):
        return data
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    problems = {p.uid: p for p in _plans_of(ctx, data)}
    eos = set(eos_ids(ctx.tokenizer))
    responses = [ctx.tokenizer.decode([t for t in data.response_tokens[i] if t not in eos])
                 for i in range(len(data))]
    results = router.score_batch([problems[u] for u in data.prompt_uid], responses)
    score = np.array([r.score for r in results], dtype=np.float32)
    penalty = np.zeros(len(data))
    if cfg.dapo.overlong_enable:
        penalty = overlong_penalty(data.response_length, cfg.rollout.max_response_len,
                                   cfg.dapo.overlong_buffer_len, cfg.dapo.overlong_penalty_factor)
    reward = (score + penalty).astype(np.float32)
    sha = update_rewards(path, data, score, reward, [r.verdict for r in results], [r.reason for r in results])
    ctx.manifest.update_shard(path, sha256=sha, scored=True)
    return data


def _plans_of(ctx: StageContext, data: ShardData) -> list[Problem]:
    attrs = data.attrs
    return read_plan(ctx, int(attrs["iteration"]), int(attrs["gen_batch"]))


@dataclass
class IterationBatch:
    """The groups the learner trains on, plus everything generated this iteration (for metrics)."""

    kept: ShardData | None
    generated: ShardData
    sampling: DynamicSamplingState


def collect_iteration(ctx: StageContext, engine, router, mixer, iteration: int, policy_step: int,
                      rollout_fn: Callable[..., list[Path]] | None = None) -> IterationBatch:
    """Generation batches until enough informative groups (dynamic sampling) or the limit; never raises on it."""
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    needed = cfg.rollout.prompts_per_batch
    max_batches = cfg.dapo.max_gen_batches if cfg.dapo.dynamic_sampling else 1
    sampling = DynamicSamplingState(groups_needed=needed, max_gen_batches=max_batches)
    kept_parts, generated = [], []
    while not sampling.full and not sampling.exhausted:
        gen_batch = sampling.gen_batches
        with ctx.timed("plan_s"):
            plan_generation_batch(ctx, mixer, iteration, gen_batch)
        with ctx.timed("rollout_s"):
            if rollout_fn is not None:  # phases mode: a Slurm array writes the shards
                paths = rollout_fn(iteration, gen_batch, policy_step)
            else:
                paths = [rollout_shard(ctx, engine, iteration, gen_batch, s, policy_step)
                         for s in range(cfg.rollout.num_shards)]
        with ctx.timed("reward_s"):  # includes reading each shard once (and rewriting it with rewards)
            scored = [score_shard(ctx, router, path) for path in paths]
        with ctx.timed("shard_io_s"):
            data = ShardData.concat(scored)
        generated.append(data)
        keep_groups = informative_groups(data.reward, data.group_id) if cfg.dapo.dynamic_sampling \
            else np.unique(data.group_id)
        keep_groups = keep_groups[:max(0, needed - sampling.groups_kept)]
        sampling.add(len(np.unique(data.group_id)), len(keep_groups))
        if len(keep_groups):
            kept_parts.append(data.select(np.flatnonzero(np.isin(data.group_id, keep_groups))))
    if not sampling.full:
        log.warning("dynamic sampling: %d of %d groups after %d generation batches (limit); training on those",
                    sampling.groups_kept, needed, sampling.gen_batches)
    kept = ShardData.concat(kept_parts) if kept_parts else None
    return IterationBatch(kept, ShardData.concat(generated), sampling)


def rl_token_batches(data: ShardData, advantages: np.ndarray, temperature: float, pad_id: int) -> TokenBatch:
    """Prompt + response rows, right padded; loss on response tokens; rollout log-probs aligned."""
    rows = len(data)
    lengths = [len(data.prompt_tokens[i]) + len(data.response_tokens[i]) for i in range(rows)]
    width = max(lengths)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    old = torch.zeros((rows, width), dtype=torch.float32)
    for i in range(rows):
        prompt, response = data.prompt_tokens[i], data.response_tokens[i]
        p, r = len(prompt), len(response)
        ids[i, :p] = torch.from_numpy(prompt.astype(np.int64))
        ids[i, p:p + r] = torch.from_numpy(response.astype(np.int64))
        attention[i, :p + r] = 1
        mask[i, p:p + r] = 1
        old[i, p:p + r] = torch.from_numpy(data.logprobs[i].astype(np.float32))
    return TokenBatch(input_ids=ids, attention_mask=attention, loss_mask=mask, old_logprobs=old,
                      advantages=torch.tensor(advantages, dtype=torch.float32), temperature=temperature)


def split_mini_batches(data: ShardData, mini_batches: int) -> list[np.ndarray]:
    """Row indices of each mini-batch, whole groups together, in group order."""
    groups = list(dict.fromkeys(data.group_id.tolist()))
    per = math.ceil(len(groups) / mini_batches)
    out = []
    for lo in range(0, len(groups), per):
        chosen = set(groups[lo:lo + per])
        out.append(np.array([i for i, g in enumerate(data.group_id) if g in chosen], dtype=np.int64))
    return out


def learner_update(ctx: StageContext, backend, kept: ShardData, start_mini_batch: int = 0,
                   on_step: Callable[[int], bool] | None = None, *, partial: PartialStep | None = None,
                   on_interrupt: Callable[[int, PartialStep], None] | None = None) -> list[dict[str, float]]:
    """DAPO optimizer steps over the kept groups. ``on_step(done)`` after each step may return True to stop.
    With ``on_interrupt``, a stop request between micro-batches calls ``on_interrupt(mini_batch, partial)``
    (the caller saves an emergency checkpoint) and returns; ``partial`` resumes that mini-batch."""
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    advantages = group_advantages(kept.reward, kept.group_id, cfg.dapo.adv_eps)
    dp_rank, dp_size = backend.dp_rank, backend.dp_size
    results = []
    minis = split_mini_batches(kept, cfg.dapo.mini_batches)
    for m in range(start_mini_batch, len(minis)):
        rows = minis[m][dp_rank::dp_size]  # this DP rank's share of the mini-batch
        micro = [rl_token_batches(kept.select(rows[lo:lo + cfg.dapo.micro_batch_size]),
                                  advantages[rows[lo:lo + cfg.dapo.micro_batch_size]], cfg.rollout.temperature,
                                  ctx.tokenizer.pad_token_id)
                 for lo in range(0, len(rows), cfg.dapo.micro_batch_size)]
        tokens, seqs = global_counts(micro, group=backend.dp_group)
        start = time.perf_counter()
        loss_fn = make_dapo_loss(cfg.dapo, tokens, seqs)
        if on_interrupt is None:
            metrics = backend.train_step(micro, loss_fn)
        else:
            try:
                metrics = train_step(ctx, backend, micro, loss_fn, partial if m == start_mini_batch else None)
            except MicroStepInterrupt as exc:
                on_interrupt(m, exc.partial)
                break
        metrics["train_tokens_per_s"] = sum(int(b.attention_mask.sum()) for b in micro) * dp_size / (
            time.perf_counter() - start)
        results.append(metrics)
        if on_step is not None and on_step(m + 1):
            break
    return results


def iteration_metrics(batch: IterationBatch, updates: list[dict[str, float]], max_len: int,
                      timings: dict[str, float]) -> dict[str, Any]:
    gen = batch.generated
    record: dict[str, Any] = {}
    for domain in sorted(set(gen.domain)):
        index = [i for i, d in enumerate(gen.domain) if d == domain]
        record[f"reward_mean/{domain}"] = float(np.mean(gen.reward[index]))
        record[f"accuracy/{domain}"] = float(np.mean([gen.verdict[i] == "correct" for i in index]))
    lengths = gen.response_length
    verdicts = np.array(gen.verdict)
    record.update(
        reward_mean=float(np.mean(gen.reward)), accuracy=float(np.mean(verdicts == "correct")),
        verifier_errors=int(np.sum(verdicts == "error")), unparseable=int(np.sum(verdicts == "unparseable")),
        kept_group_fraction=batch.sampling.kept_fraction, kept_groups=batch.sampling.groups_kept,
        gen_batches=batch.sampling.gen_batches, response_len_mean=float(lengths.mean()),
        response_len_max=int(lengths.max()), overlong_frac=float(np.mean(lengths >= max_len)),
        rollout_tokens_per_s=float(lengths.sum() / max(timings.get("generate_s", 0.0), 1e-9)))
    for key in ("loss", "clip_frac_low", "clip_frac_high", "clip_frac_dual", "entropy", "grad_norm", "lr",
                "train_tokens_per_s", "ratio_mean"):
        values = [u[key] for u in updates if key in u]
        if values:
            record[key] = float(np.mean(values))
    return record


@contextlib.contextmanager
def reward_router(ctx: StageContext) -> Iterator[Any]:
    """The stage's reward router; starts a local sandbox server when code is in the mix and none is given."""
    from .rewards import RewardRouter
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    reward_cfg = cfg.reward
    if "code" in cfg.data.mix and reward_cfg.sandbox.url is None:
        from .sandbox.server import start_local_server
        with start_local_server(workers=reward_cfg.sandbox.workers,
                                isolation=reward_cfg.sandbox.isolation) as (url, _stop):
            import dataclasses
            sandbox = dataclasses.replace(reward_cfg.sandbox, url=url)
            yield RewardRouter(dataclasses.replace(reward_cfg, sandbox=sandbox))
        return
    yield RewardRouter(reward_cfg)


def save_rl_checkpoint(ctx: StageContext, backend, iteration: int, mini_batch: int, step: int,
                       iteration_start_step: int, data_at_iteration_start: dict[str, Any],
                       partial: PartialStep | None = None, final: bool = False) -> Path:
    """An RL checkpoint: where in the iteration we are (next mini-batch, optional half-done step), and what is
    needed to redraw the iteration's prompts and reuse its shards (data cursor and policy step at its start)."""
    state = {"iteration": iteration, "mini_batch": mini_batch, "step": step,
             "iteration_start_step": iteration_start_step, "data_at_iteration_start": data_at_iteration_start}
    if partial is not None:
        state["partial"] = partial
    return save_stage_checkpoint(ctx, backend, state, step, final=final)


def run_rl(ctx: StageContext, init_hf: Path | None) -> str:
    """math_rl / joint_rl, colocated. Returns 'final' or 'preempted'."""
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    backend = build_backend(ctx, init_hf, total_steps=cfg.steps * cfg.dapo.mini_batches)
    engine, shares_weights = make_engine(ctx, backend)
    mixer = _make_mixer(cfg)
    state = load_latest(ctx, backend) or {}
    iteration, step = state.get("iteration", 0), state.get("step", 0)
    next_mini, partial = state.get("mini_batch", 0), state.get("partial")
    if "data_at_iteration_start" in state:
        mixer.load_state_dict(state["data_at_iteration_start"])
    iteration_start_step = state.get("iteration_start_step", step)
    ctx.manifest.set_stage(ctx.stage, status="running")
    bar = tqdm(total=cfg.steps, initial=iteration, desc=ctx.stage, disable=not ctx.progress, unit="iter")
    with reward_router(ctx) as router:
        while iteration < cfg.steps:
            data_start = mixer.state_dict()
            last_save_s = ctx.timings.get("last_save_s", 0.0)
            ctx.timings.clear()
            ctx.timings["last_save_s"] = last_save_s
            ctx.timings["weight_sync_s"] = sync_weights(engine, backend, shares_weights)
            batch = collect_iteration(ctx, engine, router, mixer, iteration, iteration_start_step)
            stopped = {"flag": False}

            def after_step(done: int) -> bool:
                nonlocal step
                step += 1
                if ctx.should_stop():
                    save_rl_checkpoint(ctx, backend, iteration, done, step, iteration_start_step, data_start)
                    stopped["flag"] = True
                return stopped["flag"]

            def interrupted(mini_batch: int, part: PartialStep) -> None:
                save_rl_checkpoint(ctx, backend, iteration, mini_batch, step, iteration_start_step, data_start,
                                   partial=part)
                stopped["flag"] = True

            with _engine_asleep(engine):  # on a GPU, vLLM frees its memory for the learner step
                updates = learner_update(ctx, backend, batch.kept, next_mini, after_step, partial=partial,
                                         on_interrupt=interrupted) if batch.kept else []
            partial = None
            if stopped["flag"]:
                return "preempted"
            next_mini = 0
            iteration += 1
            iteration_start_step = step
            record = iteration_metrics(batch, updates, cfg.rollout.max_response_len, ctx.timings)
            log_metrics(ctx, {"iteration": iteration, "step": step, **record})
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:.2f}", kept=f"{record['kept_group_fraction']:.2f}")
            final = iteration == cfg.steps
            stop_now = not final and ctx.should_stop()
            if final or iteration % cfg.checkpoint.every_steps == 0 or stop_now:
                save_rl_checkpoint(ctx, backend, iteration, 0, step, step, mixer.state_dict(), final=final)
            if stop_now:
                return "preempted"
    bar.close()
    if not ctx.manifest.is_final(ctx.stage):
        save_rl_checkpoint(ctx, backend, iteration, 0, step, step, mixer.state_dict(), final=True)
    return "final"


# ---------------------------------------------------------------------------------------------------------------
# the curriculum
# ---------------------------------------------------------------------------------------------------------------

def run_stage(paths: RunPaths, cfg: StageConfig, init_from: str | None = None,
              should_stop: StopCheck | None = _never,
              progress: bool = True) -> str:
    manifest = Manifest(paths)
    if manifest.is_final(cfg.stage):
        log.info("stage %s is already final in %s", cfg.stage, paths.root)
        return "final"
    init_hf = stage_init(paths, cfg.stage, init_from)
    manifest.set_stage(cfg.stage, init_from=str(init_hf) if init_hf else None)
    ctx = make_context(paths, cfg, should_stop, progress)
    return run_sft(ctx, init_hf) if cfg.stage == "sft" else run_rl(ctx, init_hf)


def run_curriculum(run_dir: str | Path, stages: list[str], preset: str = "tiny", overrides: list[str] | None = None,
                   init_from: str | None = None, should_stop: StopCheck | None = _never,
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
