"""``init_distributed()``: the one torch.distributed bootstrap used by every multi-process job.

Rank, world size, local rank and the rendezvous address come from the first of these sources that applies:

1. ``torchrun``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
2. ``slurm``: tasks started by ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``). The master is the
   first host of ``SLURM_JOB_NODELIST``, expanded by ``scontrol show hostnames`` (or by :func:`expand_nodelist`
   when scontrol is not on PATH). ``srun --mpi=pmix`` lands here too: srun's variables agree with MPI's ranks.
   Skipped when ``mpirun`` started the process (``OMPI_COMM_WORLD_SIZE``, or ``PMI_SIZE`` from MPICH's Hydra):
   ``mpirun`` inside an sbatch script passes the batch step's ``SLURM_PROCID=0`` on to every rank.
3. ``submitit-local``: submitit's local executor (``SUBMITIT_LOCAL_GLOBALID`` and kin), master 127.0.0.1.
4. ``mpi``: a process started by ``mpirun``/``mpiexec`` (or by ``srun --mpi=pmix`` without srun's variables,
   ``PMIX_RANK``). Rank and world size come from mpi4py's ``COMM_WORLD``, the local rank from a shared-memory
   split of it. Rank 0 picks the rendezvous address (``MASTER_ADDR``/``MASTER_PORT`` when set, else 127.0.0.1
   when every rank shares its node, else its hostname; a free port) and broadcasts it over MPI. This step is a
   collective: every rank must reach it. Set ``MASTER_ADDR`` where the hostname does not resolve to an address
   the other nodes can reach.
5. ``single``: one process.

The choice can be forced, so that each path can be tested and so that a cluster whose variables mislead the
order above can still start: ``init_distributed(source="mpi")`` or ``MATHFIRST_DIST_SOURCE=mpi`` (any of
``auto``, ``torchrun``, ``slurm``, ``submitit-local``, ``mpi``, ``single``; the argument wins over the variable).

Outside MPI the port is ``MASTER_PORT`` when set, else derived from the job id so that two jobs sharing a node do
not collide. The process group is created only when the world has more than one process (or ``force=True``).

Usage::

    env = init_distributed()          # in a learner task; backend "auto" = nccl with CUDA, else gloo
    if env.rank == 0: ...

    mpiexec -np 2 python -m my_job    # MPI launch: the same call, no torchrun needed

Simplification: one process group (the default one); Megatron's model-parallel groups are built on top of it.
MPI is used only to agree on ranks and the rendezvous; the collectives themselves stay gloo/nccl.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

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
    """Where the values came from: torchrun, slurm, submitit-local, mpi or single."""

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


SOURCES = ("torchrun", "slurm", "submitit-local", "mpi", "single")
SOURCE_ENV = "MATHFIRST_DIST_SOURCE"
"""Forces the source (``auto`` or one of :data:`SOURCES`) when no ``source`` argument is given."""
MPIRUN_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
"""Set by Open MPI's and MPICH/Intel MPI's ``mpirun`` in every rank (MPICH's PMI also under ``srun --mpi=pmi2``)."""
MPI_MARKERS = (*MPIRUN_MARKERS, "PMIX_RANK")
"""Any MPI launch, ``srun --mpi=pmix`` included."""


def _from_torchrun(env: Mapping[str, str]) -> DistEnv:
    return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                   env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", PORT_BASE)), "torchrun")


def _from_slurm(env: Mapping[str, str]) -> DistEnv:
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else _port_for(env.get("SLURM_JOB_ID"))
    return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                   first_host(nodelist), port, "slurm")


def _from_submitit(env: Mapping[str, str]) -> DistEnv:
    port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else _port_for(env.get("SUBMITIT_LOCAL_JOB_ID"))
    return DistEnv(int(env["SUBMITIT_LOCAL_GLOBALID"]), int(env.get("SUBMITIT_LOCAL_NTASKS", 1)),
                   int(env.get("SUBMITIT_LOCAL_LOCALID", 0)), "127.0.0.1", port, "submitit-local")


def _free_port() -> int:
    """A port nobody listens on now (rank 0 asks the kernel; the tiny race is the same one torchrun accepts)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _from_mpi(env: Mapping[str, str]) -> DistEnv:
    """Ranks from mpi4py's COMM_WORLD; rank 0 chooses the rendezvous and broadcasts it (a collective)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # the variables say MPI, but the extra is not installed
        raise ConfigError(f"MPI launch detected but mpi4py cannot be imported ({exc})",
                          hint="pip install 'mathfirst-hpc[mpi]', or set MATHFIRST_DIST_SOURCE") from exc
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    node = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)  # the ranks that share this node's memory
    local_rank, local_size = node.Get_rank(), node.Get_size()
    node.Free()
    rendezvous = None
    if rank == 0:
        one_node = local_size == size
        addr = env.get("MASTER_ADDR") or ("127.0.0.1" if one_node else socket.gethostname())
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else _free_port()
        rendezvous = (addr, port)
    addr, port = world.bcast(rendezvous, root=0)
    return DistEnv(rank, size, local_rank, addr, port, "mpi")


def choose_source(env: Mapping[str, str] | None = None, source: str | None = None) -> str:
    """Which source :func:`detect` reads: ``source``, else ``MATHFIRST_DIST_SOURCE``, else the documented order."""
    env = os.environ if env is None else env
    wanted = (source or env.get(SOURCE_ENV) or "auto").strip().lower()
    if wanted != "auto":
        if wanted not in SOURCES:
            raise ConfigError(f"distributed source {wanted!r} is unknown",
                              hint=f"use auto or one of {', '.join(SOURCES)} ({SOURCE_ENV})")
        return wanted
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    under_mpirun = any(key in env for key in MPIRUN_MARKERS)
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and not under_mpirun:
        return "slurm"
    if "SUBMITIT_LOCAL_GLOBALID" in env:
        return "submitit-local"
    if any(key in env for key in MPI_MARKERS):
        return "mpi"
    return "single"


def detect(source: str | None = None) -> DistEnv:
    """Rank/world/master from the chosen source (see the module docstring for the order and how to force one)."""
    env = os.environ
    chosen = choose_source(env, source)
    if chosen == "torchrun":
        return _from_torchrun(env)
    if chosen == "slurm":
        return _from_slurm(env)
    if chosen == "submitit-local":
        return _from_submitit(env)
    if chosen == "mpi":
        return _from_mpi(env)
    return DistEnv(0, 1, 0, "127.0.0.1", _port_for(None), "single")


def init_distributed(backend: str = "auto", timeout_s: float = 300.0, force: bool = False,
                     source: str | None = None) -> DistEnv:
    """Detect the environment, export the ``env://`` variables and create the default process group.

    ``backend`` is ``auto`` (nccl when CUDA is available, else gloo), ``gloo`` or ``nccl``. ``source`` forces
    where ranks come from (see the module docstring). Calling it again in a process that already has a process
    group returns the environment without re-initialising.
    """
    import torch
    import torch.distributed as dist

    env = detect(source)
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
