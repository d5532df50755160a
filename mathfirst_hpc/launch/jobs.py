"""submitit job classes. Each is a ``Checkpointable`` whose whole state lives in the run dir, so the
resubmission that ``checkpoint()`` returns is simply the same call: the requeued job resumes from disk.

Two ways a job leaves early, both ending in the same requeued call:

* a job that polls safe points (``polls_safe_points = True``: driver, learner) installs
  :mod:`~mathfirst_hpc.launch.preemption`'s handler; on SIGUSR1/SIGTERM it saves at the next safe point and
  calls ``preemption.exit_for_requeue()``, which runs submitit's checkpoint-and-requeue for SIGUSR1;
* a job that does not poll (rollout tasks) keeps submitit's handler: SIGUSR1 calls ``checkpoint()`` at once
  and requeues; finished shards are on disk, the task redoes only its unfinished one.

Usage::

    executor.submit(LearnerJob(run_dir, "math_rl", iteration=3))
    executor.map_array(RolloutTask(run_dir, "math_rl", iteration=3, gen_batch=0), range(num_shards))
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import submitit

from . import preemption
from .distributed import init_distributed


class MathfirstJob(submitit.helpers.Checkpointable):
    polls_safe_points: ClassVar[bool] = False
    """True when ``run()`` polls ``preemption.should_stop()``; only then are the signals routed to the flag."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # First thing, before slow imports: a signal from now on waits for a safe point instead of being lost.
        if self.polls_safe_points:
            preemption.install()
        print(f"[{type(self).__name__}] start, Slurm job {os.environ.get('SLURM_JOB_ID', '-')}, "
              f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}", file=sys.stderr, flush=True)
        self.setup()
        return self.run(*args, **kwargs)

    def setup(self) -> None:
        """Per-process preparation before ``run`` (the process group of a distributed job)."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # The state is on disk (checkpoints, shards, manifest): resubmit the same call, which resumes from it.
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class DistributedJob(MathfirstJob):
    """A job of several tasks (nodes x tasks per node) that form one torch.distributed group."""

    polls_safe_points = True

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend

    def setup(self) -> None:
        init_distributed(self.backend)


def run_dir_of(path: Path | str) -> str:
    """Jobs carry the run dir as an absolute string (pickled, read on another node)."""
    return str(Path(path).resolve())


# ---- the jobs of a stage -------------------------------------------------------------------------------------------

class DriverJob(MathfirstJob):
    """One stage's driver (CPU, light). Fails unless the stage ends final, so ``afterok`` holds the next stage."""

    polls_safe_points = True

    def __init__(self, run_dir: str, stage: str) -> None:
        self.run_dir, self.stage = run_dir_of(run_dir), stage

    def run(self) -> str:
        from .driver import DriverStopped, drive_stage

        try:
            return drive_stage(self.run_dir, self.stage)
        except DriverStopped:
            preemption.exit_for_requeue()
            raise  # not reached


class RolloutTask(MathfirstJob):
    """One rollout array element. Does not poll: submitit's USR1 handler requeues it at once (its shard is written
    atomically or not at all, so the rerun redoes only this shard)."""

    def __init__(self, run_dir: str, stage: str, iteration: int, gen_batch: int, policy_step: int,
                 shard_index: int) -> None:
        self.run_dir, self.stage = run_dir_of(run_dir), stage
        self.iteration, self.gen_batch, self.policy_step, self.shard_index = iteration, gen_batch, policy_step, \
            shard_index

    def run(self) -> dict[str, Any]:
        from .phases import rollout_task

        return rollout_task(self.run_dir, self.stage, self.iteration, self.gen_batch, self.shard_index,
                            self.policy_step)


class LearnerJob(DistributedJob):
    """One iteration's DAPO update on nodes x tasks; stops at an optimizer-step boundary when told to."""

    def __init__(self, run_dir: str, stage: str, iteration: int, backend: str = "auto") -> None:
        super().__init__(backend)
        self.run_dir, self.stage, self.iteration = run_dir_of(run_dir), stage, iteration

    def run(self) -> dict[str, Any]:
        from .phases import learner_iteration

        return learner_iteration(self.run_dir, self.stage, self.iteration)


class SftJob(DistributedJob):
    """Stage 1 (SFT) as one learner job."""

    def __init__(self, run_dir: str, stage: str, init_from: str | None, backend: str = "auto") -> None:
        super().__init__(backend)
        self.run_dir, self.stage, self.init_from = run_dir_of(run_dir), stage, init_from

    def run(self) -> str:
        from .phases import sft_stage

        return sft_stage(self.run_dir, self.stage, self.init_from)


class EvalJob(MathfirstJob):
    """Offline evaluation of a run dir's checkpoints (``submit eval``); finished chunks are kept on requeue."""

    def __init__(self, run_dir: str, eval_cfg: dict[str, Any], profile_path: str) -> None:
        self.run_dir, self.eval_cfg, self.profile_path = run_dir_of(run_dir), eval_cfg, profile_path

    def run(self) -> dict[str, Any]:
        from ..config import build_dataclass
        from ..eval.harness import EvalConfig, evaluate
        from ..paths import RunPaths

        cfg = build_dataclass(EvalConfig, self.eval_cfg)
        return evaluate(cfg, RunPaths(self.run_dir).eval_dir, run_dir=self.run_dir, profile=self.profile_path)
