"""A lean decode step for Llama-family HF models (Qwen3, Llama) used by the HF engine after its prefill.

Why: on a CPU a tiny model's decode step is dominated by per-op framework overhead in ``model.forward`` (mask
construction, cache bookkeeping, decorators, many small tensor ops): ~2.5 ms per token for a 2-layer model. This
step computes what ``model.forward`` computes, from the model's own weights, with far fewer ops:

- a preallocated KV cache (the prompt's cache copied in once, repeated for the ``n`` samples of each prompt);
- q, k and v from one matmul, MLP gate and up from one (weights concatenated once per generate call, so they are
  the current weights);
- RMSNorm as one ``F.rms_norm`` call when the model runs in float32 (the same formula as HF's module);
- cos/sin of every decode position computed once; RoPE applied to q and k together;
- attention of the single new query as two small matmuls and a softmax with an additive mask (SDPA's kernel costs
  more for one query row).

Sums are grouped differently from ``model.forward`` (fused matmuls, one attention formula), so results agree to
float rounding, not bit for bit. The engine's tests compare sampled-token log-probs with a teacher-forced
``model.forward`` and with the learner's log-probs (< 1e-5).

Other architectures (or sliding-window attention) keep using ``model.forward``: ``LlamaFamilyDecoder.supports``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = ("qwen3", "llama")


def _cat_linear(*layers: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = torch.cat([layer.weight for layer in layers], dim=0)
    biases = [layer.bias for layer in layers]
    if all(b is None for b in biases):
        return weight, None
    bias = torch.cat([b if b is not None else weight.new_zeros(layer.weight.shape[0])
                      for b, layer in zip(biases, layers)])
    return weight, bias


class _Layer:
    """One decoder layer's weights, arranged for a single-token step."""

    def __init__(self, layer: Any, fused_norm: bool) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.q_heads = attn.q_proj.weight.shape[0] // self.head_dim
        self.kv_heads = attn.k_proj.weight.shape[0] // self.head_dim
        self.qkv_w, self.qkv_b = _cat_linear(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o_proj = attn.o_proj
        self.gate_up_w, self.gate_up_b = _cat_linear(mlp.gate_proj, mlp.up_proj)
        self.intermediate = mlp.gate_proj.weight.shape[0]
        self.act, self.down = mlp.act_fn, mlp.down_proj
        self.norm_in = _Norm(layer.input_layernorm, fused_norm)
        self.norm_post = _Norm(layer.post_attention_layernorm, fused_norm)
        self.qk_norm_weight = None
        if hasattr(attn, "q_norm"):  # Qwen3: per-head RMSNorm of q and k, one call for both
            self.qk_eps = attn.q_norm.variance_epsilon
            self.qk_norm_weight = torch.cat([attn.q_norm.weight.expand(self.q_heads, -1),
                                             attn.k_norm.weight.expand(self.kv_heads, -1)])
            self.qk_norm_fused = fused_norm
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm


class _Norm:
    def __init__(self, module: Any, fused: bool) -> None:
        self.module, self.fused = module, fused
        self.weight, self.eps = module.weight, module.variance_epsilon

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.module(x)


class LlamaFamilyDecoder:
    def __init__(self, model: Any, cache: Any, attention: torch.Tensor, max_new_tokens: int,
                 repeat: int = 1) -> None:
        """``cache``: the HF cache after prefill; ``attention``: [prompts, width] (1 = real token). Each prompt's
        row is used by ``repeat`` consecutive sample rows (the cache is repeated here, not by the caller)."""
        inner = model.model
        dtype = model.lm_head.weight.dtype
        fused = dtype == torch.float32  # F.rms_norm == HF's RMSNorm formula in fp32; other dtypes cast differently
        self.layers = [_Layer(layer, fused) for layer in inner.layers]
        self.embed, self.lm_head = inner.embed_tokens, model.lm_head
        self.norm = _Norm(inner.norm, fused)
        prompts, width = attention.shape
        rows, self.width, self.length = prompts * repeat, width, width
        device = attention.device
        # additive mask over the whole cache: 0 where a real token is, -inf on left padding and unwritten slots
        # (a slot is opened as its token is written, so every row always sees at least its own token)
        self.bias = torch.full((rows, 1, 1, width + max_new_tokens), float("-inf"), dtype=dtype, device=device)
        self.bias[:, 0, 0, :width].masked_fill_(attention.bool().repeat_interleave(repeat, dim=0), 0.0)
        self.keys, self.values = [], []
        for layer in cache.layers:
            k, v = layer.keys, layer.values  # [prompts, kv_heads, width, head_dim]
            shape = (prompts, repeat, k.shape[1], width + max_new_tokens, k.shape[3])
            # slots beyond the current length are never read unmasked: no need to zero them
            keys, values = k.new_empty(shape), v.new_empty(shape)
            keys[:, :, :, :width], values[:, :, :, :width] = k[:, None], v[:, None]
            self.keys.append(keys.view(rows, *shape[2:]))
            self.values.append(values.view(rows, *shape[2:]))
        # RoPE of every decode position at once: step k writes position last_prompt_position + 1 + k
        first = attention.sum(-1, keepdim=True).repeat_interleave(repeat, dim=0)
        positions = first + torch.arange(max_new_tokens, device=device)
        self.cos, self.sin = inner.rotary_emb(self.bias, positions)  # [rows, steps, head_dim]
        self.rotary = inner.rotary_emb

    @staticmethod
    def supports(model: Any, cache: Any) -> bool:
        cfg = model.config
        return (getattr(cfg, "model_type", None) in SUPPORTED and not getattr(cfg, "sliding_window", None)
                and hasattr(cache, "layers") and all(hasattr(l, "keys") for l in cache.layers)
                and len(cache.layers) == len(model.model.layers))

    def step(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Append ``tokens`` [rows]; return next-token logits [rows, vocab]. ``positions`` [rows, 1]: where the
        tokens sit; None = right after the previous token (after the prompt's last real token at first)."""
        t = self.length
        k_step = t - self.width
        if positions is None:
            cos, sin = self.cos[:, k_step:k_step + 1], self.sin[:, k_step:k_step + 1]
        else:
            cos, sin = self.rotary(self.bias, positions)
        cos, sin = cos[:, None], sin[:, None]  # [rows, 1, 1, head_dim]
        self.bias[:, :, :, t] = 0.0
        bias = self.bias[:, :, :, :t + 1]
        hidden = self.embed(tokens[:, None])  # [rows, 1, hidden]
        rows = tokens.shape[0]
        for i, layer in enumerate(self.layers):
            hidden = hidden + self._attention(layer, layer.norm_in(hidden), i, t, cos, sin, bias, rows)
            x = layer.norm_post(hidden)
            gate, up = F.linear(x, layer.gate_up_w, layer.gate_up_b).split(layer.intermediate, dim=-1)
            hidden = hidden + layer.down(layer.act(gate) * up)
        self.length += 1
        return self.lm_head(self.norm(hidden))[:, 0]

    def _attention(self, layer: _Layer, x: torch.Tensor, i: int, t: int, cos: torch.Tensor, sin: torch.Tensor,
                   bias: torch.Tensor, rows: int) -> torch.Tensor:
        d, hq, hkv = layer.head_dim, layer.q_heads, layer.kv_heads
        qkv = F.linear(x, layer.qkv_w, layer.qkv_b).view(rows, hq + 2 * hkv, 1, d)
        qk, v = qkv[:, :hq + hkv], qkv[:, hq + hkv:]
        if layer.qk_norm_weight is not None:
            if layer.qk_norm_fused:
                qk = F.rms_norm(qk, (d,), None, layer.qk_eps) * layer.qk_norm_weight[:, None]
            else:
                qk = torch.cat([layer.q_norm(qk[:, :hq]), layer.k_norm(qk[:, hq:])], dim=1)
        half = d // 2
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        self.keys[i][:, :, t] = qk[:, hq:, 0]
        self.values[i][:, :, t] = v[:, :, 0]
        # GQA: query head h reads kv head h // (hq // hkv), so the queries of one kv head are contiguous
        q = qk[:, :hq].reshape(rows, hkv, hq // hkv, d)
        scores = torch.matmul(q, self.keys[i][:, :, :t + 1].transpose(-1, -2))
        scores = (scores * layer.scaling + bias).softmax(dim=-1)
        out = torch.matmul(scores, self.values[i][:, :, :t + 1])  # [rows, hkv, groups, d]
        return layer.o_proj(out.reshape(rows, 1, hq * d))
