"""Preemption flag: real signals set it without interrupting the loop; time limits; the requeue hand-over."""

from __future__ import annotations

import os
import signal
import time
from typing import Iterator

import pytest

from mathfirst_hpc import preemption


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("SLURM_JOB_END_TIME", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    preemption.reset()
    yield
    preemption.uninstall()
    preemption.reset()


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGUSR1, "SIGUSR1")])
def test_signal_sets_flag_and_loop_continues(signum: int, name: str) -> None:
    preemption.install()
    steps = 0
    for step in range(5):
        if step == 2:
            os.kill(os.getpid(), signum)  # delivered at once, to this (main) thread
        steps += 1
        if preemption.should_stop(margin_s=0):
            break
    assert steps == 3 and preemption.reason() == name
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not overwrite the first
    assert preemption.reason() == name


def test_uninstall_restores_previous_handlers() -> None:
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        preemption.install()
        preemption.uninstall()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1] and not preemption.requested()
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("text, seconds", [("1-02:03:04", 93784.0), ("05:06", 306.0), ("1:00:00", 3600.0),
                                           ("UNLIMITED", None), ("", None)])
def test_parse_slurm_duration(text: str, seconds: float | None) -> None:
    assert preemption.parse_slurm_duration(text) == seconds


def test_time_limit_from_job_end_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert preemption.time_left_s() is None  # not under Slurm
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 100))
    assert 95 < preemption.time_left_s() <= 100
    assert not preemption.should_stop(save_time_s=10, margin_s=30)
    assert preemption.should_stop(save_time_s=50, margin_s=60)
    assert preemption.reason() == "time-limit"


def test_exit_for_requeue_calls_submitit_handler_for_usr1() -> None:
    calls = []

    class FakeSubmititHandler:  # the bound method submitit registers is named checkpoint_and_try_requeue
        def checkpoint_and_try_requeue(self, signum: int, frame: object) -> None:
            calls.append(signum)

    previous = signal.signal(signal.SIGUSR1, FakeSubmititHandler().checkpoint_and_try_requeue)
    try:
        preemption.install()
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(SystemExit):
            preemption.exit_for_requeue()
        assert calls == [signal.SIGUSR1]
        preemption.reset()
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm already requeued: only exit
        with pytest.raises(SystemExit):
            preemption.exit_for_requeue()
        assert calls == [signal.SIGUSR1]
    finally:
        preemption.uninstall()
        signal.signal(signal.SIGUSR1, previous)


def test_old_module_name_is_the_same_module() -> None:
    """``mathfirst_hpc.launch.preemption`` (older imports, pickled jobs) shares the one stop flag."""
    from mathfirst_hpc.launch import preemption as old

    assert old is preemption
    preemption.request("test")
    assert old.requested() and old.reason() == "test"
    preemption.reset()
