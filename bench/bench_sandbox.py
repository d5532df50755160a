"""Sandbox throughput: N tiny Python programs through the HTTP API (bwrap isolation, W workers) against plain
``subprocess.run`` of the same programs with no isolation, in the same run.

    .venv/bin/python bench/bench_sandbox.py [--n 1000] [--workers 2] [--isolation bwrap]

Prints executions/s for the sandbox, for sequential ``subprocess.run`` (the baseline the issue names) and for
``subprocess.run`` from W threads (the same parallelism as the server), and the ratios. Both sides use the same
interpreter and flags (``/usr/bin/python3 -I``). The sandbox side includes everything a reward pays: HTTP,
queueing, one fresh bwrap sandbox + prlimit per program, output capture and the expected-output check.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import tempfile
import time
from pathlib import Path

from mathfirst_hpc.sandbox import ExecJob, SandboxClient, start_local_server
from mathfirst_hpc.sandbox.config import SandboxConfig


def programs(n: int) -> list[tuple[str, str]]:
    return [(f"n = {i}\nprint(sum(range(n)) % 97)\n", str(sum(range(i)) % 97)) for i in range(n)]


def plain(progs: list[tuple[str, str]], threads: int, folder: Path) -> float:
    """Seconds to run ``progs`` with plain subprocess.run from ``threads`` threads; checks every output."""
    python = SandboxConfig().python
    paths = []
    for i, (code, _) in enumerate(progs):
        path = folder / f"p{threads}_{i}.py"
        path.write_text(code)
        paths.append(path)

    def run(index: int) -> bool:
        proc = subprocess.run([python, "-I", str(paths[index])], capture_output=True, text=True, timeout=60,
                              check=False)
        return proc.stdout.strip() == progs[index][1]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        ok = sum(pool.map(run, range(len(progs))))
    elapsed_s = time.perf_counter() - started
    assert ok == len(progs), f"plain runs: only {ok}/{len(progs)} correct"
    return elapsed_s


def sandboxed(progs: list[tuple[str, str]], client: SandboxClient) -> float:
    """Seconds to run ``progs`` through the HTTP API, expected-output check included."""
    jobs = [ExecJob(code=code, expected_output=expected) for code, expected in progs]
    started = time.perf_counter()
    results = client.run_batch_sync(jobs)
    elapsed_s = time.perf_counter() - started
    passed = sum(bool(r.passed) for r in results)
    assert passed == len(jobs), f"sandbox: only {passed}/{len(jobs)} passed: {results[0]}"
    return elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="programs per side")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers (and baseline threads)")
    parser.add_argument("--isolation", default="bwrap", choices=["bwrap", "none"])
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleave the three sides in this many slices, so load drift hits all alike")
    args = parser.parse_args()
    progs = programs(args.n)
    load = os.getloadavg()[0]
    totals = {"sandbox": 0.0, "sequential": 0.0, "threads": 0.0}
    with start_local_server(args.workers, args.isolation, shutdown_linger_s=0.2) as (url, _stop), \
            tempfile.TemporaryDirectory() as folder:
        client = SandboxClient(url, timeout_s=120)
        client.run_batch_sync([ExecJob(code="pass")] * 10)  # warm-up: connection, page cache
        for r in range(args.rounds):
            part = progs[r * args.n // args.rounds:(r + 1) * args.n // args.rounds]
            totals["sequential"] += plain(part, 1, Path(folder))
            totals["sandbox"] += sandboxed(part, client)
            totals["threads"] += plain(part, args.workers, Path(folder))
    rate = {side: args.n / seconds for side, seconds in totals.items()}
    print(f"{args.n} tiny python programs per side, {os.cpu_count()} cores, load average {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    print(f"sandbox HTTP API ({args.isolation}, {args.workers} workers): {rate['sandbox']:8.1f} executions/s")
    print(f"plain subprocess.run, sequential:          {rate['sequential']:8.1f} executions/s   "
          f"ratio {rate['sandbox'] / rate['sequential']:.2f}x")
    print(f"plain subprocess.run, {args.workers} threads:           {rate['threads']:8.1f} executions/s   "
          f"ratio {rate['sandbox'] / rate['threads']:.2f}x")


if __name__ == "__main__":
    main()
