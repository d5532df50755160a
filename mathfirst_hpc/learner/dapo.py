"""DAPO, the stage 2 and stage 3 objective (Yu et al. 2025), written once for every learner backend.

What it is, in four parts:

1. Group-normalised advantages: each prompt's G responses share a group; A_i = (R_i - mean_g) / (std_g + eps)
   with the unbiased std (torch.std), so an all-equal group has A = 0.
2. Clipped importance ratio r = exp(logp - logp_rollout) against the *rollout* log-probs, with clip-higher
   (eps_low=0.2, eps_high=0.28) and dual-clip: for A < 0 the loss is capped at -A * c.
3. Loss aggregation: token-mean over every token of the global mini-batch (default), seq-mean-token-mean or
   seq-mean-token-sum. The normaliser (tokens or sequences) is counted over all micro-batches and DP ranks
   before the step, so micro-batching and data parallelism do not change the gradient.
4. Soft overlong penalty added to the reward: 0 up to L_max - L_cache, linear to -1 at L_max, -1 beyond, times a
   factor. Dynamic sampling drops groups whose rewards are all equal (zero advantage, no signal).

KL to a reference policy is available (k3 estimator, ``kl_coef``) and off by default, as in DAPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..config import DapoConfig
from .base import LossFn, TokenBatch


# ---------------------------------------------------------------------------------------------------------------
# rewards -> advantages
# ---------------------------------------------------------------------------------------------------------------

def overlong_penalty(lengths: np.ndarray, max_len: int, buffer_len: int, factor: float) -> np.ndarray:
    """Soft overlong punishment per response length (<= 0)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    if buffer_len <= 0:
        return np.where(lengths > max_len, -factor, 0.0)
    start = max_len - buffer_len
    ramp = (start - lengths) / buffer_len
    penalty = np.where(lengths <= start, 0.0, np.where(lengths <= max_len, ramp, -1.0))
    return penalty * factor


def group_advantages(rewards: np.ndarray, group_ids: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(R - mean) / (std + eps) within each group; unbiased std; a single-sample group gets 0."""
    rewards = np.asarray(rewards, dtype=np.float64)
    adv = np.zeros_like(rewards)
    for gid in np.unique(group_ids):
        idx = np.flatnonzero(group_ids == gid)
        r = rewards[idx]
        std = r.std(ddof=1) if len(r) > 1 else 0.0
        # an all-equal (or single-sample) group carries no signal: exactly 0, never 0/0
        adv[idx] = (r - r.mean()) / (std + eps) if std > 0 else 0.0
    return adv


def informative_groups(rewards: np.ndarray, group_ids: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Group ids whose rewards are not all equal (the groups dynamic sampling keeps), in first-seen order."""
    keep = []
    seen = set()
    for gid in group_ids:
        if gid in seen:
            continue
        seen.add(gid)
        r = rewards[group_ids == gid]
        if np.nanmax(r) - np.nanmin(r) > tol:
            keep.append(gid)
    return np.array(keep, dtype=np.int64)


@dataclass
class DynamicSamplingState:
    """Accumulates kept groups over generation batches until the train batch is full or the limit is hit."""

    groups_needed: int
    max_gen_batches: int
    gen_batches: int = 0
    groups_seen: int = 0
    groups_kept: int = 0

    def add(self, n_groups: int, n_kept: int) -> None:
        self.gen_batches += 1
        self.groups_seen += n_groups
        self.groups_kept += n_kept

    @property
    def full(self) -> bool:
        return self.groups_kept >= self.groups_needed

    @property
    def exhausted(self) -> bool:
        return self.gen_batches >= self.max_gen_batches

    @property
    def kept_fraction(self) -> float:
        return self.groups_kept / self.groups_seen if self.groups_seen else 0.0


# ---------------------------------------------------------------------------------------------------------------
# the policy loss
# ---------------------------------------------------------------------------------------------------------------

def token_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, cfg: DapoConfig
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped (clip-higher + dual-clip) policy-gradient loss and per-token clip indicators.
    ``adv`` broadcasts against ``logp`` ([B, 1] or [B, T])."""
    ratio = torch.exp(logp - old_logp)
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * torch.clamp(ratio, 1 - cfg.clip_ratio_low, 1 + cfg.clip_ratio_high)
    clipped = torch.maximum(loss_unclipped, loss_clipped)
    dual_bound = -adv * cfg.clip_ratio_c
    loss = torch.where(adv < 0, torch.minimum(clipped, dual_bound), clipped)
    flags = {
        "clip_low": ((ratio < 1 - cfg.clip_ratio_low) & (adv < 0)).float(),
        "clip_high": ((ratio > 1 + cfg.clip_ratio_high) & (adv > 0)).float(),
        "clip_dual": ((adv < 0) & (clipped > dual_bound)).float(),
    }
    return loss, flags


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, mode: str, global_tokens: float,
              global_seqs: float) -> torch.Tensor:
    """This micro-batch's share of the global aggregate (summing shares over micro-batches and ranks gives it)."""
    mask = mask.to(token_loss.dtype)
    if mode == "token-mean":
        return (token_loss * mask).sum() / global_tokens
    per_seq_tokens = mask.sum(-1).clamp(min=1)
    if mode == "seq-mean-token-mean":
        return ((token_loss * mask).sum(-1) / per_seq_tokens).sum() / global_seqs
    if mode == "seq-mean-token-sum":
        return (token_loss * mask).sum(-1).sum() / global_seqs
    raise ValueError(f"unknown loss_agg_mode {mode!r}")


def global_counts(micro_batches: list[TokenBatch], group: Any = None) -> tuple[float, float]:
    """Loss-mask tokens and sequences over all micro-batches of this step and every DP rank.
    ``group``: the data-parallel process group (Megatron: TP/PP ranks hold the same rows and must not count
    them twice); None = the whole world (the torch backend is pure DP)."""
    counts = torch.tensor([sum(float(m.loss_mask.sum()) for m in micro_batches),
                           sum(float(m.num_sequences) for m in micro_batches)], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    return max(float(counts[0]), 1.0), max(float(counts[1]), 1.0)


def make_dapo_loss(cfg: DapoConfig, global_tokens: float, global_seqs: float) -> LossFn:
    """The loss function a backend's train_step calls per micro-batch."""
    def loss_fn(logp: torch.Tensor, entropy: torch.Tensor, batch: TokenBatch):
        mask = batch.loss_mask.to(logp.dtype)
        adv = batch.advantages.to(logp.dtype)[:, None]
        token_loss, flags = token_pg_loss(logp, batch.old_logprobs.to(logp.dtype), adv, cfg)
        if cfg.kl_coef > 0 and batch.ref_logprobs is not None:
            delta = batch.ref_logprobs.to(logp.dtype) - logp
            token_loss = token_loss + cfg.kl_coef * (torch.exp(delta) - delta - 1)  # k3, >= 0
        loss = aggregate(token_loss, mask, cfg.loss_agg_mode, global_tokens, global_seqs)
        share = lambda x: float((x * mask).sum() / global_tokens)  # noqa: E731  token-weighted mean
        metrics = {"loss": float(loss.detach()), "clip_frac_low": share(flags["clip_low"]),
                   "clip_frac_high": share(flags["clip_high"]), "clip_frac_dual": share(flags["clip_dual"]),
                   "entropy": share(entropy.detach()),
                   "ratio_mean": share(torch.exp(logp.detach() - batch.old_logprobs.to(logp.dtype)))}
        return loss, metrics
    return loss_fn
