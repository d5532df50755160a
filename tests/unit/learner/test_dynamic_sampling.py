"""Dynamic sampling through the real collect_iteration, with a fixed-token engine and a scripted verifier:
filter, top-up over generation batches, and the limit case (train on what exists, warn, never crash)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mathfirst_hpc.config import load_stage_config
from mathfirst_hpc.data.base import Problem
from mathfirst_hpc.models import train_tokenizer
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.rewards.base import RewardResult
from mathfirst_hpc.rollout.base import Sample
from mathfirst_hpc.run import StageContext, collect_iteration
from mathfirst_hpc.manifest import Manifest


class FixedEngine:
    """Returns the same 3 tokens for every sample."""

    def generate(self, prompts, sampling):
        return [[Sample(i, p, [5, 6, 7], [-0.5, -0.5, -0.5], "length") for _ in range(sampling.n)]
                for i, p in enumerate(prompts)]


class ScriptedRouter:
    """Group k of generation batch b is informative when ``informative(b, k)``."""

    def __init__(self, informative):
        self.informative = informative
        self.calls = {}

    def score_batch(self, problems, responses):
        out = []
        for p in problems:
            seen = self.calls.setdefault(p.uid, 0)
            self.calls[p.uid] = seen + 1
            b, k = p.extra_info["batch"], p.extra_info["k"]
            good = self.informative(b, k) and seen % 2 == 0
            out.append(RewardResult(1.0 if good else 0.0, "correct" if good else "incorrect", "scripted"))
        return out


class CountingMixer:
    def __init__(self):
        self.batch = 0

    def next_batch(self, n):
        b, self.batch = self.batch, self.batch + 1
        return [Problem(uid=f"b{b}k{k}", domain="math", data_source="synthetic__math",
                        prompt=[{"role": "user", "content": f"q {b} {k}"}], ground_truth="1",
                        extra_info={"batch": b, "k": k}) for k in range(n)]

    def state_dict(self):
        return {"batch": self.batch}


def context(tmp_path, **overrides):
    cfg = load_stage_config("math_rl", overrides=[f"{k}={v}" for k, v in overrides.items()] +
                            ["rollout.prompts_per_batch=4", "rollout.n_per_prompt=4", "rollout.num_shards=2",
                             "dapo.overlong_enable=false"])
    tok = train_tokenizer(["q 1 2 3 answer"] * 10, vocab_size=300)
    paths = RunPaths(tmp_path).make()
    return StageContext(paths, cfg, tok, Manifest(paths), progress=False)


def test_filter_and_top_up(tmp_path) -> None:
    ctx = context(tmp_path, **{"dapo.max_gen_batches": 5})
    # batch 0: groups 0,1 informative; batch 1: group 3 informative; batch 2: groups 0,1,2
    table = {0: {0, 1}, 1: {3}, 2: {0, 1, 2}}
    router = ScriptedRouter(lambda b, k: k in table.get(b, set()))
    batch = collect_iteration(ctx, FixedEngine(), router, CountingMixer(), iteration=0, policy_step=0)
    assert batch.sampling.gen_batches == 3
    assert batch.sampling.groups_kept == 4
    assert len(batch.kept) == 16
    assert sorted(set(batch.kept.prompt_uid)) == ["b0k0", "b0k1", "b1k3", "b2k0"]
    # each kept group has unequal rewards; shards of all three batches exist and are scored
    for gid in np.unique(batch.kept.group_id):
        r = batch.kept.reward[batch.kept.group_id == gid]
        assert r.max() > r.min()
    shards = Manifest(ctx.paths).read()["shards"]
    assert len(shards) == 6 and all(s["scored"] for s in shards.values())


def test_limit_trains_on_what_exists_and_warns(tmp_path, caplog) -> None:
    ctx = context(tmp_path, **{"dapo.max_gen_batches": 2})
    router = ScriptedRouter(lambda b, k: k == 0)  # one informative group per batch
    with caplog.at_level(logging.WARNING, logger="mathfirst_hpc"):
        batch = collect_iteration(ctx, FixedEngine(), router, CountingMixer(), iteration=0, policy_step=0)
    assert batch.sampling.gen_batches == 2 and batch.sampling.groups_kept == 2
    assert len(batch.kept) == 8
    assert "limit" in caplog.text


def test_nothing_informative_is_not_a_crash(tmp_path) -> None:
    ctx = context(tmp_path, **{"dapo.max_gen_batches": 2})
    batch = collect_iteration(ctx, FixedEngine(), ScriptedRouter(lambda b, k: False), CountingMixer(), 0, 0)
    assert batch.kept is None and batch.sampling.kept_fraction == 0.0


def test_dynamic_sampling_off_keeps_everything(tmp_path) -> None:
    ctx = context(tmp_path, **{"dapo.dynamic_sampling": "false"})
    batch = collect_iteration(ctx, FixedEngine(), ScriptedRouter(lambda b, k: False), CountingMixer(), 0, 0)
    assert batch.sampling.gen_batches == 1 and len(batch.kept) == 16


def test_shards_are_reused_for_the_same_policy(tmp_path) -> None:
    ctx = context(tmp_path)

    class Exploding(FixedEngine):
        def generate(self, prompts, sampling):
            raise AssertionError("regenerated a complete shard")

    router = ScriptedRouter(lambda b, k: True)
    collect_iteration(ctx, FixedEngine(), router, CountingMixer(), iteration=0, policy_step=0)
    again = collect_iteration(ctx, Exploding(), ScriptedRouter(lambda b, k: True), CountingMixer(), 0, 0)
    assert again.sampling.gen_batches == 1
    with pytest.raises(AssertionError):
        collect_iteration(ctx, Exploding(), router, CountingMixer(), iteration=0, policy_step=1)
