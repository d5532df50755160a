"""The launch layer on the real local Slurm cluster: a 2-node gloo job through init_distributed, preemption
by SIGUSR1 (submitit's checkpoint-and-requeue) and by `scontrol requeue` (SIGTERM, our handler), a profile with an
unknown partition."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mathfirst_hpc.atomic import read_jsonl
from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.launch.executors import make_executor
from mathfirst_hpc.launch.jobspec import JobSpec
from mathfirst_hpc.launch.profiles import check_partitions, load_profile

from .support import AllReduceJob, StepLoop, steps_logged, wait_for

pytestmark = pytest.mark.slurm
N_STEPS = 30  # 9 s of steps, so the signal lands mid-loop; each step is logged, the cursor saved only at a stop


def spec(profile, name: str, **changes) -> JobSpec:
    base = JobSpec(name=name, time_min=10, partition=profile.partition, account=profile.account,
                   cpus_per_task=1, mem_gb=1, signal_lead_s=profile.signal_lead_s or 30, setup=list(profile.setup))
    return base.with_(**changes)


def test_two_node_gloo_all_reduce(dev_profile, tmp_path: Path) -> None:
    executor = make_executor("slurm", tmp_path / "%j", spec(dev_profile, "mf-test-gloo", nodes=2))
    job = executor.submit(AllReduceJob("gloo"))
    results = sorted(job.results(), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    assert {r["node"] for r in results} == {"n1", "n2"}  # one task per slurmd node
    assert all(r["sum"] == 3.0 and r["world"] == 2 and r["master"] == "n1" for r in results)


def _run_preempted(profile, folder: Path, send: list[str]) -> tuple[list[dict], list[dict]]:
    folder.mkdir(parents=True)
    executor = make_executor("slurm", folder / "logs" / "%j", spec(profile, "mf-test-steps"))
    job = executor.submit(StepLoop(str(folder), n_steps=N_STEPS, step_s=0.3))
    wait_for(lambda: len(steps_logged(folder)) >= 3, 90, "3 steps before the preemption")
    subprocess.run([*send, job.job_id], check=True, timeout=30)
    assert job.result() == N_STEPS
    return steps_logged(folder), read_jsonl(folder / "stops.jsonl")


def test_usr1_checkpoints_and_requeues_through_submitit(dev_profile, tmp_path: Path) -> None:
    # Not --batch: that signals the batch shell, which dies, and the job FAILS.
    steps, stops = _run_preempted(dev_profile, tmp_path / "run", ["scancel", "--signal=USR1"])
    assert [s["step"] for s in steps] == list(range(N_STEPS)), "a step was repeated or skipped"
    assert [s["reason"] for s in stops] == ["SIGUSR1"]
    assert {s["restart"] for s in steps} == {0, 1}  # the same job id ran twice: requeued, not resubmitted


def test_scontrol_requeue_sigterm_saves_at_safe_point(dev_profile, tmp_path: Path) -> None:
    steps, stops = _run_preempted(dev_profile, tmp_path / "run", ["scontrol", "requeue"])
    assert [s["step"] for s in steps] == list(range(N_STEPS)), "a step was repeated or skipped"
    assert [s["reason"] for s in stops] == ["SIGTERM"]
    assert {s["restart"] for s in steps} == {0, 1}


def test_unknown_partition_is_refused(cluster, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("partition: nosuchpart\n")
    with pytest.raises(ConfigError, match="partition 'nosuchpart' does not exist on this cluster"):
        check_partitions(load_profile(path))
    assert check_partitions(load_profile("local-dev")) is True
