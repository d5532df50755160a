"""Reward services as real Slurm jobs on the local cluster (``launch/services.py``): the HF judge server and the
sandbox start as their own jobs and record their addresses; the judge answers the OpenAI-compatible client; a
``scancel``-ed judge is replaced by the next ``ensure()``; a judge preempted with USR1 (submitit's handler) and a
``scontrol requeue``-d sandbox come back under the same job id with a new address; ``cancel()`` ends them all.

And the service jobs of a stage run by a driver job: they survive a requeue of the driver, and leave the queue on
their own once the driver is ``scancel``-ed (``launch/service_owner.py``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mathfirst_hpc.config import load_stage_config
from mathfirst_hpc.launch import service_owner, slurm_state
from mathfirst_hpc.launch.driver import cancel_run, submit_stages
from mathfirst_hpc.launch.services import StageServices, healthy, service_address
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.rewards.judge import Judge, OpenAiJudgeBackend

from .support import TINY, copy_run, jobs_of, log_of, manifest, tiny_judge, wait_for

pytestmark = pytest.mark.slurm


def _dead(job_id: str) -> bool:
    return not slurm_state.is_alive(slurm_state.job_states([job_id])[job_id])


def test_service_jobs_start_answer_survive_and_are_cancelled(dev_profile, tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run").make()
    model = tiny_judge(tmp_path / "judge")
    cfg = load_stage_config("joint_rl", overrides=["reward.judge.backend=hf", f"reward.judge.model_path={model}",
                                                   "reward.sandbox.isolation=none", "reward.sandbox.workers=1"])
    services = StageServices(paths, cfg, dev_profile, poll_s=0.5, start_timeout_s=240)
    services.kinds = ["sandbox", "judge"]  # the tiny joint mix has no code: ask for both explicitly
    try:
        urls = services.ensure()
        jobs = services.jobs()
        assert set(urls) == {"sandbox", "judge"} and all(healthy(u) for u in urls.values())
        results = Judge(OpenAiJudgeBackend(urls["judge"], retries=0), max_new_tokens=4).judge_batch(
            [("q", "100 C", "100")])
        assert results[0].verdict == "unparseable"  # random weights, but the server answered: not 'error'

        subprocess.run(["scancel", jobs["judge"]], check=True, timeout=30)
        wait_for(lambda: _dead(jobs["judge"]), 60, "the judge job to end")
        urls = services.ensure()  # resubmits it
        assert services.jobs()["judge"] != jobs["judge"] and healthy(urls["judge"])

        judge_job, old = services.jobs()["judge"], service_address(paths, "judge")  # preemption: USR1
        subprocess.run(["scancel", "--signal=USR1", judge_job], check=True, timeout=30)
        wait_for(lambda: (rec := service_address(paths, "judge")) is not None and rec.pid != old.pid
                 and healthy(rec.url), 180, "the preempted judge's new address")
        assert services.ensure()["judge"] == service_address(paths, "judge").url
        assert services.jobs()["judge"] == judge_job  # requeued by submitit, not resubmitted

        old = service_address(paths, "sandbox")
        subprocess.run(["scontrol", "requeue", jobs["sandbox"]], check=True, timeout=30)
        wait_for(lambda: (rec := service_address(paths, "sandbox")) is not None and rec.pid != old.pid
                 and healthy(rec.url), 180, "the requeued sandbox's new address")
        assert services.ensure()["sandbox"] == service_address(paths, "sandbox").url
        assert services.jobs()["sandbox"] == jobs["sandbox"]  # requeued, not resubmitted
    finally:
        cancelled = services.cancel()
    assert len(cancelled) == 2
    for job_id in services.jobs().values():
        wait_for(lambda: _dead(job_id), 60, f"service job {job_id} to end")


def _owner_of(run_dir: Path, job_id: str) -> str | None:
    return service_owner.read_owner(service_owner.job_folder(RunPaths(run_dir).job_logs("math_rl"), job_id))


def test_service_jobs_survive_a_driver_requeue_and_leave_with_a_cancelled_driver(sft_run: Path,
                                                                                  tmp_path: Path) -> None:
    """The judge job of a stage 2 driver: ``scontrol requeue`` of the driver leaves it running (the requeued driver
    re-attaches to it); a plain ``scancel`` of the driver, which cannot cancel it, makes it end itself."""
    model = tiny_judge(tmp_path / "judge")
    run_dir = copy_run(sft_run, tmp_path / "run")
    # 40 iterations: the stage must outlive the test (one iteration ended the stage during the wait after the
    # requeue on a quiet machine, and a finished stage cancels its judge itself); cancel_run ends it
    judged = [*TINY, "math_rl:steps=40", "math_rl:reward.judge.backend=hf", f"math_rl:reward.judge.model_path={model}"]
    driver = submit_stages(run_dir, "stage2", "local-dev", overrides=judged)[0].job_id
    try:
        wait_for(lambda: jobs_of(run_dir, "rollout", "math_rl"), 240, "the rollout array (the judge answers)")
        judge = next(iter(jobs_of(run_dir, "service", "math_rl")))
        assert _owner_of(run_dir, judge) == driver

        subprocess.run(["scontrol", "requeue", driver], check=True, timeout=30)
        wait_for(lambda: f"Slurm job {driver}, restart 1" in log_of(run_dir, driver), 120, "the requeued driver")
        time.sleep(service_owner.CONFIRM_S + 2 * service_owner.POLL_S)  # long enough for a wrong verdict to act
        assert list(jobs_of(run_dir, "service", "math_rl")) == [judge]  # re-attached, not resubmitted
        assert slurm_state.job_states([judge])[judge] == "RUNNING"
        assert manifest(run_dir)["stages"]["math_rl"]["status"] != "final"

        subprocess.run(["scancel", driver], check=True, timeout=30)
        cancelled = time.monotonic()
        wait_for(lambda: not slurm_state.in_queue([judge]), 120, "the judge job to leave the queue")
        gone_s = time.monotonic() - cancelled
        assert slurm_state.job_states([driver])[driver] == "CANCELLED"
        assert f"owner driver job {driver} is cancelled" in log_of(run_dir, judge)
        assert gone_s < 90, gone_s
    finally:
        cancel_run(run_dir)
    print(f"judge job {judge} left the queue {gone_s:.0f} s after its driver {driver} was cancelled")
