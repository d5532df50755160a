"""DAPO pieces against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mathfirst_hpc.config import DapoConfig
from mathfirst_hpc.learner.base import TokenBatch
from mathfirst_hpc.learner.dapo import (aggregate, group_advantages, informative_groups, make_dapo_loss,
                                        overlong_penalty, token_pg_loss)

CFG = DapoConfig(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)


def test_token_loss_regions_by_hand() -> None:
    # ratios: inside, above 1+0.28 (A>0: clipped high), below 1-0.2 (A<0: clipped low), huge ratio with A<0 (dual)
    ratio = torch.tensor([[1.1, 1.5, 0.5, 5.0]])
    adv = torch.tensor([[1.0, 2.0, -1.0, -1.0]])
    loss, flags = token_pg_loss(torch.log(ratio), torch.zeros_like(ratio), adv, CFG)
    expected = [
        -1.0 * 1.1,                      # unclipped
        -2.0 * 1.28,                     # max(-3.0, -2.56) = -2.56: clip-high binds
        max(1.0 * 0.5, 1.0 * 0.8),       # A<0: max(0.5, 0.8) = 0.8: clip-low binds, below dual bound 3
        min(max(5.0, 1.28), 3.0),        # A<0: max(5, 1.28) = 5 capped by dual clip at -A*c = 3
    ]
    assert loss[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert flags["clip_high"][0].tolist() == [0, 1, 0, 0]
    assert flags["clip_low"][0].tolist() == [0, 0, 1, 0]
    assert flags["clip_dual"][0].tolist() == [0, 0, 0, 1]


def test_aggregation_modes_by_hand() -> None:
    token_loss = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert aggregate(token_loss, mask, "token-mean", 4, 2).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert aggregate(token_loss, mask, "seq-mean-token-mean", 4, 2).item() == pytest.approx((2.0 + 4.0) / 2)
    assert aggregate(token_loss, mask, "seq-mean-token-sum", 4, 2).item() == pytest.approx((6.0 + 4.0) / 2)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_sum_to_the_full_batch(mode: str) -> None:
    """Normalising by global counts: two micro-batches give the full batch's loss."""
    torch.manual_seed(0)
    logp = torch.randn(4, 6) * 0.1 - 1
    old = logp + torch.randn(4, 6) * 0.3
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]])
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    cfg = DapoConfig(loss_agg_mode=mode)
    tokens, seqs = float(mask.sum()), 4.0

    def batch(rows):
        return TokenBatch(input_ids=torch.zeros(len(rows), 6, dtype=torch.long), attention_mask=torch.ones(len(rows), 6),
                          loss_mask=mask[rows], old_logprobs=old[rows], advantages=adv[rows])

    fn = make_dapo_loss(cfg, tokens, seqs)
    whole, _ = fn(logp, torch.zeros_like(logp), batch([0, 1, 2, 3]))
    part = fn(logp[:2], torch.zeros(2, 6), batch([0, 1]))[0] + fn(logp[2:], torch.zeros(2, 6), batch([2, 3]))[0]
    assert part.item() == pytest.approx(whole.item(), abs=1e-6)


def test_group_advantages_and_equal_groups() -> None:
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    adv = group_advantages(rewards, groups, eps=0.0)
    std = np.std([1, 0, 0, 1], ddof=1)
    assert adv[:4] == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std])
    assert adv[4:8].tolist() == [0.0] * 4          # all-equal group: zero advantage, no NaN
    assert adv[8] == 0.0                            # single sample
    assert informative_groups(rewards, groups).tolist() == [0]


def test_overlong_penalty_three_regions() -> None:
    max_len, buffer = 20, 8
    lengths = np.array([5, 12, 16, 20, 25])
    pen = overlong_penalty(lengths, max_len, buffer, factor=0.5)
    assert pen.tolist() == pytest.approx([0.0, 0.0, -0.5 * (4 / 8), -0.5 * 1.0, -0.5])
    assert math.isclose(overlong_penalty(np.array([13]), 20, 8, 1.0)[0], -1 / 8)
