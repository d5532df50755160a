"""Submitting a stage's child jobs and waiting for them: :class:`Launcher`.

    launcher = Launcher(paths, cfg, profile)
    results = launcher.run("rollout", [Request(key, RolloutTask(...)), ...])   # one array, in order

Every child is recorded in the manifest (``records.JobEntry``) with its ``key`` (stage, iteration, generation
batch, shard, policy step). A driver restarted after a crash re-attaches to a child with the same key that is still
pending or running instead of submitting it twice. While waiting, a stop request (SIGUSR1/SIGTERM) raises
:class:`DriverStopped`: the driver leaves between two polls, never between an ``sbatch`` and its manifest entry.

Waiting costs little per poll (a stat of each child's result file; submitit asks ``sacct`` on its own, backing off
from every 2 s), so the driver polls every :data:`POLL_S`: a child's end is noticed ~0.1 s after it, not ~0.5 s.
Before submitting, ``run`` asks Slurm which recorded children are still alive (to re-attach after a restart), but
not about the children whose results this launcher collected itself: a driver that has not restarted asks only
about its stage's service jobs, if any (stage 2 of the tiny preset has none: no ``sacct``/``squeue`` call at all).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

from .. import preemption
from ..errors import RunDirError
from ..manifest import Manifest
from ..paths import RunPaths
from ..records import JobEntry
from . import slurm_state
from .executors import attach_job, make_executor
from .jobspec import Role, job_name, job_spec
from .profiles import ClusterProfile


STAGE_JOB_KINDS = ("driver", "allocation")
"""Manifest kinds of a stage's top job (the one ``afterok`` chains, ``resume`` resubmits, ``cancel`` stops first),
never one of a driver's children."""
POLL_S = 0.2
"""Seconds between two checks of the children a driver waits for (and of its stop flag)."""


class DriverStopped(Exception):
    """A signal asked the driver to stop; it leaves at a safe point and its requeued run resumes."""


@dataclass
class Request:
    """One child job: its identity in the manifest (``key``) and the callable it runs."""

    key: dict[str, Any]
    fn: Callable[[], Any]


class Launcher:
    """Submits a stage's child jobs (as one array when several), re-attaches to live ones after a driver restart,
    and waits for them while polling the stop flag."""

    def __init__(self, paths: RunPaths, cfg, profile: ClusterProfile, poll_s: float = POLL_S) -> None:
        self.paths, self.cfg, self.profile, self.poll_s = paths, cfg, profile, poll_s
        self.manifest = Manifest(paths)
        self._collected: set[str] = set()
        """Job ids whose results this launcher returned: finished, never worth a Slurm query again."""

    @property
    def kind(self) -> str:
        return self.profile.executor

    def folder(self) -> Path:
        return self.paths.job_logs(self.cfg.stage)

    def executor(self, role: Role) -> submitit.Executor:
        spec = job_spec(role, self.cfg, self.profile, name=job_name(self.cfg.stage, role))
        return make_executor(self.kind, self.folder(), spec)

    def alive_jobs(self) -> dict[str, submitit.Job]:
        """Children recorded in the manifest that are still pending or running, by their key (Slurm only: a local
        job's process cannot be re-attached after its parent died)."""
        if self.kind != "slurm":
            return {}
        jobs = {j: e for j, e in self.manifest.jobs().items()
                if e.stage == self.cfg.stage and e.kind not in STAGE_JOB_KINDS and j not in self._collected}
        states = slurm_state.job_states(list(jobs))
        out = {}
        for job_id, entry in sorted(jobs.items(), key=lambda item: item[1].submitted_unix):
            if slurm_state.is_alive(states[job_id]):
                out[key_text(entry.key)] = attach_job(self.kind, entry.folder, job_id)
        return out

    def run(self, role: Role, requests: list[Request]) -> list[Any]:
        """Submit (as one array when several) or re-attach, wait for all, return their results in order."""
        if not requests:
            return []
        alive = self.alive_jobs()
        jobs: list[submitit.Job | None] = [alive.get(key_text(r.key)) for r in requests]
        todo = [i for i, job in enumerate(jobs) if job is None]
        for i, job in zip(todo, self.submit(role, [requests[i] for i in todo]), strict=True):
            jobs[i] = job
        return self.wait([job for job in jobs if job is not None], role)

    def submit(self, role: Role, requests: list[Request]) -> list[submitit.Job]:
        """Submit (as one array when several) and record them in the manifest before returning; no wait."""
        if not requests:
            return []
        executor = self.executor(role)
        with executor.batch() if len(requests) > 1 else contextlib.nullcontext():
            submitted = [executor.submit(request.fn) for request in requests]
        self.manifest.record_jobs({str(job.job_id): JobEntry(role, self.cfg.stage, request.key, self.kind,
                                                             str(self.folder()))
                                   for request, job in zip(requests, submitted, strict=True)})
        return submitted

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
        self._collected.update(str(job.job_id) for job in jobs)
        return results


def key_text(key: dict[str, Any]) -> str:
    """A child's key as text: how the manifest's entries and the jobs a driver waits on are matched."""
    return json.dumps(key, sort_keys=True)
