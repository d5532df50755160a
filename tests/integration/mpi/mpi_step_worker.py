"""One DP=2 learner step of the torch backend in a process group made by ``init_distributed``.

The same worker runs under ``mpiexec -np 2`` (source ``mpi``) and under ``torchrun --nproc-per-node 2`` (source
``torchrun``); the test compares the two. The step itself is the one of ``tests/unit/learner/test_ddp.py``: the
tiny Qwen3, one DAPO update over uneven micro-batches. Rank 0 writes the parameters and every rank's view of the
bootstrap (source, rank, local rank, rendezvous) to ``OUT``.

Usage: ``mpiexec -np 2 python tests/integration/mpi/mpi_step_worker.py OUT.pt``
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))  # the worker runs as a script: make tests/ importable

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from mathfirst_hpc.launch.distributed import init_distributed  # noqa: E402
from tests.unit.learner.test_ddp import step  # noqa: E402

RANK_ROWS = {0: [[0, 2, 4], [6]], 1: [[1, 3], [5, 7]]}
"""The rows of the 8-row batch each rank trains on: uneven micro-batches, as in the DDP test."""


def main(out: str) -> None:
    env = init_distributed("gloo", timeout_s=120)
    assert env.world_size == 2, f"this worker needs 2 ranks, got {env.world_size}"
    params = step(RANK_ROWS[env.rank])
    views: list[dict | None] = [None] * env.world_size
    dist.all_gather_object(views, {"source": env.source, "rank": env.rank, "local_rank": env.local_rank,
                                   "master": [env.master_addr, env.master_port]})
    if env.rank == 0:
        torch.save({"params": params, "views": views}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
