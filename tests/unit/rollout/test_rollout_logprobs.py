"""The rollout's log-probs are the learner's: why the DAPO step may take old log-probs from the rollout instead of
a second forward pass (what TRL would compute with its extra forward, when it does one).

For the same weights, the log-prob the HF engine stores for each sampled token equals the log-prob the learner
computes by teacher forcing the whole sequence, to < 1e-5: on the right-padded batches the RL loop trains on, in
the learner's ``forward_logprobs`` and in the path ``train_step`` uses, for the lean decode step and for plain
``model.forward``, with and without temperature / top-p, for Qwen3 and Llama. The sampler draws from the nucleus
with the right frequencies and reports the full-distribution log-prob.
"""

from __future__ import annotations

import math

import pytest
import torch

from mathfirst_hpc.config import ModelConfig, OptimConfig
from mathfirst_hpc.learner.torch_backend import TorchBackend
from mathfirst_hpc.models import build_model, eos_ids, prompt_ids, train_tokenizer
from mathfirst_hpc.rollout.base import SamplingParams
from mathfirst_hpc.rollout.hf import HFEngine
from tests.support.rl_batches import learner_batch

TEXTS = [f"Q: {a} plus {b}? A: \\boxed{{{a + b}}}" for a in range(40) for b in range(15)]
QUESTIONS = ("Q: 3 plus 4?", "Q: 12 plus 30? and a longer prompt than the others", "Q: 1?")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("fast_decode", [True, False])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_rollout_logprobs_equal_learner_logprobs(tokenizer, preset: str, fast_decode: bool, temperature: float,
                                                 top_p: float) -> None:
    model = build_model(ModelConfig(preset=preset, vocab_size=400), tokenizer, seed=3)
    backend = TorchBackend(model, OptimConfig(), total_steps=1)
    engine = HFEngine(backend.model, tokenizer, eos_ids(tokenizer), batch_size=8, fast_decode=fast_decode)
    prompts = [prompt_ids(tokenizer, [{"role": "user", "content": q}], 64) for q in QUESTIONS]
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=temperature, top_p=top_p,
                                                     max_new_tokens=20, seed=5))
    samples = [s for group in groups for s in group]
    assert len(samples) == 12 and sum(len(s.token_ids) for s in samples) > 100
    batch = learner_batch(samples, tokenizer.pad_token_id, temperature)
    mask = batch.loss_mask.bool()
    teacher_forced = backend.forward_logprobs(batch)
    with torch.no_grad():
        trained, _ = backend._loss_forward(batch)  # what train_step feeds the loss
    assert (teacher_forced[mask] - batch.old_logprobs[mask]).abs().max() < TOLERANCE
    assert (trained[mask] - batch.old_logprobs[mask]).abs().max() < TOLERANCE
    # the comparison can fail: one wrong token position is far outside the tolerance
    shifted = batch.old_logprobs.roll(1, dims=1)
    assert (teacher_forced[mask] - shifted[mask]).abs().max() > 100 * TOLERANCE


def test_lean_decode_equals_model_forward(tokenizer) -> None:
    """The lean decode step and plain ``model.forward`` give the same samples for the same seed."""
    model = build_model(ModelConfig(vocab_size=400), tokenizer, seed=4)
    prompts = [prompt_ids(tokenizer, [{"role": "user", "content": q}], 64) for q in QUESTIONS]
    sampling = SamplingParams(n=3, temperature=0.9, max_new_tokens=16, seed=8)
    fast = HFEngine(model, tokenizer, eos_ids(tokenizer), fast_decode=True).generate(prompts, sampling)
    slow = HFEngine(model, tokenizer, eos_ids(tokenizer), fast_decode=False).generate(prompts, sampling)
    for a, b in zip([s for g in fast for s in g], [s for g in slow for s in g]):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < TOLERANCE


def test_sampler_draws_from_the_nucleus() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0])
    rows = 40_000
    generator = torch.Generator().manual_seed(0)
    temperature = 0.8
    full = torch.log_softmax(logits / temperature, dim=-1)
    token, logprob = HFEngine._sample(logits.expand(rows, -1), temperature, 1.0, generator)
    freq = torch.bincount(token, minlength=5).double() / rows
    assert torch.allclose(freq, full.exp().double(), atol=0.01), freq
    assert torch.allclose(logprob, full[token], atol=1e-6)
    # top-p 0.8: the nucleus is the two most likely tokens (0.68 + 0.20 >= 0.8), renormalised
    token, logprob = HFEngine._sample(logits.expand(rows, -1), temperature, 0.8, generator)
    probs = full.exp()
    assert set(token.tolist()) == {0, 1}
    nucleus = probs[:2] / probs[:2].sum()
    assert abs(float((token == 0).double().mean()) - float(nucleus[0])) < 0.01
    assert torch.allclose(logprob, full[token], atol=1e-6)  # the full-distribution log-prob, as the learner's
    assert not math.isclose(float(logprob[token == 0][0]), float(torch.log(nucleus[0])), abs_tol=1e-3)


def test_sampler_never_draws_a_zero_probability_token() -> None:
    logits = torch.tensor([[0.0, -200.0, 0.0, -200.0]]).expand(20_000, -1)  # exp(-200) underflows to 0
    token, _ = HFEngine._sample(logits, 1.0, 1.0, torch.Generator().manual_seed(1))
    assert set(token.tolist()) == {0, 2}
