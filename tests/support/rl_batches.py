"""Test helper: an RL learner batch built straight from engine samples, as the RL loop builds it from a shard
(``loop.rl_token_batches``): prompt + response rows, right padded, loss and rollout log-probs on the response."""

from __future__ import annotations

import torch

from mathfirst_hpc.learner.base import TokenBatch


def learner_batch(samples, pad_id: int, temperature: float, advantages: torch.Tensor | None = None) -> TokenBatch:
    width = max(len(s.prompt_token_ids) + len(s.token_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention, loss_mask, old = torch.zeros_like(ids), torch.zeros_like(ids), torch.zeros(ids.shape)
    for row, s in enumerate(samples):
        p, r = len(s.prompt_token_ids), len(s.token_ids)
        ids[row, :p + r] = torch.tensor(s.prompt_token_ids + s.token_ids)
        attention[row, :p + r] = 1
        loss_mask[row, p:p + r] = 1
        old[row, p:p + r] = torch.tensor(s.logprobs)
    return TokenBatch(input_ids=ids, attention_mask=attention, loss_mask=loss_mask, old_logprobs=old,
                      advantages=advantages, temperature=temperature)
