"""The base classes of every submitit job: a ``Checkpointable`` whose whole state lives in the run dir, so the
resubmission that ``checkpoint()`` returns is simply the same call: the requeued job resumes from disk.

Two ways a job leaves early, both ending in the same requeued call:

* a job that polls safe points (``polls_safe_points = True``: driver, learner) installs
  :mod:`~mathfirst_hpc.preemption`'s handler; on SIGUSR1/SIGTERM it saves at the next safe point and calls
  ``preemption.exit_for_requeue()``, which runs submitit's checkpoint-and-requeue for SIGUSR1;
* a job that does not poll (rollout tasks, eval array tasks) keeps submitit's handler: SIGUSR1 calls
  ``checkpoint()`` at once and requeues; finished shards are on disk, the task redoes only its unfinished one.

The jobs themselves sit with the code they run: ``phases.py`` (RolloutTask, LearnerJob, StageJob), ``driver.py``
(DriverJob, EvalJob), ``eval/harness.py`` (EvalArrayTask); ``jobs.py`` lists them all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import submitit

from .. import preemption
from ..distributed import init_distributed


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
