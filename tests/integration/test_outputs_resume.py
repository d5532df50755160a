"""TensorBoard and W&B curves after a kill -9 in the middle of RL: the resumed run's curves hold exactly one point
per iteration, equal to metrics.jsonl (the source of truth), though the killed process had already plotted an
iteration that the resume redid (its line was past the last checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathfirst_hpc import sinks
from mathfirst_hpc.atomic import read_jsonl
from mathfirst_hpc.paths import RunPaths

pytestmark = pytest.mark.slow

SINKS = ["logging.sinks=[jsonl,tensorboard,wandb]"]
OVERRIDES = ["sft:steps=2", "sft.batch_size=8", "sft.micro_batch_size=4", "math_rl:steps=5",
             "math_rl:checkpoint.every_steps=2", "rollout.prompts_per_batch=4", "rollout.max_response_len=16",
             "dapo.overlong_buffer_len=4", "data.synthetic_size=256"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def cli_run(run_dir: Path, sink_overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mathfirst_hpc.cli", "run", "--run-dir", str(run_dir),
                             "--stages", "1,2", "--no-progress", *OVERRIDES, *sink_overrides],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rl_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["stage"] == "math_rl"]


def tb_written_x(run_dir: Path) -> int:
    """The last x the TensorBoard sink recorded as flushed (0 before any)."""
    try:
        return int(json.loads((sinks.tb_dir(RunPaths(run_dir), "math_rl") / "written.json").read_text())["x"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def tb_points(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(sinks.tb_dir(RunPaths(run_dir), "math_rl")))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_kill_9_mid_rl_curves_continue(tmp_path) -> None:
    wandb = "wandb" in sys.modules or _has_wandb()
    sink_overrides = SINKS if wandb else ["logging.sinks=[jsonl,tensorboard]"]
    proc = cli_run(tmp_path, sink_overrides)
    deadline = time.time() + 300
    while tb_written_x(tmp_path) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # iteration 3 plotted, its checkpoint (every 2) not yet written: the resume redoes it
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    plotted_before = [s for s, _ in tb_points(tmp_path, "reward_mean")]
    assert 3 in plotted_before, plotted_before  # the killed process plotted iteration 3
    saved = json.loads((tmp_path / "manifest.json").read_text())["stages"]["math_rl"]
    assert saved["iteration"] == 2, saved  # ... but its newest checkpoint is at iteration 2: the resume redoes 3
    again = cli_run(tmp_path, sink_overrides)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    lines = rl_lines(tmp_path)
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4, 5]
    for tag in ("reward_mean", "kept_group_fraction", "loss"):
        points = tb_points(tmp_path, tag)
        assert [s for s, _ in points] == [1, 2, 3, 4, 5], (tag, points)
        assert [v for _, v in points] == pytest.approx([r[tag] for r in lines], rel=1e-6), tag
    if wandb:
        history = sinks.wandb_history(RunPaths(tmp_path), "math_rl")
        assert [s for s, _ in history] == [1, 2, 3, 4, 5]
        assert [v["reward_mean"] for _, v in history] == pytest.approx([r["reward_mean"] for r in lines], rel=1e-6)


def _has_wandb() -> bool:
    try:
        import wandb  # noqa: F401
        return True
    except ImportError:
        return False


PHASES = ["sft:steps=2", "sft:sft.batch_size=8", "sft:sft.micro_batch_size=8", "sft:sft.max_seq_len=96",
          "sft:checkpoint.every_steps=2", "math_rl:steps=2", "math_rl:rollout.num_shards=2",
          "math_rl:rollout.prompts_per_batch=4", "math_rl:rollout.n_per_prompt=4", "math_rl:rollout.max_response_len=16",
          "math_rl:dapo.overlong_buffer_len=4", "math_rl:dapo.max_gen_batches=2", "math_rl:dapo.mini_batches=2"]


def test_job_graph_learner_jobs_log_into_one_curve(tmp_path, monkeypatch) -> None:
    """The Slurm job graph through submitit's local executor (profile local: the driver here, rollout arrays and
    one learner job per iteration as subprocesses): each learner job, a process of its own, publishes its
    iteration; TensorBoard and W&B end with one point per step, equal to metrics.jsonl."""
    from mathfirst_hpc.launch.driver import submit_stages
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    overrides = [*PHASES, *(SINKS if _has_wandb() else ["logging.sinks=[jsonl,tensorboard]"])]
    for target in ("stage1", "stage2"):
        submit_stages(tmp_path, target, "local", overrides=overrides)
    lines = rl_lines(tmp_path)
    assert [r["iteration"] for r in lines] == [1, 2]
    assert [v for _, v in tb_points(tmp_path, "loss")] == pytest.approx([r["loss"] for r in lines], rel=1e-6)
    assert [s for s, _ in tb_points(tmp_path, "loss")] == [1, 2]
    assert len(list(sinks.tb_dir(RunPaths(tmp_path), "math_rl").glob("events.out.tfevents.*"))) == 2  # 2 jobs
    if _has_wandb():
        history = sinks.wandb_history(RunPaths(tmp_path), "math_rl")
        assert [(s, pytest.approx(v["loss"], rel=1e-6)) for s, v in history] == [(r["iteration"], r["loss"])
                                                                                   for r in lines]
