"""Tests on the real local Slurm cluster (slurm/local_cluster.sh up). Skipped, with the reason, when it is down."""

from __future__ import annotations

import subprocess

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
