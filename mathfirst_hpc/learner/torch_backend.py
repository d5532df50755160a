"""torch learner backend: one process, or data parallel over torch.distributed (gloo on CPU, nccl on GPU) with
the same code.

Data parallelism is a flat all-reduce of gradients with SUM: the objectives normalise their loss over the whole
optimizer step across every micro-batch *and* rank (DAPO's token-mean is over the global mini-batch), so summing
per-rank gradients gives exactly the single-process gradient. Parameters start identical on every rank (same
seed / broadcast from rank 0).

Training (``train_step``) computes only what the loss reads, for model types whose causal-LM head is a plain
``lm_head(hidden)``:
- the output layer, log-softmax and entropy run on the loss positions only (``masked_token_logprobs``): in RL
  rows the prompt (about half of each row) carries no loss;
- rows that share their tokens before the first loss token (the G samples of one prompt) run that prefix through
  the decoder once (``SharedPrefixForward``, Qwen3/Llama): each suffix attends to its group's prefix keys and
  values, whose gradients add up over the group.
Both give the plain forward's gradient to float rounding (tests/unit/learner/test_torch_backend.py).
``forward_logprobs`` still returns every position, through ``model.forward``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from transformers import PreTrainedModel

from ..config import OptimConfig
from .base import LossFn, MicroStepInterrupt, PartialStep, TokenBatch


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(input_ids[t] | <t) and entropy, [B, T] each, position 0 = 0."""
    logits = logits[:, :-1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    with torch.no_grad():  # a metric only: kept out of the autograd graph
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    zero = torch.zeros_like(logp[:, :1])
    return torch.cat([zero, logp], dim=1), torch.cat([zero, entropy], dim=1)


PLAIN_HEAD_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})
"""HF model types whose CausalLM forward is exactly ``lm_head(model(...))`` (no logit scaling or soft-capping)."""


class _TokenLogprob(torch.autograd.Function):
    """Rows of [N, V] logits -> log_softmax(logits)[target] (differentiable) and the entropy of the softmax
    (a metric). One [N, V] buffer (the softmax) is made in forward and reused by backward: no full log-softmax
    tensor, no one-hot buffer for the gather's backward."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = (logits - log_z).exp_()
        logp = (logits.gather(-1, targets[:, None]) - log_z).squeeze(-1)
        entropy = log_z.squeeze(-1) - (probs * logits).sum(-1)  # -sum p log p, with log p = logits - log_z
        ctx.save_for_backward(probs, targets)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: torch.Tensor, _grad_entropy: torch.Tensor) -> tuple[torch.Tensor, None]:
        probs, targets = ctx.saved_tensors
        # d logp / d logits = onehot(target) - softmax
        grad = probs * -grad_logp[:, None]
        return grad.scatter_add_(-1, targets[:, None], grad_logp[:, None]), None


def masked_token_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Module, input_ids: torch.Tensor,
                          loss_mask: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` computed only where ``loss_mask`` is set (0 elsewhere), from the decoder's last hidden
    states [B, T, H]: the head, log-softmax and entropy run on those rows alone."""
    rows, width = input_ids.shape
    targets_at = loss_mask[:, 1:].bool()  # hidden state t predicts token t + 1
    logits = lm_head(hidden[:, :-1][targets_at]).float()  # [N, V], N = loss tokens
    if temperature != 1.0:  # dividing by 1.0 is exact: skip a [N, V] pass
        logits = logits / temperature
    logp, entropy = _TokenLogprob.apply(logits, input_ids[:, 1:][targets_at])
    at = torch.cat([torch.zeros_like(targets_at[:, :1]), targets_at], dim=1)
    zeros = torch.zeros((rows, width), dtype=logp.dtype, device=logp.device)
    return zeros.masked_scatter(at, logp), zeros.masked_scatter(at, entropy)


@dataclass
class PrefixGroups:
    """Rows that start with the same tokens before their first loss token (the G samples of one prompt)."""

    group_of_row: torch.Tensor
    """[B] index of each row's group."""
    prefix_ids: torch.Tensor
    """[G, P] each group's prefix, right padded."""
    prefix_len: torch.Tensor
    """[G] real prefix tokens."""
    suffix_ids: torch.Tensor
    """[B, S] each row's tokens from its first loss token on, right padded."""
    suffix_start: torch.Tensor
    """[B] where the suffix starts in the row (= its prefix length)."""
    suffix_loss: torch.Tensor
    """[B, S] bool: loss_mask in the suffix layout."""


def prefix_groups(batch: TokenBatch, min_saving: float = 0.15) -> PrefixGroups | None:
    """Group right-padded rows by their prefix before the first loss token; None when that saves less than
    ``min_saving`` of the token positions (or the batch is packed, has position ids, or a row has no loss)."""
    attention, loss = batch.attention_mask, batch.loss_mask.bool()
    if attention.dim() != 2 or batch.position_ids is not None or not bool(loss[:, 1:].any(-1).all()) \
            or bool(loss[:, 0].any()):
        return None
    if not bool((attention[:, 1:] <= attention[:, :-1]).all()):  # right padding only
        return None
    lengths = attention.sum(-1).tolist()
    starts = loss.int().argmax(-1).tolist()
    ids = batch.input_ids.tolist()
    keys = [tuple(row[:start]) for row, start in zip(ids, starts)]
    index = {key: g for g, key in enumerate(dict.fromkeys(keys))}
    rows, width = batch.input_ids.shape
    prefix_width = max(len(k) for k in index)
    suffix_width = max(n - start for n, start in zip(lengths, starts))
    if len(index) * prefix_width + rows * suffix_width > (1 - min_saving) * rows * width:
        return None
    device, pad = batch.input_ids.device, 0
    prefix_ids = torch.full((len(index), prefix_width), pad, dtype=torch.long)
    for key, g in index.items():
        prefix_ids[g, :len(key)] = torch.tensor(key, dtype=torch.long)
    suffix_ids = torch.full((rows, suffix_width), pad, dtype=torch.long)
    suffix_loss = torch.zeros((rows, suffix_width), dtype=torch.bool)
    for row, (n, start) in enumerate(zip(lengths, starts)):
        suffix_ids[row, :n - start] = batch.input_ids[row, start:n]
        suffix_loss[row, :n - start] = loss[row, start:n]
    return PrefixGroups(group_of_row=torch.tensor([index[k] for k in keys], device=device),
                        prefix_ids=prefix_ids.to(device),
                        prefix_len=torch.tensor([len(k) for k in index], device=device),
                        suffix_ids=suffix_ids.to(device), suffix_start=torch.tensor(starts, device=device),
                        suffix_loss=suffix_loss.to(device))


class SharedPrefixForward:
    """The decoder stack of a Llama-family model run once per shared prefix and once per row's suffix, with the
    suffix attending to its group's prefix keys/values (indexed, so their gradients add up over the group).

    In an RL batch each prompt's G samples repeat the same prompt tokens, whose hidden states are the same in
    every row (causal attention): computing them once removes (G - 1) / G of the prompt positions from the
    forward and backward. It uses the model's own modules (norms, projections, RoPE, MLP) and SDPA; the result
    equals the plain forward to float rounding (``tests/unit/learner/test_torch_backend.py``)."""

    def __init__(self, model: Any) -> None:
        self.model, self.inner = model, model.model
        attn = self.inner.layers[0].self_attn
        modeling = sys.modules[type(attn).__module__]
        self.rope, self.rotate_half = modeling.apply_rotary_pos_emb, modeling.rotate_half

    @staticmethod
    def supports(model: Any) -> bool:
        cfg = model.config
        # transformers 5 renamed is_gradient_checkpointing (deprecated) to is_activation_checkpointing
        flag = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") \
            else "is_gradient_checkpointing"
        return (getattr(cfg, "model_type", None) in ("qwen3", "llama") and not getattr(cfg, "sliding_window", None)
                and not getattr(cfg, "attention_dropout", 0.0) and not getattr(model, flag, False))

    def __call__(self, groups: PrefixGroups) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-normed hidden states: [G, 1, H] of each prefix's last real token (the only prefix output the
        head reads: it predicts the first suffix token) and [B, S, H] of the suffixes."""
        device = groups.prefix_ids.device
        prefix = self.inner.embed_tokens(groups.prefix_ids)
        suffix = self.inner.embed_tokens(groups.suffix_ids)
        prefix_pos = torch.arange(groups.prefix_ids.shape[1], device=device).expand(groups.prefix_ids.shape[0], -1)
        suffix_pos = groups.suffix_start[:, None] + torch.arange(groups.suffix_ids.shape[1], device=device)
        prefix_rope = self.inner.rotary_emb(prefix, prefix_pos)
        suffix_rope = self.inner.rotary_emb(suffix, suffix_pos)
        # suffix query j of a row sees its group's real prefix keys and suffix keys 0..j
        p_width, s_width = groups.prefix_ids.shape[1], groups.suffix_ids.shape[1]
        sees_prefix = torch.arange(p_width, device=device) < groups.prefix_len[groups.group_of_row, None]
        causal = torch.ones((s_width, s_width), dtype=torch.bool, device=device).tril()
        mask = torch.cat([sees_prefix[:, None, None, :].expand(-1, 1, s_width, -1),
                          causal.expand(sees_prefix.shape[0], 1, -1, -1)], dim=-1)
        last = len(self.inner.layers) - 1
        for i, layer in enumerate(self.inner.layers):
            if i < last:
                prefix, k_prefix, v_prefix = self._layer(layer, prefix, prefix_rope)
            else:
                prefix, k_prefix, v_prefix = self._last_prefix_layer(layer, prefix, prefix_rope, groups.prefix_len)
            suffix, _, _ = self._layer(layer, suffix, suffix_rope, (k_prefix[groups.group_of_row],
                                                                      v_prefix[groups.group_of_row], mask))
        return rms_norm(self.inner.norm, prefix), rms_norm(self.inner.norm, suffix)

    def _layer(self, layer: Any, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
               context: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = layer.self_attn
        rows, length, _ = hidden.shape
        x = rms_norm(layer.input_layernorm, hidden)
        shape = (rows, length, -1, attn.head_dim)
        q, k, v = attn.q_proj(x).view(shape), attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)
        if hasattr(attn, "q_norm"):
            q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
        q, k = self.rope(q.transpose(1, 2), k.transpose(1, 2), *rope)
        v = v.transpose(1, 2)
        if context is None:  # a prefix: plain causal attention (right padding is never seen by real tokens)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling, enable_gqa=True)
        else:
            k_ctx, v_ctx, mask = context
            out = F.scaled_dot_product_attention(q, torch.cat([k_ctx, k], dim=2), torch.cat([v_ctx, v], dim=2),
                                                 attn_mask=mask, scale=attn.scaling, enable_gqa=True)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(rows, length, -1))
        hidden = hidden + layer.mlp(rms_norm(layer.post_attention_layernorm, hidden))
        return hidden, k, v


    def _last_prefix_layer(self, layer: Any, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                           lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last layer over the prefixes [G, P, H]: keys and values at every position (the suffixes attend to
        them), but the query, attention output and MLP at each prefix's last real token only ([G, 1, H]): no other
        prefix output reaches the loss. The keys and values are a small part of a layer's work (~11% in the tiny
        Qwen3: GQA, MLP 2x wide); the kept rows compute exactly what ``_layer`` computes for them."""
        attn = layer.self_attn
        rows, length, _ = hidden.shape
        x = rms_norm(layer.input_layernorm, hidden)
        shape = (rows, length, -1, attn.head_dim)
        k, v = attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)
        at = (torch.arange(rows, device=hidden.device), lengths - 1)
        hidden, x = hidden[at][:, None], x[at][:, None]  # [G, 1, H]
        q = attn.q_proj(x).view(rows, 1, -1, attn.head_dim)
        if hasattr(attn, "q_norm"):
            q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
        cos, sin = rope
        q = self._rotate(q.transpose(1, 2), cos[at][:, None], sin[at][:, None])
        k, v = self._rotate(k.transpose(1, 2), cos, sin), v.transpose(1, 2)
        # the last real token sees every real prefix token and none of the right padding
        sees = (torch.arange(length, device=hidden.device) < lengths[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=sees, scale=attn.scaling, enable_gqa=True)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(rows, 1, -1))
        hidden = hidden + layer.mlp(rms_norm(layer.post_attention_layernorm, hidden))
        return hidden, k, v

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE of one tensor [rows, heads, length, d] as the model's ``apply_rotary_pos_emb`` applies it."""
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return (x * cos) + (self.rotate_half(x) * sin)


class _RmsNorm(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x**2) + eps))`` over the last dimension, as HF's Llama/Qwen3 RMSNorm computes it
    in float32 (the same ops in the same order: the same bits), with a hand-written backward: eight elementwise
    passes instead of autograd's chain through pow, mean, rsqrt and two products (~20% less time per norm on
    the CPU; a shared-prefix step has 18 of them)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
        normed = x * rstd
        ctx.save_for_backward(normed, rstd, weight)
        return weight * normed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        normed, rstd, weight = ctx.saved_tensors
        grad_normed = grad * weight
        grad_x = (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True)) * rstd
        grad_weight = (grad * normed).reshape(-1, normed.shape[-1]).sum(0)
        return grad_x, grad_weight, None


def rms_norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for an HF RMSNorm module (``weight``, ``variance_epsilon``) through ``_RmsNorm`` when all is
    float32 (where HF's casts are no-ops); any other module or dtype runs the module itself."""
    weight, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if (type(module).__name__ not in _HF_RMS_NORMS or eps is None or x.dtype != torch.float32
            or weight is None or weight.dtype != torch.float32):
        return module(x)
    return _RmsNorm.apply(x, weight, eps)


_HF_RMS_NORMS = frozenset({"Qwen3RMSNorm", "LlamaRMSNorm"})
"""RMSNorm classes whose forward is exactly ``weight * (x * rsqrt(x.pow(2).mean(-1) + eps))`` in float32."""


def shared_prefix_token_logprobs(model: Any, batch: TokenBatch, groups: PrefixGroups
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``masked_token_logprobs`` of ``batch`` through ``SharedPrefixForward``."""
    prefix, suffix = SharedPrefixForward(model)(groups)
    # [B, S, H]: the hidden state before each suffix token (the prefix's last token predicts suffix token 0)
    predictors = torch.cat([prefix[groups.group_of_row], suffix[:, :-1]], dim=1)
    logits = model.lm_head(predictors[groups.suffix_loss]).float()
    if batch.temperature != 1.0:
        logits = logits / batch.temperature
    logp, entropy = _TokenLogprob.apply(logits, groups.suffix_ids[groups.suffix_loss])
    # suffix loss tokens in row-major order are the row's loss tokens in the same order
    at = batch.loss_mask.bool()
    zeros = torch.zeros(at.shape, dtype=logp.dtype, device=logp.device)
    return zeros.masked_scatter(at, logp), zeros.masked_scatter(at, entropy)


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Linear warmup, then constant or cosine decay to min_lr_ratio."""
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _adamw_kernel(params: list[torch.Tensor]) -> dict[str, bool]:
    """``fused=True`` where torch has a fused AdamW kernel for these parameters (floating point, on the CPU or a
    CUDA device): one kernel per parameter instead of a dozen small ops each. The same update rule; on a tiny
    model the per-op overhead of the plain loop is a visible part of a step."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if fused else {}


def _foreach_ok(params: list[torch.Tensor]) -> bool | None:
    """``foreach=True`` for clip_grad_norm_ on the CPU too (torch picks it by itself only on accelerators)."""
    return True if params and all(p.device.type in ("cpu", "cuda") for p in params) else None


class TorchBackend:
    supports_partial_steps = True
    """train_step can stop between micro-batches and resume from a PartialStep."""
    def __init__(self, model: PreTrainedModel, optim: OptimConfig, total_steps: int,
                 device: str | torch.device = "cpu") -> None:
        self.model = model.to(device)
        self.device = torch.device(device)
        # a process group of one (e.g. set up by another component) needs no collectives
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.dp_group = None  # pure data parallel: the whole world
        self.world_size = dist.get_world_size() if self.distributed else 1
        if self.distributed:  # identical start on every rank
            for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(tensor.data, src=0)
        self.optim_cfg = optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                           eps=optim.eps, weight_decay=optim.weight_decay,
                                           **_adamw_kernel(list(self.model.parameters())))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(optim, total_steps))

    # LearnerBackend ----------------------------------------------------------------------------------------------
    @staticmethod
    def _model_inputs(batch: TokenBatch) -> dict[str, Any]:
        attention = batch.attention_mask
        positions = batch.position_ids
        if positions is None:
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
        if attention.dim() == 2 and bool((attention[:, 1:] <= attention[:, :-1]).all()):
            # right padding only: plain causal attention never lets a real token see a pad, so no mask is
            # needed and SDPA takes its fused causal kernel (much faster backward on CPU than a masked one)
            attention = None
        return {"input_ids": batch.input_ids, "attention_mask": attention, "position_ids": positions}

    def _forward(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropy at every position."""
        logits = self.model(**self._model_inputs(batch)).logits
        return token_logprobs(logits, batch.input_ids, batch.temperature)

    def _loss_forward(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropy where ``loss_mask`` is set, 0 elsewhere (what every loss reads)."""
        if getattr(self.model.config, "model_type", None) not in PLAIN_HEAD_TYPES:
            return self._forward(batch)
        if SharedPrefixForward.supports(self.model):
            groups = prefix_groups(batch)
            if groups is not None:
                return shared_prefix_token_logprobs(self.model, batch, groups)
        hidden = self.model.model(**self._model_inputs(batch)).last_hidden_state
        return masked_token_logprobs(hidden, self.model.lm_head, batch.input_ids, batch.loss_mask,
                                     batch.temperature)

    @torch.no_grad()
    def forward_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        self.model.eval()
        logp, _ = self._forward(batch.to(self.device))
        self.model.train()
        return logp

    def train_step(self, micro_batches: list[TokenBatch], loss_fn: LossFn,
                   interrupt: Callable[[], bool] | None = None,
                   partial: PartialStep | None = None) -> dict[str, float]:
        """One optimizer step. ``interrupt()`` is polled after every micro-batch but the last; when it is true
        the step stops there and raises :class:`MicroStepInterrupt` carrying the accumulated gradients, which
        ``partial`` later resumes from (same micro-batches, same order: the same gradient bit for bit)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        start = 0
        if partial is not None:
            start, totals = partial.micro_done, dict(partial.metrics)
            # the saved gradients are the sum over ranks (see _partial): only rank 0 restores them, so the
            # step's all-reduce counts them once
            for name, param in self.model.named_parameters():
                if name in partial.grads and self.rank == 0:
                    param.grad = partial.grads[name].to(param.device).clone()
            if self.rank != 0:
                totals = {k: 0.0 for k in totals}
        for index in range(start, len(micro_batches)):
            micro = micro_batches[index].to(self.device)
            logp, entropy = self._loss_forward(micro)
            loss, metrics = loss_fn(logp, entropy, micro)
            loss.backward()
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            if interrupt is not None and index + 1 < len(micro_batches) and interrupt():
                raise MicroStepInterrupt(self._partial(index + 1, totals))
        self._all_reduce_grads()
        totals = self._sum_metrics(totals)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=_foreach_ok(params))
        totals["lr"] = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        totals["grad_norm"] = float(grad_norm)
        return totals

    def _sum_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Loss metrics are each rank's share of the global value (normalised by global counts): sum them."""
        if not self.distributed or not totals:
            return totals
        keys = sorted(totals)
        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        values = torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return dict(zip(keys, values.tolist()))

    def _partial(self, micro_done: int, totals: dict[str, float]) -> PartialStep:
        """Accumulated gradients of this step so far. With several DP ranks they are summed onto rank 0 (the
        others resume from zero), so the step's final all-reduce still adds every micro-batch exactly once."""
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                 for n, p in self.model.named_parameters()}
        if self.distributed:
            for g in grads.values():
                dist.reduce(g, dst=0, op=dist.ReduceOp.SUM)
            if self.rank != 0:
                grads = {n: torch.zeros_like(g) for n, g in grads.items()}
        return PartialStep(micro_done=micro_done, grads={n: g.cpu() for n, g in grads.items()}, metrics=totals)

    def _all_reduce_grads(self) -> None:
        if not self.distributed:
            return
        for p in self.model.parameters():
            if p.grad is None:  # every rank must contribute the same tensors
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.model.parameters()]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def export_hf(self, path: Path) -> None:
        """Every rank may call this; rank 0 writes (DP replicas hold the same weights)."""
        if self.rank == 0:
            self.model.save_pretrained(str(path), safe_serialization=True)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model.state_dict().items()}
