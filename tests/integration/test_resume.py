"""A run stopped mid-stage (SIGTERM at a safe point, or kill -9 anywhere) and resumed ends with exactly the
parameters of an uninterrupted run with the same seed, with no optimizer step or data item repeated."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mathfirst_hpc.atomic import read_jsonl
from mathfirst_hpc.run import run_curriculum

pytestmark = pytest.mark.slow

OVERRIDES = ["sft:steps=6", "sft.batch_size=8", "sft.micro_batch_size=4", "sft:checkpoint.every_steps=2",
             "math_rl:steps=4", "math_rl:checkpoint.every_steps=1", "rollout.prompts_per_batch=4",
             "rollout.max_response_len=16", "dapo.overlong_buffer_len=4", "data.synthetic_size=256"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def final_weights(run_dir: Path, stage: str) -> dict[str, torch.Tensor]:
    from mathfirst_hpc.checkpoint import final_checkpoint
    ckpt = final_checkpoint(run_dir / "checkpoints" / stage)
    assert ckpt is not None, f"no final {stage} checkpoint in {run_dir}"
    return load_file(str(ckpt / "hf" / "model.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def cli_run(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mathfirst_hpc.cli", "run", "--run-dir", str(run_dir),
                             "--stages", "1,2", "--no-progress", *extra, *OVERRIDES],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("baseline")
    proc = cli_run(run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return run_dir


def metric_steps(run_dir: Path, stage: str) -> list[int]:
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["stage"] == stage]


def test_stop_at_safe_point_and_resume_in_process(baseline, tmp_path) -> None:
    torch.set_num_threads(1)
    from mathfirst_hpc.manifest import Manifest
    from mathfirst_hpc.paths import RunPaths
    calls = {"sft": 0, "math_rl": 0}

    def stop_once() -> bool:  # what the SIGTERM handler's flag looks like to the loop
        stage = "math_rl" if Manifest(RunPaths(tmp_path)).is_final("sft") else "sft"
        calls[stage] += 1
        return calls[stage] == 3  # once inside SFT, once inside math_rl

    stages = ["sft", "math_rl"]
    first = run_curriculum(tmp_path, stages, overrides=OVERRIDES, should_stop=stop_once, progress=False)
    assert first == {"sft": "preempted"}
    second = run_curriculum(tmp_path, stages, overrides=OVERRIDES, should_stop=stop_once, progress=False)
    assert second["sft"] == "final" and second["math_rl"] == "preempted"
    third = run_curriculum(tmp_path, stages, overrides=OVERRIDES, progress=False)
    assert third == {"sft": "final", "math_rl": "final"}
    assert_same(final_weights(tmp_path, "sft"), final_weights(baseline, "sft"))
    assert_same(final_weights(tmp_path, "math_rl"), final_weights(baseline, "math_rl"))
    assert metric_steps(tmp_path, "sft") == metric_steps(baseline, "sft") == list(range(1, 7))
    assert metric_steps(tmp_path, "math_rl") == metric_steps(baseline, "math_rl")


def _wait_for(predicate, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError


def test_kill_9_mid_rl_and_resume(baseline, tmp_path) -> None:
    proc = cli_run(tmp_path)
    # kill -9 once math_rl has written its first shard (mid-iteration, a checkpoint may be half written)
    _wait_for(lambda: any((tmp_path / "rollouts" / "math_rl").rglob("shard_*.h5")) or proc.poll() is not None, 300)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = cli_run(tmp_path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert_same(final_weights(tmp_path, "math_rl"), final_weights(baseline, "math_rl"))
    assert metric_steps(tmp_path, "math_rl") == metric_steps(baseline, "math_rl")


def test_sigterm_saves_and_resume(baseline, tmp_path) -> None:
    proc = cli_run(tmp_path)
    _wait_for(lambda: (tmp_path / "checkpoints" / "sft").exists() or proc.poll() is not None, 300)
    assert proc.poll() is None, "the run finished before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3 and "stopped early (SIGTERM)" in out, out  # 3 = stopped, state saved
    again = cli_run(tmp_path)
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2
    assert_same(final_weights(tmp_path, "math_rl"), final_weights(baseline, "math_rl"))


def test_emergency_checkpoint_between_micro_batches(baseline, tmp_path) -> None:
    """A stop request inside an optimizer step (between micro-batches) saves the accumulated gradients; the
    resumed step finishes with exactly the uninterrupted parameters."""
    torch.set_num_threads(1)
    overrides = OVERRIDES + ["dapo.micro_batch_size=4"]  # several micro-batches per RL mini-batch
    from mathfirst_hpc.checkpoint import latest_checkpoint, load_rank_state
    ref = tmp_path / "ref"
    run_curriculum(ref, ["sft", "math_rl"], overrides=overrides, progress=False)
    run_dir = tmp_path / "run"
    stopped = {"done": False}

    def stop_once() -> bool:
        """True once: at the first poll made between the micro-batches of an RL optimizer step (found on the
        stack, so that the test does not hang on how many polls the preset's shapes make before it)."""
        if stopped["done"] or not Manifest(RunPaths(run_dir)).is_final("sft"):
            return False
        stopped["done"] = any(f.function == "train_step" for f in inspect.stack()[1:3])
        return stopped["done"]

    from mathfirst_hpc.manifest import Manifest
    from mathfirst_hpc.paths import RunPaths
    first = run_curriculum(run_dir, ["sft", "math_rl"], overrides=overrides, should_stop=stop_once, progress=False)
    assert first == {"sft": "final", "math_rl": "preempted"}, "no RL optimizer step had several micro-batches"
    state = load_rank_state(latest_checkpoint(run_dir / "checkpoints" / "math_rl"))
    assert state["partial"] is not None and state["partial"].micro_done >= 1
    run_curriculum(run_dir, ["sft", "math_rl"], overrides=overrides, progress=False)
    assert_same(final_weights(run_dir, "math_rl"), final_weights(ref, "math_rl"))
