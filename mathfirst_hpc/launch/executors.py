"""Explicit executors: ``slurm`` (sbatch through submitit) or ``local`` (subprocesses through submitit).

Never submitit's ``AutoExecutor``: it picks Slurm whenever ``srun`` is on PATH, even with the cluster down, so
the choice here always comes from the cluster profile (``executor: slurm | local``).

Usage::

    executor = make_executor("slurm", run_paths.submitit_dir / "math_rl", spec)
    job = executor.submit(fn, *args)
    print(batch_script(spec, folder))     # what `submit --dry-run` shows
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import submitit

from ..errors import ConfigError
from .jobspec import JobSpec

ExecutorKind = Literal["slurm", "local"]
MAX_TIMEOUTS = 3
"""Requeues after a time-limit signal that submitit allows before it gives up (preemptions do not count)."""


class SlurmExecutor(submitit.SlurmExecutor):
    """submitit's, except that sbatch does not pass on the submitting job's ``SLURM_RESTART_COUNT``.

    sbatch exports the caller's environment, and Slurm sets ``SLURM_RESTART_COUNT`` only in a job that was
    requeued: every job that a requeued driver submits would inherit the driver's count and log (and record in
    its W&B run's metadata) restarts it never had."""

    def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[submitit.Job[Any]]:
        count = os.environ.pop("SLURM_RESTART_COUNT", None)  # single jobs and arrays are both submitted here
        try:
            return super()._internal_process_submissions(delayed_submissions)
        finally:
            if count is not None:
                os.environ["SLURM_RESTART_COUNT"] = count


def make_executor(kind: str, folder: Path | str, spec: JobSpec) -> submitit.Executor:
    """An executor of ``kind`` writing job files under ``folder`` (``%j`` = one subfolder per job)."""
    if kind == "slurm":
        executor: submitit.Executor = SlurmExecutor(folder=folder, python=spec.python_command(),
                                                    max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(**spec.slurm_parameters())
        return executor
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder, python=spec.python_command(), max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(**spec.local_parameters())
        return executor
    raise ConfigError(f"unknown executor {kind!r}", hint="use slurm or local")


def attach_job(kind: str, folder: Path | str, job_id: str) -> submitit.Job:
    """A handle on a job submitted earlier (by a driver that was since killed), to wait for its result."""
    if kind == "slurm":
        return submitit.SlurmJob(folder=folder, job_id=job_id)
    if kind == "local":
        return submitit.LocalJob(folder=folder, job_id=job_id)
    raise ConfigError(f"unknown executor {kind!r}", hint="use slurm or local")


class _PreviewExecutor(submitit.SlurmExecutor):
    """Writes batch files only: SlurmExecutor refuses to exist without ``srun``, a preview needs no Slurm."""

    @classmethod
    def affinity(cls) -> int:
        return 2


def batch_script(spec: JobSpec, folder: Path | str, array_size: int | None = None) -> str:
    """The sbatch file that ``submit`` would write for ``spec`` (for ``--dry-run``; works without Slurm).

    ``array_size``: the file of a job array of that many tasks, as ``executor.batch()`` submits it.
    """
    executor = _PreviewExecutor(folder=folder, python=spec.python_command(), max_num_timeout=MAX_TIMEOUTS)
    executor.update_parameters(**spec.slurm_parameters())
    if array_size is not None:
        executor.parameters["map_count"] = array_size  # what submitit sets for a batch of several jobs
    # submitit builds the file from the same parameters it submits; "DRYRUN" stands for the pickle's uuid.
    return executor._make_submission_file_text(executor._submitit_command_str, "DRYRUN")
