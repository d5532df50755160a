"""init_distributed(): rank/world/master from torchrun, Slurm and submitit-local variables; a real 2-process gloo
group through the Slurm path (no cluster: the variables srun would set)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mathfirst_hpc.launch.distributed import detect, expand_nodelist, first_host

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
