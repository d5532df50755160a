"""Sandbox throughput at equal parallelism: N tiny Python programs through the sandbox's HTTP API with W workers,
against the same programs run as plain subprocesses from W threads, with the interpreter, flags and environment
the sandbox itself execs.

    .venv/bin/python bench/bench_sandbox.py [--n 1000] [--workers 2] [--rounds 8] [--isolation bwrap] [--container]

``--container``: the sandbox side is the server inside the sandbox image (podman, ``sandbox/build_image.sh``).

What each side does per program (printed with the result):

- sandbox: the program is part of one HTTP batch (``POST /v1/jobs``, then long-polled ``/v1/results``); a
  worker writes it to its job folder, its long-lived bwrap sandbox starts it in fresh pid, mount and ipc
  namespaces (new /tmp, /dev/shm and /proc), with rlimits, no capabilities, no network and the worker's own
  unprivileged uid, as ``/usr/bin/python3 -I /sandbox/main.py`` with a clean environment; stdout and stderr
  are captured with a byte cap and compared with the expected output.
- plain: ``subprocess.run(["/usr/bin/python3", "-I", file], env=<the sandbox's environment>,
  capture_output=True, start_new_session=True)`` from W threads, the output compared the same way. No isolation,
  no HTTP.

Sessions: bwrap starts each worker's sandbox in a session of its own (``--new-session``), and with the kernel's
scheduler autogroups on (``/proc/sys/kernel/sched_autogroup_enabled``) a session is a scheduling group: on a
machine loaded by others, W sandbox sessions got W shares of the CPU while all W plain programs shared the bench's
one. Each plain program therefore runs in a session of its own too, so both sides get the same share.

Files: both sides start from the program's text. The sandbox writes it into the worker's job folder and
deletes it after the run, within its timing; plain does the same, in a folder on the same filesystem as the
sandbox's job folders (``isolation.job_files_root``). (Plain used to write all its files before its clock
started, on the disk filesystem of /tmp, while the sandbox paid for its writes.)

The sides alternate within one run (round r runs a slice of the programs on one side and then the same slice
on the other, the order flipping every round), so load drift from other processes hits both alike; the
headline is total sandbox throughput over total plain throughput, and the per-round ratios show the spread.

As root on a cgroup-v1 host, the CPU time each side consumes (this process, the server thread, the sandboxes
and the programs: a cpuacct cgroup of its own) is printed too: on a busy machine throughput ratios swing with
the neighbours' load, while CPU per execution says what the sandbox costs on top of the program itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from mathfirst_hpc.sandbox import ExecJob, SandboxClient, start_local_server
from mathfirst_hpc.sandbox.config import SandboxConfig
from mathfirst_hpc.sandbox.container import start_container_server
from mathfirst_hpc.sandbox.harness import outputs_match
from mathfirst_hpc.sandbox.isolation import SANDBOX_ENV, job_files_root


def programs(n: int) -> list[tuple[str, str]]:
    return [(f"n = {i}\nprint(sum(range(n)) % 97)\n", str(sum(range(i)) % 97)) for i in range(n)]


def plain_argv(path: Path) -> list[str]:
    """What the sandbox execs for a Python job (runner.JobRunner._run), with the file at a host path."""
    return [SandboxConfig().python, "-I", str(path)]


def plain(progs: list[tuple[str, str]], threads: int, folder: Path) -> float:
    """Seconds to run ``progs`` as plain subprocesses from ``threads`` threads; checks every output. Like the
    sandbox, each program is written to a file just before it runs and deleted after (module docstring)."""

    def run(index: int) -> bool:
        path = folder / f"p{index}.py"
        path.write_text(progs[index][0])
        # own session: the scheduling group the sandbox's programs get from bwrap --new-session (module docstring)
        proc = subprocess.run(plain_argv(path), capture_output=True, env=dict(SANDBOX_ENV), timeout=60,
                              check=False, start_new_session=True)
        path.unlink()
        return proc.returncode == 0 and outputs_match(proc.stdout.decode(), progs[index][1])

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


class CpuAccount:
    """CPU seconds used by this process and all its descendants (a cgroup-v1 cpuacct group), or None."""

    ROOT = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self, enabled: bool = True) -> None:
        self.group: Path | None = None
        if not enabled:
            return
        try:
            group = self.ROOT / f"mathfirst-bench-{os.getpid()}"
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(str(os.getpid()))
            self.group = group
        except OSError:
            pass

    def seconds(self) -> float | None:
        return int((self.group / "cpuacct.usage").read_text()) / 1e9 if self.group else None

    def close(self) -> None:
        if self.group is not None:
            (self.ROOT / "cgroup.procs").write_text(str(os.getpid()))
            for _ in range(50):  # the group empties once the last child has been reaped
                try:
                    self.group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def describe(workers: int, isolation: str) -> str:
    python = SandboxConfig().python
    sandbox = (f"sandbox: HTTP batch -> {workers} workers; per program: {isolation} "
               + ("(fresh pid/mount/ipc namespaces, /tmp, /dev/shm, /proc inside the worker's long-lived bwrap "
                  "sandbox: own user/net/uts namespaces, read-only root, no capabilities, unprivileged uid)"
                  if isolation == "bwrap" else "(rlimits, process group, separate uid only)")
               + f", rlimits, exec `{python} -I /sandbox/main.py`, clean env, capped capture, output check")
    plain_side = (f"plain:   {workers} threads x (write file, subprocess.run([{python}, -I, file], env=sandbox env, "
                  "capture_output=True, start_new_session=True), delete file), output check; no isolation, no HTTP")
    return f"{sandbox}\n{plain_side}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="programs per side")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers and plain threads")
    parser.add_argument("--isolation", default="bwrap", choices=["bwrap", "none"])
    parser.add_argument("--container", action="store_true",
                        help="sandbox side: the server in the container image (podman) instead of in-process")
    parser.add_argument("--rounds", type=int, default=8,
                        help="alternate the two sides over this many slices of the programs")
    args = parser.parse_args()
    progs = programs(args.n)
    load_start = os.getloadavg()
    totals = {"sandbox": 0.0, "plain": 0.0}
    cpu_s = {"sandbox": 0.0, "plain": 0.0}
    ratios = []
    account = CpuAccount(enabled=not args.container)  # a container's processes are not our children
    if args.container:
        server = start_container_server(args.workers)
    else:
        server = start_local_server(args.workers, args.isolation, shutdown_linger_s=0.2)
    with server as (url, _stop), tempfile.TemporaryDirectory(dir=job_files_root()) as folder:
        client = SandboxClient(url, timeout_s=120)
        client.run_batch_sync([ExecJob(code="pass")] * 10)  # warm-up: connection, zygotes, page cache
        plain(progs[:10], args.workers, Path(folder))
        for r in range(args.rounds):
            part = progs[r * args.n // args.rounds:(r + 1) * args.n // args.rounds]
            seconds = {}
            for side in (("sandbox", "plain") if r % 2 == 0 else ("plain", "sandbox")):
                cpu_before = account.seconds()
                seconds[side] = (sandboxed(part, client) if side == "sandbox"
                                 else plain(part, args.workers, Path(folder)))
                totals[side] += seconds[side]
                if cpu_before is not None:
                    cpu_s[side] += account.seconds() - cpu_before
            ratios.append(seconds["plain"] / seconds["sandbox"])
    account.close()
    rate = {side: args.n / s for side, s in totals.items()}
    load_end = os.getloadavg()
    print(describe(args.workers, args.isolation) + ("\n(sandbox side: the server inside the container image)"
                                                    if args.container else ""))
    print(f"{args.n} tiny python programs per side, {os.cpu_count()} cores, load average (1/5/15 min) "
          f"{'/'.join(f'{x:.1f}' for x in load_start)} at start, {'/'.join(f'{x:.1f}' for x in load_end)} at end")
    print(f"sandbox ({args.isolation}, {args.workers} workers): {rate['sandbox']:8.1f} executions/s")
    print(f"plain ({args.workers} threads):          {rate['plain']:8.1f} executions/s")
    print(f"ratio sandbox/plain: {rate['sandbox'] / rate['plain']:.2f}x   per round: "
          + " ".join(f"{x:.2f}" for x in ratios)
          + f"   (min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, max {max(ratios):.2f})")
    if account.group is not None:
        per_exec_ms = {side: cpu_s[side] / args.n * 1e3 for side in cpu_s}
        print(f"CPU per execution (all processes of each side): sandbox {per_exec_ms['sandbox']:.2f} ms, "
              f"plain {per_exec_ms['plain']:.2f} ms; ratio plain/sandbox "
              f"{per_exec_ms['plain'] / per_exec_ms['sandbox']:.2f}x (the throughput ratio when CPU-bound)")


if __name__ == "__main__":
    main()
