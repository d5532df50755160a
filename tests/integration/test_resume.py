"""A run stopped mid-stage (SIGTERM at a safe point, or kill -9 anywhere) and resumed ends with exactly the
parameters of an uninterrupted run with the same seed, with no optimizer step or data item repeated."""

from __future__ import annotations

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
    calls = {"n": 0}

    def stop_once() -> bool:  # what the SIGTERM handler's flag looks like to the loop
        calls["n"] += 1
        return calls["n"] in (3, 9)  # once inside SFT, once inside an RL iteration (between mini-batches)

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
