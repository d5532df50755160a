"""Reward services as real Slurm jobs on the local cluster (``launch/services.py``): the HF judge server and the
sandbox start as their own jobs and record their addresses; the judge answers the OpenAI-compatible client; a
``scancel``-ed judge is replaced by the next ``ensure()``; a judge preempted with USR1 (submitit's handler) and a
``scontrol requeue``-d sandbox come back under the same job id with a new address; ``cancel()`` ends them all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mathfirst_hpc.config import load_stage_config
from mathfirst_hpc.launch import slurm_state
from mathfirst_hpc.launch.services import StageServices, healthy, service_address
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.rewards.judge import Judge, OpenAiJudgeBackend

from .support import tiny_judge, wait_for

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
