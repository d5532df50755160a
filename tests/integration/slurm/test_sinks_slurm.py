"""TensorBoard and W&B (offline) curves of an RL stage run through ``mathfirst-hpc submit`` on the local Slurm
cluster, with a learner job and then the driver requeued mid-stage (``scontrol requeue``).

By design only the learner jobs write points: the learner job of iteration K logs line K+1 of metrics.jsonl (the
driver's collection metrics from driver.json, its own update metrics) and replays it to TensorBoard, then to W&B
once its checkpoint covers it; the driver job writes none. Read back with TensorBoard's event reader and from
W&B's offline transaction logs, each scalar has exactly one point per iteration 1..N, equal to metrics.jsonl, and
each point was written by the (last run of the) learner job of its iteration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mathfirst_hpc import sinks
from mathfirst_hpc.atomic import read_jsonl
from mathfirst_hpc.paths import RunPaths

from .support import TINY, copy_run, jobs_of, log_of, wait_final, wait_for

pytestmark = pytest.mark.slurm

STAGE = "math_rl"
ITERATIONS = 3
OVERRIDES = [*TINY, f"math_rl:steps={ITERATIONS}", "math_rl:rollout.num_shards=2",
             "logging.sinks=[jsonl,tensorboard,wandb]"]
"""TINY with three iterations of a 2-task rollout array each (fewer jobs), and all three sinks."""


def tb_events(run_dir: Path) -> dict[str, list[tuple[str, int]]]:
    """Every scalar event of every event file, as written (no purge applied): tag -> [(file name, step)]."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out: dict[str, list[tuple[str, int]]] = {}
    for path in sorted(sinks.tb_dir(RunPaths(run_dir), STAGE).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((path.name, event.step))
    return out


def tb_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: tag -> [(step, value)], read by its event reader (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(sinks.tb_dir(RunPaths(run_dir), STAGE)), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tb_pid(name: str) -> int:
    """events.out.tfevents.<time>.<host>.<pid>.<n>"""
    match = re.fullmatch(r"events\.out\.tfevents\.\d+\.(.+)\.(\d+)\.(\d+)", name)
    assert match, name
    return int(match.group(2))


def wandb_segments(run_dir: Path) -> list[dict]:
    """Each offline segment of the stage's W&B run: the Slurm job (and restart) and pid that wrote it, its steps."""
    from wandb.proto import wandb_internal_pb2 as pb

    paths = RunPaths(run_dir)
    out = []
    for log_path in sinks._segments(paths, sinks.wandb_run_id(paths, STAGE)):
        slurm, steps = {}, []
        for raw in sinks._leveldb_records(log_path.read_bytes()):
            record = pb.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "environment" and record.environment.slurm:
                slurm = dict(record.environment.slurm)
            elif kind == "history":
                named = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                steps.append(int(json.loads(named["_step"])) if "_step" in named else record.history.step.num)
        debug = (log_path.parent / "logs" / "debug.log").read_text(errors="replace")
        pid = re.search(r"Configure stats pid to (\d+)", debug)
        out.append({"segment": log_path.parent.name, "job": slurm.get("job_id"),
                    "restart": int(slurm.get("restart_count", 0)), "pid": int(pid.group(1)) if pid else None,
                    "steps": steps})
    return out


def learner_of(run_dir: Path) -> dict[int, str]:
    """iteration -> the learner job id (one per iteration, asserted)."""
    jobs = jobs_of(run_dir, "learner", STAGE)
    by_iteration = Counter(info["key"]["iteration"] for info in jobs.values())
    assert all(n == 1 for n in by_iteration.values()), f"an iteration has two learner jobs: {by_iteration}"
    return {info["key"]["iteration"]: job for job, info in jobs.items()}


def submit(run_dir: Path) -> str:
    """``mathfirst-hpc submit stage2`` (the CLI, as a user types it); returns the driver's job id."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "-m", "mathfirst_hpc.cli", "submit", "stage2", "--run-dir", str(run_dir),
                           "--profile", "local-dev", "--preset", "tiny", *OVERRIDES],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    drivers = jobs_of(run_dir, "driver", STAGE)
    assert len(drivers) == 1, drivers
    return next(iter(drivers))


def test_requeued_learner_and_driver_leave_one_point_per_step(sft_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")
    run_dir = copy_run(sft_run, tmp_path / "sinks")
    driver = submit(run_dir)

    # 1. the learner of iteration 0, once its handler is installed: it stops at its first micro-batch boundary
    first = wait_for(lambda: learner_of(run_dir).get(0), 240, "the learner job of iteration 0")
    wait_for(lambda: "[LearnerJob] start" in log_of(run_dir, first), 180, "the learner's start", 0.1)
    subprocess.run(["scontrol", "requeue", first], check=True, timeout=30)
    # 2. the driver, while it waits on the learner job of iteration 1 (the requeued driver re-attaches to it)
    wait_for(lambda: learner_of(run_dir).get(1), 300, "the learner job of iteration 1")
    subprocess.run(["scontrol", "requeue", driver], check=True, timeout=30)
    wait_final(run_dir, STAGE, timeout_s=420)

    assert "restart 1" in log_of(run_dir, first) and "received SIGTERM" in log_of(run_dir, first)
    assert "restart 1" in log_of(run_dir, driver), "the driver was not requeued"
    assert list(jobs_of(run_dir, "driver", STAGE)) == [driver]  # requeued under its id, not resubmitted
    learners = learner_of(run_dir)
    assert sorted(learners) == list(range(ITERATIONS))

    # metrics.jsonl, the source of truth: one line per iteration
    lines = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["stage"] == STAGE]
    assert [r["iteration"] for r in lines] == list(range(1, ITERATIONS + 1))
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in lines:
        for tag, value in sinks.scalars(row).items():
            expected.setdefault(tag, []).append((row["iteration"], value))
    assert {"reward_mean", "kept_group_fraction", "loss", "lr"} <= expected.keys()

    # TensorBoard, as its reader shows it: every scalar of metrics.jsonl, one point per iteration, same values
    shown = tb_points(run_dir)
    assert shown.keys() == expected.keys()
    for tag, want in expected.items():
        assert [s for s, _ in shown[tag]] == [s for s, _ in want], (tag, shown[tag])
        assert [v for _, v in shown[tag]] == pytest.approx([v for _, v in want], rel=1e-5, abs=1e-6), tag
    # ... and as written: no step written twice (nothing for a purge to hide), one event file per learner job
    written = tb_events(run_dir)
    for tag, events in written.items():
        assert sorted(s for _, s in events) == [s for s, _ in expected[tag]], (tag, events)
    files = {name: sorted({s for events in written.values() for n, s in events if n == name})
             for name in {n for events in written.values() for n, _ in events}}
    assert sorted(files.values()) == [[i] for i in range(1, ITERATIONS + 1)], files  # one writer per step
    assert len(list(sinks.tb_dir(RunPaths(run_dir), STAGE).glob("events.out.tfevents.*"))) == len(files)
    per_step = Counter(s for events in written.values() for _, s in events)
    print(f"[sinks] TensorBoard scalars written per iteration: {dict(sorted(per_step.items()))}")  # pytest -s

    # W&B offline: one point per iteration over all segments, equal to metrics.jsonl
    history = sinks.wandb_history(RunPaths(run_dir), STAGE)
    assert [s for s, _ in history] == list(range(1, ITERATIONS + 1))
    for tag in ("reward_mean", "loss", "reward_mean/math"):
        assert [v[tag] for _, v in history] == pytest.approx([r[tag] for r in lines], rel=1e-6), tag

    # who wrote what: the learner job of iteration K (its last run) wrote point K+1 to both sinks; the driver none
    segments = wandb_segments(run_dir)
    assert sorted(seg["job"] for seg in segments) == sorted(learners.values()), segments
    pids = {}
    for seg in segments:
        iteration = next(i for i, job in learners.items() if job == seg["job"])
        assert seg["steps"] == [iteration + 1], seg
        assert seg["restart"] == (1 if iteration == 0 else 0), seg  # the requeued run of iteration 0's learner
        pids[seg["pid"]] = iteration + 1
    assert {name: [pids.get(tb_pid(name))] for name in files} == files, (files, segments)
