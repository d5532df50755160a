"""A lean prefill and decode step for Llama-family HF models (Qwen3, Llama), used by the HF engine.

Why: on a CPU a tiny model's forward is dominated by per-op framework overhead in ``model.forward`` (mask
construction, cache bookkeeping, decorators, many small tensor ops): ~2.5 ms per token for a 2-layer model. This
computes what ``model.forward`` computes, from the model's own weights and modules, with far fewer ops:

- a preallocated KV cache written in place: the prefill writes each prompt's keys/values straight into the slots
  of its ``n`` samples, each decode step writes one slot (no cache object, no concatenation);
- q, k and v from one matmul, MLP gate and up from one (weights concatenated once per generate call, so they are
  the current weights), every projection and the head as x @ W^T with W^T stored contiguous; keys cached
  transposed, [d, slots];
- RMSNorm as one ``F.rms_norm`` call when the model runs in float32 (the same formula as HF's module);
- RoPE as ``x * cos + roll(x) * signed sin`` (HF's ``rotate_half`` is a roll with the first half negated; the sign
  is folded into sin once), cos/sin of every decode position computed once;
- a decode step's attention as one ``baddbmm`` (scaled scores + the additive padding mask) and one ``bmm``, and the
  residual adds folded into the output projections (``addmm``);
- in the prefill's last layer, the query, attention output and MLP of the last prompt position only: no other
  prompt position's output is read (its keys and values are).

Sums are grouped differently from ``model.forward`` (fused matmuls, one attention formula), so
results agree to float rounding, not bit for bit. The engine's tests compare sampled-token log-probs with a
teacher-forced ``model.forward`` and with the learner's log-probs (< 1e-5), and the samples with ``model.forward``
decoding.

Other architectures (or sliding-window attention) keep using ``model.forward``: ``LlamaFamilyDecoder.supports``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = ("qwen3", "llama")
_SILU = frozenset({"SiLU", "SiLUActivation"})
"""Activation modules whose forward is exactly ``F.silu``."""


def _stacked_t(*layers: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layers' weights stacked into one projection, transposed to a contiguous [in, out] (x @ W^T with W^T
    contiguous is ~30% faster on the CPU than ``F.linear``'s transposed read for decode-sized x), and their
    biases."""
    weight_t = torch.cat([layer.weight for layer in layers], dim=0).t().contiguous()
    biases = [layer.bias for layer in layers]
    if all(b is None for b in biases):
        return weight_t, None
    return weight_t, torch.cat([b if b is not None else weight_t.new_zeros(layer.weight.shape[0])
                                for b, layer in zip(biases, layers)])


def _linear(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = x @ weight_t
    return out if bias is None else out + bias


def _add_linear(hidden: torch.Tensor, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
    """hidden + x @ weight_t (+ bias): one ``addmm`` for 2-D rows without bias (the decode step)."""
    if hidden.dim() == 2 and bias is None:
        return torch.addmm(hidden, x, weight_t)
    return hidden + _linear(x, weight_t, bias)


class _Norm:
    def __init__(self, module: Any, fused: bool) -> None:
        self.module, self.fused = module, fused
        self.weight, self.eps = module.weight, module.variance_epsilon

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.module(x)


class _Layer:
    """One decoder layer's weights, arranged for the lean prefill and decode step."""

    def __init__(self, layer: Any, fused_norm: bool) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.q_heads = attn.q_proj.weight.shape[0] // self.head_dim
        self.kv_heads = attn.k_proj.weight.shape[0] // self.head_dim
        self.qk_norm_weight = None
        if hasattr(attn, "q_norm"):  # Qwen3: per-head RMSNorm of q and k, one call for both
            self.qk_eps = attn.q_norm.variance_epsilon
            self.qk_norm_weight = torch.cat([attn.q_norm.weight.expand(self.q_heads, -1),
                                             attn.k_norm.weight.expand(self.kv_heads, -1)])[:, None]
            self.qk_norm_fused = fused_norm
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.qkv_wt, self.qkv_b = _stacked_t(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o_wt, self.o_b = _stacked_t(attn.o_proj)
        self.gate_up_wt, self.gate_up_b = _stacked_t(mlp.gate_proj, mlp.up_proj)
        self.intermediate = mlp.gate_proj.weight.shape[0]
        self.act = F.silu if type(mlp.act_fn).__name__ in _SILU else mlp.act_fn  # the function: no module call
        self.down_wt, self.down_b = _stacked_t(mlp.down_proj)
        self.norm_in = _Norm(layer.input_layernorm, fused_norm)
        self.norm_post = _Norm(layer.post_attention_layernorm, fused_norm)

    def qk_v(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normed (Qwen3) q and k stacked on the head axis, and v: [rows, heads, length, d] from x [rows, length,
        hidden]."""
        rows, length, _ = x.shape
        qkv = _linear(x, self.qkv_wt, self.qkv_b).view(rows, length, -1, self.head_dim).transpose(1, 2)
        qk, v = qkv[:, :self.q_heads + self.kv_heads], qkv[:, self.q_heads + self.kv_heads:]
        if self.qk_norm_weight is None:
            return qk, v
        if self.qk_norm_fused:
            return F.rms_norm(qk, (self.head_dim,), None, self.qk_eps) * self.qk_norm_weight, v
        return torch.cat([self.q_norm(qk[:, :self.q_heads]), self.k_norm(qk[:, self.q_heads:])], dim=1), v

    def mlp(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden + MLP(post-attention norm(hidden)), hidden [rows, hidden] or [rows, length, hidden]."""
        gate, up = _linear(self.norm_post(hidden), self.gate_up_wt, self.gate_up_b).split(self.intermediate, -1)
        return _add_linear(hidden, self.act(gate).mul_(up), self.down_wt, self.down_b)


class LlamaFamilyDecoder:
    def __init__(self, model: Any, attention: torch.Tensor, max_new_tokens: int, repeat: int = 1) -> None:
        """``attention``: [prompts, width] of the left-padded prompts (1 = real token). Each prompt's row is used
        by ``repeat`` consecutive sample rows. Call ``prefill`` once, then ``step`` per token."""
        inner = model.model
        dtype = model.lm_head.weight.dtype
        fused = dtype == torch.float32  # F.rms_norm == HF's RMSNorm formula in fp32; other dtypes cast differently
        self.layers = [_Layer(layer, fused) for layer in inner.layers]
        self.embed, self.rotary = inner.embed_tokens, inner.rotary_emb
        self.head_wt, self.head_b = _stacked_t(model.lm_head)
        self.norm = _Norm(inner.norm, fused)
        self.attention, self.repeat = attention, repeat
        prompts, width = attention.shape
        rows, self.width, self.length = prompts * repeat, width, width
        layer, device = self.layers[0], attention.device
        self.hkv, self.groups = layer.kv_heads, layer.q_heads // layer.kv_heads
        # additive mask over the whole cache, one row per (sample, kv head): 0 where a real token is, -inf on left
        # padding and unwritten slots (a slot is opened as its token is written: every row sees its own token)
        self.bias = torch.full((rows, self.hkv, 1, width + max_new_tokens), float("-inf"), dtype=dtype,
                               device=device)
        self.bias[..., :width].masked_fill_(attention.bool().repeat_interleave(repeat, dim=0)[:, None, None], 0.0)
        self.bias = self.bias.view(rows * self.hkv, 1, -1)
        # slots beyond the current length are never read unmasked: no need to zero them. Keys are stored
        # transposed, [d, slots]: the scores' batched matmul reads them ~30% faster than a transposed view
        slots = width + max_new_tokens
        self.keys = [torch.empty((rows * self.hkv, layer.head_dim, slots), dtype=dtype, device=device)
                     for _ in self.layers]
        self.values = [torch.empty((rows * self.hkv, slots, layer.head_dim), dtype=dtype, device=device)
                       for _ in self.layers]
        # RoPE of every decode position at once: step k writes position last_prompt_position + 1 + k
        first = attention.sum(-1, keepdim=True).repeat_interleave(repeat, dim=0)
        cos, sin = self._rope(first + torch.arange(max_new_tokens, device=device))  # [rows, 1, steps, d]
        # [steps, rows, 1, 1, d]: step k's [rows, 1, 1, d] is one contiguous select
        self.cos = cos.permute(2, 0, 1, 3)[..., None, :].contiguous()
        self.sin = sin.permute(2, 0, 1, 3)[..., None, :].contiguous()

    @staticmethod
    def supports(model: Any) -> bool:
        cfg = model.config
        return getattr(cfg, "model_type", None) in SUPPORTED and not getattr(cfg, "sliding_window", None)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin [rows, 1, length, d] of ``positions`` [rows, length] from the model's rotary
        module: HF's rotate_half(x) = cat(-x2, x1) = roll(x, d/2) * (-1 on the first half, +1 on the second)."""
        cos, sin = self.rotary(self.bias, positions)
        half = cos.shape[-1] // 2
        sign = torch.ones(cos.shape[-1], dtype=sin.dtype, device=sin.device)
        sign[:half] = -1.0
        return cos[:, None], (sin * sign)[:, None]

    @staticmethod
    def _rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return qk * cos + qk.roll(qk.shape[-1] // 2, -1) * sin

    # prefill ---------------------------------------------------------------------------------------------------
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prompts [prompts, width], write their keys/values into every sample's cache rows;
        return the next-token logits [prompts, vocab] (one row per prompt, not repeated)."""
        prompts, width = input_ids.shape
        real = self.attention.bool()
        positions = (self.attention.cumsum(-1) - 1).clamp(min=0)
        cos, sin = self._rope(positions)
        # causal over real keys; a padding query also sees itself (a row with no key would give NaN, which its
        # value would carry into later layers; real queries never read padding)
        causal = torch.ones((width, width), dtype=torch.bool, device=real.device).tril()
        mask = (causal & (real[:, None, :] | torch.eye(width, dtype=torch.bool, device=real.device)))[:, None]
        hidden = self.embed(input_ids)  # [prompts, width, hidden]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            qk, v = layer.qk_v(layer.norm_in(hidden))
            qk = self._rotate(qk, cos, sin)
            q, k = qk[:, :layer.q_heads], qk[:, layer.q_heads:]
            self._write_prompt(i, k, v)
            if i == last:  # only the last position's output is read (its logits)
                q, hidden, mask = q[:, :, -1:], hidden[:, -1:], real[:, None, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=layer.scaling, enable_gqa=True)
            out = out.transpose(1, 2).reshape(prompts, hidden.shape[1], -1)
            hidden = layer.mlp(_add_linear(hidden, out, layer.o_wt, layer.o_b))
        return _linear(self.norm(hidden[:, -1]), self.head_wt, self.head_b)

    def _write_prompt(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v [prompts, kv_heads, width, d] into the first ``width`` slots of each of the prompt's samples."""
        prompts, _, width, d = k.shape
        keys = self.keys[i].view(prompts, self.repeat, self.hkv, d, -1)
        keys[..., :width] = k.transpose(-1, -2)[:, None]
        self.values[i].view(prompts, self.repeat, self.hkv, -1, d)[:, :, :, :width] = v[:, None]

    # decode ----------------------------------------------------------------------------------------------------
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` [rows] right after each row's previous token; return next-token logits
        [rows, vocab]."""
        t = self.length
        cos, sin = self.cos[t - self.width], self.sin[t - self.width]  # [rows, 1, 1, d]
        self.bias[:, :, t] = 0.0
        bias = self.bias[:, :, :t + 1]
        hidden = self.embed(tokens)  # [rows, hidden]
        for i, layer in enumerate(self.layers):
            hidden = layer.mlp(self._attention(layer, i, hidden, t, cos, sin, bias))
        self.length += 1
        return _linear(self.norm(hidden), self.head_wt, self.head_b)

    def _attention(self, layer: _Layer, i: int, hidden: torch.Tensor, t: int, cos: torch.Tensor,
                   sin: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """hidden + attention of the new token [rows, hidden] over the cache (its own keys/values written)."""
        rows = hidden.shape[0]
        qk, v = layer.qk_v(layer.norm_in(hidden)[:, None])  # [rows, heads, 1, d]
        qk = self._rotate(qk, cos, sin)
        keys, values, d = self.keys[i], self.values[i], layer.head_dim
        keys.view(rows, self.hkv, d, -1)[..., t] = qk[:, layer.q_heads:, 0]
        values.view(rows, self.hkv, -1, d)[:, :, t] = v[:, :, 0]
        # GQA: query head h reads kv head h // groups, so the queries of one kv head are contiguous
        q = qk[:, :layer.q_heads].reshape(rows * self.hkv, self.groups, d)
        scores = torch.baddbmm(bias, q, keys[..., :t + 1], alpha=layer.scaling)  # scale and mask: one op
        out = torch.bmm(scores.softmax(dim=-1), values[:, :t + 1])  # [rows * kv_heads, groups, d]
        return _add_linear(hidden, out.view(rows, -1), layer.o_wt, layer.o_b)

