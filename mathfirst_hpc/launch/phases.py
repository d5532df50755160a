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

Prelaunch (``slurm.prelaunch``, :class:`Prelaunch`): each job is submitted two phases before its turn, so that
its start (Slurm scheduling, ~3 s of CPU importing torch and transformers, building the model) overlaps the work
of the phases before instead of following it (a phase of the tiny preset is shorter than a job's start):

    iteration K's learner        submitted with K-1's learner; builds the model and optimizer, waits for
                                 ``iter_K/driver.json`` (the driver writes it once K is collected, hence after
                                 K-1's checkpoint), then loads the latest checkpoint and trains
    iteration K+1's rollout array (generation batch 0) submitted with K's array; waits for the batch's plan, which
                                 the driver writes once K's checkpoint is saved, then reads the policy step from
                                 that checkpoint's meta.json and loads its HF export

A prelaunched job waits at most ``slurm.prelaunch_max_wait_s``, then ends with no result (None); the driver then
runs that phase as without prelaunch. Keys carry ``prelaunch: true``: a restarted driver re-attaches to those
still alive instead of submitting them again; a driver that fails cancels the ones it has not collected.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

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
    from .launcher import DriverStopped, Launcher, Request, key_text

log = logging.getLogger("mathfirst_hpc.launch")
PRELAUNCH_POLL_S = 0.1
"""Seconds between two looks of a prelaunched job for its input (a stat of one file; with several ranks, two
all-reduces of one integer)."""


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

    def __init__(self, ctx: StageContext, launcher: Launcher, services: Any = None, service_retries: int = 3,
                 prelaunch: Prelaunch | None = None) -> None:
        self.ctx, self.launcher, self.services, self.service_retries = ctx, launcher, services, service_retries
        self.prelaunch = prelaunch
        self._timings: dict[str, float] = {}

    def rollout(self, iteration: int, gen_batch: int, policy_step: int) -> list[Path]:
        ctx = self.ctx
        shards = [ctx.paths.gen_shard(ctx.stage, iteration, gen_batch, s)
                  for s in range(ctx.cfg.rollout.num_shards)]  # type: ignore[attr-defined]
        wall_start = time.perf_counter()
        results: list[RolloutResult] = []
        if self.prelaunch is not None and gen_batch == 0:
            results += self._prelaunched(iteration, [s for s, path in enumerate(shards)
                                                     if not _scored(ctx, path, policy_step)])
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

    def _prelaunched(self, iteration: int, todo: list[int]) -> list[RolloutResult]:
        """Generation batch 0 through the prelaunched array (submitted with the last one; now, in the first
        iteration a driver runs), and the jobs of the next two phases. What a task left undone (it waited too long,
        or its policy was not the driver's) is left to the usual array, which ``rollout`` submits next."""
        prelaunch = self.prelaunch
        assert prelaunch is not None
        prelaunch.submit_rollouts(iteration, todo)  # in the order of their turns: this array's CPUs come first
        prelaunch.submit_learner(iteration)
        prelaunch.submit_rollouts(iteration + 1)
        done = prelaunch.results("rollout", [prelaunch.rollout_key(iteration, s) for s in todo])
        return [result for result in done if result is not None]

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

    def __init__(self, ctx: StageContext, launcher: Launcher, prelaunch: Prelaunch | None = None) -> None:
        self.ctx, self.launcher, self.prelaunch = ctx, launcher, prelaunch

    def position(self) -> RlState:
        return latest_position(self.ctx.paths, self.ctx.stage)

    def update(self, iteration: int, record: DriverRecord) -> LearnerResult:
        ctx = self.ctx
        start = time.perf_counter()
        result = self._prelaunched(iteration) if self.prelaunch is not None else None
        if result is None:  # no prelaunch, or the prelaunched job waited too long
            key = {"kind": "learner", "stage": ctx.stage, "iteration": iteration}
            job = LearnerJob(str(ctx.paths.root), ctx.stage, iteration, ctx.cfg.parallel.dist_backend)
            result = self.launcher.run("learner", [Request(key, job)])[0]
        append_jsonl(ctx.paths.driver_log(ctx.stage), {
            "iteration": iteration, "collect_wall_s": record.timings.get("collect_wall_s", 0.0),
            "learner_wall_s": time.perf_counter() - start, **record.timings,
            **{f"learner/{k}": v for k, v in result.timings.items()}})
        return result

    def _prelaunched(self, iteration: int) -> LearnerResult | None:
        """The prelaunched learner's result (None: it waited too long), the next iteration's learner submitted
        before the wait, to start while this one trains and the next array generates."""
        prelaunch = self.prelaunch
        assert prelaunch is not None
        prelaunch.submit_learner(iteration)  # no-ops unless the driver restarted after the rollouts
        prelaunch.submit_rollouts(iteration + 1)
        prelaunch.submit_learner(iteration + 1)
        return prelaunch.results("learner", [prelaunch.learner_key(iteration)])[0]

    def save(self, final: bool) -> None:
        pass

    def close(self) -> None:
        pass


class Prelaunch:
    """The jobs a driver submits two phases early (``slurm.prelaunch``, see the module's docstring), by key.

    Why it is a switch: a prelaunched job holds its allocation (GPUs, on a real cluster) while it waits, for up
    to two phases (``slurm.prelaunch_max_wait_s`` at most), and a stage holds up to two learners' and two arrays'
    at once; that pays where job start is a large part of an iteration (small models, CPU nodes), not where an
    iteration takes minutes on GPUs that others queue for."""

    def __init__(self, ctx: StageContext, launcher: Launcher) -> None:
        self.ctx, self.launcher = ctx, launcher
        self.max_wait_s = float(ctx.cfg.slurm.prelaunch_max_wait_s)
        self._jobs: dict[str, Any] = {}
        """Key text -> submitit job, submitted (or re-attached) and not collected yet."""
        self._inherited: dict[str, Any] | None = None
        """Key text -> job of a previous run of this driver, alive when this one first looked (one Slurm query)."""

    def learner_key(self, iteration: int) -> dict[str, Any]:
        return {"kind": "learner", "stage": self.ctx.stage, "iteration": iteration, "prelaunch": True}

    def rollout_key(self, iteration: int, shard: int) -> dict[str, Any]:
        return {"kind": "rollout", "stage": self.ctx.stage, "iteration": iteration, "gen_batch": 0, "shard": shard,
                "prelaunch": True}

    def submit_learner(self, iteration: int) -> None:
        """``iteration``'s learner; nothing past the stage's last iteration."""
        ctx = self.ctx
        if iteration >= ctx.cfg.steps:  # type: ignore[attr-defined]
            return
        job = LearnerJob(str(ctx.paths.root), ctx.stage, iteration, ctx.cfg.parallel.dist_backend, self.max_wait_s)
        self._submit("learner", [Request(self.learner_key(iteration), job)])

    def submit_rollouts(self, iteration: int, shards: list[int] | None = None) -> None:
        """Generation batch 0 of ``iteration`` (all shards by default); nothing past the stage's last iteration."""
        ctx = self.ctx
        cfg: RlStage = ctx.cfg  # type: ignore[assignment]
        if iteration >= cfg.steps:
            return
        shards = list(range(cfg.rollout.num_shards)) if shards is None else shards
        self._submit("rollout", [Request(self.rollout_key(iteration, s),
                                         RolloutTask(str(ctx.paths.root), ctx.stage, iteration, 0, None, s,
                                                     self.max_wait_s)) for s in shards])

    def results(self, role: str, keys: list[dict[str, Any]]) -> list[Any]:
        """Wait for the prelaunched jobs of these keys (those never submitted are left out); a None result is a
        job that waited too long for its input."""
        jobs = [job for job in (self._take(key_text(key)) for key in keys) if job is not None]
        return self.launcher.wait(jobs, role) if jobs else []

    def cancel(self) -> None:
        """scancel (or kill, local executor) the jobs not collected."""
        for job in self._jobs.values():
            job.cancel(check=False)
        self._jobs.clear()

    @contextlib.contextmanager
    def cancelled_after(self) -> Iterator[None]:
        """Around the driver's loop: the jobs it has not collected are cancelled when it fails (nothing will feed
        them) or ends (none is left in the usual course), not when it is stopped for a requeue (its next run
        re-attaches to them)."""
        try:
            yield
        except DriverStopped:
            raise
        except BaseException:
            self.cancel()
            raise
        self.cancel()

    def _take(self, text: str) -> Any:
        job = self._jobs.pop(text, None)
        return job if job is not None else self._live().pop(text, None)

    def _live(self) -> dict[str, Any]:
        if self._inherited is None:  # once per driver process; later, every job it needs is in self._jobs
            self._inherited = self.launcher.alive_jobs()
        return self._inherited

    def _submit(self, role: str, requests: list[Request]) -> None:
        """Submit (as one array when several) those not submitted or alive already; record them in the manifest
        before anything can stop the driver (no wait here)."""
        todo = []
        for request in requests:
            text = key_text(request.key)
            job = self._jobs.get(text)
            job = job if job is not None else self._live().pop(text, None)
            if job is None:
                todo.append(request)
            else:
                self._jobs[text] = job
        for request, job in zip(todo, self.launcher.submit(role, todo), strict=True):  # type: ignore[arg-type]
            self._jobs[key_text(request.key)] = job


def _all_ranks(flag: bool) -> bool:
    """``flag`` held on every rank of the default process group (``flag`` itself without one): the ranks of a
    prelaunched learner decide together when to go on, so that they run the same collectives after."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device="cuda" if dist.get_backend() == "nccl"
                          else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def await_input(path: Path, max_wait_s: float, stop: Callable[[], bool] | None = None) -> bool:
    """Wait for a prelaunched job's input (a file its driver writes atomically): True once every rank sees it,
    False after ``max_wait_s``. ``stop``: the (collective) stop check, polled meanwhile; a stop request leaves for
    requeue at once, with nothing to save (the requeued job loads and waits again)."""
    deadline = time.monotonic() + max_wait_s
    while not _all_ranks(path.exists()):
        if not _all_ranks(time.monotonic() < deadline):
            return False
        if stop is not None and stop():
            preemption.exit_for_requeue()
        time.sleep(PRELAUNCH_POLL_S)
    return True


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
                 policy_step: int | None, max_wait_s: float = 0.0) -> RolloutResult | None:
    """One rollout array element: its shard, generated and scored, and where its time went. ``policy_step=None``:
    prelaunched, it waits (``max_wait_s`` at most, else returns None) for the batch's plan, then generates with the
    policy of the latest checkpoint, the one the driver planned the batch with."""
    from .services import task_router

    start = time.perf_counter()
    ctx = stage_context(run_dir, stage)
    if policy_step is None:
        with ctx.timed("wait_s"):
            policy_step = _planned_policy(ctx, iteration, gen_batch, max_wait_s)
        if policy_step is None:
            return None
    path = ctx.paths.gen_shard(stage, iteration, gen_batch, shard_index)
    entry = ctx.manifest.shard_entry(path) if path.exists() else None
    if entry is not None and entry.scored and entry.policy_step == policy_step:
        return RolloutResult(str(path), {"task_s": _busy_s(ctx, start)})  # done before a requeue
    with ctx.timed("load_s"):
        engine = _engine(ctx, policy_step)
    try:
        with task_router(ctx) as router:
            generate_and_score(ctx, engine, router, iteration, gen_batch, shard_index, policy_step)
    finally:
        engine.close()
    return RolloutResult(str(path), {**ctx.timings, "task_s": _busy_s(ctx, start)})


def _planned_policy(ctx: StageContext, iteration: int, gen_batch: int, max_wait_s: float) -> int | None:
    """The policy step a prelaunched task generates with, once the driver planned its batch (None: not in time).
    The driver plans an iteration after its learner saved the checkpoint before it, and draws the batch's policy
    from that checkpoint's meta.json, as read here."""
    if not await_input(ctx.paths.plan(ctx.stage, iteration, gen_batch), max_wait_s):
        return None
    position = latest_position(ctx.paths, ctx.stage)
    return position.iteration_start_step if position.iteration == iteration else None


def _busy_s(ctx: StageContext, start: float) -> float:
    """The task's time since ``start``, less a prelaunched job's wait for its input (not work, nor overhead)."""
    return time.perf_counter() - start - ctx.timings.get("wait_s", 0.0)


def learner_iteration(run_dir: str, stage: str, iteration: int, max_wait_s: float = 0.0) -> LearnerResult | None:
    """The DAPO update of one iteration, resumable at any micro-batch. Call inside ``init_distributed``.
    ``max_wait_s``: prelaunched, it builds the model, then waits (that long at most, else returns None) for the
    iteration's driver.json before it loads the latest checkpoint: the one before this iteration, saved by then."""
    start = time.perf_counter()
    ctx = stage_context(run_dir, stage)
    cfg: RlStage = ctx.cfg  # type: ignore[assignment]
    with ctx.timed("load_s"):
        backend = build_backend(ctx, stage_init_hf(ctx.paths, stage), total_steps=cfg.steps * cfg.dapo.mini_batches)
    plan = ctx.paths.iteration_plan(stage, iteration)
    if max_wait_s > 0:
        with ctx.timed("wait_s"):  # a stop request here leaves for requeue: nothing trained, nothing to save
            ready = await_input(plan, max_wait_s, ctx.should_stop)
        if not ready:
            backend.close()
            return None
    with ctx.timed("resume_s"):
        learner = InProcessLearner(ctx, backend, announce_steps=True)
    # A signal that came while loading is acted on at the first micro-batch boundary (late, never lost).
    result = learner.update(iteration, DriverRecord.read(plan))
    if result.preempted:
        preemption.exit_for_requeue()
    if not result.skipped:
        with ctx.timed("save_s"):
            learner.save(final=result.final)
    learner.close()
    result.timings = {**ctx.timings, "task_s": _busy_s(ctx, start)}
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

    def __init__(self, run_dir: str, stage: str, iteration: int, gen_batch: int, policy_step: int | None,
                 shard_index: int, max_wait_s: float = 0.0) -> None:
        self.run_dir, self.stage = run_dir_of(run_dir), stage
        self.iteration, self.gen_batch, self.policy_step, self.shard_index = iteration, gen_batch, policy_step, \
            shard_index
        self.max_wait_s = max_wait_s
        """Prelaunched (``policy_step=None``): how long it may wait for its batch's plan."""

    def run(self) -> RolloutResult | None:
        return rollout_task(self.run_dir, self.stage, self.iteration, self.gen_batch, self.shard_index,
                            self.policy_step, self.max_wait_s)


class LearnerJob(DistributedJob):
    """One iteration's DAPO update on nodes x tasks; stops at a micro-batch boundary when told to."""

    def __init__(self, run_dir: str, stage: str, iteration: int, backend: str = "auto",
                 max_wait_s: float = 0.0) -> None:
        super().__init__(backend)
        self.run_dir, self.stage, self.iteration = run_dir_of(run_dir), stage, iteration
        self.max_wait_s = max_wait_s
        """Prelaunched (> 0): how long it may wait for the iteration's driver.json after loading."""

    def run(self) -> LearnerResult | None:
        return learner_iteration(self.run_dir, self.stage, self.iteration, self.max_wait_s)


class StageJob(DistributedJob):
    """A whole stage as one job: stage 1 (SFT) in phases mode; any stage in one-allocation mode."""

    def __init__(self, run_dir: str, stage: str, init_from: str | None, backend: str = "auto") -> None:
        super().__init__(backend)
        self.run_dir, self.stage, self.init_from = run_dir_of(run_dir), stage, init_from

    def run(self) -> str:
        return whole_stage(self.run_dir, self.stage, self.init_from)
