"""Hugging Face Qwen3 / Llama weights <-> Megatron-core GPTModel weights, sharded for tensor (TP) and pipeline (PP)
parallelism, and ``ModelShape``, the architecture facts read from an HF config. Pure torch (megatron-core is not
imported) and no process groups, so every layout can be checked in one process.

Layout facts the converter encodes (megatron-core local spec):

- ``linear_qkv`` packs Q, K, V per query group: for each of the ``num_kv_heads`` groups, that group's query heads,
  then its key head, then its value head. A column-parallel TP split along dim 0 therefore hands every rank whole
  groups (``num_kv_heads % tp == 0``).
- ``linear_fc1`` is ``[gate; up]``; under TP each rank holds ``[gate_r; up_r]`` (its slice of each), not a slice
  of the concatenation.
- ``linear_proj`` (o_proj) and ``linear_fc2`` (down_proj) are row-parallel: split along dim 1.
- The word embedding and the output layer are vocab-parallel: split along dim 0.
- Norm weights (input, pre-MLP, final, and Qwen3's per-head q/k RMSNorm) are replicated.
- PP stage ``s`` holds layers ``[s*L/pp, (s+1)*L/pp)`` renumbered from 0; the first stage holds the embedding,
  the last the final norm and output layer. With tied embeddings the output layer is the embedding itself when
  ``pp == 1``; when ``pp > 1`` the last stage holds a copy named ``output_layer.weight`` that megatron keeps in
  sync (its grads are all-reduced with the embedding's).

Usage::

    shard = hf_to_megatron(hf_state, shape, tp_rank=1, tp=2, pp_rank=0, pp=1)
    hf_state_again = megatron_to_hf({(t, p): shard_tp_p, ...}, shape, tp=2, pp=1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import ConfigError

SUPPORTED_MODEL_TYPES = ("qwen3", "llama")


@dataclass(frozen=True)
class ModelShape:
    """The architecture facts shared by the HF config, the Megatron config and the weight converter."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_scaling_factor: float | None = None
    """Llama-3.1 RoPE scaling factor (low 1, high 4, original 8192); None = plain RoPE."""

    @property
    def qk_norm(self) -> bool:
        """Qwen3 normalises queries and keys per head (RMSNorm over head_dim) before RoPE."""
        return self.model_type == "qwen3"

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelShape:
        cfg: Mapping[str, Any] = config if isinstance(config, Mapping) else config.to_dict()
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"megatron backend: model_type {model_type!r} is not supported",
                              hint=f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        for flag in ("attention_bias", "mlp_bias"):
            if cfg.get(flag):
                raise ConfigError(f"megatron backend: {flag}=true is not supported (Qwen3/Llama have no biases)")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"megatron backend: hidden_act {cfg.get('hidden_act')!r}, only silu is supported")
        heads = int(cfg["num_attention_heads"])
        theta, factor = _rope(cfg)
        return cls(
            model_type=model_type,
            num_layers=int(cfg["num_hidden_layers"]),
            hidden_size=int(cfg["hidden_size"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
            ffn_hidden_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rope_scaling_factor=factor,
        )

    def check_parallel(self, tp: int, pp: int) -> None:
        """Raise ConfigError naming the factor that does not divide."""
        checks = [
            (self.num_heads % tp == 0, f"num_attention_heads={self.num_heads}"),
            (self.num_kv_heads % tp == 0, f"num_key_value_heads={self.num_kv_heads}"),
            (self.ffn_hidden_size % tp == 0, f"intermediate_size={self.ffn_hidden_size}"),
            (self.vocab_size % tp == 0, f"vocab_size={self.vocab_size}"),
        ]
        for ok, what in checks:
            if not ok:
                raise ConfigError(f"parallel.tp={tp} must divide the model's {what}")
        if self.num_layers % pp != 0:
            raise ConfigError(f"parallel.pp={pp} must divide num_hidden_layers={self.num_layers}")

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * d * (self.num_heads * 2 + self.num_kv_heads * 2) + (2 * d if self.qk_norm else 0)
        layer = attn + 3 * h * self.ffn_hidden_size + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + h


def _rope(cfg: Mapping[str, Any]) -> tuple[float, float | None]:
    """(theta, llama3 scaling factor or None) from transformers 5 ``rope_parameters`` or 4.x ``rope_scaling``."""
    params = dict(cfg.get("rope_parameters") or {})
    scaling = dict(cfg.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type == "default":
        return theta, None
    source = params if params.get("rope_type") == rope_type else scaling
    if rope_type == "llama3":
        expected = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        for key, value in expected.items():
            if float(source.get(key, value)) != value:
                raise ConfigError(f"megatron backend: llama3 RoPE {key}={source.get(key)} unsupported "
                                  f"(megatron-core implements {value})")
        return theta, float(source.get("factor", 8.0))
    raise ConfigError(f"megatron backend: RoPE type {rope_type!r} is not supported (default or llama3)")


Shards = Mapping[tuple[int, int], Mapping[str, torch.Tensor]]
"""(tp_rank, pp_rank) -> that rank's Megatron state dict."""


def stage_layers(shape: ModelShape, pp_rank: int, pp: int) -> range:
    """Global (HF) layer indices held by pipeline stage ``pp_rank``."""
    per_stage = shape.num_layers // pp
    return range(pp_rank * per_stage, (pp_rank + 1) * per_stage)


def _hf_layer(i: int) -> str:
    return f"model.layers.{i}."


def _mg_layer(j: int) -> str:
    return f"decoder.layers.{j}."


# ----------------------------------------------------------------------------------------------------------------
# HF -> Megatron
# ----------------------------------------------------------------------------------------------------------------

def pack_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: ModelShape) -> torch.Tensor:
    """[q; k; v] rows regrouped per query group: [g0 queries, g0 key, g0 value, g1 queries, ...]."""
    groups, d, hidden = shape.num_kv_heads, shape.head_dim, q.shape[-1]
    per_group = shape.num_heads // groups
    packed = torch.cat([q.reshape(groups, per_group * d, hidden), k.reshape(groups, d, hidden),
                        v.reshape(groups, d, hidden)], dim=1)
    return packed.reshape(-1, hidden)


def _layer_to_megatron(hf: Mapping[str, torch.Tensor], i: int, j: int, shape: ModelShape, tp_rank: int,
                       tp: int) -> dict[str, torch.Tensor]:
    src, dst = _hf_layer(i), _mg_layer(j)
    attn, mlp = src + "self_attn.", src + "mlp."
    qkv = pack_qkv(hf[attn + "q_proj.weight"], hf[attn + "k_proj.weight"], hf[attn + "v_proj.weight"], shape)
    gate = hf[mlp + "gate_proj.weight"].chunk(tp, dim=0)[tp_rank]
    up = hf[mlp + "up_proj.weight"].chunk(tp, dim=0)[tp_rank]
    out = {
        dst + "input_layernorm.weight": hf[src + "input_layernorm.weight"],
        dst + "self_attention.linear_qkv.weight": qkv.chunk(tp, dim=0)[tp_rank],
        dst + "self_attention.linear_proj.weight": hf[attn + "o_proj.weight"].chunk(tp, dim=1)[tp_rank],
        dst + "pre_mlp_layernorm.weight": hf[src + "post_attention_layernorm.weight"],
        dst + "mlp.linear_fc1.weight": torch.cat([gate, up], dim=0),
        dst + "mlp.linear_fc2.weight": hf[mlp + "down_proj.weight"].chunk(tp, dim=1)[tp_rank],
    }
    if shape.qk_norm:
        out[dst + "self_attention.q_layernorm.weight"] = hf[attn + "q_norm.weight"]
        out[dst + "self_attention.k_layernorm.weight"] = hf[attn + "k_norm.weight"]
    return out


def hf_to_megatron(hf: Mapping[str, torch.Tensor], shape: ModelShape, *, tp_rank: int, tp: int, pp_rank: int,
                   pp: int) -> dict[str, torch.Tensor]:
    """This (tp_rank, pp_rank)'s Megatron GPTModel state dict (contiguous clones) from a full HF state dict."""
    shape.check_parallel(tp, pp)
    out: dict[str, torch.Tensor] = {}
    first, last = pp_rank == 0, pp_rank == pp - 1
    vocab_shard = hf["model.embed_tokens.weight"].chunk(tp, dim=0)[tp_rank]
    if first:
        out["embedding.word_embeddings.weight"] = vocab_shard
    for j, i in enumerate(stage_layers(shape, pp_rank, pp)):
        out.update(_layer_to_megatron(hf, i, j, shape, tp_rank, tp))
    if last:
        out["decoder.final_layernorm.weight"] = hf["model.norm.weight"]
        if not shape.tie_word_embeddings:
            out["output_layer.weight"] = hf["lm_head.weight"].chunk(tp, dim=0)[tp_rank]
        elif pp > 1:
            out["output_layer.weight"] = vocab_shard
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------------
# Megatron -> HF
# ----------------------------------------------------------------------------------------------------------------

def unpack_qkv(qkv: torch.Tensor, shape: ModelShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_qkv` on the full (TP-gathered) tensor."""
    groups, d = shape.num_kv_heads, shape.head_dim
    per_group = shape.num_heads // groups
    grouped = qkv.reshape(groups, (per_group + 2) * d, qkv.shape[-1])
    q, k, v = grouped.split([per_group * d, d, d], dim=1)
    hidden = qkv.shape[-1]
    return q.reshape(-1, hidden), k.reshape(-1, hidden), v.reshape(-1, hidden)


def _cat(parts: list[Mapping[str, torch.Tensor]], key: str, dim: int) -> torch.Tensor:
    return torch.cat([p[key] for p in parts], dim=dim)


def _layer_to_hf(parts: list[Mapping[str, torch.Tensor]], i: int, j: int, shape: ModelShape
                 ) -> dict[str, torch.Tensor]:
    """One layer from every TP rank's part of its stage."""
    src, dst = _mg_layer(j), _hf_layer(i)
    attn, mlp = dst + "self_attn.", dst + "mlp."
    q, k, v = unpack_qkv(_cat(parts, src + "self_attention.linear_qkv.weight", 0), shape)
    halves = [p[src + "mlp.linear_fc1.weight"].chunk(2, dim=0) for p in parts]
    out = {
        dst + "input_layernorm.weight": parts[0][src + "input_layernorm.weight"],
        attn + "q_proj.weight": q,
        attn + "k_proj.weight": k,
        attn + "v_proj.weight": v,
        attn + "o_proj.weight": _cat(parts, src + "self_attention.linear_proj.weight", 1),
        dst + "post_attention_layernorm.weight": parts[0][src + "pre_mlp_layernorm.weight"],
        mlp + "gate_proj.weight": torch.cat([g for g, _ in halves], dim=0),
        mlp + "up_proj.weight": torch.cat([u for _, u in halves], dim=0),
        mlp + "down_proj.weight": _cat(parts, src + "mlp.linear_fc2.weight", 1),
    }
    if shape.qk_norm:
        out[attn + "q_norm.weight"] = parts[0][src + "self_attention.q_layernorm.weight"]
        out[attn + "k_norm.weight"] = parts[0][src + "self_attention.k_layernorm.weight"]
    return out


def stage_to_hf(parts: list[Mapping[str, torch.Tensor]], shape: ModelShape, *, pp_rank: int, pp: int
                ) -> dict[str, torch.Tensor]:
    """HF tensors held by one pipeline stage, from the state dicts of its TP ranks (in TP-rank order).

    ``lm_head.weight`` is included even when tied (vLLM's weight reload wants it); the export drops it.
    """
    out: dict[str, torch.Tensor] = {}
    if pp_rank == 0:
        out["model.embed_tokens.weight"] = _cat(parts, "embedding.word_embeddings.weight", 0)
        if shape.tie_word_embeddings:
            out["lm_head.weight"] = out["model.embed_tokens.weight"]
    for j, i in enumerate(stage_layers(shape, pp_rank, pp)):
        out.update(_layer_to_hf(parts, i, j, shape))
    if pp_rank == pp - 1:
        out["model.norm.weight"] = parts[0]["decoder.final_layernorm.weight"]
        if not shape.tie_word_embeddings:
            out["lm_head.weight"] = _cat(parts, "output_layer.weight", 0)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def megatron_to_hf(shards: Shards, shape: ModelShape, *, tp: int, pp: int) -> dict[str, torch.Tensor]:
    """Full HF state dict from every rank's Megatron state dict."""
    out: dict[str, torch.Tensor] = {}
    for pp_rank in range(pp):
        out.update(stage_to_hf([shards[(t, pp_rank)] for t in range(tp)], shape, pp_rank=pp_rank, pp=pp))
    return out


def hf_key_order(shape: ModelShape) -> list[str]:
    """HF parameter names in the order transformers' ``state_dict()`` lists them."""
    keys = ["model.embed_tokens.weight"]
    for i in range(shape.num_layers):
        attn = f"model.layers.{i}.self_attn."
        keys += [attn + n for n in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")]
        if shape.qk_norm:
            keys += [attn + "q_norm.weight", attn + "k_norm.weight"]
        keys += [f"model.layers.{i}.mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
        keys += [f"model.layers.{i}.input_layernorm.weight", f"model.layers.{i}.post_attention_layernorm.weight"]
    return keys + ["model.norm.weight", "lm_head.weight"]
