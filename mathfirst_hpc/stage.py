"""A stage's process-local machinery, shared by colocated runs (``run.py``), the RL loop (``loop.py``) and the
Slurm jobs (``launch/phases.py``): run-dir setup, the stage context, building the learner and the colocated engine
(through ``registry.py``), checkpoints and metrics.

    ctx = make_context(paths, cfg)                 # tokenizer, manifest, stop check
    backend = build_backend(ctx, init_hf, total_steps)
    state = load_latest(ctx, backend)              # None: start fresh
    save_stage_checkpoint(ctx, backend, state, step, final=False)

Checkpoints: every rank calls the save; rank 0 finalises (``checkpoint.py``: meta.json last, then rename) and
records it in the manifest. A sharded backend (Megatron) writes one state file per rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import checkpoint as ckpt
from . import modelcard, sinks
from .atomic import append_jsonl, atomic_dir, read_jsonl, write_text
from .config import StageConfig, dump_yaml, load_resolved, load_stage_config, to_dict
from .errors import RunDirError
from .learner.base import LearnerBackend, PartialStep, TokenBatch
from .manifest import Manifest
from .models import build_model, load_tokenizer, train_tokenizer
from .paths import RunPaths
from .records import partial_for_rank
from .registry import IN_MEMORY_ENGINES, EngineOptions, WeightsSource, build_engine, build_learner
from .rollout.base import RolloutEngine

log = logging.getLogger("mathfirst_hpc")
PREVIOUS_STAGE = {"sft": None, "math_rl": "sft", "joint_rl": "math_rl"}
StopCheck = Callable[[], bool]


def never() -> bool:
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


def stage_start(paths: RunPaths, cfg: StageConfig, init_from: str | None) -> Path | None:
    """HF weights ``cfg``'s stage starts from, for colocated runs and the Slurm driver alike: ``--init-from``;
    else, with ``start_from: base``, none (``model.path`` or the preset's seeded init, see ``initial_weights``);
    else the previous stage's final checkpoint."""
    if cfg.start_from == "base" and init_from is None:
        return None
    return stage_init(paths, cfg.stage, init_from)


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


@dataclass
class StageContext:
    paths: RunPaths
    cfg: StageConfig
    tokenizer: Any
    manifest: Manifest
    should_stop: StopCheck = never
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


def make_context(paths: RunPaths, cfg: StageConfig, should_stop: StopCheck | None = never,
                 progress: bool = True) -> StageContext:
    """``should_stop=None``: stop on SIGTERM/SIGUSR1 or when the Slurm allocation's time left is below the
    measured checkpoint save time plus ``slurm.save_margin_s`` (every rank agrees)."""
    ctx = StageContext(paths, cfg, ensure_tokenizer(paths, cfg), Manifest(paths), should_stop or never, progress)
    if should_stop is None:
        from . import preemption
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
    barrier()
    backend.export_hf(folder)  # a collective for sharded backends
    if backend.rank == 0:
        ctx.tokenizer.save_pretrained(str(folder))
    barrier()
    return build_engine(cfg.rollout, ctx.tokenizer, WeightsSource(folder=folder), options), False


@contextlib.contextmanager
def engine_asleep(engine: RolloutEngine) -> Iterator[None]:
    """The learner's turn: a colocated vLLM engine frees its GPU memory meanwhile (the HF engine has none)."""
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

def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes in the default process group ((0, 1) without one)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_stage_checkpoint(ctx: StageContext, backend: LearnerBackend, state: dict[str, Any], step: int,
                          final: bool = False, meta: dict[str, Any] | None = None) -> Path:
    """Every rank calls this. Sharded backends (Megatron) write one state file per rank; rank 0 writes the
    tokenizer, finalises (meta.json last, rename), prunes and updates the manifest. meta.json gets ``state``'s
    scalar fields, or ``meta`` (JSON-safe) when given."""
    target = ctx.paths.checkpoint(ctx.stage, step)
    rank = backend.rank
    start = time.perf_counter()
    if rank == 0:
        shutil.rmtree(ckpt.staging_dir(target), ignore_errors=True)
    barrier()
    full_state = {"backend": backend.state_dict(), "rng": ckpt.capture_rng(), **state}
    if backend.sharded or rank == 0:
        ckpt.write_rank_state(target, full_state, rank=rank if backend.sharded else 0)
    if ctx.cfg.checkpoint.export_hf or final:
        backend.export_hf(ckpt.staging_dir(target) / "hf")  # a collective for sharded backends
    barrier()
    rel = str(target.relative_to(ctx.paths.root))
    if rank == 0:
        if (ckpt.staging_dir(target) / "hf").exists():
            ctx.tokenizer.save_pretrained(str(ckpt.staging_dir(target) / "hf"))
        fields = meta if meta is not None else {k: v for k, v in state.items()
                                                if isinstance(v, (int, float, str, bool))}
        ckpt.finalize_checkpoint(target, {"stage": ctx.stage, "step": step, "final": final,
                                          "world_size": backend.world_size, **fields})
        if final:
            ckpt.mark_final(ctx.paths.checkpoints(ctx.stage), target)
        ckpt.prune(ctx.paths.checkpoints(ctx.stage), ctx.cfg.checkpoint.keep_last)
        entry = {"latest_checkpoint": rel, "step": step, "iteration": state.get("iteration", 0)}
        if final:
            entry.update(status="final", final_checkpoint=rel)
        ctx.manifest.set_stage(ctx.stage, **entry)
        sinks.publish(ctx.paths, ctx.stage, ctx.cfg.logging)  # W&B gets the lines this checkpoint covers
        modelcard.write_card(ctx.paths, target)  # hf/README.md, not in meta.json: eval may rewrite it
    barrier()
    ctx.timings["last_save_s"] = time.perf_counter() - start
    return target


def load_latest(ctx: StageContext, backend: LearnerBackend) -> dict[str, Any] | None:
    """Load the latest complete checkpoint into ``backend`` and the RNGs; returns its state (None: none yet).
    A partial optimizer step in it is what this rank resumes (``records.partial_for_rank``)."""
    latest = ckpt.latest_checkpoint(ctx.paths.checkpoints(ctx.stage))
    if latest is None:
        _truncate_metrics(ctx, (0, 0))
        return None
    barrier()  # rank 0 may still be finalising a checkpoint another rank is about to look for
    state = ckpt.load_rank_state(latest, rank=backend.rank if backend.sharded else 0)
    backend.load_state_dict(state["backend"])
    ckpt.restore_rng(state["rng"])
    _truncate_metrics(ctx, (state["step"], state.get("iteration")))
    state["partial"] = partial_for_rank(state.get("partial"), backend.rank)
    log.info("resumed %s from %s", ctx.stage, latest)
    return state


def _truncate_metrics(ctx: StageContext, resumed: tuple[int, int | None]) -> None:
    """Drop this stage's metric lines that the resumed checkpoint (step, iteration) does not cover: the redone
    steps log them again, once. ``sinks.covered``: RL lines by iteration (one that keeps no group logs the step of
    the iteration before it), SFT lines by step."""
    rows = read_jsonl(ctx.paths.metrics)
    keep = [r for r in rows if r.get("stage") != ctx.stage or sinks.covered(r, resumed)]
    if len(keep) != len(rows):
        write_text(ctx.paths.metrics, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def log_metrics(ctx: StageContext, record: dict[str, Any]) -> None:
    if ctx.rank == 0:
        append_jsonl(ctx.paths.metrics, {"stage": ctx.stage, "time_unix": time.time(), **record})
        sinks.publish(ctx.paths, ctx.stage, ctx.cfg.logging)  # TensorBoard / W&B replay metrics.jsonl


# ---------------------------------------------------------------------------------------------------------------
# data and optimizer steps
# ---------------------------------------------------------------------------------------------------------------

def make_mixer(cfg: StageConfig) -> Any:
    """The stage's domain mixer (``data/mix.py``), at the start of its data; resume loads a saved cursor."""
    from .data.mix import DomainMixer
    return DomainMixer(cfg.data, seed=cfg.seed)


def train_step(ctx: StageContext, backend: LearnerBackend, micro: list[TokenBatch], loss_fn,
               partial: PartialStep | None = None) -> dict[str, float]:
    """backend.train_step, interruptible between micro-batches where the backend supports it."""
    interrupt = ctx.should_stop if backend.supports_partial_steps else None
    return backend.train_step(micro, loss_fn, interrupt=interrupt, partial=partial)


