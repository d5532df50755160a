"""The per-stage driver and the run-level operations behind ``submit``, ``resume`` and ``cancel``.

A stage on Slurm is one light *driver* job (:class:`DriverJob`, 1 CPU) that runs :func:`drive_stage`: the one RL
loop, ``loop.run_rl_loop``, with the Slurm runners of ``phases.py``. Per iteration it

1. plans generation batch 0 with the data mixer and submits a rollout job array (one task per shard);
2. reads the shards back scored: each rollout task scores its own shard (``phases.rollout_task``), with the
   stage's sandbox and judge services (``services.py``: their own Slurm jobs, started here before the first
   iteration and cancelled when the stage ends); the driver never scores (``phases.ScoredByTasks``). Dynamic
   sampling drops the groups whose rewards are all equal and, while the train batch is short, plans another
   generation batch and submits it as extra array tasks;
3. writes ``iter_K/kept.h5`` and ``iter_K/driver.json`` (``records.DriverRecord``), then submits the learner job
   (``parallel.nodes`` x ``parallel.gpus_per_node`` tasks), whose checkpoint carries the HF export the next
   rollout array loads;
4. goes on with the next iteration until the learner marks the stage final.

With ``slurm.prelaunch`` each job is submitted two phases early (the next iteration's array with this one, the next
iteration's learner with this one) and waits for its input (``phases.Prelaunch``): its start overlaps the phases
before it. A driver that fails cancels them; one stopped for a requeue leaves them to its next run.

Stage 1 (SFT) has no rollouts: its driver submits one learner job for the whole stage.

One-allocation mode (``submit --mode allocation``, recorded in launch.json): no driver; each stage is one
``phases.StageJob`` of ``parallel.nodes`` x ``parallel.gpus_per_node`` tasks that runs the stage as ``run`` does
(``run.run_stage``: the same loop with both runners in-process, the ranks sharing the rollout shards), chained
with ``afterok`` like the drivers, requeued on preemption, resumed from the run dir. Its reward services run inside
it (``loop.reward_router`` on every rank).

Resume: the driver keeps no state of its own. The latest checkpoint's meta.json says which iteration is next
(``loop.latest_position``), driver.json whether its rollouts are collected, the manifest which shards are complete
and which jobs were submitted. A driver killed at any point (``kill -9`` included) and started again re-attaches to
its children that are still pending or running (``launcher.py``), reuses finished shards and redraws exactly the
same prompts, so nothing is lost or repeated. SIGUSR1/SIGTERM only set a flag; the driver leaves between two polls,
never between an ``sbatch`` and the manifest entry that records it.

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
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError, UncompletedJobError

from .. import STAGES
from .. import preemption
from ..config import build_dataclass, canonical_stage, load_resolved, to_dict
from ..errors import ConfigError, RunDirError
from ..manifest import Manifest
from ..paths import RunPaths
from ..records import JobEntry, LaunchRecord
from . import slurm_state
from .executors import batch_script, make_executor
from .jobbase import MathfirstJob, gc_paused, run_dir_of
from .jobspec import job_name, job_spec
from .launcher import POLL_S, STAGE_JOB_KINDS, DriverStopped, Launcher, Request
from .profiles import ClusterProfile, check_partitions, load_profile

log = logging.getLogger("mathfirst_hpc.launch")
PREVIOUS_STAGE = {"sft": None, "math_rl": "sft", "joint_rl": "math_rl"}
TARGETS = {"all": list(STAGES)}
MODES = ("phases", "allocation")
"""How ``submit`` runs a stage: phases = a 1-CPU driver job that submits rollout arrays and a learner job per
iteration; allocation = one job of nodes x tasks that runs the whole stage (``phases.StageJob``)."""


# ---------------------------------------------------------------------------------------------------------------
# launch.json: how the run was submitted
# ---------------------------------------------------------------------------------------------------------------

def write_launch(paths: RunPaths, profile: ClusterProfile, stages: list[str], init_from: str | None,
                 preset: str, mode: str = "phases") -> None:
    LaunchRecord(to_dict(profile), stages, init_from, preset, mode=mode).write(paths.launch_file)


def read_launch(paths: RunPaths) -> LaunchRecord:
    if not paths.launch_file.exists():
        raise RunDirError(f"{paths.root} was never submitted (no {paths.launch_file.name})",
                          hint="use mathfirst-hpc submit first")
    return LaunchRecord.read(paths.launch_file)


def stage_init_from(launch: LaunchRecord, stage: str) -> str | None:
    """``--init-from`` applies to the first submitted stage only; later ones start from the stage before."""
    return launch.init_from if stage == launch.stages[0] else None


def launch_profile(launch: LaunchRecord) -> ClusterProfile:
    return build_dataclass(ClusterProfile, launch.profile)


# ---------------------------------------------------------------------------------------------------------------
# the stage driver
# ---------------------------------------------------------------------------------------------------------------

def drive_stage(run_dir: str | Path, stage: str, poll_s: float = POLL_S) -> str:
    """Run one stage's job graph to its final checkpoint. Raises DriverStopped when a signal asks to stop."""
    with gc_paused():  # loads torch and transformers
        from ..loop import run_rl_loop
        from ..stage import make_context, stage_start
        from .phases import Prelaunch, ScoredByTasks, SlurmLearner, SlurmRollouts, StageJob
        from .services import stage_services

    paths = RunPaths(run_dir)
    launch = read_launch(paths)
    cfg = load_resolved(paths.stage_config(stage))
    manifest = Manifest(paths)
    if manifest.is_final(stage):
        return "final"
    launcher = Launcher(paths, cfg, launch_profile(launch), poll_s)
    init_from = stage_init_from(launch, stage)
    if stage == "sft":
        key = {"kind": "learner", "stage": stage}
        launcher.run("learner", [Request(key, StageJob(str(paths.root), stage, init_from,
                                                     cfg.parallel.dist_backend))])
    else:
        init_hf = stage_start(paths, cfg, init_from)
        manifest.set_stage(stage, init_from=str(init_hf) if init_hf else None)
        # trains the run's tokenizer once, before any task; stop = a signal (the loop polls it between iterations)
        ctx = make_context(paths, cfg, should_stop=preemption.requested, progress=False)
        prelaunch = Prelaunch(ctx, launcher) if cfg.slurm.prelaunch else None
        with stage_services(paths, cfg, launch_profile(launch)) as services, \
                prelaunch.cancelled_after() if prelaunch else contextlib.nullcontext():
            if run_rl_loop(ctx, SlurmRollouts(ctx, launcher, services, prelaunch=prelaunch),
                           SlurmLearner(ctx, launcher, prelaunch), ScoredByTasks()) != "final":
                raise DriverStopped(preemption.reason() or "stop")
    if not manifest.is_final(stage):
        raise RunDirError(f"stage {stage} ended without a final checkpoint in {paths.root}")
    return "final"


class DriverJob(MathfirstJob):
    """One stage's driver (CPU, light). Fails unless the stage ends final, so ``afterok`` holds the next stage."""

    polls_safe_points = True

    def __init__(self, run_dir: str, stage: str) -> None:
        self.run_dir, self.stage = run_dir_of(run_dir), stage

    def run(self) -> str:
        try:
            return drive_stage(self.run_dir, self.stage)
        except DriverStopped:
            preemption.exit_for_requeue()
            raise  # not reached


class EvalJob(MathfirstJob):
    """Offline evaluation of a run dir's checkpoints (``submit eval``); finished chunks are kept on requeue."""

    def __init__(self, run_dir: str, eval_cfg: dict[str, Any], profile_path: str) -> None:
        self.run_dir, self.eval_cfg, self.profile_path = run_dir_of(run_dir), eval_cfg, profile_path

    def run(self) -> dict[str, Any]:
        from ..eval.harness import EvalConfig, evaluate

        cfg = build_dataclass(EvalConfig, self.eval_cfg)
        return evaluate(cfg, RunPaths(self.run_dir).eval_dir, run_dir=self.run_dir, profile=self.profile_path)


# ---------------------------------------------------------------------------------------------------------------
# run level: submit, resume, cancel
# ---------------------------------------------------------------------------------------------------------------

def target_stages(target: str) -> list[str]:
    """stage1|stage2|stage3 (or sft|math_rl|joint_rl, 1|2|3) -> one stage; all -> the three."""
    if target.strip().lower() in TARGETS:
        return TARGETS[target.strip().lower()]
    return [canonical_stage(target)]


def _driver_jobs(paths: RunPaths) -> dict[str, tuple[str, str]]:
    """stage -> (job id, state) of its newest top job (driver, or the stage's job in one-allocation mode)."""
    jobs = {j: e for j, e in Manifest(paths).jobs().items() if e.kind in STAGE_JOB_KINDS}
    states = slurm_state.job_states(list(jobs)) if jobs else {}
    newest: dict[str, tuple[str, str]] = {}
    for job_id, entry in sorted(jobs.items(), key=lambda item: item[1].submitted_unix):
        newest[entry.stage] = (job_id, states.get(job_id, slurm_state.UNKNOWN))
    return newest


@dataclass
class Submitted:
    stage: str
    job_id: str | None
    """None: nothing submitted (already final, or ran in this process with the local executor)."""
    dependency: str | None = None
    note: str = ""
    kind: str = "driver"
    """driver, or allocation (the whole stage in one job)."""


def _check_start(paths: RunPaths, first: str, init_from: str | None, drivers: dict[str, tuple[str, str]],
                 target: str, from_base: bool = False) -> str | None:
    """The dependency the first stage waits on, or None. Refuses a stage whose input cannot exist.
    ``from_base``: the stage starts from the base model (``start_from: base``), not from the previous stage."""
    previous = PREVIOUS_STAGE[first]
    if previous is None or init_from is not None or from_base or Manifest(paths).is_final(previous):
        return None
    job = drivers.get(previous)
    if job is not None and slurm_state.is_alive(job[1]):
        return job[0]  # the previous stage is still running: wait for it to succeed
    number = f"stage{STAGES.index(previous) + 1}"
    raise RunDirError(f"submit {target}: {paths.root} has no final {previous} ({number})",
                      hint=f"submit {number} first (or all), or pass --init-from CKPT")


def _starts_from_base(paths: RunPaths, stage: str, preset: str, overrides: list[str]) -> bool:
    """``start_from: base`` in the stage's config: the saved one on resume, else the one submit would save."""
    from ..config import load_stage_config
    from ..run import overrides_for

    saved = paths.stage_config(stage)
    cfg = load_resolved(saved) if saved.exists() else load_stage_config(stage, preset, overrides_for(stage, overrides),
                                                                          check_files=False)
    return cfg.start_from == "base"


def submit_stages(run_dir: str | Path, target: str, profile_name: str, preset: str = "tiny",
                  overrides: list[str] | None = None, init_from: str | None = None,
                  dry_run: bool = False, mode: str = "phases") -> list[Submitted]:
    """``mathfirst-hpc submit``: resolve configs, check the stage rules, submit one driver job per stage (mode
    phases) or one job per stage that holds the whole stage's allocation (mode allocation)."""
    from ..run import overrides_for, resolve_stage_config

    if mode not in MODES:
        raise ConfigError(f"submit mode {mode!r} is unknown", hint=f"use one of {', '.join(MODES)}")
    stages = target_stages(target)
    profile = load_profile(profile_name)
    check_partitions(profile)
    if init_from is not None and not Path(init_from).exists():
        raise ConfigError(f"--init-from {init_from}: no such file or folder")
    paths = RunPaths(run_dir)
    if dry_run:
        return _dry_run(paths, stages, profile, preset, overrides or [], mode)
    drivers = _driver_jobs(paths) if paths.manifest.exists() else {}
    for stage in stages:  # two drivers of one stage would both submit its jobs
        job = drivers.get(stage)
        if job is not None and slurm_state.is_alive(job[1]):
            raise RunDirError(f"stage {stage} of {paths.root} already has job {job[0]} ({job[1].lower()})",
                              hint=f"wait for it, or mathfirst-hpc cancel {paths.root} first")
    from_base = _starts_from_base(paths, stages[0], preset, overrides or [])
    dependency = _check_start(paths, stages[0], init_from, drivers, target, from_base)  # before writing anything
    paths.make()
    for stage in stages:
        resolve_stage_config(paths, stage, preset, overrides_for(stage, overrides or []))
    write_launch(paths, profile, stages, init_from, preset, mode)
    return _submit_chain(paths, stages, profile, dependency)


def _dry_run(paths: RunPaths, stages: list[str], profile: ClusterProfile, preset: str,
             overrides: list[str], mode: str = "phases") -> list[Submitted]:
    from ..config import dump_yaml, load_stage_config
    from ..run import overrides_for

    out = []
    kind = _top_kind(mode)
    for stage in stages:
        cfg = load_stage_config(stage, preset, overrides_for(stage, overrides), check_files=False)
        files = [f"# {stage} {kind} batch file\n{batch_script(_top_spec(cfg, profile, mode), paths.job_logs(stage))}"]
        if mode == "phases":
            files += [f"# {title} batch file\n{text}" for title, text in _child_batch_files(paths, cfg, profile)]
        out.append(Submitted(stage, None, kind=kind, note="\n".join(files) + f"\n# resolved config\n{dump_yaml(cfg)}"))
    return out


def _child_batch_files(paths: RunPaths, cfg: Any, profile: ClusterProfile) -> list[tuple[str, str]]:
    """(title, batch file) of each job a phases driver submits for ``cfg``'s stage, named and sized as it does:
    the learner, the rollout array (RL) and the reward services the mix needs (on a Slurm profile)."""
    from .services import services_needed

    stage, folder = cfg.stage, paths.job_logs(cfg.stage)
    files = [(f"{stage} learner", batch_script(job_spec("learner", cfg, profile, name=job_name(stage, "learner")),
                                              folder))]
    if stage != "sft":
        tasks = cfg.rollout.num_shards
        files.append((f"{stage} rollout array of {tasks} tasks",
                      batch_script(job_spec("rollout", cfg, profile, name=job_name(stage, "rollout")), folder,
                                   array_size=tasks)))
    for service in services_needed(cfg) if profile.executor == "slurm" else []:
        files.append((f"{stage} {service} service", batch_script(job_spec(service, cfg, profile,
                                                                          name=job_name(stage, service)), folder)))
    return files


def _top_kind(mode: str) -> str:
    return "allocation" if mode == "allocation" else "driver"


def _top_spec(cfg: Any, profile: ClusterProfile, mode: str) -> Any:
    """The job that runs a stage: its 1-CPU driver, or (allocation) the whole stage on the learner's nodes."""
    kind = _top_kind(mode)
    return job_spec(kind, cfg, profile, name=job_name(cfg.stage, kind))


def _top_job(paths: RunPaths, stage: str, mode: str) -> MathfirstJob:
    if mode != "allocation":
        return DriverJob(str(paths.root), stage)
    from .phases import StageJob

    launch, cfg = read_launch(paths), load_resolved(paths.stage_config(stage))
    init_from = stage_init_from(launch, stage)
    return StageJob(str(paths.root), stage, init_from, cfg.parallel.dist_backend)


def _submit_chain(paths: RunPaths, stages: list[str], profile: ClusterProfile,
                  dependency: str | None) -> list[Submitted]:
    out = []
    manifest = Manifest(paths)
    mode = read_launch(paths).mode
    kind = _top_kind(mode)
    for stage in stages:
        if manifest.is_final(stage):
            out.append(Submitted(stage, None, note="already final", kind=kind))
            dependency = None
            continue
        if profile.executor == "local":  # foreground: the stages run here, one after the other
            note = _run_here(paths, stage, profile, mode)
            out.append(Submitted(stage, None, note=note, kind=kind))
            if note != "final":
                return out
            continue
        spec = _top_spec(load_resolved(paths.stage_config(stage)), profile, mode)
        if dependency:
            spec = spec.with_(dependency=f"afterok:{dependency}")
        folder = paths.job_logs(stage)
        job = make_executor("slurm", folder, spec).submit(_top_job(paths, stage, mode))
        manifest.record_job(str(job.job_id), JobEntry(kind, stage, {"kind": kind, "stage": stage}, "slurm",
                                                      str(folder), dependency=dependency))
        out.append(Submitted(stage, str(job.job_id), dependency, kind=kind))
        dependency = str(job.job_id)
    return out


def _run_here(paths: RunPaths, stage: str, profile: ClusterProfile, mode: str) -> str:
    """The local executor: a phases driver in this process (its children are subprocesses), or the allocation
    job as subprocesses of submitit's local executor; 'final', or a note saying how it stopped."""
    if mode == "allocation":
        spec = _top_spec(load_resolved(paths.stage_config(stage)), profile, mode)
        job = make_executor("local", paths.job_logs(stage), spec).submit(_top_job(paths, stage, mode))
        try:
            job.results()
        except (FailedJobError, UncompletedJobError) as exc:  # its traceback is in the job's log
            return f"stopped ({str(exc).splitlines()[0]}); see {paths.job_logs(stage)}, run resume to continue"
        return "final" if Manifest(paths).is_final(stage) else "stopped; run resume to continue"
    try:
        drive_stage(paths.root, stage)
    except DriverStopped as exc:
        return f"stopped ({exc}); run resume to continue"
    return "final"


def submit_eval(run_dir: str | Path, profile_name: str, overrides: list[str] | None = None) -> Submitted:
    """``submit eval``: one CPU job that evaluates the base model and every final stage of the run dir (its
    generation runs as job arrays of the same profile), after the run's newest pending or running driver."""
    from ..config import apply_overrides
    from ..eval.harness import EvalConfig
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
    cfg = load_resolved(paths.stage_config(read_launch(paths).stages[-1]))
    spec = job_spec("driver", cfg, profile, name="mf-eval-driver")
    if dependency:
        spec = spec.with_(dependency=f"afterok:{dependency}")
    folder = paths.job_logs("eval")
    job = make_executor("slurm", folder, spec).submit(
        EvalJob(str(paths.root), to_dict(eval_cfg), str(resolve_profile_path(profile_name))))
    Manifest(paths).record_job(str(job.job_id), JobEntry("eval", "eval", {"kind": "eval"}, "slurm", str(folder),
                                                         dependency=dependency))
    return Submitted("eval", str(job.job_id), dependency)


def resume_run(run_dir: str | Path) -> list[Submitted]:
    """Resubmit whatever is unfinished: a stage whose driver is still pending or running is left alone (a
    pending one whose dependency failed is cancelled and resubmitted)."""
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    launch = read_launch(paths)
    profile = launch_profile(launch)
    stages = [s for s in launch.stages if not Manifest(paths).is_final(s)]
    if not stages:
        return [Submitted(s, None, note="already final") for s in launch.stages]
    drivers = _driver_jobs(paths) if profile.executor == "slurm" else {}
    out: list[Submitted] = []
    dependency = None
    for i, stage in enumerate(stages):
        job = drivers.get(stage)
        if job is not None and slurm_state.is_alive(job[1]):
            if "DependencyNeverSatisfied" not in slurm_state.pending_reason(job[0]):
                out.append(Submitted(stage, job[0], note=f"still {job[1].lower()}", kind=_top_kind(launch.mode)))
                dependency = job[0]
                continue
            slurm_state.cancel([job[0]])
        if i == 0 and dependency is None:
            first = launch.stages.index(stage) == 0
            from_base = load_resolved(paths.stage_config(stage)).start_from == "base"
            dependency = _check_start(paths, stage, launch.init_from if first else None, drivers, stage, from_base)
        out += _submit_chain(paths, [stage], profile, dependency)
        dependency = out[-1].job_id
    return out


def cancel_run(run_dir: str | Path, driver_exit_timeout_s: float = 90.0, poll_s: float = 1.0) -> list[str]:
    """scancel every job of the run that is still pending or running. The drivers go first, and their children
    are listed only once the drivers have ended (or after ``driver_exit_timeout_s``): a driver stopped by the
    scancel leaves at its next safe point and may still submit a child (a reward service job, while it starts
    them) and record it in the manifest; a listing taken before that would leave the child running."""
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    drivers = [j for j in _alive_jobs(paths) if Manifest(paths).jobs()[j].kind == "driver"]
    slurm_state.cancel(drivers)
    deadline = time.monotonic() + driver_exit_timeout_s
    while drivers and time.monotonic() < deadline and slurm_state.in_queue(drivers):
        time.sleep(poll_s)
    cancelled = list(drivers)
    for _ in range(2):  # a job listed as pending may start (and a driver submit) while we cancel
        alive = [j for j in _alive_jobs(paths) if j not in cancelled]
        slurm_state.cancel(alive)
        cancelled += alive
        if not alive:
            break
    return cancelled


def _alive_jobs(paths: RunPaths) -> list[str]:
    """The run's Slurm jobs that are pending or running, as the manifest lists them now."""
    jobs = [j for j, e in Manifest(paths).jobs().items() if e.executor == "slurm"]
    states = slurm_state.job_states(jobs) if jobs else {}
    return [j for j in jobs if slurm_state.is_alive(states[j])]


def describe(submitted: list[Submitted]) -> str:
    """One line per stage, for the CLI."""
    lines = []
    for s in submitted:
        if s.job_id:
            after = f" after {s.dependency}" if s.dependency else ""
            lines.append(f"{s.stage}: {s.kind} job {s.job_id}{after}{(' (' + s.note + ')') if s.note else ''}")
        else:
            lines.append(f"{s.stage}: {s.note}" if "\n" not in s.note else s.note)
    return "\n".join(lines)

