"""HF <-> Megatron weight conversion as pure tensor functions (no megatron-core, no processes): every TP/PP layout
round-trips bit-identically, and the packed layouts are the ones megatron-core expects."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.learner.megatron.convert import (
    ModelShape,
    hf_to_megatron,
    megatron_to_hf,
    pack_qkv,
    stage_layers,
    unpack_qkv,
)

COMMON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              head_dim=8, intermediate_size=48)


def hf_state(arch: str, tied: bool) -> tuple[ModelShape, dict[str, torch.Tensor]]:
    cfg = (Qwen3Config if arch == "qwen3" else LlamaConfig)(**COMMON, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p))  # distinct norms, so a swapped one is caught
    return ModelShape.from_hf_config(cfg), model.state_dict()


@pytest.mark.parametrize("arch,tied", [("qwen3", False), ("qwen3", True), ("llama", True), ("llama", False)])
@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2), (2, 2), (2, 4)])
def test_roundtrip_is_bit_identical(arch: str, tied: bool, tp: int, pp: int) -> None:
    shape, hf = hf_state(arch, tied)
    shards = {(t, p): hf_to_megatron(hf, shape, tp_rank=t, tp=tp, pp_rank=p, pp=pp)
              for t in range(tp) for p in range(pp)}
    back = megatron_to_hf(shards, shape, tp=tp, pp=pp)
    assert set(back) == set(hf)
    for name, value in hf.items():
        assert torch.equal(back[name], value), name


def test_shard_keys_follow_megatron_names_and_stages() -> None:
    shape, hf = hf_state("qwen3", tied=True)
    first = hf_to_megatron(hf, shape, tp_rank=0, tp=2, pp_rank=0, pp=2)
    last = hf_to_megatron(hf, shape, tp_rank=1, tp=2, pp_rank=1, pp=2)
    assert "embedding.word_embeddings.weight" in first and "output_layer.weight" not in first
    assert "decoder.final_layernorm.weight" in last and "embedding.word_embeddings.weight" not in last
    # tied with PP > 1: the last stage holds a copy of its vocab shard of the embedding as the output layer
    assert torch.equal(last["output_layer.weight"], hf["model.embed_tokens.weight"][32:])
    # stage 1 holds global layers 2 and 3, renumbered 0 and 1
    assert list(stage_layers(shape, 1, 2)) == [2, 3]
    assert torch.equal(last["decoder.layers.1.input_layernorm.weight"], hf["model.layers.3.input_layernorm.weight"])
    assert torch.equal(last["decoder.layers.0.self_attention.q_layernorm.weight"],
                       hf["model.layers.2.self_attn.q_norm.weight"])
    assert last["decoder.layers.0.self_attention.linear_proj.weight"].shape == (32, 16)  # row parallel: dim 1


def test_qkv_is_grouped_per_kv_head() -> None:
    shape, _ = hf_state("qwen3", tied=False)  # 4 query heads, 2 kv heads, head_dim 8
    hidden, d = 32, 8
    q = torch.arange(4).repeat_interleave(d)[:, None].float().expand(-1, hidden)        # query head h -> value h
    k = (10 + torch.arange(2)).repeat_interleave(d)[:, None].float().expand(-1, hidden)  # kv head g -> 10 + g
    v = (20 + torch.arange(2)).repeat_interleave(d)[:, None].float().expand(-1, hidden)
    packed = pack_qkv(q, k, v, shape)
    heads_in_order = packed[::d, 0].tolist()
    assert heads_in_order == [0, 1, 10, 20, 2, 3, 11, 21]
    assert all(torch.equal(a, b) for a, b in zip(unpack_qkv(packed, shape), (q, k, v), strict=True))


def test_fc1_shard_is_gate_slice_then_up_slice() -> None:
    shape, hf = hf_state("llama", tied=False)
    gate, up = hf["model.layers.0.mlp.gate_proj.weight"], hf["model.layers.0.mlp.up_proj.weight"]
    shard = hf_to_megatron(hf, shape, tp_rank=1, tp=2, pp_rank=0, pp=1)["decoder.layers.0.mlp.linear_fc1.weight"]
    assert torch.equal(shard, torch.cat([gate[24:], up[24:]]))


def test_shape_reads_qwen3_head_dim_and_llama3_rope_scaling() -> None:
    qwen = ModelShape.from_hf_config(Qwen3Config(**{**COMMON, "head_dim": 16}))
    assert (qwen.head_dim, qwen.qk_norm, qwen.rope_scaling_factor) == (16, True, None)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    llama = ModelShape.from_hf_config({**COMMON, "model_type": "llama", "rope_parameters": rope})
    assert (llama.rope_theta, llama.rope_scaling_factor, llama.qk_norm) == (500000.0, 8.0, False)


@pytest.mark.parametrize("change,message", [
    ({"model_type": "mistral"}, "not supported"),
    ({"model_type": "llama", "attention_bias": True}, "attention_bias"),
    ({"model_type": "llama", "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
])
def test_shape_refuses_what_the_converter_cannot_map(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelShape.from_hf_config({**COMMON, "model_type": "qwen3", **change})


@pytest.mark.parametrize("tp,pp,message", [(4, 1, "num_key_value_heads=2"), (1, 3, "num_hidden_layers=4")])
def test_layouts_that_do_not_divide_name_the_factor(tp: int, pp: int, message: str) -> None:
    shape, hf = hf_state("qwen3", tied=False)
    with pytest.raises(ConfigError, match=message):
        hf_to_megatron(hf, shape, tp_rank=0, tp=tp, pp_rank=0, pp=pp)
