"""Offline batch evaluation of checkpoints on the paper's benchmarks.

- ``benchmarks.py``  local benchmark files (Reasoning360 parquet or each benchmark's own format) -> Problem rows
- ``passk.py``       unbiased pass@k, avg@k
- ``harness.py``     chunked generate + score, per-sample results, summaries, Slurm job arrays, stage comparison

Run it with ``mathfirst-hpc eval --checkpoint CKPT... | --run-dir D --benchmarks LIST --n K --data-dir DIR``.
"""
