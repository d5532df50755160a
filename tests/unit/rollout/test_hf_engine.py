"""HF engine: log-probs of sampled tokens equal a teacher-forced forward pass; EOS/length; seeding."""

from __future__ import annotations

import torch

from mathfirst_hpc.config import ModelConfig
from mathfirst_hpc.learner.torch_backend import token_logprobs
from mathfirst_hpc.models import build_model, eos_ids, prompt_ids, train_tokenizer
from mathfirst_hpc.rollout.base import SamplingParams
from mathfirst_hpc.rollout.hf import HFEngine

TEXTS = [f"Q: {a} plus {b}? A: \\boxed{{{a + b}}}" for a in range(40) for b in range(15)]


def engine():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    model = build_model(ModelConfig(vocab_size=400), tok, seed=3)
    return HFEngine(model, tok, eos_ids(tok), batch_size=5), tok


def test_logprobs_match_teacher_forcing() -> None:
    eng, tok = engine()
    prompts = [prompt_ids(tok, [{"role": "user", "content": q}], 64) for q in ("Q: 3 plus 4?", "Q: 12 plus 30? long")]
    sampling = SamplingParams(n=3, temperature=0.8, top_p=0.9, max_new_tokens=12, seed=5)
    groups = eng.generate(prompts, sampling)
    assert [len(g) for g in groups] == [3, 3]
    for group in groups:
        for s in group:
            ids = torch.tensor([s.prompt_token_ids + s.token_ids])
            with torch.no_grad():
                logits = eng.model(input_ids=ids).logits
            logp, _ = token_logprobs(logits, ids, temperature=0.8)
            forward = logp[0, len(s.prompt_token_ids):]
            assert torch.allclose(forward, torch.tensor(s.logprobs), atol=1e-4), (forward, s.logprobs)
            assert s.finish_reason in ("stop", "length")
            if s.finish_reason == "length":
                assert len(s.token_ids) == 12
            else:
                assert s.token_ids[-1] in eos_ids(tok)


def test_seeded_and_eos_stop() -> None:
    eng, tok = engine()
    prompt = [prompt_ids(tok, [{"role": "user", "content": "Q: 1 plus 1?"}], 64)]
    a = eng.generate(prompt, SamplingParams(n=4, max_new_tokens=8, seed=11))
    b = eng.generate(prompt, SamplingParams(n=4, max_new_tokens=8, seed=11))
    assert [s.token_ids for s in a[0]] == [s.token_ids for s in b[0]]
    # force EOS: make the EOS logit dominate through the output bias
    with torch.no_grad():
        eng.model.lm_head.weight[eos_ids(tok)[0]] += 50 * eng.model.model.norm.weight.sign()
    c = eng.generate(prompt, SamplingParams(n=2, max_new_tokens=8, seed=1))
    assert all(s.finish_reason == "stop" and len(s.token_ids) >= 1 for s in c[0])
