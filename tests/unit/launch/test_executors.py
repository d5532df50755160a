"""The Slurm executor as a requeued driver uses it: with a fake sbatch that records the environment it got."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mathfirst_hpc.launch.executors import make_executor
from mathfirst_hpc.launch.jobspec import JobSpec

FAKE_SBATCH = """#!/bin/sh
env > "{out}/env.$$"
echo "Submitted batch job 4242"
"""


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """sbatch and srun stubs first on PATH; sbatch writes each call's environment to out/env.<pid>."""
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(out=out))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return out


def _sbatch_envs(out: Path) -> list[dict[str, str]]:
    return [dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)
            for p in sorted(out.glob("env.*"))]


def test_jobs_submitted_from_a_requeued_job_do_not_inherit_its_restart_count(fake_slurm, tmp_path,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # we are the second run of a requeued driver
    monkeypatch.setenv("MF_MARKER", "kept")
    executor = make_executor("slurm", tmp_path / "jobs" / "%j", JobSpec(name="mf-x", time_min=5))
    job = executor.submit(print, "one")
    with executor.batch():  # a job array goes through another submitit path
        executor.submit(print, "a")
        executor.submit(print, "b")
    envs = _sbatch_envs(fake_slurm)
    assert job.job_id == "4242" and len(envs) == 2
    assert all("SLURM_RESTART_COUNT" not in env and env["MF_MARKER"] == "kept" for env in envs)
    assert os.environ["SLURM_RESTART_COUNT"] == "1"  # our own count is left as it was
