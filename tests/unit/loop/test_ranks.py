"""Several ranks in one RL loop (``torchrun``, one-allocation mode): ``loop.InProcessRollouts`` shares a
generation batch's shards among the ranks, each generated once and scored once, whatever the engine's layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts two torch processes

WORKER = Path(__file__).with_name("ranks_worker.py")
ROOT = Path(__file__).resolve().parents[3]
SHARDS = {f"shard_{s:03d}.h5": [True, 4] for s in range(3)}  # (scored, samples) of each, in the manifest


def run_ranks(tmp_path: Path, spans: str, done: str = "") -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "OMPI_", "PMI"))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(WORKER), str(tmp_path / "run"), str(tmp_path), spans, done],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]


def test_an_engine_per_rank_splits_the_shards(tmp_path: Path) -> None:
    ranks = run_ranks(tmp_path, "own")
    assert [r["generate_calls"] for r in ranks] == [[2, 2], [2]]  # 3 shards of 2 prompts: 0, 2 and 1
    assert [r["scored"] for r in ranks] == [8, 4]  # each scored what it generated (2 samples per prompt)
    for r in ranks:  # every rank sees all of them complete and scored
        assert r["shards"] == SHARDS


def test_one_engine_over_the_ranks_generates_together_and_rank0_writes(tmp_path: Path) -> None:
    ranks = run_ranks(tmp_path, "spans")
    assert [r["generate_calls"] for r in ranks] == [[2, 2, 2], [2, 2, 2]]  # the same prompts on both
    assert [r["scored"] for r in ranks] == [12, 0]
    assert ranks[0]["shards"] == ranks[1]["shards"] == SHARDS


@pytest.mark.parametrize("spans", ["own", "spans"])
def test_complete_shards_are_kept_on_every_rank(tmp_path: Path, spans: str) -> None:
    ranks = run_ranks(tmp_path, spans, done="1")
    calls = [len(r["generate_calls"]) for r in ranks]
    assert calls == ([1, 1] if spans == "own" else [2, 2])  # shard 1 was complete: 0 and 2 are left
    assert [r["shards"] for r in ranks] == [SHARDS, SHARDS]  # shard 1, generated unscored, is scored now
    assert sum(r["scored"] for r in ranks) == 12  # each shard scored once
