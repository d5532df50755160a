"""Tests on the real local Slurm cluster (slurm/local_cluster.sh up). Skipped, with the reason, when it is down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mathfirst_hpc.launch.profiles import load_profile


def _cluster_up() -> str | None:
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed: {exc}"
    states = set(proc.stdout.split())
    if proc.returncode != 0 or not states or not states <= {"idle", "mixed", "allocated", "completing"}:
        seen = proc.stdout.strip() or proc.stderr.strip()
        return f"local cluster not up (sinfo: {seen}); run slurm/local_cluster.sh up"
    return None


@pytest.fixture(scope="session")
def cluster() -> None:
    problem = _cluster_up()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def dev_profile(cluster: None):
    return load_profile("local-dev")


@pytest.fixture(scope="session")
def sft_run(cluster, tmp_path_factory) -> Path:
    """One stage 1 run of the TINY preset on the local cluster: the base every stage 2 test copies."""
    from mathfirst_hpc.launch.driver import submit_stages

    from .support import TINY, wait_final

    run_dir = tmp_path_factory.mktemp("slurm") / "base"
    submitted = submit_stages(run_dir, "stage1", "local-dev", overrides=TINY)
    assert [s.stage for s in submitted] == ["sft"] and submitted[0].job_id
    wait_final(run_dir, "sft")
    return run_dir
