"""``init_distributed()``: the one torch.distributed bootstrap used by every multi-process job.

Rank, world size, local rank and the rendezvous address come from, in this order:

1. torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
2. Slurm tasks started by ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``); the master is the
   first host of ``SLURM_JOB_NODELIST``, expanded by ``scontrol show hostnames`` (or by :func:`expand_nodelist`
   when scontrol is not on PATH);
3. submitit's local executor (``SUBMITIT_LOCAL_GLOBALID`` and kin), master 127.0.0.1;
4. otherwise a single process.

The port is ``MASTER_PORT`` when set, else derived from the job id so that two jobs sharing a node do not
collide. The process group is created only when the world has more than one process (or ``force=True``).

Usage::

    env = init_distributed()          # in a learner task; backend "auto" = nccl with CUDA, else gloo
    if env.rank == 0: ...

Simplification: one process group (the default one); Megatron's model-parallel groups are built on top of it.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

PORT_BASE = 20000
PORT_SPAN = 20000


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str
    """Where the values came from: torchrun, slurm, submitit-local or single."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a Slurm hostlist (``n[1-2]``, ``gpu[01-03,07],cpu1``) the way ``scontrol show hostnames`` does."""
    hosts: list[str] = []
    # Split on commas that are not inside brackets.
    for group in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", group)
        if not match:
            hosts.append(group)
            continue
        prefix, ranges, suffix = match.groups()
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                hosts += [f"{prefix}{i:0{len(lo)}d}{suffix}" for i in range(int(lo), int(hi) + 1)]
            else:
                hosts.append(f"{prefix}{part}{suffix}")
    return hosts


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: what every task of a job agrees on as the rendezvous master."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass  # the parser below gives the same answer for ordinary hostlists
    return expand_nodelist(nodelist)[0]


def _port_for(job_id: str | None) -> int:
    digits = re.sub(r"\D", "", job_id or "")
    return PORT_BASE + (int(digits) % PORT_SPAN if digits else 0)


def detect() -> DistEnv:
    """Read rank/world/master from the environment (torchrun, Slurm, submitit-local, or single process)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", PORT_BASE)), "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        job_id = env.get("SLURM_JOB_ID")
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else _port_for(job_id)
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       first_host(nodelist), port, "slurm")
    if "SUBMITIT_LOCAL_GLOBALID" in env:
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else _port_for(env.get("SUBMITIT_LOCAL_JOB_ID"))
        return DistEnv(int(env["SUBMITIT_LOCAL_GLOBALID"]), int(env.get("SUBMITIT_LOCAL_NTASKS", 1)),
                       int(env.get("SUBMITIT_LOCAL_LOCALID", 0)), "127.0.0.1", port, "submitit-local")
    return DistEnv(0, 1, 0, "127.0.0.1", _port_for(None), "single")


def init_distributed(backend: str = "auto", timeout_s: float = 300.0, force: bool = False) -> DistEnv:
    """Detect the environment, export the ``env://`` variables and create the default process group.

    ``backend`` is ``auto`` (nccl when CUDA is available, else gloo), ``gloo`` or ``nccl``. Calling it again
    in a process that already has a process group returns the environment without re-initialising.
    """
    import torch
    import torch.distributed as dist

    env = detect()
    os.environ.update({"RANK": str(env.rank), "WORLD_SIZE": str(env.world_size),
                       "LOCAL_RANK": str(env.local_rank), "MASTER_ADDR": env.master_addr,
                       "MASTER_PORT": str(env.master_port)})
    if (env.world_size > 1 or force) and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank % max(torch.cuda.device_count(), 1))
        dist.init_process_group(backend=backend, init_method="env://", rank=env.rank,
                                world_size=env.world_size, timeout=datetime.timedelta(seconds=timeout_s))
    return env
