"""Orchestration overhead per RL iteration (issue: Slurm orchestration): the tiny preset's stage 2 through the
local Slurm cluster (profile local-dev), beside the same stage through submitit's local executor (profile local)
and colocated in one process (``mathfirst-hpc run``), in the same run.

    slurm/local_cluster.sh up
    .venv/bin/python bench/bench_orchestration.py [--iterations 3] [--dir /tmp/bench_orch]

Per iteration, wall-clock from the driver's side, split into parts:

    scheduling       sbatch -> job start (sacct Submit -> Start, 1 s resolution), over the jobs in sequence
    job start        the rest of the time the driver waits beyond our code's run time: Python start, imports,
                     unpickling, torch.distributed, process exit, the driver noticing the result (1 s polls)
    model loading    rollout tasks (slowest of each array) + learner (model, optimizer, checkpoint)
    shard I/O        reading shards / the kept batch (driver + learner); checkpoint save with HF export
    generation, learning, rewards: the work itself (not overhead)
    other            what remains on the driver's side: planning, writing the kept batch, bookkeeping

Overhead = iteration wall - generation - learning - rewards. Goal: < 10 s per iteration. The first iteration
(driver start, tokenizer) is reported apart from the mean of the others.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERRIDES = [
    "sft:steps=2", "sft:sft.batch_size=8", "sft:sft.micro_batch_size=8",
    "math_rl:rollout.num_shards=2", "math_rl:dapo.max_gen_batches=1", "math_rl:checkpoint.keep_last=2",
]


def _iso(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def sacct_times(job_ids: list[str]) -> dict[str, tuple[float, float, float]]:
    """job id -> (submit, start, end) in seconds since the epoch (1 s resolution)."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,Submit,Start,End", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, check=True).stdout
    times = {}
    for line in out.splitlines():
        job_id, submit, start, end = line.split("|")
        values = (_iso(submit), _iso(start), _iso(end))
        if None not in values:
            times[job_id] = values  # type: ignore[assignment]
    return times


def parts_per_iteration(run_dir: Path, slurm: bool) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "logs" / "driver_math_rl.jsonl").read_text().splitlines()]
    jobs = json.loads((run_dir / "manifest.json").read_text())["jobs"]
    times = sacct_times(list(jobs)) if slurm else {}
    out = []
    for row in rows:
        it = row["iteration"]
        mine = {j: i for j, i in jobs.items() if i.get("stage") == "math_rl" and i["key"].get("iteration") == it}
        wall = row["collect_wall_s"] + row["learner_wall_s"]
        generation = row.get("tasks/max_generate_s", 0.0)
        learning = row.get("learner/train_s", 0.0)
        rewards = row.get("reward_s", 0.0)
        loading = row.get("tasks/max_load_s", 0.0) + row.get("learner/load_s", 0.0)
        shard_io = row.get("shard_io_s", 0.0) + row.get("learner/shard_io_s", 0.0) + row.get("learner/save_s", 0.0)
        # jobs of one array run side by side: the slowest task of each step of the sequence counts
        steps: dict[tuple, list[str]] = {}
        for job_id, info in mine.items():
            steps.setdefault((info["kind"], info["key"].get("gen_batch")), []).append(job_id)
        scheduling = 0.0
        for ids in steps.values():
            known = [times[j] for j in ids if j in times]
            if known:
                scheduling += max(start - submit for submit, start, _ in known)
        busy = row.get("tasks/max_task_s", 0.0) + row.get("learner/task_s", 0.0)
        outside = (row.get("tasks/rollout_wall_s", 0.0) + row["learner_wall_s"]) - busy  # waiting beyond our code
        overhead = wall - generation - learning - rewards
        other = overhead - outside - loading - shard_io
        out.append({"iteration": it, "wall": wall, "generation": generation, "learning": learning,
                    "rewards": rewards, "scheduling": scheduling, "job start": outside - scheduling,
                    "model loading": loading, "shard I/O": shard_io, "other": other,
                    "overhead": overhead, "jobs": len(mine)})
    return out


def mean(rows: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / max(len(rows), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    from mathfirst_hpc.launch.driver import submit_stages
    from mathfirst_hpc.launch.profiles import cluster_partitions
    from mathfirst_hpc.run import run_curriculum

    if not cluster_partitions():
        print("the local Slurm cluster is not up: run slurm/local_cluster.sh up", file=sys.stderr)
        return 2
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_orch_"))
    shutil.rmtree(root, ignore_errors=True)
    overrides = OVERRIDES + [f"math_rl:steps={args.iterations}"]
    base = root / "base"
    run_curriculum(base, ["sft"], "tiny", overrides, progress=False)
    copies = {name: root / name for name in ("slurm", "local", "colocated")}
    for dest in copies.values():
        shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.lock"))

    timing = {}
    start = time.perf_counter()
    run_curriculum(copies["colocated"], ["math_rl"], "tiny", overrides, progress=False)
    timing["colocated"] = (time.perf_counter() - start) / args.iterations
    submit_stages(copies["local"], "stage2", "local", overrides=overrides)  # foreground
    submit_stages(copies["slurm"], "stage2", "local-dev", overrides=overrides)
    manifest = copies["slurm"] / "manifest.json"
    deadline = time.time() + 1800
    while json.loads(manifest.read_text())["stages"]["math_rl"]["status"] != "final":
        if time.time() > deadline:
            print("the Slurm run did not finish in 30 minutes", file=sys.stderr)
            return 1
        time.sleep(2)
    time.sleep(3)  # sacct lags ~2 s behind the end of the last job

    results = {"slurm": parts_per_iteration(copies["slurm"], slurm=True),
               "local": parts_per_iteration(copies["local"], slurm=False)}
    keys = ["wall", "generation", "learning", "rewards", "scheduling", "job start", "model loading", "shard I/O",
            "other", "overhead"]
    print(f"tiny preset stage 2, {args.iterations} iterations; seconds per iteration "
          f"(mean of iterations 2..{args.iterations}, iteration 1 in brackets)")
    print(f"{'part':<15} {'slurm (local-dev)':>20} {'local executor':>20}")
    for key in keys:
        cells = []
        for mode in ("slurm", "local"):
            rows = results[mode]
            later = rows[1:] or rows
            cells.append(f"{mean(later, key):8.2f} [{rows[0][key]:6.2f}]")
        print(f"{key:<15} {cells[0]:>20} {cells[1]:>20}")
    slurm_overhead, local_overhead = (mean(results[m][1:] or results[m], "overhead") for m in ("slurm", "local"))
    print(f"jobs per iteration: {results['slurm'][-1]['jobs']} (rollout array tasks + learner)")
    print(f"colocated (one process, no jobs): {timing['colocated']:.2f} s per iteration")
    print(f"orchestration overhead per iteration: slurm {slurm_overhead:.2f} s, local executor {local_overhead:.2f} s "
          f"(baseline); ratio slurm/local = {slurm_overhead / max(local_overhead, 1e-9):.2f}; goal < 10 s: "
          f"{'met' if slurm_overhead < 10 else 'NOT met'}")
    print(f"run dirs under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
