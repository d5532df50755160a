"""init_distributed(): rank/world/master from torchrun, Slurm, submitit-local and MPI; the order and how to force a
source; a real 2-process gloo group through the Slurm path (no cluster: the variables srun would set). The
2-rank MPI launch itself is tested in tests/integration/mpi (mpiexec)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.launch.distributed import choose_source, detect, expand_nodelist, first_host

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
            "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SUBMITIT_LOCAL_GLOBALID",
            "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_LOCALID", "SUBMITIT_LOCAL_JOB_ID")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


CASES = {
    "n[1-2]": ["n1", "n2"],
    "gpu[01-03,07],cpu1": ["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"],
    "node7": ["node7"],
    "a[8-10]": ["a8", "a9", "a10"],
}


@pytest.mark.parametrize("nodelist, hosts", CASES.items())
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts
    if shutil.which("scontrol"):  # the parser agrees with Slurm's own expansion
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True).stdout
        assert out.split() == hosts


def test_first_host_without_scontrol(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("PATH", str(tmp_path))
    assert first_host("gpu[03-04]") == "gpu03"


def test_detect_sources(clean_env: pytest.MonkeyPatch) -> None:
    assert detect().source == "single" and detect().world_size == 1
    clean_env.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    clean_env.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    env = detect()
    assert (env.source, env.rank, env.world_size, env.master_addr) == ("submitit-local", 1, 2, "127.0.0.1")
    clean_env.setenv("SLURM_PROCID", "3")
    clean_env.setenv("SLURM_NTASKS", "4")
    clean_env.setenv("SLURM_LOCALID", "1")
    clean_env.setenv("SLURM_JOB_ID", "12345")
    clean_env.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    env = detect()
    assert (env.source, env.rank, env.world_size, env.local_rank, env.master_addr) == ("slurm", 3, 4, 1, "gpu07")
    assert env.master_port == 20000 + 12345  # derived from the job id: two jobs on a node do not collide
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("MASTER_PORT", "29511")
    env = detect()
    assert (env.source, env.world_size, env.master_port) == ("torchrun", 2, 29511)


WORKER = """
import os, sys, torch, torch.distributed as dist
from mathfirst_hpc.launch.distributed import init_distributed
env = init_distributed("gloo", timeout_s=60)
t = torch.tensor([float(env.rank + 1)])
dist.all_reduce(t)
print(env.source, env.rank, env.world_size, int(t.item()))
dist.destroy_process_group()
"""


def test_two_process_gloo_from_slurm_variables(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    procs = []
    for rank in range(2):
        env = {**base, "SLURM_PROCID": str(rank), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(rank),
               "SLURM_JOB_ID": str(3000 + os.getpid() % 1000), "SLURM_JOB_NODELIST": "localhost",
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(outs) == [["slurm", "0", "2", "3"], ["slurm", "1", "2", "3"]]


MPI_KEYS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MATHFIRST_DIST_SOURCE")


@pytest.fixture
def no_launcher(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in MPI_KEYS:
        clean_env.delenv(key, raising=False)
    return clean_env


def test_choose_source_order(no_launcher: pytest.MonkeyPatch) -> None:
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}
    assert choose_source(env) == "slurm"
    # mpirun inside an sbatch script: every rank inherits the batch step's SLURM_PROCID=0, so MPI must win
    assert choose_source({**env, "OMPI_COMM_WORLD_SIZE": "4"}) == "mpi"
    assert choose_source({**env, "PMI_SIZE": "4"}) == "mpi"
    # srun --mpi=pmix: srun's own variables are right and need no mpi4py
    assert choose_source({**env, "PMIX_RANK": "0"}) == "slurm"
    assert choose_source({"PMIX_RANK": "1"}) == "mpi"
    assert choose_source({"SUBMITIT_LOCAL_GLOBALID": "0", "PMIX_RANK": "0"}) == "submitit-local"
    assert choose_source({**env, "RANK": "0", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_SIZE": "2"}) == "torchrun"
    assert choose_source({}) == "single"


def test_source_can_be_forced(no_launcher: pytest.MonkeyPatch) -> None:
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}
    assert choose_source({**env, "MATHFIRST_DIST_SOURCE": "single"}) == "single"
    assert choose_source({**env, "MATHFIRST_DIST_SOURCE": "auto"}) == "slurm"
    assert choose_source({**env, "MATHFIRST_DIST_SOURCE": "single"}, source="slurm") == "slurm"  # argument wins
    with pytest.raises(ConfigError, match="distributed source 'mpich' is unknown"):
        choose_source(env, source="mpich")
    no_launcher.setenv("MATHFIRST_DIST_SOURCE", "single")
    no_launcher.setenv("SLURM_PROCID", "3")
    no_launcher.setenv("SLURM_NTASKS", "4")
    assert detect().source == "single" and detect(source="slurm").rank == 3


def test_mpi_without_mpi4py_is_a_user_error(no_launcher: pytest.MonkeyPatch) -> None:
    no_launcher.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="mpi4py cannot be imported"):
        detect()


MPI_SINGLETON = """
from mathfirst_hpc.launch.distributed import init_distributed
env = init_distributed("gloo", source="mpi")
print(env.source, env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port > 0)
"""


def test_forced_mpi_in_one_process(tmp_path: Path) -> None:
    """Without mpiexec, MPI starts as a singleton: a world of one, rendezvous on this host, no process group."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]')")
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS + MPI_KEYS}
    out = subprocess.run([sys.executable, "-c", MPI_SINGLETON], env=base, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mpi", "0", "1", "0", "127.0.0.1", "True"]
