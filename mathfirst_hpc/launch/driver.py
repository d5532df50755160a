"""The per-stage driver and the run-level operations behind ``submit``, ``resume`` and ``cancel``.

A stage on Slurm is one light *driver* job (:class:`~mathfirst_hpc.launch.jobs.DriverJob`) that runs
:func:`drive_stage`: per iteration it

1. plans generation batch 0 with the data mixer and submits a rollout job array (one task per shard);
2. scores the shards in the driver (math and rule verifiers; the sandbox server is started once per stage when
   code is in the mix); dynamic sampling drops the groups whose rewards are all equal and, while the train batch
   is short, plans another generation batch and submits it as extra array tasks (``run.collect_iteration``);
3. writes ``iter_K/kept.h5`` and ``iter_K/driver.json`` (data cursor, policy step, rollout metrics), then submits
   the learner job (``parallel.nodes`` x ``parallel.gpus_per_node`` tasks), whose checkpoint carries the HF
   export the next rollout array loads;
4. goes on with the next iteration until the learner marks the stage final.

Stage 1 (SFT) has no rollouts: its driver submits one learner job for the whole stage.

Resume: the driver keeps no state of its own. The latest checkpoint says which iteration is next, driver.json
whether its rollouts are collected, the manifest which shards are complete and which jobs were submitted. A
driver killed at any point (``kill -9`` included) and started again re-attaches to its children that are still
pending or running, reuses finished shards and redraws exactly the same prompts, so nothing is lost or repeated.
SIGUSR1/SIGTERM only set a flag; the driver leaves between two polls, never between an ``sbatch`` and the
manifest entry that records it.

Run level::

    submit_stages("runs/x", "stage2", "local-dev")   # stage dependency rules, one driver job per stage
    resume_run("runs/x"); cancel_run("runs/x")

Stage N+1's driver waits on stage N's with ``afterok``, or starts at once if stage N is final in the run dir;
``submit stage3`` without a final (or pending) stage 2 is refused unless ``--init-from`` is given. With the
``local`` profile (executor ``local``) the drivers run in this process, one stage after the other, and their
children are subprocesses (submitit's local executor).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

from .. import STAGES
from .. import checkpoint as ckpt
from ..atomic import append_jsonl, write_json
from ..config import build_dataclass, canonical_stage, load_resolved, to_dict
from ..errors import ConfigError, RunDirError
from ..manifest import Manifest
from ..paths import RunPaths
from ..shards import write_shard
from . import preemption, slurm_state
from .executors import attach_job, batch_script, make_executor
from .jobspec import Role, job_spec
from .profiles import ClusterProfile, check_partitions, load_profile

log = logging.getLogger("mathfirst_hpc.launch")
PREVIOUS_STAGE = {"sft": None, "math_rl": "sft", "joint_rl": "math_rl"}
TARGETS = {"all": list(STAGES)}


class DriverStopped(Exception):
    """A signal asked the driver to stop; it leaves at a safe point and its requeued run resumes."""


# ---------------------------------------------------------------------------------------------------------------
# launch.json: how the run was submitted
# ---------------------------------------------------------------------------------------------------------------

def write_launch(paths: RunPaths, profile: ClusterProfile, stages: list[str], init_from: str | None,
                 preset: str) -> None:
    write_json(paths.launch_file, {"profile": to_dict(profile), "stages": stages, "init_from": init_from,
                                   "preset": preset, "submitted_unix": time.time()})


def read_launch(paths: RunPaths) -> dict[str, Any]:
    if not paths.launch_file.exists():
        raise RunDirError(f"{paths.root} was never submitted (no {paths.launch_file.name})",
                          hint="use mathfirst-hpc submit first")
    return json.loads(paths.launch_file.read_text())


def launch_profile(launch: dict[str, Any]) -> ClusterProfile:
    return build_dataclass(ClusterProfile, launch["profile"])


# ---------------------------------------------------------------------------------------------------------------
# Launcher: submit children, re-attach to live ones, wait while polling the stop flag
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Request:
    """One child job: its identity in the manifest (``key``) and the callable it runs."""

    key: dict[str, Any]
    fn: Callable[[], Any]


class Launcher:
    def __init__(self, paths: RunPaths, cfg, profile: ClusterProfile, poll_s: float = 1.0) -> None:
        self.paths, self.cfg, self.profile, self.poll_s = paths, cfg, profile, poll_s
        self.manifest = Manifest(paths)

    @property
    def kind(self) -> str:
        return self.profile.executor

    def folder(self) -> Path:
        return self.paths.submitit_dir / self.cfg.stage / "%j"

    def executor(self, role: Role) -> submitit.Executor:
        spec = job_spec(role, self.cfg, self.profile, name=f"mf-{self.cfg.stage}-{role}")
        return make_executor(self.kind, self.folder(), spec)

    def _alive_jobs(self) -> dict[str, submitit.Job]:
        """Children recorded in the manifest that are still pending or running, by their key (Slurm only: a local
        job's process cannot be re-attached after its parent died)."""
        if self.kind != "slurm":
            return {}
        jobs = {j: info for j, info in self.manifest.read()["jobs"].items()
                if info.get("stage") == self.cfg.stage and info.get("kind") != "driver"}
        states = slurm_state.job_states(list(jobs))
        out = {}
        for job_id, info in sorted(jobs.items(), key=lambda item: item[1].get("submitted_unix", 0)):
            if slurm_state.is_alive(states[job_id]):
                out[_key_text(info["key"])] = attach_job(self.kind, info["folder"], job_id)
        return out

    def run(self, role: Role, requests: list[Request]) -> list[Any]:
        """Submit (as one array when several) or re-attach, wait for all, return their results in order."""
        if not requests:
            return []
        alive = self._alive_jobs()
        jobs: list[submitit.Job | None] = [alive.get(_key_text(r.key)) for r in requests]
        todo = [i for i, job in enumerate(jobs) if job is None]
        if todo:
            executor = self.executor(role)
            with executor.batch() if len(todo) > 1 else contextlib.nullcontext():
                submitted = [executor.submit(requests[i].fn) for i in todo]
            records = {}
            for i, job in zip(todo, submitted, strict=True):
                jobs[i] = job
                records[str(job.job_id)] = {"kind": role, "stage": self.cfg.stage, "key": requests[i].key,
                                            "executor": self.kind, "folder": str(self.folder()),
                                            "submitted_unix": time.time()}
            self.manifest.update(lambda d: d["jobs"].update(records))
        return self.wait([job for job in jobs if job is not None], role)

    def wait(self, jobs: list[submitit.Job], role: str) -> list[Any]:
        while not all(job.done() for job in jobs):
            if preemption.requested():
                raise DriverStopped(preemption.reason() or "stop")
            time.sleep(self.poll_s)
        results = []
        for job in jobs:
            try:
                out = job.results() if job.num_tasks > 1 else [job.result()]
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RunDirError(f"{role} job {job.job_id} of stage {self.cfg.stage} failed: {first}",
                                  hint=f"log: {job.paths.stdout}; fix, then mathfirst-hpc resume "
                                       f"{self.paths.root}") from None
            results.append(out[0])
        return results


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------
# the stage driver
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Position:
    iteration: int = 0
    step: int = 0
    mini_batch: int = 0
    iteration_start_step: int = 0


def checkpoint_position(paths: RunPaths, stage: str) -> Position:
    """Where the stage stands, from the latest complete checkpoint's meta.json (no weights loaded)."""
    latest = ckpt.latest_checkpoint(paths.checkpoints(stage))
    meta = ckpt.read_meta(latest) if latest is not None else None
    if not meta:
        return Position()
    return Position(int(meta.get("iteration", 0)), int(meta.get("step", 0)), int(meta.get("mini_batch", 0)),
                    int(meta.get("iteration_start_step", meta.get("step", 0))))


def _data_at_iteration_start(paths: RunPaths, stage: str, iteration: int) -> dict[str, Any] | None:
    if iteration == 0:
        return None
    previous = paths.iteration_plan(stage, iteration - 1)
    if previous.exists():
        return json.loads(previous.read_text())["data_after"]
    # the previous iteration ran colocated (no driver record): its checkpoint holds the cursor
    latest = ckpt.latest_checkpoint(paths.checkpoints(stage))
    return ckpt.load_rank_state(latest)["data_at_iteration_start"] if latest is not None else None


def _collect(ctx, launcher: Launcher, router, iteration: int, policy_step: int) -> None:
    """Rollout arrays + rewards + dynamic sampling for one iteration; writes kept.h5, then driver.json last."""
    from ..data.mix import DomainMixer
    from ..run import collect_iteration, iteration_metrics, shard_path
    from .jobs import RolloutTask

    cfg, paths, stage = ctx.cfg, ctx.paths, ctx.stage
    mixer = DomainMixer(cfg.data, seed=cfg.seed)
    start_state = _data_at_iteration_start(paths, stage, iteration)
    if start_state is not None:
        mixer.load_state_dict(start_state)
    data_start = mixer.state_dict()
    ctx.timings.clear()
    task_timings: dict[str, float] = {}

    def rollout_fn(it: int, gen_batch: int, step: int) -> list[Path]:
        shards = range(cfg.rollout.num_shards)
        done = launcher.manifest.read()["shards"]
        requests = []
        for s in shards:
            path = shard_path(ctx, it, gen_batch, s)
            entry = done.get(str(path.relative_to(paths.root)))
            if path.exists() and entry and entry.get("policy_step") == step:
                continue  # finished before a restart: kept
            key = {"kind": "rollout", "stage": stage, "iteration": it, "gen_batch": gen_batch, "shard": s,
                   "policy_step": step}
            requests.append(Request(key, RolloutTask(str(paths.root), stage, it, gen_batch, step, s)))
        wall_start = time.perf_counter()
        results = launcher.run("rollout", requests)
        add = lambda part, seconds: task_timings.__setitem__(part, task_timings.get(part, 0.0) + seconds)  # noqa
        for result in results:
            for part, seconds in result["timings"].items():
                add(part, seconds)  # summed over tasks
        for part in ("task_s", "generate_s", "load_s"):  # the slowest task of the array sets its wall time
            add(f"max_{part}", max((r["timings"].get(part, 0.0) for r in results), default=0.0))
        add("arrays", 1.0 if results else 0.0)
        add("rollout_wall_s", time.perf_counter() - wall_start)
        return [shard_path(ctx, it, gen_batch, s) for s in shards]

    batch = collect_iteration(ctx, None, router, mixer, iteration, policy_step, rollout_fn=rollout_fn)
    ctx.timings["generate_s"] = task_timings.get("generate_s", 0.0)
    if batch.kept is not None:
        write_shard(paths.kept_batch(stage, iteration), batch.kept, stage=stage, iteration=iteration, kind="kept")
    metrics = iteration_metrics(batch, [], cfg.rollout.max_response_len, ctx.timings)
    write_json(paths.iteration_plan(stage, iteration), {
        "iteration": iteration, "policy_step": policy_step, "data_at_iteration_start": data_start,
        "data_after": mixer.state_dict(), "kept_groups": batch.sampling.groups_kept, "metrics": metrics,
        "timings": {**ctx.timings, **{f"tasks/{k}": v for k, v in task_timings.items()}}})


def _learner(launcher: Launcher, paths: RunPaths, stage: str, iteration: int) -> dict[str, Any]:
    from .jobs import LearnerJob

    key = {"kind": "learner", "stage": stage, "iteration": iteration}
    backend = launcher.cfg.parallel.dist_backend
    return launcher.run("learner", [Request(key, LearnerJob(str(paths.root), stage, iteration, backend))])[0]


def drive_stage(run_dir: str | Path, stage: str, poll_s: float = 1.0) -> str:
    """Run one stage's job graph to its final checkpoint. Raises DriverStopped when a signal asks to stop."""
    from ..run import make_context, reward_router, stage_init

    paths = RunPaths(run_dir)
    launch = read_launch(paths)
    cfg = load_resolved(paths.stage_config(stage))
    manifest = Manifest(paths)
    if manifest.is_final(stage):
        return "final"
    launcher = Launcher(paths, cfg, launch_profile(launch), poll_s)
    init_from = launch.get("init_from") if stage == launch["stages"][0] else None
    if stage == "sft":
        from .jobs import SftJob

        key = {"kind": "learner", "stage": stage}
        launcher.run("learner", [Request(key, SftJob(str(paths.root), stage, init_from,
                                                     cfg.parallel.dist_backend))])
    else:
        init_hf = stage_init(paths, stage, init_from)
        manifest.set_stage(stage, init_from=str(init_hf) if init_hf else None, status="running")
        ctx = make_context(paths, cfg, progress=False)  # trains the run's tokenizer once, before any task
        with reward_router(ctx) as router:
            while (position := checkpoint_position(paths, stage)).iteration < cfg.steps:
                iteration = position.iteration
                started = time.perf_counter()
                if not paths.iteration_plan(stage, iteration).exists():
                    policy_step = position.iteration_start_step if position.mini_batch else position.step
                    _collect(ctx, launcher, router, iteration, policy_step)
                collected = time.perf_counter()
                result = _learner(launcher, paths, stage, iteration)
                plan = json.loads(paths.iteration_plan(stage, iteration).read_text())
                append_jsonl(paths.driver_log(stage), {
                    "iteration": iteration, "collect_wall_s": collected - started,
                    "learner_wall_s": time.perf_counter() - collected, **plan["timings"],
                    **{f"learner/{k}": v for k, v in result.get("timings", {}).items()}})
    if not manifest.is_final(stage):
        raise RunDirError(f"stage {stage} ended without a final checkpoint in {paths.root}")
    return "final"


# ---------------------------------------------------------------------------------------------------------------
# run level: submit, resume, cancel
# ---------------------------------------------------------------------------------------------------------------

def target_stages(target: str) -> list[str]:
    """stage1|stage2|stage3 (or sft|math_rl|joint_rl, 1|2|3) -> one stage; all -> the three."""
    if target.strip().lower() in TARGETS:
        return TARGETS[target.strip().lower()]
    return [canonical_stage(target)]


def _driver_jobs(paths: RunPaths) -> dict[str, tuple[str, str]]:
    """stage -> (job id, state) of its newest driver job."""
    jobs = {j: i for j, i in Manifest(paths).read()["jobs"].items() if i.get("kind") == "driver"}
    states = slurm_state.job_states(list(jobs)) if jobs else {}
    newest: dict[str, tuple[str, str]] = {}
    for job_id, info in sorted(jobs.items(), key=lambda item: item[1].get("submitted_unix", 0)):
        newest[info["stage"]] = (job_id, states.get(job_id, slurm_state.UNKNOWN))
    return newest


@dataclass
class Submitted:
    stage: str
    job_id: str | None
    """None: nothing submitted (already final, or ran in this process with the local executor)."""
    dependency: str | None = None
    note: str = ""


def _check_start(paths: RunPaths, first: str, init_from: str | None, drivers: dict[str, tuple[str, str]],
                 target: str) -> str | None:
    """The dependency the first stage waits on, or None. Refuses a stage whose input cannot exist."""
    previous = PREVIOUS_STAGE[first]
    if previous is None or init_from is not None or Manifest(paths).is_final(previous):
        return None
    job = drivers.get(previous)
    if job is not None and slurm_state.is_alive(job[1]):
        return job[0]  # the previous stage is still running: wait for it to succeed
    number = f"stage{STAGES.index(previous) + 1}"
    raise RunDirError(f"submit {target}: {paths.root} has no final {previous} ({number})",
                      hint=f"submit {number} first (or all), or pass --init-from CKPT")


def submit_stages(run_dir: str | Path, target: str, profile_name: str, preset: str = "tiny",
                  overrides: list[str] | None = None, init_from: str | None = None,
                  dry_run: bool = False) -> list[Submitted]:
    """``mathfirst-hpc submit``: resolve configs, check the stage rules, submit one driver job per stage."""
    from ..run import overrides_for, resolve_stage_config

    stages = target_stages(target)
    profile = load_profile(profile_name)
    check_partitions(profile)
    if init_from is not None and not Path(init_from).exists():
        raise ConfigError(f"--init-from {init_from}: no such file or folder")
    paths = RunPaths(run_dir)
    if dry_run:
        return _dry_run(paths, stages, profile, preset, overrides or [])
    drivers = _driver_jobs(paths) if paths.manifest.exists() else {}
    for stage in stages:  # two drivers of one stage would both submit its jobs
        job = drivers.get(stage)
        if job is not None and slurm_state.is_alive(job[1]):
            raise RunDirError(f"stage {stage} of {paths.root} already has driver job {job[0]} ({job[1].lower()})",
                              hint=f"wait for it, or mathfirst-hpc cancel {paths.root} first")
    dependency = _check_start(paths, stages[0], init_from, drivers, target)  # refuse before writing anything
    paths.make()
    for stage in stages:
        resolve_stage_config(paths, stage, preset, overrides_for(stage, overrides or []))
    write_launch(paths, profile, stages, init_from, preset)
    return _submit_chain(paths, stages, profile, dependency)


def _dry_run(paths: RunPaths, stages: list[str], profile: ClusterProfile, preset: str,
             overrides: list[str]) -> list[Submitted]:
    from ..config import dump_yaml, load_stage_config
    from ..run import overrides_for

    out = []
    for stage in stages:
        cfg = load_stage_config(stage, preset, overrides_for(stage, overrides), check_files=False)
        script = batch_script(job_spec("driver", cfg, profile, name=f"mf-{stage}-driver"),
                              paths.submitit_dir / stage / "%j")
        out.append(Submitted(stage, None, note=f"# driver batch file\n{script}\n# resolved config\n{dump_yaml(cfg)}"))
    return out


def _submit_chain(paths: RunPaths, stages: list[str], profile: ClusterProfile,
                  dependency: str | None) -> list[Submitted]:
    from .jobs import DriverJob

    out = []
    manifest = Manifest(paths)
    for stage in stages:
        if manifest.is_final(stage):
            out.append(Submitted(stage, None, note="already final"))
            dependency = None
            continue
        if profile.executor == "local":  # foreground: the stages run here, one after the other
            try:
                drive_stage(paths.root, stage)
            except DriverStopped as exc:
                out.append(Submitted(stage, None, note=f"stopped ({exc}); run resume to continue"))
                return out
            out.append(Submitted(stage, None, note="final"))
            continue
        cfg = load_resolved(paths.stage_config(stage))
        spec = job_spec("driver", cfg, profile, name=f"mf-{stage}-driver")
        if dependency:
            spec = spec.with_(dependency=f"afterok:{dependency}")
        folder = paths.submitit_dir / stage / "%j"
        job = make_executor("slurm", folder, spec).submit(DriverJob(str(paths.root), stage))
        manifest.record_job(str(job.job_id), kind="driver", stage=stage, key={"kind": "driver", "stage": stage},
                            executor="slurm", folder=str(folder), dependency=dependency)
        out.append(Submitted(stage, str(job.job_id), dependency))
        dependency = str(job.job_id)
    return out


def submit_eval(run_dir: str | Path, profile_name: str, overrides: list[str] | None = None) -> Submitted:
    """``submit eval``: one CPU job that evaluates the base model and every final stage of the run dir (its
    generation runs as job arrays of the same profile), after the run's newest pending or running driver."""
    from ..config import apply_overrides
    from ..eval.harness import EvalConfig
    from .jobs import EvalJob
    from .profiles import resolve_profile_path

    profile = load_profile(profile_name)
    check_partitions(profile)
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)", hint="submit a stage first")
    eval_cfg = build_dataclass(EvalConfig, apply_overrides({}, overrides or []))  # a bad key fails here
    alive = [job_id for job_id, state in _driver_jobs(paths).values() if slurm_state.is_alive(state)]
    dependency = max(alive, key=int) if alive else None
    if profile.executor == "local":
        EvalJob(str(paths.root), to_dict(eval_cfg), str(resolve_profile_path(profile_name)))()
        return Submitted("eval", None, note=f"written to {paths.eval_dir}")
    cfg = load_resolved(paths.stage_config(read_launch(paths)["stages"][-1]))
    spec = job_spec("driver", cfg, profile, name="mf-eval-driver")
    if dependency:
        spec = spec.with_(dependency=f"afterok:{dependency}")
    folder = paths.submitit_dir / "eval" / "%j"
    job = make_executor("slurm", folder, spec).submit(
        EvalJob(str(paths.root), to_dict(eval_cfg), str(resolve_profile_path(profile_name))))
    Manifest(paths).record_job(str(job.job_id), kind="eval", stage="eval", key={"kind": "eval"},
                               executor="slurm", folder=str(folder), dependency=dependency)
    return Submitted("eval", str(job.job_id), dependency)


def resume_run(run_dir: str | Path) -> list[Submitted]:
    """Resubmit whatever is unfinished: a stage whose driver is still pending or running is left alone (a
    pending one whose dependency failed is cancelled and resubmitted)."""
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    launch = read_launch(paths)
    profile = launch_profile(launch)
    stages = [s for s in launch["stages"] if not Manifest(paths).is_final(s)]
    if not stages:
        return [Submitted(s, None, note="already final") for s in launch["stages"]]
    drivers = _driver_jobs(paths) if profile.executor == "slurm" else {}
    out: list[Submitted] = []
    dependency = None
    for i, stage in enumerate(stages):
        job = drivers.get(stage)
        if job is not None and slurm_state.is_alive(job[1]):
            if "DependencyNeverSatisfied" not in slurm_state.pending_reason(job[0]):
                out.append(Submitted(stage, job[0], note=f"still {job[1].lower()}"))
                dependency = job[0]
                continue
            slurm_state.cancel([job[0]])
        if i == 0 and dependency is None:
            first = launch["stages"].index(stage) == 0
            dependency = _check_start(paths, stage, launch.get("init_from") if first else None, drivers, stage)
        out += _submit_chain(paths, [stage], profile, dependency)
        dependency = out[-1].job_id
    return out


def cancel_run(run_dir: str | Path) -> list[str]:
    """scancel every job of the run that is still pending or running (drivers first, so none submits more)."""
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    cancelled: list[str] = []
    for _ in range(2):  # a driver may have submitted a child between the listing and its cancellation
        jobs = {j: i for j, i in Manifest(paths).read()["jobs"].items() if i.get("executor", "slurm") == "slurm"}
        states = slurm_state.job_states(list(jobs))
        alive = [j for j in jobs if slurm_state.is_alive(states[j]) and j not in cancelled]
        drivers = [j for j in alive if jobs[j].get("kind") == "driver"]
        slurm_state.cancel(drivers)
        slurm_state.cancel([j for j in alive if j not in drivers])
        cancelled += alive
        if not alive:
            break
    return cancelled


def describe(submitted: list[Submitted]) -> str:
    """One line per stage, for the CLI."""
    lines = []
    for s in submitted:
        if s.job_id:
            after = f" after {s.dependency}" if s.dependency else ""
            lines.append(f"{s.stage}: driver job {s.job_id}{after}{(' (' + s.note + ')') if s.note else ''}")
        else:
            lines.append(f"{s.stage}: {s.note}" if "\n" not in s.note else s.note)
    return "\n".join(lines)

