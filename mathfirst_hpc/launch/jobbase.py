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

import contextlib
import gc
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Iterator

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
        settle_job_process()
        self.setup()
        result = self.run(*args, **kwargs)
        settle_job_process()
        return result

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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (its state restored after): for importing torch and transformers, whose
    tens of thousands of new objects trigger GC passes that find nothing to free. Measured on the job modules
    (``import mathfirst_hpc.launch.phases``, 2 cores): 3.8 s of CPU with the GC on, 3.0 s paused."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def settle_job_process() -> None:
    """In a job process (started by submitit), move every object alive now to the GC's permanent generation
    (``gc.freeze``): before ``run``, the modules imported while unpickling, which later GC passes then skip; after
    ``run``, the rest, so the interpreter's exit does not walk them all again (~1 s of CPU with torch and
    transformers loaded, ~0.1 s frozen; the result is written before the exit, but the exit competes for the
    CPUs with the next job's start). Nothing happens in other processes (a test, a CLI that runs a job in-process):
    frozen objects are never collected, which only a process about to end can ignore."""
    if "SUBMITIT_EXECUTOR" in os.environ:  # set by submitit's batch file (slurm) and local executor
        gc.freeze()


def run_dir_of(path: Path | str) -> str:
    """Jobs carry the run dir as an absolute string (pickled, read on another node)."""
    return str(Path(path).resolve())
