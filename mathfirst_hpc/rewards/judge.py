"""Model-based judge for free-form answers (STEM short answers that no rule can compare).

A judge model reads the question, the reference answer and the response's final answer, and must reply with one
word: ``CORRECT`` or ``INCORRECT``. The reply is parsed strictly (:func:`parse_verdict`): anything else is
``unparseable`` (score 0, counted), never read as "incorrect" or "correct". Verdicts are cached by
(reference, answer), so a group of G responses with the same final answer costs one judge call.

Backends, picked by ``reward.judge.backend`` from :data:`BACKENDS`:

- ``hf``: transformers ``generate`` (greedy) on CPU or one GPU, batched with left padding;
- ``vllm``: a vLLM engine (GPU); ``vllm`` is imported only inside :class:`VllmJudgeBackend`;
- ``openai``: :class:`OpenAiJudgeBackend`, HTTP POSTs to ``URL/v1/completions`` of an OpenAI-compatible server:
  ``vllm serve MODEL`` on a GPU node, or ``python -m mathfirst_hpc.services.judge_server`` (HF, CPU, tests).
  The Slurm path runs the judge as its own job (``launch/services.py``) and the rollout tasks use this client
  with the recorded address. An unreachable or failing server is retried with a visible warning per attempt;
  when the retries run out the batch's verdict is ``error`` (never a 0 the policy learns from).

Usage::

    judge = Judge(HfJudgeBackend.from_path("/models/judge"), batch_size=16)
    results = judge.judge_batch([("What is the boiling point of water at sea level?", "100 C", "373 K")])

Simplification: the prompt is plain text (no chat template) so that any causal LM works; the tests use a tiny
random-init model, whose replies are gibberish and therefore exercise the "unparseable" path.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Protocol, Sequence

from .base import RewardResult

JUDGE_PROMPT = (
    "You grade answers. Compare the student's final answer with the reference answer; they match if they mean "
    "the same thing (equal values, equivalent units, synonyms).\n"
    "Question: {question}\nReference answer: {reference}\nStudent answer: {answer}\n"
    "Reply with exactly one word, CORRECT or INCORRECT.\nVerdict:"
)
_VERDICT = re.compile(r"^\W*(correct|incorrect)\W*$", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'correct' / 'incorrect' when the first non-empty line is exactly that word (any case, punctuation
    around it allowed), else None."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _VERDICT.match(lines[0])
    return match.group(1).lower() if match else None


class JudgeBackend(Protocol):
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completions, one per prompt, in order."""


class HfJudgeBackend:
    """transformers ``generate`` with left padding; pass a model and tokenizer, or use :meth:`from_path`."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def from_path(cls, path: str) -> "HfJudgeBackend":
        from ..models import load_model, load_tokenizer
        return cls(load_model(path), load_tokenizer(path))

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True)
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class VllmJudgeBackend:
    """A vLLM engine on the judge model (GPU). vllm is imported here only."""

    def __init__(self, path: str, gpu_memory_utilization: float = 0.3) -> None:
        from vllm import LLM  # noqa: PLC0415 - optional dependency, GPU only
        self._llm = LLM(model=path, gpu_memory_utilization=gpu_memory_utilization)

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams  # noqa: PLC0415
        outputs = self._llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
        return [o.outputs[0].text for o in outputs]


log = logging.getLogger("mathfirst_hpc.rewards")


class JudgeUnavailable(RuntimeError):
    """The judge server did not answer after every retry (its items get verdict 'error')."""


class OpenAiJudgeBackend:
    """Greedy completions from an OpenAI-compatible server (``POST URL/v1/completions``, a list of prompts).

    ``retries`` attempts after the first, ``backoff_s`` doubling between them; each failed attempt logs a warning
    (and prints it to stderr, the job log) naming the URL and the error, then :class:`JudgeUnavailable` is raised.
    """

    def __init__(self, url: str, model: str = "judge", retries: int = 3, backoff_s: float = 1.0,
                 timeout_s: float = 120.0) -> None:
        self.url, self.model = url.rstrip("/"), model
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s

    def _post(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        body = json.dumps({"model": self.model, "prompt": prompts, "max_tokens": max_new_tokens,
                           "temperature": 0.0}).encode()
        request = urllib.request.Request(f"{self.url}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            reply = json.loads(response.read())
        choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise ValueError(f"{len(choices)} choices for {len(prompts)} prompts")
        return [str(c["text"]) for c in choices]

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        delay_s = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return self._post(prompts, max_new_tokens)
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                message = (f"judge server {self.url} failed ({type(exc).__name__}: {exc}); "
                           f"attempt {attempt + 1} of {self.retries + 1}"
                           + (f", retrying in {delay_s:.1f} s" if attempt < self.retries else ", giving up: "
                              "these samples get verdict 'error'"))
                log.warning(message)
                print(f"[judge] {message}", file=sys.stderr, flush=True)
                if attempt == self.retries:
                    raise JudgeUnavailable(message) from exc
                time.sleep(delay_s)
                delay_s *= 2
        raise AssertionError("not reached")


class Judge:
    """Batched, cached judging of (question, reference, answer) triples."""

    def __init__(self, backend: JudgeBackend, max_new_tokens: int = 16, batch_size: int = 16,
                 cache: bool = True) -> None:
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.use_cache = cache
        self._cache: dict[tuple[str, str], RewardResult] = {}
        self._lock = threading.Lock()
        self.calls = 0
        """Prompts sent to the backend (cache hits are not counted)."""

    def judge_batch(self, items: Sequence[tuple[str, str, str]]) -> list[RewardResult]:
        keys = [(str(ref).strip(), str(ans).strip()) for _, ref, ans in items]
        with self._lock:
            todo = {}
            for (question, _, _), key in zip(items, keys):
                if key not in self._cache and key not in todo:
                    todo[key] = question
        results = self._run(list(todo.items()))
        with self._lock:
            if self.use_cache:
                self._cache.update(results)
            return [results.get(key) or self._cache[key] for key in keys]

    def _run(self, todo: list[tuple[tuple[str, str], str]]) -> dict[tuple[str, str], RewardResult]:
        out: dict[tuple[str, str], RewardResult] = {}
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            prompts = [JUDGE_PROMPT.format(question=q[:2000], reference=ref, answer=ans) for (ref, ans), q in chunk]
            self.calls += len(prompts)
            try:
                replies = self.backend.generate(prompts, self.max_new_tokens)
            except Exception as exc:  # noqa: BLE001 - a judge crash is a verifier error, not a verdict
                for key, _ in chunk:
                    out[key] = RewardResult(0.0, "error", f"judge failed: {type(exc).__name__}: {exc}"[:160])
                continue
            for (key, _), reply in zip(chunk, replies):
                verdict = parse_verdict(reply)
                if verdict is None:
                    out[key] = RewardResult(0.0, "unparseable", f"judge reply not a verdict: {reply.strip()[:40]!r}")
                else:
                    out[key] = RewardResult(float(verdict == "correct"), verdict, f"judge: {verdict}")
        return out


BACKENDS = {"hf": HfJudgeBackend.from_path, "vllm": VllmJudgeBackend}
"""reward.judge.backend -> constructor taking the model path ('none' = no judge)."""
