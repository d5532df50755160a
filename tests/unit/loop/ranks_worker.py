"""Two ranks (``torchrun --nproc-per-node 2``, gloo) run one generation batch through ``loop.InProcessRollouts``:
with an engine per rank (``spans_ranks`` False) or one engine over both (True). Writes what each rank generated
and what is on disk to OUT_DIR/rank_<r>.json. Used by test_ranks.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from mathfirst_hpc.config import load_stage_config
from mathfirst_hpc.data.base import Problem
from mathfirst_hpc.distributed import init_distributed
from mathfirst_hpc.loop import InProcessRollouts, plan_generation_batch
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.models import train_tokenizer
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.rewards.base import RewardResult
from mathfirst_hpc.rollout.base import Sample
from mathfirst_hpc.stage import StageContext


class Engine:
    def __init__(self, spans_ranks: bool) -> None:
        self.spans_ranks, self.prompts = spans_ranks, []

    def generate(self, prompts, sampling):
        self.prompts.append(len(prompts))
        if self.spans_ranks:  # one engine over the ranks: a collective, as vLLM's external launcher is
            dist.barrier()
        return [[Sample(i, p, [5, 6, 7], [-0.5] * 3, "length") for _ in range(sampling.n)]
                for i, p in enumerate(prompts)]

    def update_weights(self, state_dict) -> None: ...
    def sleep(self) -> None: ...
    def wake_up(self) -> None: ...
    def close(self) -> None: ...


class Router:
    def __init__(self) -> None:
        self.scored = 0

    def score_batch(self, problems, responses):
        self.scored += len(responses)
        return [RewardResult(float(i % 2), "correct" if i % 2 else "incorrect", "x") for i in range(len(responses))]


class Mixer:
    def next_batch(self, n):
        return [Problem(uid=f"p{i}", domain="math", data_source="synthetic__math",
                        prompt=[{"role": "user", "content": f"q {i}"}], ground_truth="1") for i in range(n)]


def main(run_dir: str, out_dir: str, spans: str, done_shards: str) -> None:
    env = init_distributed("gloo")
    cfg = load_stage_config("math_rl", overrides=["rollout.prompts_per_batch=6", "rollout.n_per_prompt=2",
                                                  "rollout.num_shards=3", "dapo.overlong_enable=false"])
    paths = RunPaths(run_dir).make()
    ctx = StageContext(paths, cfg, train_tokenizer(["q 1 2 3 answer"] * 10, vocab_size=300), Manifest(paths),
                       progress=False, rank=env.rank)
    engine, router = Engine(spans == "spans"), Router()
    plan_generation_batch(ctx, Mixer(), 0, 0)
    rollouts = InProcessRollouts(ctx, engine, router=router)
    for s in [int(x) for x in done_shards.split(",") if x]:  # complete before the call (a resumed iteration)
        if env.rank == 0:
            from mathfirst_hpc.loop import rollout_shard
            rollout_shard(ctx, Engine(False), 0, 0, s, 0)
        dist.barrier()
    shards = rollouts.rollout(0, 0, 0)
    shard_entries = {p.name: ctx.manifest.shard_entry(p) for p in shards}
    Path(out_dir, f"rank_{env.rank}.json").write_text(json.dumps({
        "generate_calls": engine.prompts, "scored": router.scored,
        "shards": {k: (e.scored, e.samples) if e else None for k, e in shard_entries.items()}}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
