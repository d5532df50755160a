"""Prelaunch (``slurm.prelaunch``, ``launch/phases.py``) without a cluster: which jobs a driver submits one phase
early, that it never submits one twice (a restarted driver re-attaches to those still alive), that it cancels them
when it fails but not when it is requeued, and the wait of a prelaunched job for its input."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from mathfirst_hpc.launch.launcher import DriverStopped, Launcher, key_text
from mathfirst_hpc.launch.phases import LearnerJob, Prelaunch, RolloutTask, await_input
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths


class FakeJob:
    def __init__(self, job_id: str, fn: Any) -> None:
        self.job_id, self.fn, self.cancelled = job_id, fn, False

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


class FakeExecutor:
    def __init__(self, launcher: FakeLauncher, role: str) -> None:
        self.launcher, self.role = launcher, role

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield

    def submit(self, fn: Any) -> FakeJob:
        job = FakeJob(str(next(self.launcher.ids)), fn)
        self.launcher.submitted.append((self.role, job))
        return job


class FakeLauncher:
    """What ``Prelaunch`` uses of ``launcher.Launcher``; ``alive``: the jobs a previous driver left running."""

    kind = "slurm"

    def __init__(self, paths: RunPaths, alive: dict[str, FakeJob] | None = None) -> None:
        self.paths, self.manifest = paths, Manifest(paths)
        self.cfg = SimpleNamespace(stage="math_rl")
        self.alive = alive or {}
        self.submitted: list[tuple[str, FakeJob]] = []
        self.ids = itertools.count(100)
        self.queries = 0

    def folder(self) -> Path:
        return self.paths.root / "logs"

    def executor(self, role: str) -> FakeExecutor:
        return FakeExecutor(self, role)

    submit = Launcher.submit  # the real one: array submission and manifest records, through the fake executor

    def alive_jobs(self) -> dict[str, FakeJob]:
        self.queries += 1
        return dict(self.alive)

    def wait(self, jobs: list[FakeJob], role: str) -> list[Any]:
        return [job.job_id for job in jobs]


def _prelaunch(tmp_path: Path, alive: dict[str, FakeJob] | None = None) -> tuple[Prelaunch, FakeLauncher]:
    paths = RunPaths(tmp_path / "run").make()
    cfg = SimpleNamespace(stage="math_rl", steps=2, rollout=SimpleNamespace(num_shards=2),
                          parallel=SimpleNamespace(dist_backend="gloo"),
                          slurm=SimpleNamespace(prelaunch=True, prelaunch_max_wait_s=30))
    ctx = SimpleNamespace(paths=paths, cfg=cfg, stage="math_rl")
    launcher = FakeLauncher(paths, alive)
    return Prelaunch(ctx, launcher), launcher  # type: ignore[arg-type]


def test_each_phase_is_submitted_once_and_recorded(tmp_path: Path) -> None:
    prelaunch, launcher = _prelaunch(tmp_path)
    prelaunch.submit_rollouts(0)
    prelaunch.submit_learner(0)
    prelaunch.submit_rollouts(0)  # again (the driver's rollout() after update() submitted them): nothing new
    prelaunch.submit_learner(0)
    roles = [role for role, _ in launcher.submitted]
    assert roles == ["rollout", "rollout", "learner"] and launcher.queries == 1  # one Slurm query per driver
    tasks = [job.fn for role, job in launcher.submitted if role == "rollout"]
    assert all(isinstance(t, RolloutTask) and t.policy_step is None and t.max_wait_s == 30 for t in tasks)
    learner = launcher.submitted[-1][1].fn
    assert isinstance(learner, LearnerJob) and learner.max_wait_s == 30 and learner.iteration == 0
    keys = {json_key for json_key in (key_text(e.key) for e in launcher.manifest.jobs().values())}
    assert key_text(prelaunch.learner_key(0)) in keys and len(keys) == 3
    assert all(e.key["prelaunch"] for e in launcher.manifest.jobs().values())
    assert prelaunch.results("learner", [prelaunch.learner_key(0)]) == ["102"]
    assert prelaunch.results("learner", [prelaunch.learner_key(0)]) == []  # collected: gone
    prelaunch.submit_rollouts(2)  # past the stage's last iteration (steps=2)
    prelaunch.submit_learner(2)
    assert len(launcher.submitted) == 3


def test_restarted_driver_reattaches_instead_of_submitting_again(tmp_path: Path) -> None:
    prelaunch, _ = _prelaunch(tmp_path)
    learner, task = FakeJob("7", None), FakeJob("8_0", None)
    alive = {key_text(prelaunch.learner_key(1)): learner, key_text(prelaunch.rollout_key(1, 0)): task}
    prelaunch, launcher = _prelaunch(tmp_path, alive)
    prelaunch.submit_rollouts(1)
    prelaunch.submit_learner(1)
    assert [job.fn.shard_index for _, job in launcher.submitted] == [1]  # shard 0's task is alive
    keys = [prelaunch.rollout_key(1, s) for s in range(2)]
    assert prelaunch.results("rollout", keys) == ["8_0", "100"]
    assert prelaunch.results("learner", [prelaunch.learner_key(1)]) == ["7"]


def test_jobs_are_cancelled_when_the_driver_fails_or_ends_not_when_it_is_requeued(tmp_path: Path) -> None:
    prelaunch, launcher = _prelaunch(tmp_path)
    with pytest.raises(DriverStopped), prelaunch.cancelled_after():
        prelaunch.submit_learner(0)
        raise DriverStopped("SIGUSR1")
    assert not any(job.cancelled for _, job in launcher.submitted)
    with pytest.raises(RuntimeError), prelaunch.cancelled_after():
        prelaunch.submit_rollouts(1)
        raise RuntimeError("a rollout task failed")
    assert all(job.cancelled for _, job in launcher.submitted)
    with prelaunch.cancelled_after():
        prelaunch.submit_learner(1)
        assert not launcher.submitted[-1][1].cancelled
    assert launcher.submitted[-1][1].cancelled  # left over when the stage ended


def test_await_input_waits_for_the_file_or_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "driver.json"
    start = time.monotonic()
    assert not await_input(path, 0.3)
    assert 0.3 <= time.monotonic() - start < 2
    threading.Timer(0.2, path.write_text, args=("{}",)).start()
    assert await_input(path, 10)
    stops = iter([False, True])
    path.unlink()
    with pytest.raises(SystemExit):  # a stop request while waiting leaves for requeue
        await_input(path, 10, stop=lambda: next(stops))
