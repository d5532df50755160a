"""HF transformers rollout engine (CPU default; also works on one GPU).

A plain sampling loop over the model's KV cache rather than ``model.generate``: it returns, for each sampled
token, its log-probability under ``log_softmax(logits / temperature)`` over the full vocabulary, which is exactly
what the learner recomputes (top-p only restricts which tokens can be sampled). Prompts are left-padded and
batched; a sequence stops at an EOS token (finish reason ``stop``, EOS kept) or after ``max_new_tokens``
(``length``). Sampling is seeded per call with a private ``torch.Generator``, so results do not depend on the
global RNG.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .base import Sample, SamplingParams
from .fast_decode import LlamaFamilyDecoder


class HFEngine:
    spans_ranks = False  # each rank has its own: the ranks of a job may generate different shards

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, eos_token_ids: list[int],
                 batch_size: int = 64, device: str | torch.device | None = None, fast_decode: bool = True
                 ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        self.batch_size = batch_size
        self.fast_decode = fast_decode
        """Decode Qwen3/Llama with rollout/fast_decode.py (same modules and weights, less overhead)."""
        self.device = torch.device(device) if device else next(model.parameters()).device
        # transformers >= 5 names the KV cache argument "cache"; older releases "past_key_values"
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.last_generate_s = 0.0
        self.last_generated_tokens = 0

    # RolloutEngine ---------------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Sample]]:
        start = time.perf_counter()
        # sampling happens on the model's device: copying [batch, vocab] probabilities to the host every token
        # costs more than the forward pass on a GPU (151k vocab)
        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        out: list[list[Sample]] = [[] for _ in prompts]
        tokens = 0
        per_batch = max(1, self.batch_size // sampling.n)  # whole groups per batch: one prefill per prompt
        for lo in range(0, len(prompts), per_batch):
            chunk = list(range(lo, min(len(prompts), lo + per_batch)))
            samples = self._generate_batch([prompts[i] for i in chunk], sampling, generator)
            for k, sample in enumerate(samples):
                index = chunk[k // sampling.n]
                sample.prompt_index = index
                out[index].append(sample)
                tokens += len(sample.token_ids)
        self.last_generate_s = time.perf_counter() - start
        self.last_generated_tokens = tokens
        return out

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        self.model.load_state_dict(state_dict, strict=False)

    def close(self) -> None:
        pass

    # internals -------------------------------------------------------------------------------------------------
    @torch.inference_mode()  # cheaper per op than no_grad (no version counters); nothing generated is trained on
    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingParams,
                        generator: torch.Generator) -> list[Sample]:
        was_training = self.model.training
        self.model.eval()
        try:
            return self._sample_loop(prompts, sampling, generator)
        finally:
            self.model.train(was_training)

    def _sample_loop(self, prompts: list[list[int]], sampling: SamplingParams, generator: torch.Generator
                     ) -> list[Sample]:
        """Prefill each prompt once, repeat its KV cache for its ``n`` samples, then decode all rows."""
        input_ids, attention = self._left_padded(prompts)
        logits, next_logits = self._prefill(input_ids, attention, sampling)
        rows = logits.shape[0]
        eos = torch.tensor(self.eos_token_ids, device=self.device)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        new_tokens, new_logprobs = [], []
        for step in range(sampling.max_new_tokens):
            token, logprob = self._sample(logits, sampling.temperature, sampling.top_p, generator)
            token = torch.where(done, self.pad_id, token)
            new_tokens.append(token)
            new_logprobs.append(logprob)
            done = done | torch.isin(token, eos)
            if step + 1 == sampling.max_new_tokens or bool(done.all()):
                break
            logits = next_logits(token)
        tokens = torch.stack(new_tokens, dim=1).cpu()
        logprobs = torch.stack(new_logprobs, dim=1).cpu()
        n = sampling.n
        return [self._to_sample(prompts[row // n], tokens[row], logprobs[row]) for row in range(rows)]

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt):] = 1
        return input_ids.to(self.device), attention.to(self.device)

    def _prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, sampling: SamplingParams
                 ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """First-token logits of every sample row [prompts * n, vocab] and the function that appends a token
        per row and returns the next logits: the lean decoder (rollout/fast_decode.py) or ``model.forward``
        over HF's KV cache."""
        n = sampling.n
        if self.fast_decode and LlamaFamilyDecoder.supports(self.model):
            fast = LlamaFamilyDecoder(self.model, attention, sampling.max_new_tokens, repeat=n)
            return fast.prefill(input_ids).repeat_interleave(n, dim=0), fast.step
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        state = {"past": getattr(out, "cache", None) or out.past_key_values,
                 "attention": attention.repeat_interleave(n, dim=0),
                 "positions": positions[:, -1:].repeat_interleave(n, dim=0)}
        if n > 1:
            state["past"].batch_repeat_interleave(n)

        def next_logits(token: torch.Tensor) -> torch.Tensor:
            state["attention"] = torch.cat([state["attention"], torch.ones_like(state["attention"][:, :1])], -1)
            state["positions"] = state["positions"] + 1
            out = self.model(input_ids=token[:, None], attention_mask=state["attention"],
                             position_ids=state["positions"], use_cache=True, logits_to_keep=1,
                             **{self._cache_kw: state["past"]})
            state["past"] = getattr(out, "cache", None) or out.past_key_values
            return out.logits[:, -1, :]
        return out.logits[:, -1, :].repeat_interleave(n, dim=0), next_logits

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row from softmax(logits / temperature) restricted to the top-p nucleus, and its
        log-probability under the full (unrestricted) distribution, as the learner computes it."""
        scaled = logits.float()
        if temperature != 1.0:  # dividing by 1.0 is exact: skip a [rows, vocab] pass
            scaled = scaled / temperature
        # log_softmax gives the reported log-prob by the learner's formula; its exp the sampling weights (one op
        # each: cheaper than logsumexp, subtract, exp)
        logp = torch.log_softmax(scaled, dim=-1)
        probs = logp.exp()
        order = None
        if top_p < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
            probs = probs.masked_fill((probs.cumsum(-1) - probs) >= top_p, 0.0)
        # inverse CDF: one uniform per row (drawing one per vocab entry, as an exponential race does, costs
        # more than the model's decode step on a CPU); u is kept below the total so a zero-mass tail is never hit
        cdf = probs.cumsum(dim=-1)
        total = cdf[:, -1:]
        u = torch.minimum(torch.rand(total.shape, generator=generator, device=total.device) * total,
                          total.nextafter(torch.zeros_like(total)))
        token = torch.searchsorted(cdf, u, right=True)
        if order is not None:
            token = order.gather(-1, token)
        return token.squeeze(-1), logp.gather(-1, token).squeeze(-1)

    def _to_sample(self, prompt: list[int], tokens: torch.Tensor, logprobs: torch.Tensor) -> Sample:
        ids = tokens.tolist()
        finish = "length"
        for k, tok in enumerate(ids):
            if tok in self.eos_token_ids:
                ids, finish = ids[:k + 1], "stop"
                break
        lps = logprobs[:len(ids)].tolist()
        text = self.tokenizer.decode([t for t in ids if t not in self.eos_token_ids], skip_special_tokens=False)
        return Sample(prompt_index=-1, prompt_token_ids=list(prompt), token_ids=ids, logprobs=lps,
                      finish_reason=finish, text=text)
