"""SFT: loss only on assistant tokens, packing equals padding, the loss falls on the tiny corpus."""

from __future__ import annotations

import torch

from mathfirst_hpc.config import ModelConfig, OptimConfig
from mathfirst_hpc.data.synthetic import corpus_texts, make_problems
from mathfirst_hpc.learner.dapo import global_counts
from mathfirst_hpc.learner.sft import collate_packed, collate_padded, make_sft_loss, tokenize_example
from mathfirst_hpc.learner.torch_backend import TorchBackend
from mathfirst_hpc.models import build_model, train_tokenizer


def setup(n: int = 64):
    torch.manual_seed(0)
    tok = train_tokenizer(corpus_texts(n=800, seed=0), vocab_size=400)
    problems = make_problems("math", n, seed=0)
    examples = [tokenize_example(tok, p, 160) for p in problems]
    return tok, problems, examples


def test_loss_mask_covers_exactly_the_solution() -> None:
    tok, problems, examples = setup(4)
    ex = examples[0]
    trained = [t for t, m in zip(ex.input_ids, ex.loss_mask) if m]
    assert tok.decode(trained[:-1]) == problems[0].solution
    assert trained[-1] == tok.eos_token_id
    assert ex.loss_mask[0] == 0


def test_packing_gives_the_padding_loss() -> None:
    tok, _, examples = setup(6)
    model = build_model(ModelConfig(vocab_size=400), tok, seed=1)
    backend = TorchBackend(model, OptimConfig(), total_steps=1)
    padded, packed = collate_padded(examples, tok.pad_token_id), collate_packed(examples, tok.pad_token_id, 400)
    assert packed.input_ids.shape[0] < padded.input_ids.shape[0]
    tokens = float(padded.loss_mask.sum())
    loss = make_sft_loss(tokens)
    a = loss(*[x for x in _logp(backend, padded)], padded)[0]
    b = loss(*[x for x in _logp(backend, packed)], packed)[0]
    assert torch.allclose(a, b, atol=1e-5)


def _logp(backend, batch):
    with torch.no_grad():
        return backend._forward(batch)


def test_loss_falls() -> None:
    tok, _, examples = setup(64)
    model = build_model(ModelConfig(vocab_size=400), tok, seed=0)
    backend = TorchBackend(model, OptimConfig(lr=3e-3), total_steps=30)
    losses = []
    for step in range(30):
        chunk = [examples[(step * 16 + i) % len(examples)] for i in range(16)]
        micro = [collate_padded(chunk[:8], tok.pad_token_id), collate_padded(chunk[8:], tok.pad_token_id)]
        tokens, _ = global_counts(micro)
        losses.append(backend.train_step(micro, make_sft_loss(tokens))["loss"])
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
