"""Phases mode: the RL loop's two runners as Slurm jobs, and the bodies of those jobs.

The stage driver (``driver.py``) runs the one RL loop, ``loop.run_rl_loop``, with:

    SlurmRollouts   rollout(iteration, gen_batch, policy_step): one job array, a RolloutTask per missing shard
    SlurmLearner    update(iteration, record): one LearnerJob (nodes x tasks, torch.distributed) per iteration;
                    position() reads the latest checkpoint's meta.json (no weights in the 1-CPU driver)

The jobs (submitit ``Checkpointable``, see ``jobbase.py``) and what they run:

    RolloutTask   rollout_task: load the policy of ``policy_step`` (registry), generate its prompt slice with
                  ``loop.rollout_shard`` -> ``iter_K/shard_BBSSS.h5`` (a complete shard is kept), then score it
                  there (``loop.score_shard``; the sandbox and judge services of ``services.py`` when the stage
                  has them): scoring runs where the task's CPUs are, never in the 1-CPU driver, whose router
                  (:class:`ScoredByTasks`) refuses to score
    LearnerJob    learner_iteration: ``loop.InProcessLearner`` - the same resume and update code as a colocated
                  run - trains the iteration's kept groups, then saves a checkpoint with the HF export the next
                  rollout array loads
    StageJob      whole_stage: a whole stage as one job of nodes x tasks (``run.run_stage``, both runners
                  in-process): stage 1 in phases mode, every stage in one-allocation mode (``submit --mode
                  allocation``), where the ranks share the rollout shards (``loop.InProcessRollouts``)

Preemption: the learner polls the stop check (signals, time left; all ranks agree) at every micro-batch boundary;
it then writes an emergency checkpoint and leaves through ``preemption.exit_for_requeue``; the requeued job resumes
at that micro-batch, so no optimizer step or data item is repeated or skipped.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, ContextManager

from .jobbase import DistributedJob, MathfirstJob, gc_paused, run_dir_of

with gc_paused():  # torch and transformers load here: a rollout task or learner job starts ~20 % faster
    from .. import preemption
    from ..atomic import append_jsonl
    from ..config import RlStage, load_resolved
    from ..errors import RunDirError
    from ..loop import InProcessLearner, latest_position, rollout_shard, score_shard, shard_is_complete
    from ..manifest import Manifest
    from ..paths import RunPaths
    from ..records import DriverRecord, LearnerResult, RlState, RolloutResult
    from ..registry import EngineOptions, WeightsSource, build_engine
    from ..rollout.base import RolloutEngine
    from ..stage import (StageContext, barrier, build_backend, ensure_tokenizer, initial_weights, make_context,
                         rank_and_world)
    from .launcher import Launcher, Request

log = logging.getLogger("mathfirst_hpc.launch")


def stage_context(run_dir: str | Path, stage: str, should_stop: Any = None) -> StageContext:
    """``should_stop=None``: SIGTERM/SIGUSR1 or too little allocation time left, agreed by every rank."""
    paths = RunPaths(run_dir)
    cfg = load_resolved(paths.stage_config(stage))
    return make_context(paths, cfg, should_stop=should_stop, progress=False)


def stage_init_hf(paths: RunPaths, stage: str) -> Path | None:
    """The HF weights the stage started from, as the driver recorded them in the manifest (None = fresh model)."""
    init = Manifest(paths).stage(stage).get("init_from")
    return Path(init) if init else None


# ---- the runners (in the driver) ---------------------------------------------------------------------------------

def _scored(ctx: StageContext, path: Path, policy_step: int) -> bool:
    """Complete, of this policy, and scored: nothing left for a task (an unscored one gets a task that scores it)."""
    if not shard_is_complete(ctx, path, policy_step):
        return False
    entry = ctx.manifest.shard_entry(path)
    return entry is not None and entry.scored


class ScoredByTasks:
    """The driver's reward router: the rollout tasks score their shards, so the loop only reads them back. A
    shard that reaches the driver unscored is a bug (or a shard of an older version): say so, never score here."""

    def score_batch(self, problems: Any, responses: Any) -> list:
        raise RunDirError(f"a rollout shard reached the driver unscored ({len(responses)} samples): in phases mode "
                          "each rollout task scores its own shard", hint="delete the shard; resume regenerates it")


class SlurmRollouts:
    """Each generation batch is one job array of the shards not complete and scored yet (a restarted driver keeps
    the rest). A task whose reward service was unreachable leaves its shard unscored: the array is rerun for those
    shards (after ``services.ensure()`` restarted the service), at most ``service_retries`` times, with a message."""

    def __init__(self, ctx: StageContext, launcher: Launcher, services: Any = None, service_retries: int = 3) -> None:
        self.ctx, self.launcher, self.services, self.service_retries = ctx, launcher, services, service_retries
        self._timings: dict[str, float] = {}

    def rollout(self, iteration: int, gen_batch: int, policy_step: int) -> list[Path]:
        ctx = self.ctx
        shards = [ctx.paths.gen_shard(ctx.stage, iteration, gen_batch, s)
                  for s in range(ctx.cfg.rollout.num_shards)]  # type: ignore[attr-defined]
        wall_start = time.perf_counter()
        results: list[RolloutResult] = []
        for attempt in range(self.service_retries + 1):
            todo = [s for s, path in enumerate(shards) if not _scored(ctx, path, policy_step)]
            if not todo:
                break
            if attempt > 0:
                message = (f"{ctx.stage} iteration {iteration}: {len(todo)} shard(s) unscored, a reward service was "
                           f"unreachable; restarting services and rescoring (retry {attempt} of "
                           f"{self.service_retries})")
                log.warning(message)
                print(f"[driver] {message}", file=sys.stderr, flush=True)
            if self.services is not None:
                self.services.ensure()
            results += self.launcher.run("rollout", [self._request(iteration, gen_batch, policy_step, s, attempt)
                                                     for s in todo])
        else:
            if any(not _scored(ctx, path, policy_step) for path in shards):
                raise RunDirError(f"{ctx.stage} iteration {iteration}: shards still unscored after "
                                  f"{self.service_retries} retries (reward service unreachable)",
                                  hint="see the rollout tasks' logs; fix the service, then mathfirst-hpc resume")
        for result in results:
            for part, seconds in result.timings.items():
                self._add(part, seconds)  # summed over tasks
        for part in ("task_s", "generate_s", "load_s", "reward_s"):  # the slowest task sets the array's time
            self._add(f"max_{part}", max((r.timings.get(part, 0.0) for r in results), default=0.0))
        self._add("arrays", 1.0 if results else 0.0)
        self._add("rollout_wall_s", time.perf_counter() - wall_start)
        return shards

    def _request(self, iteration: int, gen_batch: int, policy_step: int, shard: int, attempt: int) -> Request:
        ctx = self.ctx
        key = {"kind": "rollout", "stage": ctx.stage, "iteration": iteration, "gen_batch": gen_batch,
               "shard": shard, "policy_step": policy_step}
        if attempt:
            key["rescore"] = attempt
        return Request(key, RolloutTask(str(ctx.paths.root), ctx.stage, iteration, gen_batch, policy_step, shard))

    def _add(self, part: str, seconds: float) -> None:
        self._timings[part] = self._timings.get(part, 0.0) + seconds

    def learner_turn(self) -> ContextManager[None]:
        return contextlib.nullcontext()  # the rollout tasks have ended: nothing to free

    def take_timings(self) -> dict[str, float]:
        out, self._timings = self._timings, {}
        return out

    def close(self) -> None:
        pass


class SlurmLearner:
    """One learner job per iteration; the job saves its checkpoint itself (every iteration: the next rollout
    array needs the HF export), so ``save`` has nothing left to do."""

    def __init__(self, ctx: StageContext, launcher: Launcher) -> None:
        self.ctx, self.launcher = ctx, launcher

    def position(self) -> RlState:
        return latest_position(self.ctx.paths, self.ctx.stage)

    def update(self, iteration: int, record: DriverRecord) -> LearnerResult:
        ctx = self.ctx
        key = {"kind": "learner", "stage": ctx.stage, "iteration": iteration}
        job = LearnerJob(str(ctx.paths.root), ctx.stage, iteration, ctx.cfg.parallel.dist_backend)
        start = time.perf_counter()
        result: LearnerResult = self.launcher.run("learner", [Request(key, job)])[0]
        append_jsonl(ctx.paths.driver_log(ctx.stage), {
            "iteration": iteration, "collect_wall_s": record.timings.get("collect_wall_s", 0.0),
            "learner_wall_s": time.perf_counter() - start, **record.timings,
            **{f"learner/{k}": v for k, v in result.timings.items()}})
        return result

    def save(self, final: bool) -> None:
        pass

    def close(self) -> None:
        pass


# ---- the job bodies --------------------------------------------------------------------------------------------

def _policy_weights(ctx: StageContext, policy_step: int) -> WeightsSource:
    """The weights of ``policy_step``: its checkpoint's HF export, the stage's initial weights at step 0."""
    if policy_step > 0:
        return WeightsSource(folder=ctx.paths.hf_export(ctx.stage, policy_step))
    return initial_weights(ctx, stage_init_hf(ctx.paths, ctx.stage))  # the learner's start, same seed


def _engine(ctx: StageContext, policy_step: int) -> RolloutEngine:
    cfg = ctx.cfg
    return build_engine(cfg.rollout, ctx.tokenizer, _policy_weights(ctx, policy_step),  # type: ignore[attr-defined]
                        EngineOptions(dtype=cfg.model.dtype, seed=cfg.seed))


def generate_and_score(ctx: StageContext, engine: RolloutEngine, router: Any, iteration: int, gen_batch: int,
                       shard_index: int, policy_step: int) -> Path:
    """The shard, generated (kept when complete) then scored (kept when scored): a requeued task redoes only what
    its predecessor did not finish. A reward service that cannot be reached (``services.ServiceUnavailable``)
    leaves the shard generated and unscored, with a message: the driver restarts the service and reruns the task."""
    from .services import ServiceUnavailable

    with ctx.timed("rollout_s"):
        path = rollout_shard(ctx, engine, iteration, gen_batch, shard_index, policy_step)
    try:
        with ctx.timed("reward_s"):
            score_shard(ctx, router, path)
    except ServiceUnavailable as exc:
        print(f"[rollout] shard {path.name} left unscored: {exc}", file=sys.stderr, flush=True)
    return path


def rollout_task(run_dir: str, stage: str, iteration: int, gen_batch: int, shard_index: int,
                 policy_step: int) -> RolloutResult:
    """One rollout array element: its shard, generated and scored, and where its time went."""
    from .services import task_router

    start = time.perf_counter()
    ctx = stage_context(run_dir, stage)
    path = ctx.paths.gen_shard(stage, iteration, gen_batch, shard_index)
    entry = ctx.manifest.shard_entry(path) if path.exists() else None
    if entry is not None and entry.scored and entry.policy_step == policy_step:
        return RolloutResult(str(path), {"task_s": time.perf_counter() - start})  # done before a requeue
    with ctx.timed("load_s"):
        engine = _engine(ctx, policy_step)
    try:
        with task_router(ctx) as router:
            generate_and_score(ctx, engine, router, iteration, gen_batch, shard_index, policy_step)
    finally:
        engine.close()
    return RolloutResult(str(path), {**ctx.timings, "task_s": time.perf_counter() - start})


def learner_iteration(run_dir: str, stage: str, iteration: int) -> LearnerResult:
    """The DAPO update of one iteration, resumable at any micro-batch. Call inside ``init_distributed``."""
    start = time.perf_counter()
    ctx = stage_context(run_dir, stage)
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    with ctx.timed("load_s"):
        backend = build_backend(ctx, stage_init_hf(ctx.paths, stage), total_steps=cfg.steps * cfg.dapo.mini_batches)
        learner = InProcessLearner(ctx, backend, announce_steps=True)
    # A signal that came while loading is acted on at the first micro-batch boundary (late, never lost).
    result = learner.update(iteration, DriverRecord.read(ctx.paths.iteration_plan(stage, iteration)))
    if result.preempted:
        preemption.exit_for_requeue()
    if not result.skipped:
        with ctx.timed("save_s"):
            learner.save(final=result.final)
    learner.close()
    result.timings = {**ctx.timings, "task_s": time.perf_counter() - start}
    return result


def whole_stage(run_dir: str, stage: str, init_from: str | None) -> str:
    """A whole stage in this job's allocation (every rank runs it); 'final', or leaves for requeue after saving
    when told to stop. RL stages alternate generation and training on the same processes."""
    from ..run import run_stage  # the SFT loop lives with the curriculum

    paths = RunPaths(run_dir)
    cfg = load_resolved(paths.stage_config(stage))
    if rank_and_world()[0] == 0:  # trained once, before the other ranks load it
        ensure_tokenizer(paths, cfg)
    barrier()
    # should_stop=None: the stop check (signals, time left vs measured save time), agreed by every rank
    result = run_stage(paths, cfg, init_from, should_stop=None, progress=False)
    if result != "final":
        preemption.exit_for_requeue()
    return result


# ---- the job classes -------------------------------------------------------------------------------------------

class RolloutTask(MathfirstJob):
    """One rollout array element. Does not poll: submitit's USR1 handler requeues it at once (its shard is written
    atomically or not at all, so the rerun redoes only this shard)."""

    def __init__(self, run_dir: str, stage: str, iteration: int, gen_batch: int, policy_step: int,
                 shard_index: int) -> None:
        self.run_dir, self.stage = run_dir_of(run_dir), stage
        self.iteration, self.gen_batch, self.policy_step, self.shard_index = iteration, gen_batch, policy_step, \
            shard_index

    def run(self) -> RolloutResult:
        return rollout_task(self.run_dir, self.stage, self.iteration, self.gen_batch, self.shard_index,
                            self.policy_step)


class LearnerJob(DistributedJob):
    """One iteration's DAPO update on nodes x tasks; stops at a micro-batch boundary when told to."""

    def __init__(self, run_dir: str, stage: str, iteration: int, backend: str = "auto") -> None:
        super().__init__(backend)
        self.run_dir, self.stage, self.iteration = run_dir_of(run_dir), stage, iteration

    def run(self) -> LearnerResult:
        return learner_iteration(self.run_dir, self.stage, self.iteration)


class StageJob(DistributedJob):
    """A whole stage as one job: stage 1 (SFT) in phases mode; any stage in one-allocation mode."""

    def __init__(self, run_dir: str, stage: str, init_from: str | None, backend: str = "auto") -> None:
        super().__init__(backend)
        self.run_dir, self.stage, self.init_from = run_dir_of(run_dir), stage, init_from

    def run(self) -> str:
        return whole_stage(self.run_dir, self.stage, self.init_from)
