"""Per-token log-probs and entropy from vocab-parallel logits, without ever gathering the full vocabulary.

Each tensor-parallel rank holds logits for a contiguous slice of the vocabulary, [B, T, V/tp]. With
``z = logits / temperature`` and ``m`` the global max over the vocabulary (a constant for autograd):

    Z  = sum_r sum_{v in r} exp(z_v - m)           log p(y) = z_y - m - log Z
    A  = sum_r sum_{v in r} exp(z_v - m) * z_v      entropy  = m + log Z - A / Z

The per-rank partial sums (and the target logit, non-zero only on the rank owning the target) are combined with
megatron's ``reduce_from_tensor_model_parallel_region`` (all-reduce forward, identity backward): the loss is
replicated on every TP rank, so each rank's partial sum receives the full upstream gradient. With tp == 1 the
reduction is the identity and this equals ``log_softmax`` on the whole vocabulary.

Alignment follows ``learner/base.py``: ``logprobs[:, t] = log p(input_ids[:, t] | input_ids[:, :t])``,
``logprobs[:, 0] = 0`` (and the same for entropy).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region


def _tp_max(x: torch.Tensor) -> torch.Tensor:
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=parallel_state.get_tensor_model_parallel_group())
    return x


def vocab_parallel_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                            with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(targets) and entropy (or None) for logits [..., V/tp] of this TP rank's vocab slice; fp32 results."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    vocab_local = z.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * vocab_local
    m = _tp_max(z.detach().amax(dim=-1))
    shifted = z - m.unsqueeze(-1)
    exp = shifted.exp()
    sum_exp = reduce_from_tensor_model_parallel_region(exp.sum(dim=-1))
    local = targets - start
    owned = (local >= 0) & (local < vocab_local)
    picked = shifted.gather(-1, local.clamp(0, vocab_local - 1).unsqueeze(-1)).squeeze(-1)
    target_shifted = reduce_from_tensor_model_parallel_region(picked * owned)
    log_z = sum_exp.log()
    logprobs = target_shifted - log_z
    if not with_entropy:
        return logprobs, None
    # entropy = log Z - E_p[z - m]: computed on the shifted logits to stay well scaled.
    weighted = reduce_from_tensor_model_parallel_region((exp * shifted).sum(dim=-1))
    entropy = log_z - weighted / sum_exp
    return logprobs, entropy


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, T] log-probs (and entropy) aligned to ``input_ids``, position 0 = 0; logits [B, T, V/tp]."""
    logp, ent = vocab_parallel_logprobs(logits[:, :-1], input_ids[:, 1:], temperature, with_entropy)
    zero = torch.zeros_like(logp[:, :1])
    logp = torch.cat([zero, logp], dim=1)
    if ent is not None:
        ent = torch.cat([zero, ent], dim=1)
    return logp, ent
