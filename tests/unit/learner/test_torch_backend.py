"""The torch backend's training forward computes what the plain full-logit forward computes.

- ``train_step`` runs each shared prompt once (``SharedPrefixForward``) and applies the head and log-softmax to
  the loss positions only: the DAPO and SFT gradients and
  metrics equal those of ``model(...).logits`` -> ``token_logprobs`` on every position (padded RL rows with and
  without temperature, packed SFT rows with their block-diagonal mask).
- The fused token log-prob matches ``log_softmax`` + ``gather`` in value and gradient (float64 gradcheck).
- Old log-probs from the rollout give TRL's gradient: with one optimizer step per generation TRL sets old =
  logp.detach() (ratio exactly 1); ours reads the rollout's log-probs of the same weights instead, and the DAPO
  gradient agrees to float rounding.
"""

from __future__ import annotations

import pytest
import torch

from mathfirst_hpc.config import DapoConfig, ModelConfig, OptimConfig
from mathfirst_hpc.data.synthetic import corpus_texts, make_problems
from mathfirst_hpc.learner.base import TokenBatch
from mathfirst_hpc.learner.dapo import global_counts, make_dapo_loss
from mathfirst_hpc.learner.sft import collate_packed, make_sft_loss, tokenize_example
from mathfirst_hpc.learner.torch_backend import (TorchBackend, _RmsNorm, _TokenLogprob, prefix_groups, rms_norm,
                                                 shared_prefix_token_logprobs)
from mathfirst_hpc.models import build_model, eos_ids, prompt_ids, train_tokenizer
from mathfirst_hpc.rollout.base import SamplingParams
from mathfirst_hpc.rollout.hf import HFEngine
from tests.support.rl_batches import learner_batch

TEXTS = [f"Q: {a} plus {b}? A: \\boxed{{{a + b}}}" for a in range(40) for b in range(15)]
QUESTIONS = ("Q: 3 plus 4?", "Q: 12 plus 30? and a longer prompt than the others", "Q: 1?")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


def rollout_batch(backend: TorchBackend, tokenizer, temperature: float) -> TokenBatch:
    engine = HFEngine(backend.model, tokenizer, eos_ids(tokenizer), batch_size=12)
    prompts = [prompt_ids(tokenizer, [{"role": "user", "content": q}], 64) for q in QUESTIONS]
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=temperature, max_new_tokens=16, seed=2))
    batch = learner_batch([s for g in groups for s in g], tokenizer.pad_token_id, temperature)
    batch.advantages = torch.linspace(-1.5, 1.5, batch.num_sequences)
    return batch


def gradient(backend: TorchBackend, forward, batch: TokenBatch, loss_fn) -> tuple[dict, dict]:
    backend.model.zero_grad(set_to_none=True)
    logp, entropy = forward(batch)
    loss, metrics = loss_fn(logp, entropy, batch)
    loss.backward()
    return {n: p.grad.clone() for n, p in backend.model.named_parameters() if p.grad is not None}, metrics


def assert_same_gradients(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=1e-5), (name, (a[name] - b[name]).abs().max())


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_loss_position_forward_gives_the_full_forward_gradient(tokenizer, preset: str, temperature: float) -> None:
    backend = TorchBackend(build_model(ModelConfig(preset=preset, vocab_size=400), tokenizer, seed=1),
                           OptimConfig(), total_steps=1)
    batch = rollout_batch(backend, tokenizer, temperature)
    # old log-probs away from the current ones so that every clipping region is exercised
    batch.old_logprobs = batch.old_logprobs + 0.4 * torch.randn(batch.old_logprobs.shape) * batch.loss_mask
    tokens, seqs = global_counts([batch])
    loss_fn = make_dapo_loss(DapoConfig(), tokens, seqs)
    groups = prefix_groups(batch)
    assert groups is not None and groups.prefix_ids.shape[0] == len(QUESTIONS)  # the shared-prefix path runs
    full, full_metrics = gradient(backend, backend._forward, batch, loss_fn)
    lean, lean_metrics = gradient(backend, backend._loss_forward, batch, loss_fn)
    assert_same_gradients(full, lean, atol=1e-6)
    assert full_metrics.keys() == lean_metrics.keys()
    for key in full_metrics:
        assert full_metrics[key] == pytest.approx(lean_metrics[key], rel=1e-5, abs=1e-6), key
    assert full_metrics["clip_frac_low"] > 0 or full_metrics["clip_frac_high"] > 0


def test_shared_prefix_rows_in_any_order_with_loss_gaps(tokenizer) -> None:
    """Groups interleaved and of different sizes, a hole in one row's loss mask, a row whose prompt is unique."""
    backend = TorchBackend(build_model(ModelConfig(vocab_size=400), tokenizer, seed=6), OptimConfig(),
                           total_steps=1)
    batch = rollout_batch(backend, tokenizer, temperature=1.0)
    order = torch.tensor([0, 5, 9, 1, 6, 10, 2, 11, 7])  # rows 3, 4, 8 dropped: groups of 3, 2 and 4 rows
    batch = TokenBatch(input_ids=batch.input_ids[order], attention_mask=batch.attention_mask[order],
                       loss_mask=batch.loss_mask[order].clone(), old_logprobs=batch.old_logprobs[order],
                       advantages=batch.advantages[order], temperature=1.0)
    first = int(batch.loss_mask[0].int().argmax())
    batch.loss_mask[0, first + 2:first + 4] = 0  # a hole: tokens kept in the suffix, not in the loss
    lone = prompt_ids(tokenizer, [{"role": "user", "content": "Q: 7 plus 7?"}], 64) + [5, 6, 7]
    row = torch.full((1, batch.input_ids.shape[1]), tokenizer.pad_token_id, dtype=torch.long)
    row[0, :len(lone)] = torch.tensor(lone)
    extra = torch.zeros_like(row)
    extra[0, :len(lone)] = 1
    loss_row = torch.zeros_like(row)
    loss_row[0, len(lone) - 3:len(lone)] = 1
    batch = TokenBatch(input_ids=torch.cat([batch.input_ids, row]),
                       attention_mask=torch.cat([batch.attention_mask, extra]),
                       loss_mask=torch.cat([batch.loss_mask, loss_row]),
                       old_logprobs=torch.cat([batch.old_logprobs, -torch.ones(1, row.shape[1]) * loss_row]),
                       advantages=torch.cat([batch.advantages, torch.tensor([0.7])]), temperature=1.0)
    groups = prefix_groups(batch, min_saving=0.0)
    assert groups is not None and groups.prefix_ids.shape[0] == 4
    loss_fn = make_dapo_loss(DapoConfig(), *global_counts([batch]))
    full, _ = gradient(backend, backend._forward, batch, loss_fn)
    shared, _ = gradient(backend, lambda b: shared_prefix_token_logprobs(backend.model, b, groups), batch, loss_fn)
    assert_same_gradients(full, shared, atol=1e-6)
    with torch.no_grad():
        a, _ = backend._forward(batch)
        b, _ = shared_prefix_token_logprobs(backend.model, batch, groups)
    mask = batch.loss_mask.bool()
    assert (a[mask] - b[mask]).abs().max() < 1e-5 and bool((b[~mask] == 0).all())


def test_prefix_groups_refuses_what_it_cannot_share(tokenizer) -> None:
    ids = torch.arange(1, 13).reshape(3, 4)
    ones = torch.ones_like(ids)
    loss = torch.tensor([[0, 0, 1, 1]] * 3)
    assert prefix_groups(TokenBatch(input_ids=ids, attention_mask=ones, loss_mask=loss)) is None  # all unique
    same = ids[:1].expand(3, -1)
    assert prefix_groups(TokenBatch(input_ids=same, attention_mask=ones, loss_mask=loss)) is not None
    left_padded = ones.clone()
    left_padded[0, 0] = 0
    assert prefix_groups(TokenBatch(input_ids=same, attention_mask=left_padded, loss_mask=loss)) is None
    no_loss = loss.clone()
    no_loss[1] = 0
    assert prefix_groups(TokenBatch(input_ids=same, attention_mask=ones, loss_mask=no_loss)) is None


def test_loss_position_forward_on_packed_sft_rows() -> None:
    tok = train_tokenizer(corpus_texts(n=400, seed=0), vocab_size=400)
    examples = [tokenize_example(tok, p, 160) for p in make_problems("math", 6, seed=0)]
    packed = collate_packed(examples, tok.pad_token_id, 400)
    assert packed.attention_mask.dim() == 4  # block-diagonal mask, positions restart per example
    backend = TorchBackend(build_model(ModelConfig(vocab_size=400), tok, seed=2), OptimConfig(), total_steps=1)
    loss_fn = make_sft_loss(float(packed.loss_mask.sum()))
    full, full_metrics = gradient(backend, backend._forward, packed, loss_fn)
    lean, lean_metrics = gradient(backend, backend._loss_forward, packed, loss_fn)
    assert_same_gradients(full, lean, atol=1e-6)
    assert full_metrics["loss"] == pytest.approx(lean_metrics["loss"], rel=1e-6)


def test_fused_token_logprob_value_and_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(7, 11, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (7,))
    logp, entropy = _TokenLogprob.apply(logits, targets)
    reference = torch.log_softmax(logits, -1)
    assert torch.allclose(logp, reference.gather(-1, targets[:, None]).squeeze(-1))
    assert torch.allclose(entropy, -(reference.exp() * reference).sum(-1))
    assert torch.autograd.gradcheck(lambda x: _TokenLogprob.apply(x, targets)[0], (logits,))


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-llama"])
def test_rms_norm_is_the_hf_module(tokenizer, preset: str) -> None:
    """Forward bit for bit (the same float32 ops in the same order), gradients to float rounding, and the module
    itself for anything else (float64 here)."""
    model = build_model(ModelConfig(preset=preset, vocab_size=400), tokenizer, seed=3)
    layer = model.model.layers[0]
    module = layer.input_layernorm
    module.weight.data.normal_()
    x = torch.randn(3, 5, module.weight.shape[0], requires_grad=True)
    grad = torch.randn(3, 5, module.weight.shape[0])
    expected = module(x)
    expected.backward(grad)
    grad_x, grad_w = x.grad.clone(), module.weight.grad.clone()
    x.grad, module.weight.grad = None, None
    got = rms_norm(module, x)
    assert torch.equal(got, expected) and got.grad_fn.name().endswith("_RmsNormBackward")
    got.backward(grad)
    assert torch.allclose(x.grad, grad_x, atol=1e-6) and torch.allclose(module.weight.grad, grad_w, atol=1e-5)
    if hasattr(layer.self_attn, "q_norm"):  # Qwen3's per-head norms
        q = torch.randn(2, 4, 3, layer.self_attn.head_dim)
        assert torch.equal(rms_norm(layer.self_attn.q_norm, q), layer.self_attn.q_norm(q))
    x64 = torch.randn(2, module.weight.shape[0], dtype=torch.float64)
    assert rms_norm(module, x64).dtype == module(x64).dtype
    weight = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w: _RmsNorm.apply(t, w, 1e-6),
                                    (torch.randn(4, 6, dtype=torch.float64, requires_grad=True), weight))


def test_rollout_old_logprobs_give_trls_gradient(tokenizer) -> None:
    """TRL (num_iterations=1): old = logp.detach(). Ours: old = the rollout's log-probs. Same DAPO gradient."""
    backend = TorchBackend(build_model(ModelConfig(vocab_size=400), tokenizer, seed=5), OptimConfig(),
                           total_steps=1)
    batch = rollout_batch(backend, tokenizer, temperature=1.0)
    tokens, seqs = global_counts([batch])
    loss_fn = make_dapo_loss(DapoConfig(), tokens, seqs)
    ours, metrics = gradient(backend, backend._loss_forward, batch, loss_fn)

    def trl_forward(b: TokenBatch):
        logp, entropy = backend._loss_forward(b)
        b.old_logprobs = logp.detach()
        return logp, entropy

    trl, trl_metrics = gradient(backend, trl_forward, TokenBatch(**{**batch.__dict__}), loss_fn)
    assert trl_metrics["ratio_mean"] == 1.0
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["clip_frac_low"] == metrics["clip_frac_high"] == 0.0
    scale = max(float(g.abs().max()) for g in trl.values())
    assert_same_gradients(ours, trl, atol=1e-5 * scale)
