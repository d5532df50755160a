"""Shard I/O benchmark (issue: foundation): write and read 100k samples (256-token prompts, 512-token responses,
per-token logprobs) as HDF5 shards, against numpy.save / numpy.load of the same arrays, in the same run.

    .venv/bin/python bench/bench_shards.py [--samples 100000] [--shards 10] [--dir /tmp/x]

Prints MB/s for both and the ratios (goal: both >= 0.5x). Read time includes validation and decoding into
ShardData; both sides fsync their writes (our shards always do). Reads are best-of-N, alternating.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mathfirst_hpc.shards import Ragged, ShardData, read_shard, write_shard


def make(n: int, rng: np.random.Generator, offset: int) -> ShardData:
    prompt = Ragged(rng.integers(0, 150_000, n * 256, dtype=np.int32), np.arange(n + 1, dtype=np.int64) * 256)
    response = Ragged(rng.integers(0, 150_000, n * 512, dtype=np.int32), np.arange(n + 1, dtype=np.int64) * 512)
    logprobs = Ragged(-rng.random(n * 512, dtype=np.float32), response.offsets)
    return ShardData(sample_id=np.arange(offset, offset + n), group_id=np.arange(offset, offset + n) // 8,
                     prompt_uid=[f"math__{i // 8}" for i in range(offset, offset + n)], domain=["math"] * n,
                     data_source=["math__deepscaler"] * n, prompt_tokens=prompt, response_tokens=response,
                     logprobs=logprobs, finish_reason=["stop"] * n, score=rng.random(n, dtype=np.float32),
                     reward=rng.random(n, dtype=np.float32), verdict=["correct"] * n, reason=["ok"] * n)


def numpy_arrays(d: ShardData) -> dict[str, np.ndarray]:
    return {"prompt": d.prompt_tokens.flat, "prompt_off": d.prompt_tokens.offsets, "resp": d.response_tokens.flat,
            "resp_off": d.response_tokens.offsets, "logp": d.logprobs.flat, "score": d.score, "reward": d.reward,
            "sample_id": d.sample_id, "group_id": d.group_id}


def fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench_shards_"))
    rng = np.random.default_rng(0)
    per = args.samples // args.shards
    parts = [make(per, rng, k * per) for k in range(args.shards)]

    t = time.perf_counter()
    for k, part in enumerate(parts):
        write_shard(root / f"shard_{k:03d}.h5", part)
    h5_write = time.perf_counter() - t
    h5_bytes = sum(p.stat().st_size for p in root.glob("shard_*.h5"))

    def read_h5() -> int:
        return sum(len(read_shard(root / f"shard_{k:03d}.h5")) for k in range(args.shards))

    t = time.perf_counter()
    for k, part in enumerate(parts):
        for name, arr in numpy_arrays(part).items():
            path = root / f"np_{k:03d}_{name}.npy"
            np.save(path, arr)
            fsync(path)
    np_write = time.perf_counter() - t
    np_bytes = sum(p.stat().st_size for p in root.glob("np_*.npy"))

    def read_np() -> int:
        for k in range(args.shards):
            arrays = [np.load(root / f"np_{k:03d}_{name}.npy") for name in numpy_arrays(parts[0])]
        return len(arrays[-1]) * args.shards

    # reads alternate (best of --repeats each), so both see the same page-cache and CPU conditions
    h5_read = np_read = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        n_read = read_h5()
        h5_read = min(h5_read, time.perf_counter() - t)
        t = time.perf_counter()
        read_np()
        np_read = min(np_read, time.perf_counter() - t)
    assert n_read == per * args.shards

    mb = lambda b, s: b / s / 1e6  # noqa: E731
    print(f"samples {per * args.shards} in {args.shards} shards; HDF5 {h5_bytes / 1e6:.0f} MB, numpy {np_bytes / 1e6:.0f} MB")
    print(f"write  HDF5 {mb(h5_bytes, h5_write):8.0f} MB/s   numpy.save {mb(np_bytes, np_write):8.0f} MB/s   "
          f"ratio {mb(h5_bytes, h5_write) / mb(np_bytes, np_write):.2f}x (goal >= 0.5x)")
    print(f"read   HDF5 {mb(h5_bytes, h5_read):8.0f} MB/s   numpy.load {mb(np_bytes, np_read):8.0f} MB/s   "
          f"ratio {mb(h5_bytes, h5_read) / mb(np_bytes, np_read):.2f}x (goal >= 0.5x)")
    if not args.dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
