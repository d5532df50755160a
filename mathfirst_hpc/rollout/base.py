"""The rollout engine interface. HF (CPU default) and vLLM (GPU) implement it; both fill the same shards.

Prompts go in as token ids (chat template already applied), so both engines see exactly the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    """Samples per prompt (the DAPO group size)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


@dataclass
class Sample:
    prompt_index: int
    """Index of the prompt in the ``generate`` call."""
    prompt_token_ids: list[int]
    token_ids: list[int]
    """Sampled response tokens, including the EOS token when finish_reason == 'stop'."""
    logprobs: list[float]
    """Log-probability of each sampled token under the sampling distribution at temperature 1 of the policy
    logits divided by the temperature (what the learner recomputes), one per token."""
    finish_reason: Literal["stop", "length"]
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class RolloutEngine(Protocol):
    """Everything the RL loop and the evaluation need from an engine; built only by ``registry.py``."""

    spans_ranks: bool
    """True when the engine is one instance over every rank of the process group (vLLM's external launcher): each
    rank must then pass the same prompts to ``generate``, and gets the same samples. False: a rank's own engine."""

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Sample]]:
        """Return, for each prompt, ``sampling.n`` samples."""
        ...

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load new policy weights in place (HF-named tensors)."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory for the learner's turn (colocated vLLM on a GPU); may do nothing."""
        ...

    def wake_up(self) -> None:
        """Undo ``sleep`` before the next ``generate``."""
        ...

    def close(self) -> None:
        ...
