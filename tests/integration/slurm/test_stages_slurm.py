"""Stages through the real local Slurm cluster (profile local-dev), with the tiny preset shrunk further (TINY).

One stage 1 run (``sft_run``, a session fixture of conftest.py) is the base of every stage 2 run; one uninterrupted
stage 2 run is the reference the preempted, requeued, killed and 2-node runs must reproduce exactly (same seed, same
steps)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mathfirst_hpc.errors import RunDirError
from mathfirst_hpc.launch.driver import resume_run, submit_stages
from mathfirst_hpc.launch.executors import make_executor
from mathfirst_hpc.launch.jobs import LearnerJob
from mathfirst_hpc.launch.jobspec import job_spec
from mathfirst_hpc.launch.profiles import load_profile
from mathfirst_hpc.launch.slurm_state import job_states
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.shards import read_shard

from .support import (TINY, assert_same_weights, copy_run, final_meta, final_weights, jobs_of, log_of, manifest,
                      ran_on_both_nodes, tiny_judge, wait_final, wait_for)

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def reference(sft_run: Path, tmp_path_factory) -> Path:
    run_dir = copy_run(sft_run, tmp_path_factory.mktemp("slurm") / "reference")
    submit_stages(run_dir, "stage2", "local-dev", overrides=TINY)
    wait_final(run_dir, "math_rl")
    return run_dir


def test_stage1_finishes_with_outputs(sft_run: Path) -> None:
    m = manifest(sft_run)
    assert m["stages"]["sft"]["status"] == "final" and m["stages"]["sft"]["step"] == 2
    meta = final_meta(sft_run, "sft")
    assert meta["final"] is True and meta["step"] == 2
    assert (sft_run / m["stages"]["sft"]["final_checkpoint"] / "hf" / "config.json").exists()
    steps = [json.loads(line)["step"] for line in (sft_run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["stage"] == "sft"]
    assert steps == [1, 2]
    drivers, learners = jobs_of(sft_run, "driver", "sft"), jobs_of(sft_run, "learner", "sft")
    assert len(drivers) == 1 and len(learners) == 1
    assert set(job_states([*drivers, *learners]).values()) == {"COMPLETED"}
    assert json.loads((sft_run / "launch.json").read_text())["profile"]["partition"] == "debug"


def test_rollout_array_of_four_writes_four_valid_shards(reference: Path) -> None:
    rollouts = jobs_of(reference, "rollout", "math_rl")
    arrays = {j.split("_")[0] for j in rollouts}
    assert len(rollouts) == 4 * len(arrays) and all("_" in j for j in rollouts)  # arrays of four tasks
    plan = json.loads(RunPaths(reference).iteration_plan("math_rl", 0).read_text())
    assert len(arrays) == plan["metrics"]["gen_batches"]  # a top-up is one more array
    shards = manifest(reference)["shards"]
    assert len(shards) == 4 * len(arrays)
    for rel, entry in shards.items():
        data = read_shard(reference / rel, entry["sha256"])  # checksum, schema, row counts
        assert len(data) == 2 * 4 and entry["scored"]  # 8 prompts / 4 shards x 4 samples
    assert final_meta(reference, "math_rl")["iteration"] == 1
    assert final_meta(reference, "math_rl")["step"] >= 2, "too few kept groups to preempt mid-iteration"
    assert "reward_mean" in plan["metrics"] and plan["kept_groups"] >= 2
    assert plan["timings"]["tasks/reward_s"] > 0  # the rollout tasks scored their shards (the driver cannot)


def _learner_job(run_dir: Path) -> str:
    return wait_for(lambda: next(iter(jobs_of(run_dir, "learner", "math_rl")), None), 180, "the learner job")


def _preempted_run(sft_run: Path, dest: Path, send: list[str]) -> Path:
    run_dir = copy_run(sft_run, dest)
    submit_stages(run_dir, "stage2", "local-dev", overrides=TINY)
    learner = _learner_job(run_dir)
    # Once its handler is installed (the "start" line) the learner acts on the signal at its next safe point:
    # the first micro-batch boundary of the iteration, so it stops mid-step with steps left to do.
    wait_for(lambda: "[LearnerJob] start" in log_of(run_dir, learner), 180, "the learner's start", 0.1)
    subprocess.run([*send, learner], check=True, timeout=30)
    wait_final(run_dir, "math_rl")
    log = log_of(run_dir, learner)
    assert "restart 1" in log, "the learner was not requeued"
    return run_dir


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    assert_same_weights(final_weights(run_dir, "math_rl"), final_weights(reference, "math_rl"))
    mine, ref = final_meta(run_dir, "math_rl"), final_meta(reference, "math_rl")
    assert (mine["step"], mine["iteration"]) == (ref["step"], ref["iteration"])
    plan = lambda d: json.loads(RunPaths(d).iteration_plan("math_rl", 0).read_text())  # noqa: E731
    assert plan(run_dir)["data_after"] == plan(reference)["data_after"]  # the data cursor


def test_usr1_to_learner_mid_stage_matches_uninterrupted(sft_run: Path, reference: Path, tmp_path: Path) -> None:
    run_dir = _preempted_run(sft_run, tmp_path / "usr1", ["scancel", "--signal=USR1"])
    log = log_of(run_dir, next(iter(jobs_of(run_dir, "learner", "math_rl"))))
    assert "received SIGUSR1" in log and "Requeued job" in log  # our flag, then submitit's requeue
    # Saved inside iteration 0 (a regular save closes it with iteration 1): the emergency checkpoint.
    emergency = [m for m in (run_dir / "checkpoints" / "math_rl").glob("step_*/meta.json")
                 if json.loads(m.read_text())["iteration"] == 0]
    assert emergency, "no emergency checkpoint at a micro-batch boundary"
    assert "optimizer step 1 done" not in log.split("received SIGUSR1")[1].split("Requeued job")[0], \
        "the learner finished its optimizer step instead of stopping at the micro-batch boundary"
    _assert_same_run(run_dir, reference)


def test_scontrol_requeue_of_learner_matches_uninterrupted(sft_run: Path, reference: Path, tmp_path: Path) -> None:
    run_dir = _preempted_run(sft_run, tmp_path / "requeue", ["scontrol", "requeue"])
    assert "received SIGTERM" in log_of(run_dir, next(iter(jobs_of(run_dir, "learner", "math_rl"))))
    _assert_same_run(run_dir, reference)


def test_two_node_learner_matches_one_node(reference: Path, tmp_path: Path) -> None:
    """Iteration 0's update again, from the same rollouts, on one task per node (n1, n2) with gloo."""
    run_dir = copy_run(reference, tmp_path / "two_nodes")
    shutil.rmtree(run_dir / "checkpoints" / "math_rl")
    Manifest(RunPaths(run_dir)).set_stage("math_rl", status="running", latest_checkpoint=None, final_checkpoint=None)
    config = run_dir / "config" / "math_rl.yaml"
    config.write_text(config.read_text().replace("nodes: 1", "nodes: 2").replace("dp: 1", "dp: 2"))
    from mathfirst_hpc.config import load_resolved

    cfg = load_resolved(config)
    assert (cfg.parallel.nodes, cfg.parallel.dp) == (2, 2)
    spec = job_spec("learner", cfg, load_profile("local-dev")).with_(tasks_per_node=1)
    job = make_executor("slurm", tmp_path / "logs" / "%j", spec).submit(
        LearnerJob(str(run_dir), "math_rl", 0, "gloo"))
    results = job.results()
    assert len(results) == 2 and results[0].final  # a records.LearnerResult per task
    assert ran_on_both_nodes(str(job.job_id))  # one task on each node
    # Gradients are summed over ranks instead of accumulated in one process: equal up to float rounding.
    assert_same_weights(final_weights(run_dir, "math_rl"), final_weights(reference, "math_rl"), atol=1e-5)
    assert final_meta(run_dir, "math_rl")["step"] == final_meta(reference, "math_rl")["step"]


def test_driver_sigkill_then_resume_loses_and_repeats_nothing(sft_run: Path, reference: Path,
                                                              tmp_path: Path) -> None:
    run_dir = copy_run(sft_run, tmp_path / "killed")
    driver = submit_stages(run_dir, "stage2", "local-dev", overrides=TINY)[0].job_id
    wait_for(lambda: jobs_of(run_dir, "rollout", "math_rl"), 180, "the rollout array")
    with pytest.raises(RunDirError, match=f"already has job {driver}"):  # never two drivers of a stage
        submit_stages(run_dir, "stage2", "local-dev", overrides=TINY)
    subprocess.run(["scancel", "--signal=KILL", driver], check=True)  # SIGKILL to the driver's process
    wait_for(lambda: job_states([driver])[driver] in ("FAILED", "CANCELLED", "COMPLETED"), 60, "the driver's end")
    assert manifest(run_dir)["stages"]["math_rl"]["status"] != "final"
    resumed = resume_run(run_dir)
    assert [s.stage for s in resumed] == ["math_rl"] and resumed[0].job_id not in (None, driver)
    wait_final(run_dir, "math_rl")
    rollout_keys = [json.dumps(i["key"], sort_keys=True) for i in jobs_of(run_dir, "rollout", "math_rl").values()]
    assert len(rollout_keys) == len(set(rollout_keys)), "a rollout shard was generated twice"
    assert len(rollout_keys) == len(jobs_of(reference, "rollout", "math_rl"))
    assert len(jobs_of(run_dir, "learner", "math_rl")) == 1
    _assert_same_run(run_dir, reference)


def test_driver_preempted_requeues_and_reattaches(sft_run: Path, reference: Path, tmp_path: Path) -> None:
    """USR1 to the driver while its rollout array runs: it leaves at its next poll, submitit requeues it, and the
    requeued driver waits on the same array instead of submitting it again."""
    run_dir = copy_run(sft_run, tmp_path / "driver_usr1")
    driver = submit_stages(run_dir, "stage2", "local-dev", overrides=TINY)[0].job_id
    wait_for(lambda: jobs_of(run_dir, "rollout", "math_rl"), 180, "the rollout array")
    subprocess.run(["scancel", "--signal=USR1", driver], check=True, timeout=30)
    wait_final(run_dir, "math_rl")
    log = log_of(run_dir, driver)
    assert "received SIGUSR1" in log and "restart 1" in log
    assert len(jobs_of(run_dir, "driver", "math_rl")) == 1  # requeued, not resubmitted
    rollout_keys = [json.dumps(i["key"], sort_keys=True) for i in jobs_of(run_dir, "rollout", "math_rl").values()]
    assert len(rollout_keys) == len(set(rollout_keys)) == len(jobs_of(reference, "rollout", "math_rl"))
    _assert_same_run(run_dir, reference)


def test_stage3_without_stage2_is_refused(sft_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(sft_run, tmp_path / "no_stage2")
    before = manifest(run_dir)["jobs"]
    with pytest.raises(RunDirError, match=r"has no final math_rl \(stage2\)") as info:
        submit_stages(run_dir, "stage3", "local-dev", overrides=TINY)
    assert "--init-from" in info.value.one_line()
    assert manifest(run_dir)["jobs"] == before and not (run_dir / "config" / "joint_rl.yaml").exists()


def test_local_executor_reproduces_the_slurm_run(sft_run: Path, reference: Path, tmp_path: Path) -> None:
    """The same job graph through submitit's local executor (profile local): driver here, children as
    subprocesses; the same weights bit for bit."""
    run_dir = copy_run(sft_run, tmp_path / "local")
    submitted = submit_stages(run_dir, "stage2", "local", overrides=TINY)
    assert [(s.stage, s.job_id, s.note) for s in submitted] == [("math_rl", None, "final")]
    children = {i["kind"] for i in manifest(run_dir)["jobs"].values() if i.get("executor") == "local"}
    assert children == {"rollout", "learner"}
    _assert_same_run(run_dir, reference)


def test_judge_service_job_runs_for_the_stage_and_is_cancelled_after(sft_run: Path, reference: Path,
                                                                    tmp_path: Path) -> None:
    model = tiny_judge(tmp_path / "judge")
    run_dir = copy_run(sft_run, tmp_path / "run")
    submit_stages(run_dir, "stage2", "local-dev", overrides=[*TINY, "math_rl:reward.judge.backend=hf",
                                                             f"math_rl:reward.judge.model_path={model}"])
    wait_final(run_dir, "math_rl")
    services = jobs_of(run_dir, "service", "math_rl")
    assert [i["key"]["service"] for i in services.values()] == ["judge"]
    job = next(iter(services))
    assert "[judge] serving judge on http://" in log_of(run_dir, job)
    wait_for(lambda: job_states([job])[job] == "CANCELLED", 60, "the judge job cancelled at the stage's end")
    assert_same_weights(final_weights(run_dir, "math_rl"), final_weights(reference, "math_rl"))  # math only


def test_allocation_mode_on_two_nodes_survives_requeue_and_matches_phases(sft_run: Path, reference: Path,
                                                                          tmp_path: Path) -> None:
    """``submit --mode allocation``: stage 2 as one job of one task per node (n1, n2; DP=2 over gloo). The ranks
    share the rollout shards (each generates and scores its own), then train together. ``scontrol requeue`` once
    the first shard is written: the requeued job resumes from the emergency checkpoint. The result equals the
    phases-mode run up to the float rounding of summing gradients over two ranks."""
    run_dir = copy_run(sft_run, tmp_path / "allocation")
    overrides = [*TINY, "math_rl:parallel.nodes=2", "math_rl:parallel.dp=2"]
    submitted = submit_stages(run_dir, "stage2", "local-dev", overrides=overrides, mode="allocation")
    assert [(s.stage, s.kind) for s in submitted] == [("math_rl", "allocation")]
    job = submitted[0].job_id
    wait_for(lambda: manifest(run_dir)["shards"], 240, "the first rollout shard")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    wait_final(run_dir, "math_rl", timeout_s=300, kind="allocation")
    log = log_of(run_dir, job)
    assert "received SIGTERM" in log and "restart 1" in log, log[-3000:]
    assert set(i["kind"] for i in manifest(run_dir)["jobs"].values() if i["stage"] == "math_rl") == {"allocation"}
    assert ran_on_both_nodes(job)  # one task on each node
    shards = {rel: e for rel, e in manifest(run_dir)["shards"].items() if "math_rl" in rel}
    assert shards and all(e["scored"] for e in shards.values())
    assert len(shards) == len(manifest(reference)["shards"])  # the same generation batches
    assert_same_weights(final_weights(run_dir, "math_rl"), final_weights(reference, "math_rl"), atol=1e-5)
    mine, ref = final_meta(run_dir, "math_rl"), final_meta(reference, "math_rl")
    assert (mine["step"], mine["iteration"]) == (ref["step"], ref["iteration"])
    plan = lambda d: json.loads(RunPaths(d).iteration_plan("math_rl", 0).read_text())  # noqa: E731
    assert plan(run_dir)["data_after"] == plan(reference)["data_after"]
