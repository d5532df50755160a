"""A service job's watch over its owning driver (``launch/service_owner.py``): alive while the driver is pending,
running or being requeued; gone once it has ended for good (briefly confirmed), or after a long absence."""

from __future__ import annotations

from pathlib import Path

import pytest

from mathfirst_hpc.launch import service_owner
from mathfirst_hpc.launch.service_owner import OwnerWatch


def _observe(watch: OwnerWatch, states: list[tuple[float, str]], owner: str | None = "42") -> list[bool]:
    return [watch.observe(owner, state, now) for now, state in states]


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
                                   "REQUEUE_HOLD"])
def test_a_pending_running_or_requeued_driver_is_alive_however_long(state: str) -> None:
    assert not any(_observe(OwnerWatch(), [(t, state) for t in range(0, 3600, 5)]))


@pytest.mark.parametrize("state", ["CANCELLED", "CANCELLED by 0", "COMPLETED", "FAILED", "TIMEOUT",
                                   "OUT_OF_MEMORY"])
def test_an_ended_driver_is_gone_once_confirmed(state: str) -> None:
    watch = OwnerWatch(confirm_s=10, absent_grace_s=300)
    assert _observe(watch, [(0, "RUNNING"), (5, state), (10, state)]) == [False, False, False]
    assert watch.observe("42", state, 15)  # seen ended for 10 s


def test_one_odd_answer_between_alive_ones_does_not_end_the_service() -> None:
    # a requeue: the driver's record flips through a terminal-looking answer and comes back
    states = [(0, "RUNNING"), (5, "COMPLETED"), (10, "PENDING"), (15, "COMPLETED"), (20, "RUNNING")]
    assert not any(_observe(OwnerWatch(confirm_s=10), states))


@pytest.mark.parametrize("state", ["UNKNOWN", "", "NODE_FAIL", "PREEMPTED"])
def test_an_absent_or_ambiguous_driver_is_gone_only_after_the_grace(state: str) -> None:
    watch = OwnerWatch(confirm_s=10, absent_grace_s=300)
    assert not any(_observe(watch, [(t, state) for t in range(0, 300, 5)]))
    assert watch.observe("42", state, 300)


def test_absence_then_an_end_counts_from_the_end() -> None:
    watch = OwnerWatch(confirm_s=10, absent_grace_s=300)
    assert _observe(watch, [(0, "UNKNOWN"), (5, "UNKNOWN"), (10, "CANCELLED")]) == [False, False, False]
    assert watch.observe("42", "CANCELLED", 20)


def test_no_owner_never_ends_the_service() -> None:
    """A service started by a process that is no Slurm job (a test, a shell) has no owner file."""
    assert not any(_observe(OwnerWatch(), [(t, "") for t in range(0, 7200, 5)], owner=None))


def test_a_new_owner_restarts_the_count() -> None:
    """A resumed driver (a new job) takes over the services of the one that failed."""
    watch = OwnerWatch(confirm_s=10)
    assert not watch.observe("41", "FAILED", 0)
    assert not watch.observe("43", "PENDING", 9)
    assert not watch.observe("43", "RUNNING", 20)
    assert not watch.observe("41", "FAILED", 25)  # an old record read again starts from zero
    assert watch.observe("41", "FAILED", 35)


def test_the_owner_record_round_trips_in_the_job_folder(tmp_path: Path) -> None:
    folder = service_owner.job_folder(tmp_path / "joint_rl" / "%j", "1234")
    assert folder == tmp_path / "joint_rl" / "1234"
    assert service_owner.read_owner(folder) is None
    service_owner.write_owner(folder, "77")
    assert service_owner.read_owner(folder) == "77"
    service_owner.write_owner(folder, "78")  # a resumed driver claims it
    assert service_owner.read_owner(folder) == "78" and [p.name for p in folder.iterdir()] == ["owner.json"]


def test_the_watch_ends_the_job_once_the_owner_is_gone(tmp_path: Path, monkeypatch) -> None:
    service_owner.write_owner(tmp_path, "42")
    answers = iter(["RUNNING", "CANCELLED", "CANCELLED", "CANCELLED"])
    ended: list[tuple[str, str]] = []
    monkeypatch.setattr(service_owner.slurm_state, "job_states", lambda ids: {ids[0]: next(answers)})
    monkeypatch.setattr(service_owner, "_end_own_job", lambda owner, state: ended.append((owner, state)))
    service_owner.watch(tmp_path, poll_s=0.0, decision=OwnerWatch(confirm_s=0.0))
    assert ended == [("42", "CANCELLED")]


def test_no_watch_outside_a_slurm_job(monkeypatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert service_owner.start_watch() is None
