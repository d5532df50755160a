"""Slurm job states for a run's jobs: ``sacct`` (accounting; sees finished jobs), then ``squeue`` for jobs that
sacct does not list yet (it lags a couple of seconds behind a submission or a state change).

Usage::

    job_states(["1234", "1235_0"])   # {"1234": "COMPLETED", "1235_0": "RUNNING"}
    is_alive("PENDING")              # True: the job may still produce its result
"""

from __future__ import annotations

import shutil
import subprocess

ALIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                          "COMPLETING", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})
UNKNOWN = "UNKNOWN"


def is_alive(state: str) -> bool:
    return state.split()[0].upper() in ALIVE_STATES if state else False


def _run(args: list[str], timeout_s: float = 30.0) -> str:
    if shutil.which(args[0]) is None:
        return ""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job id (array tasks as ``ARRAY_TASK``); UNKNOWN when Slurm knows nothing of it."""
    ids = [str(j) for j in job_ids]
    if not ids:
        return {}
    states: dict[str, str] = {}
    for line in _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)]).splitlines():
        job_id, _, state = line.partition("|")
        states[job_id.strip()] = state.split()[0] if state.strip() else UNKNOWN  # "CANCELLED by 0" -> CANCELLED
    missing = [j for j in ids if j not in states]
    if missing:
        out = _run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(missing)])
        for line in out.splitlines():
            job_id, _, state = line.partition("|")
            states[job_id.strip()] = state.strip()
    return {j: states.get(j, UNKNOWN) for j in ids}


def in_queue(job_ids: list[str]) -> list[str]:
    """The jobs that squeue still lists, in any state: a cancelled job stays COMPLETING while its processes run
    (sacct already says CANCELLED then)."""
    if not job_ids:
        return []
    out = _run(["squeue", "-h", "-o", "%i", "-j", ",".join(map(str, job_ids))])
    return [line.strip() for line in out.splitlines() if line.strip()]


def pending_reason(job_id: str) -> str:
    """squeue's reason for a pending job (e.g. Dependency, DependencyNeverSatisfied), '' if none."""
    return _run(["squeue", "-h", "-o", "%r", "-j", str(job_id)]).strip()


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *map(str, job_ids)], capture_output=True, text=True, timeout=60)
