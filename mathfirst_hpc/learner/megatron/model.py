"""Megatron-core GPTModel for a Hugging Face Qwen3 / Llama config: the shape, the TransformerConfig and the layer spec.

``ModelShape.from_hf_config`` reads the few fields that matter from a transformers config (or its dict);
``build_gpt_model`` builds this rank's part of the model (its TP shard of its PP stage's layers) with megatron's
own modules (column/row-parallel linears, RMSNorm, rotary embedding, gated SiLU MLP) except for the core
attention, which is torch's ``scaled_dot_product_attention``: megatron's local ``DotProductAttention`` builds an
[s, s] mask per call and materialises the full score matrix, and Transformer Engine (its fused path) is not a
dependency here. SDPA picks flash / memory-efficient kernels on a GPU and matches HF's attention on the CPU.

Simplifications: causal attention over right-padded rows, or an explicit block-diagonal mask for packed rows
(positions then run 0..T-1 across the row: RoPE is relative, so attention within an example is unchanged); no
sliding window; no
biases (Qwen3 / Llama have none); RoPE default or Llama-3.1 scaling; no MoE.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec

from .convert import ModelShape


def transformer_config(shape: ModelShape, *, tp: int, pp: int, dtype: torch.dtype, use_cpu_init: bool,
                       recompute: bool = False) -> TransformerConfig:
    """Megatron config equal to the HF model in fp32. Fusions that need Apex/TE/CUDA kernels are off."""
    half = dtype in (torch.bfloat16, torch.float16)
    return TransformerConfig(
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_heads,
        num_query_groups=shape.num_kv_heads,
        kv_channels=shape.head_dim,
        ffn_hidden_size=shape.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=shape.rms_norm_eps,
        qk_layernorm=shape.qk_norm,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=False,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=use_cpu_init,
        perform_initialization=True,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        # The objective's loss is normalised for the whole optimizer step: the schedule must neither divide it by
        # the number of micro-batches nor DDP average it over DP ranks (see backend.py, ``_LOSS_IS_GLOBAL``).
        calculate_per_token_loss=True,
        # Micro-batches may differ in length and rows; the pipeline then exchanges shapes before activations.
        variable_seq_lengths=pp > 1,
        moe_token_dispatcher_type="alltoall",  # no MoE here; megatron rejects the default with variable lengths
        recompute_granularity="full" if recompute else None,
        recompute_method="uniform" if recompute else None,
        recompute_num_layers=1 if recompute else None,
        # fp32 softmax / residual inside attention and norms when training in half precision.
        attention_softmax_in_fp32=True,
        fp32_residual_connection=False,
        apply_query_key_layer_scaling=False,
        deallocate_pipeline_outputs=half,
    )


class SdpaCoreAttention(MegatronModule):
    """Causal core attention through ``torch.nn.functional.scaled_dot_product_attention`` (GQA aware).

    Same call signature as megatron's DotProductAttention: query [sq, b, np, hn], key/value [sk, b, ng, hn] for
    this TP rank's heads; returns [sq, b, np * hn].
    """

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: Any, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: Any = None) -> None:
        super().__init__(config=config)
        self.softmax_scale = softmax_scale

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                attn_mask_type: Any = None, attention_bias: Any = None, packed_seq_params: Any = None
                ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SdpaCoreAttention: packed sequences and attention bias are not supported")
        sq, b, heads, dim = query.shape
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # [b, heads, s, dim]
        # No mask: causal. A mask (packed rows, [b, 1, s, s], megatron's True = masked out) already holds the
        # causal part; SDPA's boolean mask is True where attention is allowed.
        allowed = None if attention_mask is None else ~attention_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=allowed is None,
                                             scale=self.softmax_scale, enable_gqa=k.shape[1] != heads)
        return out.permute(2, 0, 1, 3).reshape(sq, b, heads * dim)


def layer_spec(shape: ModelShape) -> ModuleSpec:
    spec = get_gpt_layer_local_spec(qk_layernorm=shape.qk_norm, normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SdpaCoreAttention
    return spec


def build_gpt_model(shape: ModelShape, config: TransformerConfig, *, pre_process: bool,
                    post_process: bool) -> GPTModel:
    """This rank's GPTModel: its PP stage (pre_process = holds the embedding, post_process = the output head)."""
    return GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(shape),
        vocab_size=shape.vocab_size,
        max_sequence_length=shape.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=shape.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(shape.rope_theta) if float(shape.rope_theta).is_integer() else shape.rope_theta,
        rope_scaling=shape.rope_scaling_factor is not None,
        rope_scaling_factor=shape.rope_scaling_factor or 8.0,
    )
