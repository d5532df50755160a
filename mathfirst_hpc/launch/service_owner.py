"""A reward service job ends itself once the stage driver that owns it is gone for good.

The driver cancels its stage's service jobs when the stage ends (``services.stage_services``), but a driver that is
``scancel``-ed, killed at its time limit or lost with its node never gets that chance: its services would hold their
CPUs (or a GPU) forever. A driver that is merely requeued (preemption, ``scontrol requeue``) must find them still
running, so a signal to the driver cannot be the trigger. Instead each service job watches its owner:

    the driver (``StageServices.ensure``)   writes its own job id to ``owner.json`` in each service job's folder,
                                            on every submit and re-attach (a resumed driver takes them over)
    the service job (:func:`start_watch`)   a daemon thread polls the owner's state every :data:`POLL_S` and,
                                            once :class:`OwnerWatch` says gone, ``scancel``-s its own job

Alive/gone (:meth:`OwnerWatch.observe`):

    alive  any state ``slurm_state.is_alive`` accepts (PENDING, RUNNING, REQUEUED, CONFIGURING, ...)
    gone   a terminal state (:data:`GONE_STATES`) seen continuously for :data:`CONFIRM_S`, or no alive state at all
           (absent from sacct and squeue, NODE_FAIL or PREEMPTED that Slurm did not requeue) for
           :data:`ABSENT_GRACE_S`: sacct lags and those states may precede a requeue

A service job without an owner file (its driver is not a Slurm job: a test, an interactive session) never ends
itself. Cancelling itself (not exiting) keeps Slurm from requeueing it and stops every process of the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_json
from . import slurm_state

GONE_STATES = frozenset({"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"})
"""Owner states after which Slurm never runs the job again (a requeue-able job shows REQUEUED instead)."""
POLL_S = 5.0
CONFIRM_S = 10.0
"""A terminal state must persist this long (two polls): one odd sacct answer does not end a service."""
ABSENT_GRACE_S = 300.0
"""How long an owner may be unknown to Slurm, or in an ambiguous state, before it counts as gone."""
OWNER_FILE = "owner.json"


def owner_file(folder: Path) -> Path:
    """The owner record of a service job, in its submitit folder (:func:`job_folder`)."""
    return Path(folder) / OWNER_FILE


def write_owner(folder: Path, owner_job_id: str) -> None:
    # atomic (temp name, fsync, rename): the watching job never reads half a record
    write_json(owner_file(folder), {"owner_job_id": str(owner_job_id), "written_unix": time.time()})


def read_owner(folder: Path) -> str | None:
    try:
        return str(json.loads(owner_file(folder).read_text())["owner_job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class OwnerWatch:
    """The alive/gone decision from a sequence of observed owner states (pure: the clock is passed in)."""

    confirm_s: float = CONFIRM_S
    absent_grace_s: float = ABSENT_GRACE_S
    owner: str | None = None
    _not_alive_since: float | None = None
    _terminal_since: float | None = None

    def observe(self, owner: str | None, state: str, now: float) -> bool:
        """Record the owner's ``state`` at time ``now``; True once the owner is gone for good."""
        if owner != self.owner:  # a new driver took the service over: start afresh
            self.owner, self._not_alive_since, self._terminal_since = owner, None, None
        if owner is None or slurm_state.is_alive(state):
            self._not_alive_since = self._terminal_since = None
            return False
        if self._not_alive_since is None:
            self._not_alive_since = now
        if not (state and state.split()[0].upper() in GONE_STATES):
            self._terminal_since = None
        elif self._terminal_since is None:
            self._terminal_since = now
        terminal_for = now - self._terminal_since if self._terminal_since is not None else -1.0
        return terminal_for >= self.confirm_s or now - self._not_alive_since >= self.absent_grace_s


def _end_own_job(owner: str, state: str) -> None:
    job_id = os.environ.get("SLURM_JOB_ID")
    print(f"[service] owner driver job {owner} is {state.lower() or 'gone'}: cancelling this service job "
          f"{job_id}", file=sys.stderr, flush=True)
    if job_id:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
    time.sleep(60.0)  # scancel's SIGTERM and the service's own shutdown take it from here
    os._exit(0)  # scancel failed: leave anyway (completed, so Slurm does not requeue it)


def watch(folder: Path, poll_s: float = POLL_S, decision: OwnerWatch | None = None) -> None:
    """Poll the owner recorded in ``folder`` until it is gone for good, then end this job."""
    decision = decision or OwnerWatch()
    while True:
        owner = read_owner(folder)
        state = slurm_state.job_states([owner])[owner] if owner else ""
        if decision.observe(owner, state, time.monotonic()):
            _end_own_job(str(owner), state)
            return
        time.sleep(poll_s)


def job_folder(folder_pattern: Path | str, job_id: str) -> Path:
    """A job's submitit folder (``%j`` filled in), as the driver and the job itself both compute it."""
    from submitit.core.utils import JobPaths
    return JobPaths(folder_pattern, job_id=str(job_id)).folder


def start_watch() -> threading.Thread | None:
    """In a service job: watch its owner in a daemon thread (nothing outside a submitit job)."""
    if "SUBMITIT_FOLDER" not in os.environ or "SLURM_JOB_ID" not in os.environ:
        return None
    folder = job_folder(os.environ["SUBMITIT_FOLDER"], os.environ["SLURM_JOB_ID"])
    thread = threading.Thread(target=watch, args=(folder,), name="service-owner-watch", daemon=True)
    thread.start()
    return thread
