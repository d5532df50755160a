"""A 2-process gloo data-parallel step gives the same parameters as one process on the same batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from mathfirst_hpc.config import DapoConfig, OptimConfig
from mathfirst_hpc.learner.base import TokenBatch
from mathfirst_hpc.learner.dapo import global_counts, make_dapo_loss


def tiny_model():
    from transformers import AutoModelForCausalLM, Qwen3Config
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, head_dim=16)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")


def full_batch() -> TokenBatch:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (8, 10), generator=g)
    attention = torch.ones(8, 10, dtype=torch.long)
    attention[3, 8:] = 0
    mask = torch.zeros(8, 10, dtype=torch.long)
    mask[:, 4:] = 1
    mask = mask * attention
    old = -torch.rand(8, 10, generator=g) * 3 * mask
    adv = torch.randn(8, generator=g)
    return TokenBatch(ids, attention, mask, old_logprobs=old, advantages=adv, temperature=0.9)


def rows(b: TokenBatch, idx) -> TokenBatch:
    return TokenBatch(b.input_ids[idx], b.attention_mask[idx], b.loss_mask[idx], old_logprobs=b.old_logprobs[idx],
                      advantages=b.advantages[idx], temperature=b.temperature)


def step(rank_rows: list[list[int]]) -> dict:
    from mathfirst_hpc.learner.torch_backend import TorchBackend
    torch.set_num_threads(1)  # same kernels in every process
    # Adam's first step is g/|g|: with eps 1e-8 a gradient of ~1e-9 flips sign on rounding noise alone
    backend = TorchBackend(tiny_model(), OptimConfig(lr=1e-2, eps=1e-4), total_steps=10)
    batch = full_batch()
    micro = [rows(batch, r) for r in rank_rows]
    tokens, seqs = global_counts(micro)
    backend.train_step(micro, make_dapo_loss(DapoConfig(), tokens, seqs))
    return {k: v.detach().clone() for k, v in backend.model.state_dict().items()}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    mine = [[0, 2, 4], [6]] if rank == 0 else [[1, 3], [5, 7]]  # uneven micro-batches on purpose
    params = step(mine)
    if rank == 0:
        torch.save(params, out)
    torch.distributed.destroy_process_group()


def test_two_process_gloo_equals_one_process(tmp_path) -> None:
    single = step([[0, 1, 2, 3], [4, 5, 6, 7]])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path / "p.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "p.pt")
    for name, value in single.items():
        assert torch.allclose(value, ddp[name], atol=1e-6), name
