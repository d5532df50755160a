"""``cancel_run`` (``mathfirst-hpc cancel``) with a fake Slurm: a driver stopped by the scancel may still submit a
child before it exits (found on the local cluster: a driver cancelled while it started its judge and sandbox jobs
left both running for their whole time limit); the children are listed once the drivers are gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mathfirst_hpc.launch import driver as driver_mod
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.records import JobEntry


class DyingDriver:
    """Slurm with one running driver (job 1): scancelled, it stays in the queue two more polls, and in the first
    it submits a judge service job (2), as a driver inside ``services.ensure()`` does."""

    def __init__(self, paths: RunPaths) -> None:
        self.manifest = Manifest(paths)
        self.manifest.record_job("1", JobEntry("driver", "joint_rl", {"kind": "driver", "stage": "joint_rl"}))
        self.states = {"1": "RUNNING"}
        self.queue_polls_left: int | None = None
        self.cancelled: list[str] = []

    def job_states(self, ids: list[str]) -> dict[str, str]:
        return {j: self.states.get(j, "UNKNOWN") for j in ids}

    def cancel(self, ids: list[str]) -> None:
        for j in ids:
            self.states[j] = "CANCELLED"  # sacct says so at once, while the process is still leaving
        self.cancelled += list(ids)
        if "1" in ids:
            self.queue_polls_left = 2

    def in_queue(self, ids: list[str]) -> list[str]:
        if self.queue_polls_left is None or self.queue_polls_left == 0:
            return []
        if self.queue_polls_left == 2:  # the dying driver's last sbatch
            self.manifest.record_job("2", JobEntry("service", "joint_rl", {"kind": "service", "service": "judge"}))
            self.states["2"] = "PENDING"
        self.queue_polls_left -= 1
        return [j for j in ids if j == "1"]


def test_children_submitted_by_a_dying_driver_are_cancelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = RunPaths(tmp_path).make()
    slurm = DyingDriver(paths)
    for name in ("job_states", "cancel", "in_queue"):
        monkeypatch.setattr(driver_mod.slurm_state, name, getattr(slurm, name))
    assert driver_mod.cancel_run(tmp_path, poll_s=0.0) == ["1", "2"]
    assert slurm.cancelled == ["1", "2"] and slurm.states["2"] == "CANCELLED"


def test_a_driver_that_never_leaves_the_queue_is_waited_for_a_bounded_time(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    paths = RunPaths(tmp_path).make()
    slurm = DyingDriver(paths)
    for name in ("job_states", "cancel"):
        monkeypatch.setattr(driver_mod.slurm_state, name, getattr(slurm, name))
    monkeypatch.setattr(driver_mod.slurm_state, "in_queue", lambda ids: list(ids))  # stuck COMPLETING
    assert driver_mod.cancel_run(tmp_path, driver_exit_timeout_s=0.05, poll_s=0.01) == ["1"]
