"""Outputs benchmark (issue 14): rollout export throughput and the cost of the metric sinks.

    .venv/bin/python bench/bench_outputs.py export [--shards 8] [--samples 2048] [--dir /tmp/x]
    .venv/bin/python bench/bench_outputs.py sinks [--iterations 300] [--sinks tensorboard] [--dir /tmp/x]

export: a synthetic run dir (the tiny preset's trained tokenizer, vocab 512; shards of 256-token prompts shared by
groups of 16 and 512-token responses, random token ids, recorded in the manifest like real ones) exported with
``export.export_rollouts``; prints rows/s and MB of shards read per second (the checksum of every shard is
verified as it is read, as the CLI does). Random ids decode to longer strings than real text, so this is a
pessimistic figure for the decode step.

sinks: appends ``--iterations`` RL-shaped metric lines (the fields of a real joint_rl line: 6 domains, rollout,
update and timing metrics) one at a time, each followed by ``sinks.publish`` as ``stage.log_metrics`` does;
prints the scalars written per iteration and the publish time per line (mean, and over the last 10%, which
grows with metrics.jsonl since publish re-reads it). With wandb, the stage is marked final in the manifest first,
so that every line is checkpoint-covered and W&B writes each one at once.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mathfirst_hpc.atomic import append_jsonl, atomic_dir
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.records import ShardEntry
from mathfirst_hpc.shards import Ragged, ShardData, write_shard

DOMAINS = ("math", "code", "stem", "logic", "simulation", "tabular")


def make_tokenizer(paths: RunPaths) -> int:
    from mathfirst_hpc.data.synthetic import corpus_texts
    from mathfirst_hpc.models import train_tokenizer
    tokenizer = train_tokenizer(corpus_texts(n=3000, seed=0), vocab_size=512)
    with atomic_dir(paths.tokenizer_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return len(tokenizer)


def make_shard(n: int, vocab: int, rng: np.random.Generator, iteration: int, index: int) -> ShardData:
    per_group = rng.integers(0, vocab, (n // 16, 256), dtype=np.int32)  # a group's 16 samples share their prompt
    prompt = Ragged(np.repeat(per_group, 16, axis=0).reshape(-1), np.arange(n + 1, dtype=np.int64) * 256)
    response = Ragged(rng.integers(0, vocab, n * 512, dtype=np.int32), np.arange(n + 1, dtype=np.int64) * 512)
    return ShardData(
        sample_id=np.arange(index * n, (index + 1) * n), group_id=np.arange(index * n, (index + 1) * n) // 16,
        prompt_uid=[f"math__x#{i // 16}" for i in range(n)], domain=[DOMAINS[i % 6] for i in range(n)],
        data_source=[f"{DOMAINS[i % 6]}__bench" for i in range(n)], prompt_tokens=prompt, response_tokens=response,
        logprobs=Ragged(-rng.random(n * 512, dtype=np.float32), response.offsets),
        finish_reason=["length"] * n, score=rng.integers(0, 2, n).astype(np.float32),
        reward=rng.integers(0, 2, n).astype(np.float32), verdict=["correct", "incorrect"] * (n // 2),
        reason=["bench"] * n, attrs={"stage": "joint_rl", "iteration": iteration, "gen_batch": 0,
                                     "shard_index": index})


def bench_export(args: argparse.Namespace, root: Path) -> None:
    from mathfirst_hpc.export import export_rollouts
    paths = RunPaths(root / "run").make()
    vocab = make_tokenizer(paths)
    rng = np.random.default_rng(0)
    manifest, total_bytes = Manifest(paths), 0
    for index in range(args.shards):
        path = paths.shard("joint_rl", 0, index)
        sha = write_shard(path, make_shard(args.samples, vocab, rng, 0, index))
        manifest.record_shard(path, ShardEntry(sha, args.samples, scored=True, policy_step=0))
        total_bytes += path.stat().st_size
    result = export_rollouts(paths.root, "joint_rl", root / "out.parquet")
    print(f"export: {result.rows} rows ({args.shards} shards x {args.samples}, 256+512 tokens) in "
          f"{result.seconds:.2f} s = {result.rows_per_s:,.0f} rows/s, {total_bytes / 1e6 / result.seconds:.0f} MB/s "
          f"of shards; parquet {(root / 'out.parquet').stat().st_size / 1e6:.1f} MB")


def rl_line(iteration: int, rng: np.random.Generator) -> dict:
    line = {"iteration": iteration, "step": 4 * iteration}
    for domain in DOMAINS:
        line[f"reward_mean/{domain}"] = float(rng.random())
        line[f"accuracy/{domain}"] = float(rng.random())
    for key in ("reward_mean", "accuracy", "kept_group_fraction", "response_len_mean", "overlong_frac",
                "rollout_tokens_per_s", "loss", "clip_frac_low", "clip_frac_high", "clip_frac_dual", "entropy",
                "grad_norm", "lr", "train_tokens_per_s", "ratio_mean"):
        line[key] = float(rng.random())
    line.update(verifier_errors=1, unparseable=3, kept_groups=12, gen_batches=2, response_len_max=512)
    return line


def bench_sinks(args: argparse.Namespace, root: Path) -> None:
    from mathfirst_hpc import sinks
    from mathfirst_hpc.config import LoggingConfig
    paths = RunPaths(root / "run").make()
    cfg = LoggingConfig(sinks=["jsonl", *args.sinks.split(",")])
    if "wandb" in cfg.sinks:  # W&B writes only checkpoint-covered lines: a final stage makes every line covered
        Manifest(paths).set_stage("joint_rl", status="final")
    rng = np.random.default_rng(0)
    times = []
    for iteration in range(1, args.iterations + 1):
        append_jsonl(paths.metrics, {"stage": "joint_rl", "time_unix": time.time(), **rl_line(iteration, rng)})
        start = time.perf_counter()
        sinks.publish(paths, "joint_rl", cfg)
        times.append(time.perf_counter() - start)
    sinks.close_all()
    scalars = len(sinks.scalars(rl_line(1, rng)))
    tail = times[-max(1, len(times) // 10):]
    print(f"sinks {args.sinks}: {scalars} scalars per iteration; publish {1e3 * float(np.mean(times[1:])):.2f} ms "
          f"per line on average (first, with the writer's start: {1e3 * times[0]:.0f} ms), "
          f"{1e3 * float(np.mean(tail)):.2f} ms over the last {len(tail)} of {args.iterations}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["export", "sinks"])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--sinks", default="tensorboard", help="comma-separated: tensorboard,wandb")
    parser.add_argument("--dir", default=None, help="work folder (default: a temp folder, removed)")
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_outputs_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        (bench_export if args.what == "export" else bench_sinks)(args, root)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
