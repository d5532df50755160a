"""Metric sinks replay metrics.jsonl: TensorBoard read back with its own event reader, W&B offline read back from
its transaction log; a simulated kill (sinks dropped without closing, metrics.jsonl truncated to the checkpoint
as ``stage.load_latest`` does) leaves each curve with one point per step, holding the redone values."""

from __future__ import annotations

import json
import time

import pytest

from mathfirst_hpc import sinks
from mathfirst_hpc.atomic import append_jsonl, read_jsonl, write_text
from mathfirst_hpc.config import LoggingConfig
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths


def tb_scalars(paths: RunPaths, stage: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(sinks.tb_dir(paths, stage)))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def same_points(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want])


def log(paths: RunPaths, stage: str, cfg: LoggingConfig, iteration: int, reward: float) -> None:
    """What stage.log_metrics does: append, then publish."""
    append_jsonl(paths.metrics, {"stage": stage, "time_unix": time.time(), "iteration": iteration,
                                 "step": 2 * iteration, "reward_mean": reward, "reward/math": reward / 2,
                                 "note": "text is skipped", "entropy": None})
    sinks.publish(paths, stage, cfg)


def checkpoint(paths: RunPaths, stage: str, step: int, final: bool = False) -> None:
    """As stage.save_stage_checkpoint records one (``log`` writes step = 2 x iteration)."""
    Manifest(paths).set_stage(stage, step=step, iteration=step // 2, **({"status": "final"} if final else {}))


def simulate_kill_and_resume(paths: RunPaths, stage: str, ckpt_step: int) -> None:
    """The process dies without closing its sinks; the restart truncates metrics.jsonl past the checkpoint."""
    sinks._open_sinks.clear()
    keep = [r for r in read_jsonl(paths.metrics) if r["stage"] != stage or r["step"] <= ckpt_step]
    write_text(paths.metrics, "".join(json.dumps(r) + "\n" for r in keep))


@pytest.fixture(autouse=True)
def _close_sinks():
    yield
    sinks.close_all()


def test_jsonl_only_writes_nothing_else(tmp_path) -> None:
    paths = RunPaths(tmp_path)
    log(paths, "math_rl", LoggingConfig(), 1, 0.5)
    assert not (tmp_path / "tb").exists() and not (tmp_path / "wandb").exists()


def test_tensorboard_live_and_after_kill(tmp_path) -> None:
    paths = RunPaths(tmp_path)
    cfg = LoggingConfig(sinks=["jsonl", "tensorboard"])
    for it in range(1, 6):
        log(paths, "math_rl", cfg, it, 0.1 * it)
    assert same_points(tb_scalars(paths, "math_rl", "reward_mean"), [(i, 0.1 * i) for i in range(1, 6)])
    assert same_points(tb_scalars(paths, "math_rl", "reward/math"), [(i, 0.05 * i) for i in range(1, 6)])
    simulate_kill_and_resume(paths, "math_rl", ckpt_step=4)  # iterations 3..5 are redone with other values
    for it in range(3, 8):
        log(paths, "math_rl", cfg, it, 1.0 + it)
    got = tb_scalars(paths, "math_rl", "reward_mean")
    assert [s for s, _ in got] == list(range(1, 8)), "a duplicate or missing point"
    assert same_points(got, [(1, 0.1), (2, 0.2)] + [(i, 1.0 + i) for i in range(3, 8)])


def test_tensorboard_kill_after_write_before_bookkeeping(tmp_path) -> None:
    """Points written but not yet recorded in written.json are purged by the next writer, not doubled."""
    paths = RunPaths(tmp_path)
    cfg = LoggingConfig(sinks=["tensorboard"])
    for it in range(1, 4):
        log(paths, "sft", cfg, it, float(it))
    state = sinks.tb_dir(paths, "sft") / "written.json"
    kept = json.loads(state.read_text())
    log(paths, "sft", cfg, 4, 4.0)
    write_text(state, json.dumps(kept))  # as if killed between the flush and the state file
    sinks._open_sinks.clear()
    log(paths, "sft", cfg, 5, 5.0)
    assert same_points(tb_scalars(paths, "sft", "reward_mean"), [(i, float(i)) for i in range(1, 6)])


def test_unknown_sink_rejected_by_config() -> None:
    from mathfirst_hpc.config import ConfigError, load_stage_config
    with pytest.raises(ConfigError, match="logging.sinks"):
        load_stage_config("math_rl", "tiny", ["logging.sinks=[jsonl,mlflow]"])


def test_wandb_offline_only_checkpointed_points_no_duplicates(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    paths = RunPaths(tmp_path)
    cfg = LoggingConfig(sinks=["jsonl", "wandb"])
    for it in range(1, 4):
        log(paths, "joint_rl", cfg, it, 0.1 * it)
    checkpoint(paths, "joint_rl", step=4)  # iterations 1, 2 are covered by a checkpoint
    sinks.publish(paths, "joint_rl", cfg)
    log(paths, "joint_rl", cfg, 4, 0.4)
    sinks.close_all()  # the segment is flushed: what a later process reads back
    assert [s for s, _ in sinks.wandb_history(paths, "joint_rl")] == [1, 2]
    simulate_kill_and_resume(paths, "joint_rl", ckpt_step=4)
    for it in range(3, 6):
        log(paths, "joint_rl", cfg, it, 1.0 + it)
    checkpoint(paths, "joint_rl", step=10, final=True)
    sinks.publish(paths, "joint_rl", cfg)
    sinks.close_all()
    history = sinks.wandb_history(paths, "joint_rl")
    assert [s for s, _ in history] == [1, 2, 3, 4, 5]
    assert [v["reward_mean"] for _, v in history] == pytest.approx([0.1, 0.2, 4.0, 5.0, 6.0])
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2  # one segment per process


def test_stage_rows_reads_appends_incrementally_and_rereads_a_rewritten_file(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert sinks.stage_rows(path, "sft") == []
    for step in (1, 2):
        append_jsonl(path, {"stage": "sft", "step": step})
    append_jsonl(path, {"stage": "math_rl", "step": 1})
    assert [r["step"] for r in sinks.stage_rows(path, "sft")] == [1, 2]
    with open(path, "a") as handle:
        handle.write('{"stage": "sft", "step": 3}\n{"stage": "sft", "st')  # a torn line being written
    assert [r["step"] for r in sinks.stage_rows(path, "sft")] == [1, 2, 3]
    with open(path, "a") as handle:
        handle.write('ep": 4}\n')
    assert [r["step"] for r in sinks.stage_rows(path, "sft")] == [1, 2, 3, 4]
    # truncated by an atomic rewrite (as stage.load_latest does), then longer than before: read again in full
    write_text(path, "".join(json.dumps({"stage": "sft", "step": s, "redo": True}) + "\n" for s in range(1, 9)))
    rows = sinks.stage_rows(path, "sft")
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(r.get("redo") for r in rows)
    assert sinks.stage_rows(path, "math_rl") == []


def test_wandb_segments_started_in_the_same_second_are_all_read_in_order(tmp_path) -> None:
    """wandb names a second segment of the same id started within one second offline-run-<time>-<id>-1."""
    paths = RunPaths(tmp_path)
    run_id = sinks.wandb_run_id(paths, "joint_rl")
    names = [f"offline-run-20261129_204708-{run_id}-1", f"offline-run-20261129_204709-{run_id}",
             f"offline-run-20261129_204708-{run_id}", f"offline-run-20261129_204708-{run_id}-10",
             f"offline-run-20261129_204708-{run_id}-2", "offline-run-20261129_204708-other-id"]
    for name in names:
        (sinks.wandb_root(paths) / name).mkdir(parents=True)
        (sinks.wandb_root(paths) / name / f"run-{run_id}.wandb").write_bytes(b":W&B")
    order = [p.parent.name.removeprefix("offline-run-") for p in sinks._segments(paths, run_id)]
    assert order == [f"20261129_204708-{run_id}", f"20261129_204708-{run_id}-1", f"20261129_204708-{run_id}-2",
                     f"20261129_204708-{run_id}-10", f"20261129_204709-{run_id}"]


def test_wandb_waits_for_the_checkpoint_of_an_iteration_without_optimizer_step(tmp_path, monkeypatch) -> None:
    """An RL iteration that keeps no group logs the step of the iteration before it: the checkpoint of that one
    (same step) does not cover it, and W&B, which cannot take a point back, must not get it yet."""
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    paths = RunPaths(tmp_path)
    cfg = LoggingConfig(sinks=["jsonl", "wandb"])
    for iteration, step in ((1, 2), (2, 4), (3, 4)):  # iteration 3 kept no group: no optimizer step
        append_jsonl(paths.metrics, {"stage": "math_rl", "time_unix": time.time(), "iteration": iteration,
                                     "step": step, "reward_mean": 0.1 * iteration})
    Manifest(paths).set_stage("math_rl", step=4, iteration=2)  # the checkpoint after iteration 2
    sinks.publish(paths, "math_rl", cfg)
    sinks.close_all()
    assert [s for s, _ in sinks.wandb_history(paths, "math_rl")] == [1, 2]
    assert sinks.covered({"step": 4, "iteration": 3}, (4, 3)) and not sinks.covered({"step": 4}, (3, None))
    assert sinks.covered({"step": 5}, (5, 0)) and sinks.covered({"iteration": 9}, None)  # SFT by step; final


def test_resume_drops_the_line_of_a_redone_iteration_without_optimizer_step(tmp_path) -> None:
    """stage.load_latest truncates metrics.jsonl to the checkpoint: by iteration for RL lines, so a line of an
    iteration that kept no group (the step of the one before) is dropped with the other redone ones."""
    from types import SimpleNamespace

    from mathfirst_hpc.stage import _truncate_metrics

    paths = RunPaths(tmp_path)
    rows = [{"stage": "sft", "step": 1}, {"stage": "sft", "step": 2},
            {"stage": "math_rl", "iteration": 1, "step": 2},
            {"stage": "math_rl", "iteration": 2, "step": 2},  # kept no group: no optimizer step
            {"stage": "math_rl", "iteration": 3, "step": 4}]
    for row in rows:
        append_jsonl(paths.metrics, row)
    _truncate_metrics(SimpleNamespace(paths=paths, stage="math_rl"), (2, 1))  # the checkpoint after iteration 1
    assert [(r["stage"], r.get("iteration")) for r in read_jsonl(paths.metrics)] == [("sft", None), ("sft", None),
                                                                                     ("math_rl", 1)]
    _truncate_metrics(SimpleNamespace(paths=paths, stage="sft"), (1, 0))  # SFT lines by step
    assert [r["step"] for r in read_jsonl(paths.metrics) if r["stage"] == "sft"] == [1]
    _truncate_metrics(SimpleNamespace(paths=paths, stage="math_rl"), (0, 0))  # no checkpoint: all of the stage
    assert [r["stage"] for r in read_jsonl(paths.metrics)] == ["sft"]
