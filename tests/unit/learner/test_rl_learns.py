"""The RL machinery learns a trivially learnable reward: the real HF engine, group advantages, DAPO loss and torch
learner, on a tiny random model rewarded for an even first response token (about half of the samples at start).

If this fails, the loop has a bug (sign, alignment, advantages); if it passes and a task still does not improve,
the task or the settings are the problem, not the machinery."""

from __future__ import annotations

import numpy as np
import torch

from mathfirst_hpc.config import DapoConfig, ModelConfig, OptimConfig
from mathfirst_hpc.learner.base import TokenBatch
from mathfirst_hpc.learner.dapo import global_counts, group_advantages, make_dapo_loss
from mathfirst_hpc.learner.torch_backend import TorchBackend
from mathfirst_hpc.models import build_model, eos_ids, train_tokenizer
from mathfirst_hpc.rollout.base import SamplingParams
from mathfirst_hpc.rollout.hf import HFEngine
from tests.support.rl_batches import learner_batch


def _batch(groups, rewards: np.ndarray, pad_id: int) -> TokenBatch:
    gids = np.repeat(np.arange(len(groups)), len(groups[0]))
    advantages = torch.tensor(group_advantages(rewards, gids), dtype=torch.float32)
    return learner_batch([s for group in groups for s in group], pad_id, 1.0, advantages)


def test_dapo_raises_a_simple_reward() -> None:
    torch.manual_seed(0)
    tok = train_tokenizer([f"{a} plus {b} is {a + b}" for a in range(30) for b in range(30)], vocab_size=300)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                    intermediate_size=128), tok, seed=0)
    backend = TorchBackend(model, OptimConfig(lr=3e-3), total_steps=100)
    engine = HFEngine(model, tok, eos_ids(tok), device="cpu")
    prompts = [tok(f"{a} plus {a + 1} is")["input_ids"] for a in range(8)]
    dapo = DapoConfig()
    means = []
    for it in range(20):
        groups = engine.generate(prompts, SamplingParams(n=8, temperature=1.0, max_new_tokens=3, seed=it))
        rewards = np.array([float(s.token_ids[0] % 2 == 0) for g in groups for s in g])
        means.append(float(rewards.mean()))
        batch = _batch(groups, rewards, tok.pad_token_id)
        tokens, seqs = global_counts([batch])
        backend.train_step([batch], make_dapo_loss(dapo, tokens, seqs))
    assert np.mean(means[:2]) < 0.75, means
    assert np.mean(means[-3:]) > np.mean(means[:2]) + 0.25, means
